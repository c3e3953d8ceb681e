# Remove the files on the old list that are not on the new one, then keep the new list.
# Usage: sh -c "$(cat prune.sh)" prune LIST NEW_CONTENT  (one absolute path a line)
set -eu
list=$1
wanted=$2

trap 'rm -f -- "$list.new"' EXIT
printf %s "$wanted" > "$list.new"
if [ -f "$list" ]; then
  # -x -F: whole lines, no patterns; an empty new list matches nothing, so all old paths go.
  grep -v -x -F -f "$list.new" -- "$list" | while IFS= read -r path; do
    rm -f -- "$path"
  done
fi
mv -f -- "$list.new" "$list"
