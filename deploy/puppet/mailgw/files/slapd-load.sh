# The directory's first load, offline: slapadd is much faster than adding 100,000 entries over LDAP.
# Usage: sh -c "$(cat slapd-lib.sh slapd-load.sh)" slapd-load empty CONFIG BASE
#          (exits 0 when the database holds no entry)
#        sh -c "$(cat slapd-lib.sh slapd-load.sh)" slapd-load load CONFIG BASE DIRECTORY DATABASES OWNER GROUP STATUS STOP
#
# A running slapd is stopped first (the class starts it afterwards); later changes go online (slapd-sync.sh).
set -eu
mode=$1 config=$2 base=$3

if [ "$mode" = empty ]; then
  # Only the base entry is read; a space in the base DN is %20 in the URL (RFC 4516).
  url="ldap:///$(printf %s "$base" | sed 's/ /%20/g')??base"
  [ -z "$(slapcat -F "$config" -b "$base" -H "$url")" ]
  exit
fi

directory=$4 databases=$5 owner=$6 group=$7 status=$8 stop=$9
if run "$status"; then
  run "$stop"
fi
slapadd -q -F "$config" -b "$base" -l "$directory"
chown -R -- "$owner:$group" "$databases"
