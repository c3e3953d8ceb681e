# @summary Indexes one Postfix map with `postmap lmdb:` when its staged source differs from the indexed one.
#
# The copy of the source next to the table is written only after its table
# was renamed into place (files/index-map.sh), so "the copy equals the staged
# source" means "the table is current": a run that failed half-way is
# completed by the next one, which a refresh-only exec would not do (a lost
# refresh event is never sent again).
#
# @param staged The verified source in the staging directory.
# @param deployed The source's path in the map directory; its table is deployed.lmdb.
# @param environment MAIL_CONFIG=DIR: the main.cf postmap reads (the staged one).
#
# @api private
define mailgw::postfix_map (
  Mailgw::Absolutepath $staged,
  Mailgw::Absolutepath $deployed,
  Array[String[1]] $environment,
) {
  exec { "mailgw postmap ${title}":
    command     => ['/bin/sh', '-c', file('mailgw/index-map.sh'), 'mailgw-index-map', $staged, $deployed]
                    + $mailgw::postmap_command,
    unless      => [['/bin/sh', '-c', 'cmp -s -- "$1" "$2" && test -s "$2.lmdb"', 'mailgw-indexed', $staged, $deployed]],
    environment => $environment,
    path        => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'],
  }
}
