# frozen_string_literal: true

# mailgw_rollout: what this MX node runs in the staged rollout, from the state the module keeps
# (STATE_DIR/rollout.json; STATE_DIR is /var/lib/mailgw, or MAILGW_STATE_DIR in Puppet's environment):
# {node, revision, status (healthy, unhealthy or failed), since, last_healthy, bad}. Absent on a node
# that does not check signatures. `facter -p mailgw_rollout` prints it; PuppetDB keeps it per node.
require 'json'

Facter.add(:mailgw_rollout) do
  setcode do
    path = File.join(ENV.fetch('MAILGW_STATE_DIR', '/var/lib/mailgw'), 'rollout.json')
    begin
      JSON.parse(File.read(path))
    rescue Errno::ENOENT, Errno::EACCES, JSON::ParserError
      nil
    end
  end
end
