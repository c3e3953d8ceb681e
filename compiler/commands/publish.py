"""mailgw publish: build out/ and, when it changed, commit it (CI runs this on main after a merge).

The commit's message is the plan since the last commit that changed out/:
its summary as the subject, the text rendering as the body. Nothing
changed, no commit. Publish refuses to run where its commit could carry
something else: uncommitted declarations, or staged files outside out/.

The commit is signed with an SSH key through git (gpg.format=ssh) when one
is given (--signing-key, MAILGW_SIGNING_KEY), or however git's own
configuration signs (commit.gpgsign). The MX nodes deploy only a commit
signed by one of their allowed signers (docs/operators.md).
REFERENCES: git-commit(1) (-S), git-config(1) (gpg.format, user.signingKey), ssh-keygen(1) (-Y sign).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import git

from compiler import history
from compiler.commands.plan import render_text
from compiler.errors import UserError, file_error
from compiler.national import NATIONAL_DIR
from compiler.pipeline import DOMAINS_DIR, GATEWAY_FILE, compile_repository
from compiler.plan import Plan, make_plan
from compiler.sync.synced import SOURCES_DIR
from compiler.write import exclusive, write_tree

AUTHOR_ENV = "MAILGW_AUTHOR"
SIGNING_KEY_ENV = "MAILGW_SIGNING_KEY"
UNSIGNED = (
    "the publish commit is not signed (no --signing-key, no {env}, and git does not sign by itself): "
    "MX nodes that check signatures will not deploy it"
)
NOT_COMMITTED = "out/ is written but not committed (the next publish commits it)"
_AUTHOR = re.compile(r"(?P<name>[^<>\n]*[^<>\s])\s*<(?P<email>[^<>\s]+@[^<>\s]+)>")


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser("publish", help="build out/ and commit it when it changed")
    parser.add_argument(
        "--author",
        metavar="'NAME <EMAIL>'",
        help=f"author and committer of the commit (default: ${AUTHOR_ENV}, else git's config)",
    )
    parser.add_argument(
        "--signing-key",
        metavar="FILE",
        type=Path,
        help=f"sign the commit with this SSH key (private, or public with its key in ssh-agent; default: "
        f"${SIGNING_KEY_ENV}, else git's own signing configuration)",
    )
    parser.set_defaults(run=run)


class PublishError(UserError):
    """Publishing here would commit the wrong thing (nothing is written), or git refused the commit."""


def parse_author(text: str) -> git.Actor:
    match = _AUTHOR.fullmatch(text.strip())
    if not match:
        raise PublishError(f"author '{text}' is not 'Name <email@example.org>'")
    return git.Actor(match["name"], match["email"])


def run(args: argparse.Namespace) -> int:
    author_text = args.author or os.environ.get(AUTHOR_ENV)
    author = parse_author(author_text) if author_text else None
    key_text = args.signing_key or os.environ.get(SIGNING_KEY_ENV)
    signing_key = Path(key_text).absolute() if key_text else None
    if signing_key is not None and not signing_key.is_file():
        raise PublishError(f"signing key {signing_key} is not a file; nothing published")
    checkout = history.open_checkout(args.root)
    if not checkout.has_commits:
        raise PublishError("the repository has no commit yet; commit the declarations first")
    _refuse_unclean(checkout)
    compiled = compile_repository(args.root)
    base = history.revision(checkout, history.last_publish(checkout), "the last publish")
    plan = make_plan(base.label, base.fleet, base.artifacts, compiled.fleet, compiled.artifacts)
    out = checkout.path(history.OUT_DIR)
    repo = checkout.repo
    # No other build or publish writes out/ between this build and its commit.
    with exclusive(args.root / history.OUT_DIR):
        write_tree(args.root / history.OUT_DIR, compiled.artifacts)
        try:
            repo.git.add("--all", "--", out)
            if not repo.index.diff(repo.head.commit, paths=out):
                print("out/ is current: nothing to publish", file=sys.stderr)
                return 0
            message = commit_message(plan)
            commit = _commit(repo, message, author, signing_key)
        except git.GitCommandError as err:
            doing = "commit" if "commit" in err.command else "stage"
            raise PublishError(f"git could not {doing} out/: {_git_reason(err)}; {NOT_COMMITTED}") from None
        except OSError as err:
            raise PublishError(f"{file_error('commit out/ in', err, repo.git_dir)}; {NOT_COMMITTED}") from None
    signed = " (signed)" if commit.gpgsig else ""
    print(f"published {commit.hexsha[:12]}{signed}: {message.splitlines()[0]}")
    if not commit.gpgsig:
        print(f"mailgw: {UNSIGNED.format(env=SIGNING_KEY_ENV)}", file=sys.stderr)
    return 0


def _commit(repo: git.Repo, message: str, author: git.Actor | None, signing_key: Path | None) -> git.Commit:
    """`git commit` of the index, so that git signs it (gitpython's own commits carry no signature)."""
    command = ["git"]
    if signing_key is not None:
        command += ["-c", "gpg.format=ssh", "-c", f"user.signingKey={signing_key}"]
    # Generated files only, so no hooks (the checks ran on the merge request); the message exactly as written.
    command += ["commit", "--quiet", "--no-verify", "--cleanup=verbatim", "--no-edit"]
    command += ["-S"] if signing_key is not None else []
    environment = {}
    if author is not None:
        command.append(f"--author={author.name} <{author.email}>")
        environment = {"GIT_COMMITTER_NAME": str(author.name), "GIT_COMMITTER_EMAIL": str(author.email)}
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", prefix="mailgw-publish-", suffix=".txt") as text:
        text.write(message)
        text.flush()
        repo.git.execute([*command, f"--file={text.name}"], env=environment)
    return repo.head.commit


def _git_reason(err: git.GitCommandError) -> str:
    """git's own message ('fatal: ...'), on one line."""
    stderr = err.stderr.strip() if isinstance(err.stderr, str) else ""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reason = next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[0] if lines else str(err))
    return reason.removeprefix("stderr: ").strip("'")


def commit_message(plan: Plan) -> str:
    subject = f"publish out/: {plan.summary()}"
    body = render_text(plan, verdict=False)
    reasons = plan.reasons()
    if reasons:
        body += "\nsafety guards (reviewed on the merge request):\n" + "".join(f"  - {r}\n" for r in reasons)
    return f"{subject}\n\n{body}"


def _refuse_unclean(checkout: history.Checkout) -> None:
    """out/ must be built from committed declarations, and the commit must hold out/ only."""
    repo = checkout.repo
    paths = [checkout.path(p) for p in (GATEWAY_FILE, DOMAINS_DIR, SOURCES_DIR, NATIONAL_DIR)]
    dirty = repo.git.status("--porcelain", "--untracked-files=all", "--", *paths)
    if dirty:
        names = ", ".join(line[3:] for line in dirty.splitlines())
        raise PublishError(
            f"declarations differ from the last commit ({names}); publish builds what is committed: commit them first"
        )
    out = checkout.path(history.OUT_DIR) + "/"
    # A diff names a path on at least one side; the other is None for an added or a deleted file.
    staged = [path for d in repo.index.diff(repo.head.commit) if (path := d.a_path or d.b_path) is not None]
    others = sorted(path for path in staged if not path.startswith(out))
    if others:
        raise PublishError(
            f"files outside out/ are staged ({', '.join(others)}); "
            "the publish commit holds out/ only: commit or unstage them first"
        )
