# @summary Removes the files an earlier run deployed that the current out/ no longer has.
#
# The paths deployed for one service are kept in STATE_DIR/deployed.TITLE;
# when the new list differs, files on the old list only are removed and the
# new list replaces it. Only what this module deployed is ever removed, so it
# can share Rspamd's directories with the package's own files.
#
# @param deployed Every absolute path this service's artifacts occupy now.
#
# @api private
define mailgw::prune (
  Array[Mailgw::Absolutepath] $deployed,
) {
  $list = "${mailgw::state_dir}/deployed.${title}"
  $content = $deployed.sort.map |$path| { "${path}\n" }.join('')

  exec { "mailgw prune ${title}":
    command => ['/bin/sh', '-c', file('mailgw/prune.sh'), 'mailgw-prune', $list, $content],
    # Nothing to do when the list is unchanged, or when there is nothing now and never was.
    unless  => [['/bin/sh', '-c', 'if [ -z "$2" ] && [ ! -s "$1" ]; then exit 0; fi; printf %s "$2" | cmp -s -- - "$1"',
                  'mailgw-pruned', $list, $content]],
    path    => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'],
    require => File[$mailgw::state_dir],
  }
}
