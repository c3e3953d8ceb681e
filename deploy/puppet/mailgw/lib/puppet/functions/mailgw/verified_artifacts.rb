# frozen_string_literal: true

# The artifacts of a mailgw out/ tree, each proven against out/MANIFEST.json
# before Puppet touches anything: every listed file exists with the listed size
# and sha256, every file in the tree is listed, and every path is a plain
# relative name. All problems are reported at once and fail the catalog, so a
# tree that does not match its MANIFEST is never deployed, not even in part.
#
# The source is where out/ is: an absolute path (a checkout on the node, for
# `puppet apply`) or puppet:///modules/<module>/<dir> (a module's files/ on
# the host that compiles the catalog). Returns {path => {sha256, size}},
# sorted by path.
require 'digest'
require 'json'

Puppet::Functions.create_function(:'mailgw::verified_artifacts') do
  # (Methods, not constants: a constant in this block would land in Object.)
  def manifest_name
    'MANIFEST.json'
  end

  def manifest_format
    1
  end

  # Names the compiler writes: no empty, hidden, '.' or '..' component, nothing a shell would read.
  def safe_path?(path)
    %r{\A[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*\z}.match?(path)
  end

  def sha256?(value)
    /\A[0-9a-f]{64}\z/.match?(value.to_s)
  end

  dispatch :verified_artifacts do
    param 'String[1]', :source
    return_type 'Hash[String[1], Struct[{sha256 => String[64, 64], size => Integer[0]}]]'
  end

  def verified_artifacts(source)
    root = local_directory(source)
    manifest = read_manifest(root, source)
    listed = manifest['artifacts']
    problems = listed.keys.sort.flat_map { |path| artifact_problems(root, path, listed[path]) }
    problems += unlisted_files(root, listed)
    unless problems.empty?
      raise Puppet::Error, "mailgw: #{source} does not match its #{manifest_name}; nothing deployed:\n  " \
                           + problems.join("\n  ")
    end
    listed.keys.sort.map { |path| [path, { 'sha256' => listed[path]['sha256'], 'size' => listed[path]['size'] }] }.to_h
  end

  # Where the tree is on the host that compiles the catalog.
  def local_directory(source)
    return source.chomp('/') if source.start_with?('/')

    match = %r{\Apuppet:///modules/([a-z][a-z0-9_]*)/(.+?)/?\z}.match(source)
    raise Puppet::Error, "mailgw: source must be an absolute path or puppet:///modules/<module>/<dir>, not #{source}" \
      unless match

    mod = closure_scope.environment.module(match[1])
    raise Puppet::Error, "mailgw: no module #{match[1]} in the module path for #{source}" unless mod

    File.join(mod.path, 'files', match[2])
  end

  def read_manifest(root, source)
    text = File.read(File.join(root, manifest_name))
    manifest = JSON.parse(text)
    raise Puppet::Error, "mailgw: #{source}/#{manifest_name}: format #{manifest['format'].inspect}, expected #{manifest_format}" \
      unless manifest.is_a?(Hash) && manifest['format'] == manifest_format && manifest['artifacts'].is_a?(Hash)

    manifest
  rescue Errno::ENOENT, Errno::ENOTDIR
    raise Puppet::Error, "mailgw: #{source}/#{manifest_name} is missing; refusing to deploy an unverifiable tree"
  rescue JSON::ParserError => e
    raise Puppet::Error, "mailgw: #{source}/#{manifest_name} is not JSON: #{e.message.lines.first.strip}"
  end

  def artifact_problems(root, path, expected)
    return ["#{path}: not a plain relative path"] unless safe_path?(path)
    unless expected.is_a?(Hash) && sha256?(expected['sha256']) && expected['size'].is_a?(Integer)
      return ["#{path}: the #{manifest_name} entry needs a sha256 and a size"]
    end

    file = File.join(root, path)
    return ["#{path}: listed in #{manifest_name} but missing"] unless File.exist?(file)
    return ["#{path}: not a regular file"] if File.symlink?(file) || !File.file?(file)

    data = File.binread(file)
    return ["#{path}: #{data.bytesize} bytes, #{manifest_name} says #{expected['size']}"] \
      unless data.bytesize == expected['size']

    actual = Digest::SHA256.hexdigest(data)
    return ["#{path}: sha256 #{actual}, #{manifest_name} says #{expected['sha256']}"] unless actual == expected['sha256']

    []
  end

  # A file nobody listed was not written by the compiler.
  def unlisted_files(root, listed)
    Dir.glob('**/*', File::FNM_DOTMATCH, base: root).sort.filter_map do |path|
      next if path == manifest_name || listed.key?(path) || File.basename(path) =~ /\A\.\.?\z/
      next if File.directory?(File.join(root, path)) && !File.symlink?(File.join(root, path))

      "#{path}: in the tree but not listed in #{manifest_name}"
    end
  end
end
