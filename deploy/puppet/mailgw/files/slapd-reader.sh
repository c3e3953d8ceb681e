# The reader's entry (cn=reader,BASE, in its own database) with the password hash from the secret store.
# Usage: sh -c "$(cat slapd-lib.sh slapd-reader.sh)" slapd-reader check|apply SOCKET DN HASH_FILE
#
# check exits 0 when the entry holds exactly the hash of HASH_FILE (its line 'userPassword: HASH'); apply adds the entry or replaces its
# userPassword. Everything goes over the local socket as root (SASL EXTERNAL), and the hash only through
# files and pipes, never on a command line.
set -eu
mode=$1 socket=$2 dn=$3 hash_file=$4

ready "$socket"
current=$(ldapsearch -H "$socket" -Q -Y EXTERNAL -LLL -o ldif-wrap=no -s base -b "$dn" userPassword 2>/dev/null \
  | sed -n 's/^userPassword:: //p' | base64 -d) || current=
wanted=$(sed -n 's/^userPassword: //p' -- "$hash_file")
if [ "$mode" = check ]; then
  [ -n "$current" ] && [ "$current" = "$wanted" ]
  exit
fi

encoded=$(printf %s "$wanted" | base64 -w0)
if ldapsearch -H "$socket" -Q -Y EXTERNAL -s base -b "$dn" 1.1 >/dev/null 2>&1; then
  printf 'dn: %s\nchangetype: modify\nreplace: userPassword\nuserPassword:: %s\n' "$dn" "$encoded" \
    | ldapmodify -H "$socket" -Q -Y EXTERNAL >/dev/null
else
  rdn=${dn%%,*}
  printf 'dn: %s\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\ncn: %s\n%s\nuserPassword:: %s\n' \
    "$dn" "${rdn#cn=}" "description: reads the gateway's directory (the portal, the submission service)" "$encoded" \
    | ldapadd -H "$socket" -Q -Y EXTERNAL >/dev/null
fi
