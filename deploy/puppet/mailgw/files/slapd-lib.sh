# Functions the slapd-*.sh scripts share; Puppet puts this file before each of them.

# run COMMAND_LINE [ARG...]: one of the class's command lines (start, stop, ldapmodify, ...), ARGs appended.
run() {
  command_line=$1
  shift
  sh -c "$command_line \"\$@\"" mailgw-slapd "$@"
}

# ready SOCKET: wait until slapd answers root on its local socket, for 30 seconds at most.
ready() {
  tries=0
  until ldapsearch -H "$1" -Q -Y EXTERNAL -s base -b '' 1.1 >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 300 ]; then
      echo "mailgw: slapd does not answer on $1" >&2
      return 1
    fi
    sleep 0.1
  done
}
