# @summary Deploys the mailgw compiler's out/ tree onto an MX node.
#
# The tree is verified against its MANIFEST.json while the catalog is
# compiled (a mismatch fails the run before anything is touched), copied to a
# staging directory on the node (each file checked against its sha256 again as
# it is written), and only then deployed from the staging copy:
#
# * out/postfix/NAME (no extension): a map, indexed with `postmap lmdb:` only
#   when its source changed, built under a temporary name and renamed into
#   place so that Postfix never opens a half-written table;
# * out/postfix/*.cidr: cidr tables, copied into the map directory as they are;
# * out/postfix/*.cf: main.cf and master.cf, checked first with `postfix check`
#   (MAIL_CONFIG: the staged copy) and copied into the Postfix config directory
#   after every table they may name is in place;
# * out/rspamd/maps.d/* and out/rspamd/local.d/*: Rspamd's maps and overrides;
# * out/ldap/*.ldif: the gateway's directory, for the LDAP loader;
# * out/ldap/slapd-config and out/ldap/slapd.yaml: the gateway's own LDAP server,
#   staged only: the class mailgw::slapd runs it from them when the node declares it.
# * out/portal/*.json: the quarantine portal's configuration, deployed by
#   mailgw::portal on the nodes that include it (staged only elsewhere).
# * out/dovecot/*: Dovecot's auth service for the submission services, deployed by
#   mailgw::dovecot on the nodes that include it (staged only elsewhere).
# * out/srs/postsrsd: postsrsd's settings, deployed with its secret by
#   mailgw::mail_auth (which also installs the DKIM and ARC private keys).
# * out/dns/*.zone and out/mta-sts/*: what the domains publish in DNS and what
#   the MTA-STS web server serves; staged only, nothing on an MX node reads them.
#
# Postfix is reloaded once when anything it reads changed, Rspamd likewise;
# a run that changes nothing runs neither. Rspamd's files and reload come
# before Postfix's: a new main.cf may name a milter socket that only the new
# Rspamd configuration makes. Files an earlier run deployed and
# the current out/ no longer has are removed (that is how a rollback takes
# back what a later out/ added).
#
# With allowed_signers, the node deploys only the out/ of a commit signed by
# one of them (files/release.sh: git verify-commit against the node's own
# list, then the commit's out/ unpacked from git, never the checkout's
# files), checks its health after every deployment and on every run
# (mailgw::health), and takes part in the staged rollout: a node that
# follows another deploys what that node has run healthily for
# rollout_hold seconds, and a revision that failed its checks is replaced by
# the last healthy one on the next run (mailgw::rollout_revision).
#
# @param source
#   Where out/ is: an absolute path (a checkout on the node, for `puppet
#   apply`), or puppet:///modules/<module>/<dir> (a module's files on the Puppet
#   server that compiles the catalog).
# @param state_dir
#   The module's own directory on the node: the verified staging copy (out/)
#   and the lists of what was deployed.
# @param postfix_map_dir
#   Where the maps and cidr tables go; main.cf names them there
#   (gateway.yaml's postfix.map_directory).
# @param postfix_config_dir
#   Where main.cf and master.cf go.
# @param rspamd_local_dir
#   Rspamd's local.d.
# @param rspamd_maps_dir
#   Rspamd's maps.d.
# @param ldif_dir
#   Where the LDIF files go for the LDAP loader.
# @param postmap_command
#   postmap(1) and its options; the module appends `lmdb:FILE`. It runs with
#   MAIL_CONFIG set to the staged out/postfix, so it reads the new main.cf
#   (a node needs no /etc/postfix/main.cf before the first run).
# @param postfix_check_command
#   postfix(1) check and its options, run with MAIL_CONFIG set to the staged
#   out/postfix (after postconf has read main.cf and master.cf there) before a
#   new main.cf or master.cf is deployed; when either fails, nothing of
#   Postfix's is deployed and the run fails.
# @param postfix_reload_command
#   Run once when a map, table or main.cf/master.cf changed. The default
#   reloads a running Postfix (postfix@-.service: `postmulti -p reload`) and
#   does nothing when it is stopped: it reads everything when it starts.
# @param rspamd_reload_command
#   Run once when a file in local.d or maps.d changed; the same for Rspamd.
# @param ldap_load_command
#   Run once when an LDIF file changed, if given.
# @param portal_config_dir
#   Where mailgw::portal puts out/portal/*.json (the portal reads portal.json there).
# @param capture_notifier
#   Where the capture's notifier goes: master.cf's pipe service runs it there (compiler/capture.py
#   NOTIFIER); it needs only the system's python3.
# @param allowed_signers
#   The node's allowed-signers file (ssh-keygen(1) ALLOWED SIGNERS, one `principal key` per line), from
#   the node's own Puppet data. When set, source must be out/ of a git checkout, and only the out/ of
#   a commit signed by one of these keys is deployed.
# @param revision
#   The commit to deploy (with allowed_signers): HEAD of the checkout, or a pin (a commit name or tag).
# @param rollout_follows
#   The node this one follows (its name as that node records it): it deploys what that node has run
#   healthily for rollout_hold seconds. Unset: this node leads and deploys `revision`.
# @param rollout_hold
#   Seconds the node ahead must have run a revision healthily before this one takes it.
# @param rollout_records
#   Where each node writes its record (<node_name>.json) and reads that of the node it follows; the
#   records reach the other nodes by a copy the operator sets up (docs/operators.md).
# @param node_name
#   This node's name in the records.
# @param health_smtp
#   The node's own smtpd (host:port) for the health check's RCPT TO probes.
# @param health_rspamd_url
#   Rspamd's controller ping URL (its answer must be 'pong'); false: no Rspamd check.
# @param health_milter
#   Whether every milter main.cf's smtpd_milters names must answer the milter protocol's option negotiation
#   (while one does not, every message is deferred): after a deployment and on every run, the live main.cf's;
#   before a new main.cf or master.cf is deployed (after Rspamd's reload), the new one's, which goes in only
#   once they answer. Read with postconf, so a revision put back checks the milter it names.
# @param health_ldap_command
#   A lookup that must succeed when the node runs the gateway's LDAP server; undef: no LDAP check.
# @param health_timeout
#   Seconds a check that fails as a restarting service would is retried for.
# @param health_settle
#   Seconds the checks wait after a deployment, for the reloaded daemons to pick up the new files.
# @param ruby_command
#   The Ruby that runs the health checks (Puppet's own).
class mailgw (
  String[1] $source,
  Mailgw::Absolutepath $state_dir = '/var/lib/mailgw',
  Mailgw::Absolutepath $postfix_map_dir = '/etc/postfix/mailgw',
  Mailgw::Absolutepath $postfix_config_dir = '/etc/postfix',
  Mailgw::Absolutepath $rspamd_local_dir = '/etc/rspamd/local.d',
  Mailgw::Absolutepath $rspamd_maps_dir = '/etc/rspamd/maps.d',
  Mailgw::Absolutepath $ldif_dir = '/var/lib/mailgw/ldap',
  Array[String[1], 1] $postmap_command = ['/usr/sbin/postmap'],
  Array[String[1], 1] $postfix_check_command = ['/usr/sbin/postfix', 'check'],
  Mailgw::Command $postfix_reload_command = ['/bin/systemctl', 'try-reload-or-restart', 'postfix'],
  Mailgw::Command $rspamd_reload_command = ['/bin/systemctl', 'try-reload-or-restart', 'rspamd'],
  Optional[Mailgw::Command] $ldap_load_command = undef,
  Mailgw::Absolutepath $portal_config_dir = '/etc/mailgw/portal',
  Mailgw::Absolutepath $capture_notifier = '/usr/local/sbin/mailgw-capture-notify',
  Optional[String[1]] $allowed_signers = undef,
  String[1] $revision = 'HEAD',
  Optional[String[1]] $rollout_follows = undef,
  Integer[0] $rollout_hold = 3600,
  Mailgw::Absolutepath $rollout_records = '/var/lib/mailgw/records',
  String[1] $node_name = $facts['networking']['fqdn'],
  String[1] $health_smtp = '127.0.0.1:25',
  Variant[Boolean[false], String[1]] $health_rspamd_url = 'http://127.0.0.1:11334/ping',
  Boolean $health_milter = true,
  Optional[Array[String[1], 1]] $health_ldap_command = undef,
  Integer[1] $health_timeout = 60,
  Integer[0] $health_settle = 2,
  Mailgw::Absolutepath $ruby_command = '/usr/bin/ruby',
) {
  $staging_dir = "${state_dir}/out"
  if $allowed_signers {
    # Which signed commit, then its out/ unpacked from git: both fail the catalog when they refuse.
    $rollout_state = "${state_dir}/rollout.json"
    $rollout = mailgw::rollout_revision({
      'source'   => $source,
      'revision' => $revision,
      'state'    => $rollout_state,
      'records'  => $rollout_records,
      'follows'  => $rollout_follows,
      'hold'     => $rollout_hold,
    })
    $deployed_revision = $rollout['revision']
    $release = mailgw::signed_release($source, $deployed_revision, $allowed_signers, "${state_dir}/releases",
      $rollout['keep'])
    $out_dir = $release['path']
  } else {
    $deployed_revision = undef
    $out_dir = $source
  }
  # Fails the catalog, listing every mismatch, unless out/ is exactly what MANIFEST.json says.
  $artifacts = mailgw::verified_artifacts($out_dir)
  $source_dir = $out_dir.regsubst(/\/+\z/, '')

  # The categories of the out/ contract; a new kind of file for these services needs a rule here first.
  $maps = $artifacts.filter |$path, $_| { $path =~ /\Apostfix\/[^\/.]+\z/ }
  $cidr_tables = $artifacts.filter |$path, $_| { $path =~ /\Apostfix\/[^\/]+\.cidr\z/ }
  $postfix_configs = $artifacts.filter |$path, $_| { $path =~ /\Apostfix\/[^\/]+\.cf\z/ }
  $rspamd_maps = $artifacts.filter |$path, $_| { $path =~ /\Arspamd\/maps\.d\/[^\/]+\z/ }
  $rspamd_configs = $artifacts.filter |$path, $_| { $path =~ /\Arspamd\/local\.d\/[^\/]+\z/ }
  $ldifs = $artifacts.filter |$path, $_| { $path =~ /\Aldap\/[^\/]+\.ldif\z/ }
  $slapd_files = $artifacts.filter |$path, $_| { $path in ['ldap/slapd-config', 'ldap/slapd.yaml'] }
  $portal_configs = $artifacts.filter |$path, $_| { $path =~ /\Aportal\/[^\/]+\.json\z/ }
  $dovecot_configs = $artifacts.filter |$path, $_| { $path =~ /\Adovecot\/[^\/]+\z/ }
  # postsrsd's settings, deployed by mailgw::mail_auth. (dns/ and mta-sts/ are for the domains' DNS and the
  # MTA-STS web server, not for an MX node: verified and staged, never deployed.)
  $srs_files = $artifacts.filter |$path, $_| { $path == 'srs/postsrsd' }

  $placed = $maps + $cidr_tables + $postfix_configs + $rspamd_maps + $rspamd_configs + $ldifs + $slapd_files
    + $portal_configs + $srs_files + $dovecot_configs
  $unplaced = $artifacts.keys.filter |$path| {
    $path =~ /\A(postfix|rspamd|ldap|portal|srs|dovecot)\// and !($path in $placed)
  }
  unless $unplaced.empty {
    fail("mailgw: no rule says where these go on the MX node, so nothing is deployed: ${unplaced.join(', ')}")
  }

  if $allowed_signers {
    # The settings of files/rollout.rb; the check of a new main.cf and master.cf runs through its gate,
    # so that a revision Postfix refuses fails like one that fails its health checks.
    $rollout_settings = mailgw::json({
      'state'          => $rollout_state,
      'node'           => $node_name,
      'revision'       => $deployed_revision,
      'records'        => $rollout_records,
      'postfix_check'  => $postfix_check_command,
      'postfix_config' => $postfix_config_dir,
      'smtp'           => $health_smtp,
      'recipients'     => "${postfix_map_dir}/relay_recipients",
      'rspamd_url'     => $health_rspamd_url ? { false => undef, default => $health_rspamd_url },
      'milter'         => $health_milter,
      'ldap_command'   => $health_ldap_command,
      'timeout'        => $health_timeout,
      'settle'         => $health_settle,
    })
    $rollout_script = "${state_dir}/rollout.rb"
    $rollout_settings_file = "${state_dir}/rollout-settings.json"
    $postfix_check_gate = [$ruby_command, $rollout_script, 'gate', $rollout_settings_file, '--']
  } else {
    $postfix_check_gate = []
  }

  # Every copy of an artifact: written to a temporary file, its sha256 checked, then renamed into place.
  $verified_file = { ensure => file, checksum => 'sha256', backup => false, mode => '0644' }

  contain mailgw::stage
  contain mailgw::postfix
  contain mailgw::rspamd
  contain mailgw::ldap

  # Nothing is deployed unless every artifact was staged and verified.
  Class['mailgw::stage'] -> [Class['mailgw::postfix'], Class['mailgw::rspamd'], Class['mailgw::ldap']]
  # main.cf names the milter socket that Rspamd's new local.d/worker-proxy.inc makes: Rspamd reloads first.
  Class['mailgw::rspamd'] -> Class['mailgw::postfix']

  if $allowed_signers {
    contain mailgw::health
    [Class['mailgw::postfix'], Class['mailgw::rspamd'], Class['mailgw::ldap']] -> Class['mailgw::health']
  }
}
