# @summary Checks the node's health after every deployment and on every run, and records it for the rollout.
#
# Runs when the node's state (files/rollout.rb) does not say it is healthy at the deployed revision,
# or the checks fail now: `postfix check` of the live configuration, the SMTP banner and two RCPT TO
# probes on the node's own smtpd (a declared address accepted, an unknown one refused), Rspamd's
# ping, the milter protocol's option negotiation with every milter the live main.cf names (Rspamd's
# socket: while it does not answer, every message is deferred) and an LDAP lookup when configured. A run
# that finds the node healthy changes nothing.
#
# Right after a deployment, a failure marks the revision bad on this node (and in its record, so no
# node that follows it takes it); the next run deploys the last healthy revision again. A later
# failure marks the node unhealthy: the nodes that follow wait, and the hold starts again once it
# is healthy.
#
# @api private
class mailgw::health {
  $run = [$mailgw::ruby_command, $mailgw::rollout_script]
  exec { 'mailgw health':
    command => $run + ['check', $mailgw::rollout_settings_file],
    unless  => [$run + ['healthy', $mailgw::rollout_settings_file]],
    path    => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'],
    timeout => $mailgw::health_timeout * 4 + 60,
  }
}
