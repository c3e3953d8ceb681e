# @summary Deploys the Postfix maps, cidr tables, main.cf and master.cf; reloads Postfix when they changed.
#
# Order: `postfix check` of the new main.cf and master.cf, then every map
# indexed and every cidr table in place, then main.cf and master.cf (which may
# name new tables), then one `postfix reload`, then the removal of tables the
# new main.cf no longer names.
#
# Postfix programs read main.cf from MAIL_CONFIG. Both postmap and the check
# run with MAIL_CONFIG set to the staged copy of out/postfix, which holds the
# new main.cf and master.cf: a map is indexed with the settings it will be read
# with, and a node without /etc/postfix/main.cf yet (Postfix installed with "No
# configuration") deploys like any other. The check runs only when main.cf or
# master.cf is about to change; when it fails, nothing of Postfix's changes: the
# running configuration stays, and the run fails.
#
# Postfix daemons would reopen a replaced lmdb table by themselves before
# their next request, but a cidr table is read into memory once and
# long-running daemons (trivial-rewrite, qmgr) may hold old tables for a long
# time; one reload makes every change take effect at one known moment.
#
# @api private
class mailgw::postfix {
  $staging_dir = $mailgw::staging_dir
  $map_dir = $mailgw::postfix_map_dir
  $candidate = ["MAIL_CONFIG=${staging_dir}/postfix"]

  file { $map_dir:
    ensure => directory,
    mode   => '0755',
  }

  # Skipped while every staged main.cf and master.cf equals the deployed one (pairs of paths).
  $config_pairs = flatten($mailgw::postfix_configs.keys.map |$path| {
    ["${staging_dir}/${path}", "${mailgw::postfix_config_dir}/${path.regsubst(/\Apostfix\//, '')}"]
  })
  exec { 'mailgw postfix check':
    command     => $mailgw::postfix_check_gate + ['/bin/sh', '-c', file('mailgw/check-config.sh'), 'mailgw-check-config']
                    + $mailgw::postfix_check_command,
    unless      => [['/bin/sh', '-c', 'while [ $# -gt 0 ]; do cmp -s -- "$1" "$2" || exit 1; shift 2; done',
                      'mailgw-configured'] + $config_pairs],
    environment => $candidate,
    path        => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'],
  }

  $indexed = $mailgw::maps.map |$path, $artifact| {
    $name = $path.regsubst(/\Apostfix\//, '')
    mailgw::postfix_map { $name:
      staged      => "${staging_dir}/${path}",
      deployed    => "${map_dir}/${name}",
      environment => $candidate,
      require     => Exec['mailgw postfix check'],
      notify      => Exec['mailgw postfix reload'],
    }
    Mailgw::Postfix_map[$name]
  }

  $table_files = $mailgw::cidr_tables.map |$path, $artifact| {
    $table = "${map_dir}/${path.regsubst(/\Apostfix\//, '')}"
    file { $table:
      source         => "${staging_dir}/${path}",
      checksum_value => $artifact['sha256'],
      require        => Exec['mailgw postfix check'],
      notify         => Exec['mailgw postfix reload'],
      *              => $mailgw::verified_file,
    }
    $table
  }

  $mailgw::postfix_configs.each |$path, $artifact| {
    file { "${mailgw::postfix_config_dir}/${path.regsubst(/\Apostfix\//, '')}":
      source         => "${staging_dir}/${path}",
      checksum_value => $artifact['sha256'],
      require        => $indexed + $table_files.map |$table| { File[$table] },
      notify         => Exec['mailgw postfix reload'],
      *              => $mailgw::verified_file,
    }
  }

  # Capture and notify's notifier, in place before a master.cf that runs it (docs/site-admins.md).
  file { $mailgw::capture_notifier:
    ensure  => file,
    content => file('mailgw/capture_notify.py'),
    mode    => '0755',
    backup  => false,
    before  => Exec['mailgw postfix check'],
  }

  exec { 'mailgw postfix reload':
    command     => $mailgw::postfix_reload_command,
    refreshonly => true,
    path        => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'],
  }

  # After the reload, so that no daemon still uses a table that goes away.
  # (main.cf and master.cf are never removed: Postfix cannot run without them.)
  $map_files = $mailgw::maps.keys.map |$path| {
    $map = "${map_dir}/${path.regsubst(/\Apostfix\//, '')}"
    [$map, "${map}.lmdb"]
  }
  mailgw::prune { 'postfix':
    deployed => flatten($map_files) + $table_files,
    require  => Exec['mailgw postfix reload'],
  }
}
