# @summary Runs Dovecot's auth service for the submission services: out/dovecot/ as the node's Dovecot
#   configuration, the AAI search identity's password, and one reload when something changed.
#
# Declare it after the `mailgw` class on every MX node when gateway.yaml has a
# submission: section (docs/submission.md, docs/operators.md). out/dovecot/dovecot.conf
# replaces Debian's whole /etc/dovecot/dovecot.conf: the node's Dovecot only checks
# the passwords of Postfix's submission logins against the AAI's directory (no
# mailbox, no IMAP, POP3 or LMTP, no PAM logins of the node's own accounts). The
# Debian packages dovecot-core and dovecot-ldap provide the program and its service.
#
# No secret comes from out/. When gateway.yaml names a search identity
# (submission.aai_directory.search_dn), its password is the file
# search_password_file, a Dovecot include holding one line `dnpass = ...`, given here
# in `secrets` from the operator's secret store (root-only, 0600: Dovecot reads it as
# root before it drops privileges).
#
# @param config_dir
#   Dovecot's configuration directory; out/dovecot/dovecot.conf names the LDAP settings
#   there as /etc/dovecot/mailgw-aai-ldap.conf.ext, so it is changed only for tests.
# @param secrets
#   Absolute path => content of every file the LDAP settings include (root:root, 0600).
# @param reload_command
#   Run once when a configuration file or a secret changed. The default reloads a running
#   Dovecot and starts a stopped one (it reads everything when it starts).
class mailgw::dovecot (
  Mailgw::Absolutepath $config_dir = '/etc/dovecot',
  Hash[Mailgw::Absolutepath, Sensitive[String[1]]] $secrets = {},
  Mailgw::Command $reload_command = ['/bin/systemctl', 'try-reload-or-restart', 'dovecot'],
) {
  # Declared after `class { 'mailgw': ... }`: its verified, staged out/ is what this class deploys.
  unless defined(Class['mailgw']) {
    fail('mailgw::dovecot: declare the mailgw class (with its source) first')
  }
  unless 'dovecot/dovecot.conf' in $mailgw::dovecot_configs {
    fail('mailgw::dovecot: out/ has no dovecot/dovecot.conf; add a submission: section to gateway.yaml')
  }

  file { $config_dir:
    ensure => directory,
    mode   => '0755',
  }

  # The secrets and the LDAP settings first: dovecot.conf names the settings, which include the secrets.
  $secret_files = $secrets.map |$path, $content| {
    file { $path:
      ensure    => file,
      content   => $content,
      owner     => 'root',
      group     => 'root',
      mode      => '0600',
      backup    => false,
      show_diff => false,
      notify    => Exec['mailgw dovecot reload'],
    }
    File[$path]
  }
  $settings = $mailgw::dovecot_configs.filter |$path, $_| { $path != 'dovecot/dovecot.conf' }.map |$path, $artifact| {
    $file = "${config_dir}/${path.regsubst(/\Adovecot\//, '')}"
    file { $file:
      source         => "${mailgw::staging_dir}/${path}",
      checksum_value => $artifact['sha256'],
      require        => [Class['mailgw::stage']] + $secret_files,
      notify         => Exec['mailgw dovecot reload'],
      *              => $mailgw::verified_file,
    }
    $file
  }
  file { "${config_dir}/dovecot.conf":
    source         => "${mailgw::staging_dir}/dovecot/dovecot.conf",
    checksum_value => $mailgw::dovecot_configs['dovecot/dovecot.conf']['sha256'],
    require        => $settings.map |$file| { File[$file] },
    notify         => Exec['mailgw dovecot reload'],
    *              => $mailgw::verified_file,
  }
  mailgw::prune { 'dovecot':
    deployed => $settings + ["${config_dir}/dovecot.conf"],
    require  => File["${config_dir}/dovecot.conf"],
    notify   => Exec['mailgw dovecot reload'],
  }

  exec { 'mailgw dovecot reload':
    command     => $reload_command,
    refreshonly => true,
    path        => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'],
  }
}
