# @summary Runs the gateway's own LDAP server on this MX node from out/ldap/, and keeps it equal to the directory.
#
# Declare it after the class mailgw, which stages out/ (docs/operators.md):
#
#   class { 'mailgw': source => '/srv/mailgw/out' }
#   class { 'mailgw::slapd': }   # its secrets from Hiera (eyaml)
#
# What it does, in this order:
#
# 1. installs the secrets from the operator's secret store where out/ldap/slapd.yaml
#    names them (the TLS key and certificate, the reader's password hash; the
#    plain password too, for the services on the node that bind as the reader),
#    and /etc/default/slapd with this node's listeners (its mx_host's in slapd.yaml);
# 2. loads out/ldap/slapd-config into the configuration directory with
#    slapadd -n0 (files/slapd-config.sh); a later change of the configuration
#    is checked, swapped in, and slapd restarted, the previous configuration
#    coming back if slapd refuses the new one;
# 3. on the first run (the directory's database is empty), loads the directory
#    with slapadd, slapd stopped (files/slapd-load.sh);
# 4. starts slapd, or restarts it when its listeners or TLS files changed;
# 5. writes the reader's entry (cn=reader,BASE, in a database of its own)
#    with the password hash (files/slapd-reader.sh);
# 6. applies `mailgw ldap-diff LIVE out/ldap/directory.ldif` with ldapmodify
#    when the live directory differs (files/slapd-sync.sh): never a reload,
#    and a run that stopped half-way, or a hand edit, is undone by the next.
#
# Steps 2, 5 and 6 compare what is in place with what is wanted before they
# act, so a run that changes nothing does nothing, and a failed step is
# completed by the next run.
#
# @param reader_password_hash
#   The reader's password hash for slapd, like slappasswd -h {ARGON2} prints it
#   (with -o module-load=argon2.so); {SSHA} works too.
# @param reader_password
#   The reader's password itself, for the services on this node that bind as the
#   reader (the portal); written to reader_password_file when given.
# @param reader_password_file
#   Where the services on the node read it (mode 0640).
# @param reader_password_group
#   The group that may read reader_password_file (the services' group).
# @param reader_hash_file
#   Where the hash is kept for step 5 (root only).
# @param tls_certificate
#   The server's certificate (PEM, with its chain), installed where slapd.yaml
#   says; undef when something else keeps that file current (an ACME client).
# @param tls_key
#   Its private key, likewise.
# @param mx_host
#   This node's name in gateway.yaml's mx_hosts: whose listeners it takes.
# @param defaults_file
#   The file the Debian service reads SLAPD_CONF and SLAPD_SERVICES from.
# @param user
#   The user slapd runs as; it owns the configuration and the databases.
# @param group
#   Its group; it may read the TLS key.
# @param manage_package
#   Install the slapd and ldap-utils packages.
# @param start_command
#   A shell command line that starts slapd and returns once it runs.
# @param stop_command
#   One that stops it and returns once it has stopped.
# @param status_command
#   One that exits 0 while slapd runs.
# @param ldap_diff_command
#   `mailgw ldap-diff` as installed on the node; the two files are appended.
# @param ldapmodify_command
#   ldapmodify(1); the server, SASL EXTERNAL and the change file are appended.
class mailgw::slapd (
  Sensitive[Pattern[/\A\{[A-Z0-9._-]+\}[!-~]+\z/]] $reader_password_hash,
  Optional[Sensitive[String[1]]] $reader_password = undef,
  Mailgw::Absolutepath $reader_password_file = '/etc/mailgw/secrets/ldap-reader.password',
  String[1] $reader_password_group = 'root',
  Mailgw::Absolutepath $reader_hash_file = '/etc/mailgw/secrets/ldap-reader.hash',
  Optional[String[1]] $tls_certificate = undef,
  Optional[Sensitive[String[1]]] $tls_key = undef,
  String[1] $mx_host = $facts['networking']['fqdn'],
  Mailgw::Absolutepath $defaults_file = '/etc/default/slapd',
  Pattern[/\A[a-z_][a-z0-9_-]*\z/] $user = 'openldap',
  Pattern[/\A[a-z_][a-z0-9_-]*\z/] $group = 'openldap',
  Boolean $manage_package = true,
  String[1] $start_command = '/bin/systemctl start slapd',
  String[1] $stop_command = '/bin/systemctl stop slapd',
  String[1] $status_command = '/bin/systemctl is-active --quiet slapd',
  String[1] $ldap_diff_command = '/opt/mailgw/bin/mailgw ldap-diff',
  String[1] $ldapmodify_command = '/usr/bin/ldapmodify',
) {
  unless defined(Class['mailgw']) {
    fail('mailgw::slapd: declare the class mailgw (with its source) first; the server runs from its out/')
  }
  unless 'ldap/slapd.yaml' in $mailgw::artifacts and 'ldap/slapd-config' in $mailgw::artifacts {
    fail("mailgw::slapd: ${mailgw::source} has no out/ldap/slapd.yaml and slapd-config; build it with this mailgw")
  }
  # What the compiler's grammar allows (compiler/values.py), checked again: these go into a shell file.
  $plain_path = Pattern[/\A\/[A-Za-z0-9._\/-]*\z/]
  $settings = assert_type(
    Struct[{
      base_dn            => Pattern[/\A[A-Za-z0-9 .=,-]+\z/],
      reader_dn          => Pattern[/\A[A-Za-z0-9 .=,-]+\z/],
      config_directory   => $plain_path,
      database_directory => $plain_path,
      databases          => Struct[{ directory => $plain_path, reader => $plain_path }],
      run_directory      => $plain_path,
      pid_file           => $plain_path,
      socket             => Pattern[/\Aldapi:\/\/[A-Za-z0-9%._-]+\z/],
      tls_certificate    => $plain_path,
      tls_key            => $plain_path,
      listeners          => Hash[String[1], Pattern[/\A[A-Za-z0-9:\/\[\]%._ -]+\z/]],
    }],
    mailgw::slapd_settings($mailgw::source, $mailgw::artifacts['ldap/slapd.yaml']['sha256']),
  )
  $listeners = $settings['listeners'][$mx_host]
  if $listeners =~ Undef {
    fail("mailgw::slapd: mx_host ${mx_host} is not one of gateway.yaml's mx_hosts (${settings['listeners'].keys.join(', ')})")
  }

  $staged_config = "${mailgw::staging_dir}/ldap/slapd-config"
  $directory = "${mailgw::ldif_dir}/directory.ldif"
  $path = ['/usr/sbin', '/usr/bin', '/sbin', '/bin']
  $lib = file('mailgw/slapd-lib.sh')
  $control = [$status_command, $stop_command, $start_command]

  if $manage_package {
    package { ['slapd', 'ldap-utils']:
      ensure => installed,
      before => [File[$defaults_file], Exec['mailgw slapd configuration']],
    }
  }

  # --- 1. the secrets, the node's listeners ---------------------------------------------------------
  $secrets = [$reader_hash_file]
    + ($reader_password =~ Undef ? { true => [], default => [$reader_password_file] })
    + ($tls_key =~ Undef ? { true => [], default => [$settings['tls_key']] })
  $certificates = $tls_certificate =~ Undef ? { true => [], default => [$settings['tls_certificate']] }
  # The directories the secrets go into, made when missing (with their parents, like /etc/mailgw); not
  # managed as files, as another class (the portal's) may put its own secrets there. Secrets directories are
  # traversable, not listable: slapd (as its user) reads the key in there, the portal its password.
  # (A directory of both keeps the secrets' mode.)
  $made = Hash($certificates.map |$certificate| { [$certificate.regsubst(/\/[^\/]+\z/, ''), '0755'] }
    + $secrets.map |$secret| { [$secret.regsubst(/\/[^\/]+\z/, ''), '0711'] })
  $made.each |$made_directory, $mode| {
    exec { "mailgw slapd directory ${made_directory}":
      command => ['/bin/mkdir', '-p', '-m', $mode, '--', $made_directory],
      creates => $made_directory,
    }
  }
  $made_before = $made.keys.map |$made_directory| { Exec["mailgw slapd directory ${made_directory}"] }

  file { $reader_hash_file:
    ensure    => file,
    require   => $made_before,
    # As an attribute line: Puppet would take a line that starts with '{NAME}' for a checksum of the content.
    content   => Sensitive("userPassword: ${reader_password_hash.unwrap}\n"),
    mode      => '0600',
    backup    => false,
    show_diff => false,
  }
  if $reader_password =~ NotUndef {
    file { $reader_password_file:
      ensure    => file,
      require   => $made_before,
      content   => $reader_password,
      group     => $reader_password_group,
      mode      => '0640',
      backup    => false,
      show_diff => false,
    }
  }
  if $tls_certificate =~ NotUndef {
    file { $settings['tls_certificate']:
      ensure  => file,
      require => $made_before,
      content => $tls_certificate,
      mode    => '0644',
      backup  => false,
    }
  }
  if $tls_key =~ NotUndef {
    file { $settings['tls_key']:
      ensure    => file,
      require   => $made_before,
      content   => $tls_key,
      group     => $group,
      mode      => '0640',
      backup    => false,
      show_diff => false,
    }
  }
  $tls_files = ($certificates + $secrets.filter |$secret| { $secret == $settings['tls_key'] }).map |$tls_file| {
    File[$tls_file]
  }

  file { $defaults_file:
    ensure  => file,
    content => epp('mailgw/slapd.default.epp', {
      services         => $listeners,
      config_directory => $settings['config_directory'],
      pid_file         => $settings['pid_file'],
      user             => $user,
      group            => $group,
    }),
    mode    => '0644',
  }

  $databases = [$settings['database_directory']] + $settings['databases'].values
  file { $databases:
    ensure => directory,
    owner  => $user,
    group  => $group,
    mode   => '0700',
  }
  file { $settings['run_directory']:
    ensure => directory,
    owner  => $user,
    group  => $group,
    mode   => '0755',
  }

  # --- 2. the configuration -------------------------------------------------------------------------
  $loaded_config = "${mailgw::state_dir}/slapd-config.loaded"
  exec { 'mailgw slapd configuration':
    command => ['/bin/sh', '-c', "${lib}\n${file('mailgw/slapd-config.sh')}", 'mailgw-slapd-config', $staged_config,
                $loaded_config, $settings['config_directory'], $settings['database_directory'], $user, $group,
                $settings['base_dn']] + $control,
    unless  => [['/bin/sh', '-c', 'cmp -s -- "$1" "$2" && test -e "$3/cn=config.ldif"', 'mailgw-slapd-configured',
                  $staged_config, $loaded_config, $settings['config_directory']]],
    path    => $path,
    require => [Class['mailgw::stage'], File[$settings['run_directory'], $defaults_file]]
                + $databases.map |$database| { File[$database] } + $tls_files,
  }

  # --- 3. the first load ----------------------------------------------------------------------------
  $load = ['/bin/sh', '-c', "${lib}\n${file('mailgw/slapd-load.sh')}", 'mailgw-slapd-load']
  exec { 'mailgw slapd first load':
    command => $load + ['load', $settings['config_directory'], $settings['base_dn'], $directory,
                        $settings['database_directory'], $user, $group, $status_command, $stop_command],
    onlyif  => [$load + ['empty', $settings['config_directory'], $settings['base_dn']]],
    path    => $path,
    require => [Exec['mailgw slapd configuration'], File[$directory]],
  }

  # --- 4. running, with the current listeners and TLS files -----------------------------------------
  exec { 'mailgw slapd restart':
    command     => ['/bin/sh', '-c', "${lib}\nif run \"\$1\"; then run \"\$2\"; fi\nrun \"\$3\"",
                    'mailgw-slapd-restart'] + $control,
    refreshonly => true,
    path        => $path,
    subscribe   => [File[$defaults_file]] + $tls_files,
    require     => Exec['mailgw slapd first load'],
  }
  exec { 'mailgw slapd start':
    command => ['/bin/sh', '-c', $start_command],
    unless  => [['/bin/sh', '-c', $status_command]],
    path    => $path,
    require => Exec['mailgw slapd restart'],
  }

  # --- 5. the reader --------------------------------------------------------------------------------
  $reader = ['/bin/sh', '-c', "${lib}\n${file('mailgw/slapd-reader.sh')}", 'mailgw-slapd-reader']
  $reader_arguments = [$settings['socket'], $settings['reader_dn'], $reader_hash_file]
  exec { 'mailgw slapd reader':
    command => $reader + ['apply'] + $reader_arguments,
    unless  => [$reader + ['check'] + $reader_arguments],
    path    => $path,
    require => [Exec['mailgw slapd start'], File[$reader_hash_file]],
  }

  # --- 6. the directory -----------------------------------------------------------------------------
  $sync = ['/bin/sh', '-c', "${lib}\n${file('mailgw/slapd-sync.sh')}", 'mailgw-slapd-sync']
  $sync_arguments = [$settings['config_directory'], $settings['base_dn'], $settings['socket'], $directory,
                     $mailgw::state_dir, $ldap_diff_command, $ldapmodify_command]
  exec { 'mailgw slapd directory':
    command => $sync + ['apply'] + $sync_arguments,
    unless  => [$sync + ['check'] + $sync_arguments],
    path    => $path,
    timeout => 3600,
    require => [Exec['mailgw slapd start'], File[$directory]],
  }
}
