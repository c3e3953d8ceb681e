# Index one Postfix map so that Postfix only ever opens a complete table.
# Usage: sh -c "$(cat index-map.sh)" index-map STAGED DEPLOYED POSTMAP [ARG...]
#
# postmap(1) writes DEPLOYED.lmdb in place, so a daemon opening the table
# meanwhile could read it half-written. Instead the table is built under a
# temporary name in the same directory and renamed over DEPLOYED.lmdb
# (rename(2) is atomic): a reader sees the old table or the new one, and a
# daemon that has the old one open notices the change and restarts before its
# next request (Postfix DATABASE_README, "Maintaining Postfix lookup table files").
# DEPLOYED, the copy of the source, is renamed last: it equals STAGED only
# once its table is in place, which is what Puppet checks to skip this step.
set -eu
staged=$1
deployed=$2
shift 2
building="$(dirname -- "$deployed")/.$(basename -- "$deployed").building"

trap 'rm -f -- "$building" "$building.lmdb"' EXIT
rm -f -- "$building" "$building.lmdb"
cp -- "$staged" "$building"
"$@" "lmdb:$building"
# On disk before the rename, so a crash cannot leave a renamed but empty table.
sync -- "$building.lmdb" "$building"
mv -f -- "$building.lmdb" "$deployed.lmdb"
mv -f -- "$building" "$deployed"
