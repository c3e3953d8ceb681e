# @summary Deploys Rspamd's maps and local.d overrides; reloads Rspamd when they changed.
#
# Maps first, so that an override never names a map that is not there yet;
# files this module deployed earlier and out/ no longer has are removed before
# the reload, the package's own files in these directories are left alone.
#
# @api private
class mailgw::rspamd {
  $maps = $mailgw::rspamd_maps.map |$path, $artifact| {
    $map = "${mailgw::rspamd_maps_dir}/${path.regsubst(/\Arspamd\/maps\.d\//, '')}"
    file { $map:
      source         => "${mailgw::staging_dir}/${path}",
      checksum_value => $artifact['sha256'],
      notify         => Exec['mailgw rspamd reload'],
      *              => $mailgw::verified_file,
    }
    $map
  }

  $configs = $mailgw::rspamd_configs.map |$path, $artifact| {
    $config = "${mailgw::rspamd_local_dir}/${path.regsubst(/\Arspamd\/local\.d\//, '')}"
    file { $config:
      source         => "${mailgw::staging_dir}/${path}",
      checksum_value => $artifact['sha256'],
      require        => $maps.map |$map| { File[$map] },
      notify         => Exec['mailgw rspamd reload'],
      *              => $mailgw::verified_file,
    }
    $config
  }

  mailgw::prune { 'rspamd':
    deployed => $maps + $configs,
    require  => ($maps + $configs).map |$file| { File[$file] },
    notify   => Exec['mailgw rspamd reload'],
  }

  exec { 'mailgw rspamd reload':
    command     => $mailgw::rspamd_reload_command,
    refreshonly => true,
    path        => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'],
  }
}
