# Load out/ldap/slapd-config into slapd's configuration directory; on a change, swap it in and restart slapd.
# Usage: sh -c "$(cat slapd-lib.sh slapd-config.sh)" slapd-config \
#          STAGED LOADED CONFIG DATABASES OWNER GROUP BASE STATUS STOP START
#
# The new configuration is built beside the old one (slapadd -n0 into CONFIG.building) and checked with
# slaptest, so one that slapd refuses never replaces the working one. A running slapd is stopped, the
# directories swapped, the directory reindexed (an index may be new) and slapd started again; if it does not
# start, the previous configuration is put back and started (the refused one stays in CONFIG.refused). A
# configuration change is rare and each MX node has its own server: a restart is simpler and safer than
# turning one configuration into the other with ldapmodify on cn=config. LOADED, the copy of what was
# loaded, is written last: it equals STAGED only once the configuration is in place, which Puppet checks.
set -eu
staged=$1 loaded=$2 config=$3 databases=$4 owner=$5 group=$6 base=$7 status=$8 stop=$9 start=${10}
building="$config.building"
previous="$config.previous"

rm -rf -- "$building"
mkdir -m 0750 -- "$building"
slapadd -n0 -F "$building" -l "$staged"
slaptest -u -F "$building" >/dev/null
chown -R -- "$owner:$group" "$building"

if [ -e "$config/cn=config.ldif" ]; then
  running=false
  if run "$status"; then
    running=true
    run "$stop"
  fi
  rm -rf -- "$previous"
  mv -- "$config" "$previous"
  mv -- "$building" "$config"
  slapindex -q -F "$config" -b "$base"
  chown -R -- "$owner:$group" "$databases"
  if $running && ! run "$start"; then
    rm -rf -- "$config.refused"
    mv -- "$config" "$config.refused"
    mv -- "$previous" "$config"
    run "$start" || true
    echo "mailgw: slapd did not start with the new configuration; the previous one is back" \
      "(the new one is in $config.refused)" >&2
    exit 1
  fi
  rm -rf -- "$previous"
else
  # The first configuration (or what a failed first run left).
  rm -rf -- "$config"
  mv -- "$building" "$config"
fi
cp -- "$staged" "$loaded.new"
mv -f -- "$loaded.new" "$loaded"
