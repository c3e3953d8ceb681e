#!/bin/sh
# Reference exporter: a site's LDAP directory -> the CSV list that 'mailgw sync' fetches (docs/sync-format.md).
#
#   DOMAIN=tifpa.example.org ldap-to-sync-csv.sh -H ldaps://ldap.tifpa.example.org -x \
#       -D cn=mailgw-export,dc=tifpa,dc=example,dc=org -y /etc/mailgw-export.pw -b dc=tifpa,dc=example,dc=org
#
# The arguments go to ldapsearch as they are. It reads three kinds of entries:
#   people    objectClass inetOrgPerson: uid, and mail (the first value is the person's address, the others aliases)
#   groups    objectClass groupOfNames and inetLocalMailRecipient: mailLocalAddress, businessCategory 'list' or
#             'role', and owner (uid=... DNs)
#   forwards  objectClass inetLocalMailRecipient: mailLocalAddress, forwarded to mailRoutingAddress
# Only addresses in DOMAIN are written; everything is lower case. Adapt the filters to your directory.
set -eu
: "${DOMAIN:?set DOMAIN to the mail domain the list is for}"

search() {
  ldapsearch -LLL -o ldif-wrap=no "$@"
}

entries() {  # ldapsearch's LDIF -> one line per entry: attr=value|attr=value|...
  awk 'BEGIN { FS = ": " }
       /^$/ { if (entry != "") print entry; entry = ""; next }
       /^[A-Za-z]+: / { entry = entry (entry == "" ? "" : "|") tolower($1) "=" substr($0, length($1) + 3) }
       END { if (entry != "") print entry }'
}

csv() {  # entries -> rows of the two tables, each line prefixed with its table (1 or 2) for sorting
  awk -v at="@$(printf '%s' "$DOMAIN" | tr 'A-Z' 'a-z')" '
    function ours(address) { address = tolower(address); return substr(address, length(address) - length(at) + 1) == at }
    {
      uid = ""; kind = ""; owners = ""; local = ""; route = ""; n = split($0, parts, "|"); mails = 0
      for (i = 1; i <= n; i++) {
        name = substr(parts[i], 1, index(parts[i], "=") - 1); value = substr(parts[i], index(parts[i], "=") + 1)
        if (name == "uid") uid = value
        else if (name == "mail") mail[++mails] = tolower(value)
        else if (name == "businesscategory") kind = value
        else if (name == "owner") { sub(/^uid=/, "", value); sub(/,.*/, "", value); owners = owners (owners == "" ? "" : " ") value }
        else if (name == "maillocaladdress") local = tolower(value)
        else if (name == "mailroutingaddress") route = route (route == "" ? "" : " ") value
      }
      if (kind == "list" || kind == "role") { if (local != "" && ours(local)) print "1," local "," kind ",," owners }
      else if (route != "") { if (local != "" && ours(local)) print "2," local "," route }
      else if (uid != "") for (i = 1; i <= mails; i++) if (ours(mail[i])) print "1," mail[i] "," (i == 1 ? "person" : "alias") "," uid ","
    }'
}

{
  search "$@" "(objectClass=inetOrgPerson)" uid mail | entries | csv
  search "$@" "(objectClass=groupOfNames)" mailLocalAddress businessCategory owner | entries | csv
  search "$@" "(&(objectClass=inetLocalMailRecipient)(mailRoutingAddress=*))" mailLocalAddress mailRoutingAddress |
    entries | csv
} | sort -t, -k1,1 -k2,2 | awk -F, '
  BEGIN { print "address,kind,uid,owners" }
  $1 == 2 && !aliases { print ""; print "address,target"; aliases = 1 }
  { print substr($0, 3) }'
