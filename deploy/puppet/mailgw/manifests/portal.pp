# @summary Runs the quarantine portal on this node: its configuration from out/portal/, its secrets, and
#   systemd units for the web service (uvicorn serving TLS itself) and the digest and purge timers.
#
# Include it next to the `mailgw` class on the nodes that run the portal (both
# MX nodes, on one PostgreSQL database: see docs/portal-operators.md). The
# portal program comes from this repository, installed on the node in a
# virtual environment (`command`).
#
# Secrets never come from out/: `secrets` maps each file that portal.json
# (gateway.yaml's portal: section) names to its content, from the operator's
# secret store (e.g. hiera-eyaml): the OIDC client secret, the LDAP reader
# password, the ingest password, the session key and, on the pair, the
# database URL, readable by root and the portal's group only; and, in
# `rspamd_secrets`, Rspamd's include of the ingest password.
#
# The service is restarted when its configuration, a secret or a unit
# changed; a run that changes nothing restarts nothing.
#
# @param command
#   The `mailgw-portal` program (from the repository's virtual environment).
# @param listen
#   The address uvicorn binds (all addresses by default: Rspamd of both nodes and the users reach it).
# @param port
#   Its port; quarantine.url and portal.public_url in gateway.yaml must name it (443 by default).
# @param tls_certificate
#   The portal's certificate chain (PEM), which Rspamd and browsers verify.
# @param tls_key
#   Its private key (PEM).
# @param user
#   The system user the portal runs as.
# @param manage_user
#   Create that user and group.
# @param store_dir
#   The portal's own directory (SQLite's database when no database URL is given); it writes nowhere else.
# @param systemd_dir
#   Where the units go.
# @param secrets
#   Absolute path => content of every secret file the portal reads (root:user, 0640).
# @param rspamd_secrets
#   Absolute path => content of the files Rspamd reads: the ingest password's UCL include
#   (`password = "...";`), root:rspamd_group, 0640; Rspamd is reloaded when one changes.
# @param rspamd_group
#   Rspamd's group (Debian: _rspamd).
# @param digest_calendar
#   When the digests go out (systemd OnCalendar).
# @param purge_calendar
#   When expired messages are purged (systemd OnCalendar); safe on every node.
# @param systemctl
#   systemctl(1): daemon-reload, enable --now, try-restart.
class mailgw::portal (
  Mailgw::Absolutepath $command = '/opt/mailgw/.venv/bin/mailgw-portal',
  String[1] $listen = '0.0.0.0',
  Integer[1, 65535] $port = 443,
  Mailgw::Absolutepath $tls_certificate = '/etc/mailgw/tls/portal.pem',
  Mailgw::Absolutepath $tls_key = '/etc/mailgw/tls/portal.key',
  String[1] $user = 'mailgw-portal',
  Boolean $manage_user = true,
  Mailgw::Absolutepath $store_dir = '/var/lib/mailgw-portal',
  Mailgw::Absolutepath $systemd_dir = '/etc/systemd/system',
  Hash[Mailgw::Absolutepath, Sensitive[String[1]]] $secrets = {},
  Hash[Mailgw::Absolutepath, Sensitive[String[1]]] $rspamd_secrets = {},
  String[1] $rspamd_group = '_rspamd',
  String[1] $digest_calendar = '*-*-* 07:00:00',
  String[1] $purge_calendar = 'hourly',
  Array[String[1], 1] $systemctl = ['/bin/systemctl'],
) {
  # Declared after `class { 'mailgw': ... }`: its verified, staged out/ is what this class deploys.
  unless defined(Class['mailgw']) {
    fail('mailgw::portal: declare the mailgw class (with its source) first')
  }

  $config = "${mailgw::portal_config_dir}/portal.json"
  unless 'portal/portal.json' in $mailgw::portal_configs {
    fail('mailgw::portal: out/ has no portal/portal.json; add a portal: section to gateway.yaml')
  }

  if $manage_user {
    group { $user:
      ensure => present,
      system => true,
    }
    user { $user:
      ensure => present,
      system => true,
      gid    => $user,
      home   => $store_dir,
      shell  => '/usr/sbin/nologin',
      before => File[$store_dir],
    }
  }

  file { $mailgw::portal_config_dir:
    ensure => directory,
    mode   => '0755',
  }
  $configs = $mailgw::portal_configs.map |$path, $artifact| {
    $file = "${mailgw::portal_config_dir}/${path.regsubst(/\Aportal\//, '')}"
    file { $file:
      source         => "${mailgw::staging_dir}/${path}",
      checksum_value => $artifact['sha256'],
      require        => Class['mailgw::stage'],
      notify         => Exec['mailgw portal restart'],
      *              => $mailgw::verified_file,
    }
    $file
  }
  mailgw::prune { 'portal':
    deployed => $configs,
    require  => $configs.map |$file| { File[$file] },
  }

  file { $store_dir:
    ensure => directory,
    owner  => $user,
    group  => $user,
    mode   => '0750',
  }

  $secrets.each |$path, $content| {
    file { $path:
      ensure    => file,
      content   => $content,
      owner     => 'root',
      group     => $user,
      mode      => '0640',
      backup    => false,
      show_diff => false,
      notify    => Exec['mailgw portal restart'],
    }
  }

  $rspamd_secrets.each |$path, $content| {
    file { $path:
      ensure    => file,
      content   => $content,
      owner     => 'root',
      group     => $rspamd_group,
      mode      => '0640',
      backup    => false,
      show_diff => false,
      notify    => Exec['mailgw rspamd reload'],
    }
  }

  $units = {
    'mailgw-portal.service'        => epp('mailgw/portal.service.epp', {
      'command' => $command, 'config' => $config, 'listen' => $listen, 'port' => $port,
      'certificate' => $tls_certificate, 'key' => $tls_key, 'user' => $user, 'store_dir' => $store_dir,
    }),
    'mailgw-portal-digest.service' => epp('mailgw/portal-job.service.epp', {
      'command' => $command, 'config' => $config, 'verb' => 'digest', 'user' => $user, 'store_dir' => $store_dir,
      'what' => 'mail the quarantine digests',
    }),
    'mailgw-portal-digest.timer'   => epp('mailgw/portal-job.timer.epp', {
      'calendar' => $digest_calendar, 'what' => 'the quarantine digests',
    }),
    'mailgw-portal-purge.service'  => epp('mailgw/portal-job.service.epp', {
      'command' => $command, 'config' => $config, 'verb' => 'purge', 'user' => $user, 'store_dir' => $store_dir,
      'what' => 'purge expired quarantined messages',
    }),
    'mailgw-portal-purge.timer'    => epp('mailgw/portal-job.timer.epp', {
      'calendar' => $purge_calendar, 'what' => 'purging expired quarantined messages',
    }),
  }
  $units.each |$name, $content| {
    file { "${systemd_dir}/${name}":
      ensure  => file,
      content => $content,
      mode    => '0644',
      notify  => [Exec['mailgw portal daemon-reload'], Exec['mailgw portal restart']],
    }
  }

  exec { 'mailgw portal daemon-reload':
    command     => $systemctl + ['daemon-reload'],
    refreshonly => true,
  }
  $enabled = ['mailgw-portal.service', 'mailgw-portal-digest.timer', 'mailgw-portal-purge.timer']
  exec { 'mailgw portal enable':
    command => $systemctl + ['enable', '--now'] + $enabled,
    unless  => [$systemctl + ['is-enabled', '--quiet'] + $enabled],
    require => Exec['mailgw portal daemon-reload'],
  }
  exec { 'mailgw portal restart':
    command     => $systemctl + ['try-restart', 'mailgw-portal.service'],
    refreshonly => true,
    require     => [Exec['mailgw portal enable'], File[$store_dir]],
  }
}
