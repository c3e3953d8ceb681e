# @summary Copies every artifact of out/ into the staging directory, each checked against its sha256.
#
# Puppet writes each staged file to a temporary name, compares its sha256 with
# the MANIFEST's and renames it into place only when they match, so the staging
# copy never holds anything the MANIFEST did not list. It is what everything
# else is deployed from: if out/ changes while a run is under way, the run
# fails here and deploys nothing (what did match stays staged for the next run).
#
# @api private
class mailgw::stage {
  $staging_dir = $mailgw::staging_dir
  # Every directory above an artifact, e.g. 'rspamd' and 'rspamd/local.d'.
  $directories = unique(flatten($mailgw::artifacts.keys.map |$path| {
    $parts = $path.split('/')
    ($parts.length - 1).map |$depth| { $parts[0, $depth + 1].join('/') }
  }))

  file { $mailgw::state_dir:
    ensure => directory,
    mode   => '0755',
  }
  if $mailgw::allowed_signers {
    # The rollout's checks and their settings (files/rollout.rb), first: the check of main.cf runs through them.
    file { $mailgw::rollout_script:
      ensure  => file,
      content => file('mailgw/rollout.rb'),
      mode    => '0644',
      backup  => false,
    }
    file { $mailgw::rollout_settings_file:
      ensure  => file,
      content => "${mailgw::rollout_settings}\n",
      mode    => '0644',
      backup  => false,
    }
  }
  # Each directory purged of what this out/ does not list, so the staging copy holds nothing older.
  # (A recursive directory does not purge below a subdirectory the catalog also manages.)
  file { [$staging_dir] + $directories.map |$directory| { "${staging_dir}/${directory}" }:
    ensure  => directory,
    mode    => '0750',
    recurse => true,
    purge   => true,
    force   => true,
    backup  => false,
  }
  $mailgw::artifacts.each |$path, $artifact| {
    file { "${staging_dir}/${path}":
      source         => "${mailgw::source_dir}/${path}",
      checksum_value => $artifact['sha256'],
      *              => $mailgw::verified_file,
    }
  }
}
