# @summary Deploys the Postfix maps, cidr tables, main.cf and master.cf; reloads Postfix when they changed.
#
# Order: every map indexed and every cidr table in place, then main.cf and
# master.cf (which may name new tables), then one `postfix reload`, then the
# removal of tables the new main.cf no longer names.
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

  file { $map_dir:
    ensure => directory,
    mode   => '0755',
  }

  $indexed = $mailgw::maps.map |$path, $artifact| {
    $name = $path.regsubst(/\Apostfix\//, '')
    mailgw::postfix_map { $name:
      staged   => "${staging_dir}/${path}",
      deployed => "${map_dir}/${name}",
      require  => File[$map_dir],
      notify   => Exec['mailgw postfix reload'],
    }
    Mailgw::Postfix_map[$name]
  }

  $table_files = $mailgw::cidr_tables.map |$path, $artifact| {
    $table = "${map_dir}/${path.regsubst(/\Apostfix\//, '')}"
    file { $table:
      source         => "${staging_dir}/${path}",
      checksum_value => $artifact['sha256'],
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
