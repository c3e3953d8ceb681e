# @summary Deploys the gateway's LDIF files for the LDAP loader; runs the loader when they changed.
#
# @api private
class mailgw::ldap {
  file { $mailgw::ldif_dir:
    ensure => directory,
    mode   => '0750',
  }

  $ldifs = $mailgw::ldifs.map |$path, $artifact| {
    $ldif = "${mailgw::ldif_dir}/${path.regsubst(/\Aldap\//, '')}"
    file { $ldif:
      source         => "${mailgw::staging_dir}/${path}",
      checksum_value => $artifact['sha256'],
      *              => $mailgw::verified_file + { mode => '0640' },
    }
    $ldif
  }

  mailgw::prune { 'ldap':
    deployed => $ldifs,
    require  => $ldifs.map |$ldif| { File[$ldif] },
  }

  if $mailgw::ldap_load_command {
    exec { 'mailgw ldap load':
      command     => $mailgw::ldap_load_command,
      refreshonly => true,
      path        => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'],
      subscribe   => [Mailgw::Prune['ldap']] + $ldifs.map |$ldif| { File[$ldif] },
    }
  }
}
