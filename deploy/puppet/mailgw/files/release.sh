# The out/ of one signed commit, checked and unpacked for deployment; nothing else is ever deployed.
# Usage: sh release.sh SOURCE REVISION ALLOWED_SIGNERS RELEASES [KEEP...]
#
# SOURCE is out/ in a clone of the gateway repository (its git history is what is deployed, never
# the files in the checkout), REVISION the commit to deploy (a name git knows, like HEAD or a sha),
# ALLOWED_SIGNERS the node's own allowed-signers file (ssh-keygen(1) ALLOWED SIGNERS; git's
# gpg.ssh.allowedSignersFile). The commit must carry a signature that verifies against that file
# (git verify-commit), and the checkout's own out/ must hold no edit that is not in a commit: an
# edited copy on the node is refused rather than quietly ignored. Then the commit's out/ is unpacked
# (git archive) into RELEASES/<commit>, under a temporary name renamed into place, once; releases
# not named in KEEP (full commit names) are removed. Prints "COMMIT<TAB>RELEASE"; on a refusal,
# one line on stderr and exit 1, and nothing is written.
set -eu
source=$1
revision=$2
signers=$3
releases=$4
shift 4

refuse() {
  echo "$*" >&2
  exit 1
}

top=$(git -C "$source" rev-parse --show-toplevel 2>/dev/null) && prefix=$(git -C "$source" rev-parse --show-prefix) ||
  refuse "$source is not out/ of a git checkout; a node that checks signatures deploys from a clone of the repository"
[ -n "$prefix" ] || refuse "$source is the top of its repository, not its out/ directory"
commit=$(git -C "$top" rev-parse --verify --quiet "$revision^{commit}") ||
  refuse "'$revision' is not a commit of $top (not fetched yet?)"

# The headers end at the first empty line; a message line that starts with 'gpgsig' is no signature.
if ! git -C "$top" cat-file commit "$commit" | sed '/^$/q' | grep -q '^gpgsig'; then
  refuse "commit $commit is not signed; only a published (signed) commit is deployed"
fi
if ! why=$(git -C "$top" -c gpg.ssh.allowedSignersFile="$signers" verify-commit "$commit" 2>&1); then
  refuse "commit $commit is not signed by an allowed signer of this node: $(printf '%s' "$why" | tr '\n' ' ')"
fi
if ! git -C "$top" cat-file -e "$commit:${prefix%/}" 2>/dev/null; then
  refuse "commit $commit has no ${prefix%/}/"
fi

edited=$(git -C "$top" status --porcelain --untracked-files=all -- "$prefix" | head -n 3 | cut -c4- | tr '\n' ' ')
[ -z "$edited" ] ||
  refuse "$source was changed after its commit (${edited% }); only what a signed commit holds is deployed: git -C $top checkout -- ${prefix%/}"

release="$releases/$commit"
if [ ! -d "$release" ]; then
  mkdir -p "$releases"
  unpacking=$(mktemp -d "$releases/.$commit.XXXXXX")
  if ! git -C "$top" archive --format=tar "$commit:${prefix%/}" | tar -x -f - -C "$unpacking"; then
    rm -rf -- "$unpacking"
    refuse "could not unpack ${prefix%/}/ of commit $commit into $releases"
  fi
  mv -- "$unpacking" "$release"
fi

for old in "$releases"/*; do
  name=${old##*/}
  case " $commit $* " in
    *" $name "*) ;;
    *) case "$name" in *[!0-9a-f]*) ;; *) rm -rf -- "$old" ;; esac ;;
  esac
done
printf '%s\t%s\n' "$commit" "$release"
