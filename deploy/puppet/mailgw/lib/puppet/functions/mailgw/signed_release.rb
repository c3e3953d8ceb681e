# frozen_string_literal: true

# The out/ of a signed commit, ready to deploy: files/release.sh checks that the commit's signature
# verifies against the node's allowed signers and that the checkout's out/ holds no edit of its own,
# then unpacks the commit's out/ under RELEASES/<commit>. Any refusal fails the catalog before
# anything moves, with the reason. Returns {revision => full commit name, path => its out/}.
#
# allowed_signers is the content of the node's own allowed-signers file (ssh-keygen(1)), from the
# node's Puppet data: never a file of the repository, which is what it has to vouch for.
require 'tempfile'

Puppet::Functions.create_function(:'mailgw::signed_release') do
  dispatch :signed_release do
    param 'String[1]', :source
    param 'String[1]', :revision
    param 'String[1]', :allowed_signers
    param 'String[1]', :releases
    param 'Array[String[1]]', :keep
    return_type 'Struct[{revision => String[40], path => String[1]}]'
  end

  def signed_release(source, revision, allowed_signers, releases, keep)
    unless source.start_with?('/')
      raise Puppet::Error, "mailgw: a node that checks signatures deploys from a git checkout: source must be " \
                           "the path of its out/, not #{source}"
    end

    script = closure_scope.environment.module('mailgw').file('release.sh')
    Tempfile.create('mailgw-allowed-signers') do |signers|
      signers.write(allowed_signers.end_with?("\n") ? allowed_signers : "#{allowed_signers}\n")
      signers.flush
      output = Puppet::Util::Execution.execute(
        ['/bin/sh', script, source, revision, signers.path, releases] + keep,
        failonfail: false, combine: true, stdinfile: '/dev/null'
      )
      unless output.exitstatus.zero?
        raise Puppet::Error, "mailgw: nothing deployed: #{output.strip.empty? ? 'release.sh failed' : output.strip}"
      end

      commit, path = output.strip.lines.last.split("\t", 2)
      { 'revision' => commit, 'path' => path }
    end
  end
end
