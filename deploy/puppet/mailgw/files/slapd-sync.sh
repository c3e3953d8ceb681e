# Bring the live directory to out/ldap/directory.ldif with ldapmodify, online.
# Usage: sh -c "$(cat slapd-lib.sh slapd-sync.sh)" slapd-sync check|apply \
#          CONFIG BASE SOCKET DIRECTORY WORK LDAP_DIFF LDAPMODIFY
#
# The difference is computed against what the server holds now (slapcat of the live database, which back-mdb
# allows while slapd runs), not against the previous file: a run interrupted half-way, or a server edited by
# hand, is brought to the directory by the next run. ldap-diff orders the changes so that the tree stays
# valid and an address in both directories always has an owner (docs/ldap.md). check exits 0 when there is
# nothing to change; apply applies the changes over the local socket as root (SASL EXTERNAL). The reader's
# entry is in a database of its own, which slapcat -b BASE does not dump: the diff never sees it.
#
# WORK/slapd-synced holds the sha256 of the last dump that ldap-diff found equal to the directory, and of
# the directory: while both are the same, the server still equals the directory, and ldap-diff (seconds
# for a large directory) is skipped. Any write to the server changes its dump (entryCSN, timestamps).
set -eu
mode=$1 config=$2 base=$3 socket=$4 directory=$5 work=$6 ldap_diff=$7 ldapmodify=$8
live="$work/slapd-live.ldif"
changes="$work/slapd-changes.ldif"
synced="$work/slapd-synced"

dump() {
  slapcat -F "$config" -b "$base" -o ldif_wrap=no -l "$live.new"
  mv -f -- "$live.new" "$live"
  stamp="$(sha256sum <"$live" | cut -d' ' -f1) $(sha256sum <"$directory" | cut -d' ' -f1)"
}

ready "$socket"
dump
if [ -f "$synced" ] && [ "$(cat -- "$synced")" = "$stamp" ]; then
  exit 0
fi
# The apply right after a check that found changes uses them, if the server and directory are still the same.
if [ "$mode" = check ] || [ ! -f "$changes.from" ] || [ "$(cat -- "$changes.from")" != "$stamp" ]; then
  rm -f -- "$changes.from"
  if ! run "$ldap_diff" "$live" "$directory" >"$changes.new" 2>"$changes.summary"; then
    cat -- "$changes.summary" >&2
    exit 1
  fi
  mv -f -- "$changes.new" "$changes"
  printf '%s\n' "$stamp" >"$changes.from"
fi
if grep -q '^dn' "$changes"; then
  [ "$mode" = apply ] || exit 1
  cat -- "$changes.summary"
  rm -f -- "$changes.from"
  run "$ldapmodify" -H "$socket" -Q -Y EXTERNAL -f "$changes"
  exit 0  # the next run's check compares again, and records the stamp only if ldap-diff finds nothing
fi
printf '%s\n' "$stamp" >"$synced.new"
mv -f -- "$synced.new" "$synced"
