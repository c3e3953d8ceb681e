# @summary The secrets of DKIM signing and of forwarded mail on this node: Rspamd's DKIM and ARC private keys,
#   and postsrsd's configuration (out/srs/postsrsd) with its secret.
#
# Declare it after the `mailgw` class on every MX node (docs/operators.md).
# Private keys and the SRS secret never come from out/: `dkim_keys` maps each
# key file that gateway.yaml's selectors name (<domain>.<selector>.key, in
# dkim.key_directory) to its content, and `srs_secret` is postsrsd's secret,
# both from the operator's secret store (e.g. hiera-eyaml). Key files no
# longer listed are removed (a retired selector's key leaves the node with
# its record). Rspamd is reloaded when a key changed, postsrsd restarted when
# its configuration or secret changed.
#
# @param dkim_keys
#   File name (<domain>.<selector>.key) => the private key as `mailgw dkim` wrote it
#   (root:rspamd_group, 0640).
# @param dkim_key_dir
#   gateway.yaml's dkim.key_directory.
# @param rspamd_group
#   Rspamd's group (Debian: _rspamd).
# @param srs_secret
#   postsrsd's secret; required when out/ has srs/postsrsd (gateway.yaml's forwarding).
# @param srs_secret_file
#   gateway.yaml's forwarding.srs_secret_file (root, 0600: postsrsd reads it before it drops privileges).
# @param postsrsd_default
#   Where Debian's postsrsd reads its settings.
# @param postsrsd_restart_command
#   Run once when the settings or the secret changed.
class mailgw::mail_auth (
  Hash[Pattern[/\A[a-z0-9][a-z0-9.-]*\.key\z/], Sensitive[String[1]]] $dkim_keys = {},
  Mailgw::Absolutepath $dkim_key_dir = '/var/lib/rspamd/dkim',
  String[1] $rspamd_group = '_rspamd',
  Optional[Sensitive[String[1]]] $srs_secret = undef,
  Mailgw::Absolutepath $srs_secret_file = '/etc/postsrsd.secret',
  Mailgw::Absolutepath $postsrsd_default = '/etc/default/postsrsd',
  Mailgw::Command $postsrsd_restart_command = ['/bin/systemctl', 'try-restart', 'postsrsd'],
) {
  unless defined(Class['mailgw']) {
    fail('mailgw::mail_auth: declare the mailgw class (with its source) first')
  }

  # The keys: only those listed stay in the directory.
  file { $dkim_key_dir:
    ensure  => directory,
    owner   => 'root',
    group   => $rspamd_group,
    mode    => '0750',
    recurse => true,
    purge   => true,
    force   => true,
    backup  => false,
    notify  => Exec['mailgw rspamd reload'],
  }
  $dkim_keys.each |$name, $key| {
    file { "${dkim_key_dir}/${name}":
      ensure    => file,
      content   => $key,
      owner     => 'root',
      group     => $rspamd_group,
      mode      => '0640',
      backup    => false,
      show_diff => false,
      notify    => Exec['mailgw rspamd reload'],
    }
  }

  if 'srs/postsrsd' in $mailgw::srs_files {
    if $srs_secret == undef {
      fail('mailgw::mail_auth: out/ has srs/postsrsd (gateway.yaml forwarding): give srs_secret from the secret store')
    }
    file { $srs_secret_file:
      ensure    => file,
      content   => $srs_secret,
      owner     => 'root',
      group     => 'root',
      mode      => '0600',
      backup    => false,
      show_diff => false,
      notify    => Exec['mailgw postsrsd restart'],
    }
    file { $postsrsd_default:
      source         => "${mailgw::staging_dir}/srs/postsrsd",
      checksum_value => $mailgw::srs_files['srs/postsrsd']['sha256'],
      require        => Class['mailgw::stage'],
      notify         => Exec['mailgw postsrsd restart'],
      *              => $mailgw::verified_file,
    }
    # postsrsd answers main.cf's lookups: restarted before Postfix reads the new main.cf.
    exec { 'mailgw postsrsd restart':
      command     => $postsrsd_restart_command,
      refreshonly => true,
      path        => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'],
      before      => Exec['mailgw postfix reload'],
    }
  }
}
