# frozen_string_literal: true

# What the gateway's LDAP server needs on the node, read from out/ldap/slapd.yaml
# while the catalog is compiled: the directories its configuration names, the
# TLS files, the local socket, each MX node's listeners. The file must have
# the sha256 that mailgw::verified_artifacts found in the MANIFEST, so it is
# the same bytes that are staged. The source is given as to mailgw (an absolute
# path, or puppet:///modules/<module>/<dir>).
require 'digest'
require 'yaml'

Puppet::Functions.create_function(:'mailgw::slapd_settings') do
  def settings_path
    'ldap/slapd.yaml'
  end

  dispatch :slapd_settings do
    param 'String[1]', :source
    param 'String[64, 64]', :sha256
    return_type 'Hash[String[1], Data]'
  end

  def slapd_settings(source, sha256)
    data = File.binread(File.join(local_directory(source), settings_path))
    actual = Digest::SHA256.hexdigest(data)
    raise Puppet::Error, "mailgw: #{source}/#{settings_path}: sha256 #{actual}, MANIFEST.json says #{sha256}" \
      unless actual == sha256

    settings = YAML.safe_load(data)
    raise Puppet::Error, "mailgw: #{source}/#{settings_path} is not a mapping" unless settings.is_a?(Hash)

    settings
  rescue Errno::ENOENT, Errno::ENOTDIR
    raise Puppet::Error, "mailgw: #{source}/#{settings_path} is missing"
  rescue Psych::Exception => e
    raise Puppet::Error, "mailgw: #{source}/#{settings_path} is not YAML: #{e.message.lines.first.strip}"
  end

  # Where the tree is on the host that compiles the catalog (as mailgw::verified_artifacts finds it).
  def local_directory(source)
    return source.chomp('/') if source.start_with?('/')

    match = %r{\Apuppet:///modules/([a-z][a-z0-9_]*)/(.+?)/?\z}.match(source)
    raise Puppet::Error, "mailgw: source must be an absolute path or puppet:///modules/<module>/<dir>, not #{source}" \
      unless match

    mod = closure_scope.environment.module(match[1])
    raise Puppet::Error, "mailgw: no module #{match[1]} in the module path for #{source}" unless mod

    File.join(mod.path, 'files', match[2])
  end
end
