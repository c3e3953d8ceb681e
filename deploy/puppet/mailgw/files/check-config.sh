# Check a Postfix configuration before it is deployed.
# Usage: MAIL_CONFIG=DIR sh -c "$(cat check-config.sh)" check-config POSTFIX_CHECK [ARG...]
#
# postconf reads main.cf and master.cf of MAIL_CONFIG whole and says on stderr
# what it cannot read, which Puppet shows; `postfix check` (the command given)
# then checks the rest, but reports to syslog only when it is not on a terminal.
set -eu
postconf -n >/dev/null
postconf -M >/dev/null
exec "$@"
