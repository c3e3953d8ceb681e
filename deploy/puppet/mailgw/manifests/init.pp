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
#
# Postfix is reloaded once when anything it reads changed, Rspamd likewise;
# a run that changes nothing runs neither. Files an earlier run deployed and
# the current out/ no longer has are removed (that is how a rollback takes
# back what a later out/ added).
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
) {
  # Fails the catalog, listing every mismatch, unless out/ is exactly what MANIFEST.json says.
  $artifacts = mailgw::verified_artifacts($source)
  $source_dir = $source.regsubst(/\/+\z/, '')
  $staging_dir = "${state_dir}/out"

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

  $placed = $maps + $cidr_tables + $postfix_configs + $rspamd_maps + $rspamd_configs + $ldifs + $slapd_files
    + $portal_configs + $dovecot_configs
  $unplaced = $artifacts.keys.filter |$path| { $path =~ /\A(postfix|rspamd|ldap|portal|dovecot)\// and !($path in $placed) }
  unless $unplaced.empty {
    fail("mailgw: no rule says where these go on the MX node, so nothing is deployed: ${unplaced.join(', ')}")
  }

  # Every copy of an artifact: written to a temporary file, its sha256 checked, then renamed into place.
  $verified_file = { ensure => file, checksum => 'sha256', backup => false, mode => '0644' }

  contain mailgw::stage
  contain mailgw::postfix
  contain mailgw::rspamd
  contain mailgw::ldap

  # Nothing is deployed unless every artifact was staged and verified.
  Class['mailgw::stage'] -> [Class['mailgw::postfix'], Class['mailgw::rspamd'], Class['mailgw::ldap']]
}
