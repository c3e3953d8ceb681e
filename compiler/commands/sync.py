"""mailgw sync: fetch each site's own address list and write it into sources/<domain>.yaml, guarded.

Per domain: fetch (TLS verified, conditional, bounded), read the list
strictly, validate it with every rule of validate, plan it, and write it
atomically only when all of that passed and the plan's guard allows it.
A domain that fails gets one line saying why (and its rows' findings); the
others still sync. --propose commits each changed domain on its own branch
instead of writing the checkout (compiler/sync/propose.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from pydantic_core import PydanticCustomError

from compiler import history, values
from compiler.commands.plan import forced_by_environment, render_text
from compiler.commands.publish import AUTHOR_ENV, PublishError, parse_author
from compiler.load import MAX_FILE_BYTES
from compiler.model import DomainDeclaration
from compiler.pipeline import DOMAINS_DIR, GATEWAY_FILE
from compiler.plan import FORCE_ENV
from compiler.sync import synced
from compiler.sync.domain import Baseline, Outcome, declared_sources, sync_domain
from compiler.sync.fetch import Limits
from compiler.sync.propose import propose

EXIT_REFUSED, EXIT_USAGE = 1, 2
CREDENTIALS_ENV = "MAILGW_SYNC_CREDENTIALS"
DEFAULT_TIMEOUT = 60.0


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser("sync", help="fetch the sites' address lists into sources/; exit 1 when one is refused")
    parser.add_argument("domains", nargs="*", metavar="DOMAIN", help="the domains to sync (default: all with a source)")
    parser.add_argument("--force", action="store_true", help=f"sync a list the plan finds unsafe (also: {FORCE_ENV}=1)")
    parser.add_argument(
        "--propose",
        action="store_true",
        help="commit each changed domain on its own branch sync/<domain> off HEAD; leave the checkout alone",
    )
    parser.add_argument("--author", metavar="'NAME <EMAIL>'", help=f"of the --propose commits (default: ${AUTHOR_ENV})")
    parser.add_argument(
        "--credentials",
        type=Path,
        metavar="DIR",
        help=f"where relative credential paths of the sources are (default: ${CREDENTIALS_ENV})",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="for each fetch, whole (default: 60)"
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=MAX_FILE_BYTES,
        metavar="N",
        help=f"the largest list accepted (default: {MAX_FILE_BYTES})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    root: Path = args.root
    forced = args.force or forced_by_environment()
    credentials = args.credentials or (Path(os.environ[CREDENTIALS_ENV]) if os.environ.get(CREDENTIALS_ENV) else None)
    try:
        author_text = args.author or os.environ.get(AUTHOR_ENV)
        author = parse_author(author_text) if author_text else None
        checkout = _checkout_for_proposals(root) if args.propose else None
    except (history.HistoryError, PublishError) as err:
        print(f"mailgw: {err}", file=sys.stderr)
        return EXIT_USAGE
    sourced = declared_sources(root)
    chosen = _chosen(args.domains, sourced)
    if chosen is None:
        return EXIT_USAGE
    if not chosen:
        print("mailgw sync: no domain declares a source", file=sys.stderr)
        return 0
    baseline = Baseline(root)
    limits = Limits(args.timeout, args.max_bytes)
    refused = 0
    for name in chosen:
        outcome = sync_domain(root, sourced[name], baseline, limits, credentials=credentials, forced=forced)
        for line in outcome.findings:
            print(f"  {line}", file=sys.stderr)
        if outcome.status == "refused":
            refused += 1
            print(f"mailgw sync: {name}: not synced: {outcome.reason}", file=sys.stderr)
            continue
        if outcome.status == "unchanged":
            print(f"mailgw sync: {name}: unchanged: {outcome.reason}", file=sys.stderr)
            continue
        assert outcome.text is not None and outcome.plan is not None
        sys.stdout.write(render_text(outcome.plan, forced))
        rel = synced.relpath(name)
        if checkout is not None:
            proposal = propose(checkout, name, rel, outcome.text.encode("utf-8"), commit_message(outcome), author)
            what = "proposed" if proposal.fresh else "already proposed"
            print(f"mailgw sync: {name}: {what} on {proposal.branch} ({proposal.commit.hexsha[:12]})", file=sys.stderr)
        else:
            write_atomically(root / rel, outcome.text.encode("utf-8"))
            print(f"mailgw sync: wrote {rel}: {outcome.reason}", file=sys.stderr)
    return EXIT_REFUSED if refused else 0


def commit_message(outcome: Outcome) -> str:
    """The subject says what changes; the body is the plan, as the merge request shows it."""
    assert outcome.plan is not None
    note = f"\nwritten by 'mailgw sync' from the site's list; review it like any change of {outcome.domain}\n"
    # The reason starts with the domain: 'sync tifpa.example.org: +1 -1 ~0 addresses'.
    return f"sync {outcome.reason}\n\n{render_text(outcome.plan, verdict=False)}{note}"


def _chosen(names: list[str], sourced: dict[str, DomainDeclaration]) -> list[str] | None:
    """The domains asked for, as A-labels, each with a source; None (after saying why) when one is not."""
    if not names:
        return sorted(sourced)
    chosen = []
    for written in names:
        try:
            name = values.domain_name(written)
        except PydanticCustomError:
            name = written
        if name not in sourced:
            print(f"mailgw: {written}: no domain of this repository with a source has that name", file=sys.stderr)
            return None
        if name not in chosen:
            chosen.append(name)
    return chosen


def _checkout_for_proposals(root: Path) -> history.Checkout:
    """Proposals branch off HEAD: the declarations must be committed, or a branch would miss them."""
    checkout = history.open_checkout(root)
    if not checkout.has_commits:
        raise history.HistoryError("the repository has no commit yet; commit the declarations first")
    paths = [checkout.path(p) for p in (GATEWAY_FILE, DOMAINS_DIR, synced.SOURCES_DIR)]
    dirty = checkout.repo.git.status("--porcelain", "--untracked-files=all", "--", *paths)
    if dirty:
        names = ", ".join(line[3:] for line in dirty.splitlines())
        raise history.HistoryError(
            f"declarations differ from the last commit ({names}); proposals branch off HEAD: commit them first"
        )
    return checkout


def write_atomically(path: Path, data: bytes) -> None:
    """Replace the file in one rename: a reader sees the old list or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(staged, 0o644)
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
