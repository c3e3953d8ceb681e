"""The repository's history, read through gitpython: what the declarations and out/ were at a revision.

plan compares the working tree with a revision; publish commits out/. Both
need the same few questions answered about the git repository around the
gateway root, and nothing here writes to it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import git
from gitdb.exc import BadName, BadObject  # type: ignore[import-untyped]

from compiler.errors import UserError, file_error
from compiler.findings import FindingsError
from compiler.fleet import Fleet, build_fleet
from compiler.national import NATIONAL_DIR
from compiler.pipeline import DOMAINS_DIR, GATEWAY_FILE, load_declarations
from compiler.sync.synced import SOURCES_DIR

MAIN_BRANCHES = ("main", "origin/main")
OUT_DIR = "out"
_SYMLINK_MODE = 0o120000


class HistoryError(UserError):
    """The revision asked for cannot be read (a usage problem, exit 2)."""


@dataclass(frozen=True)
class Checkout:
    """The git repository holding the gateway root, and the root's path inside it ('' at the top)."""

    repo: git.Repo
    prefix: str

    def path(self, rel: str) -> str:
        return str(PurePosixPath(self.prefix, rel)) if self.prefix else rel

    @property
    def has_commits(self) -> bool:
        return self.repo.head.is_valid()


@dataclass(frozen=True)
class Revision:
    """What a commit held: its Fleet (None: no declarations yet) and its committed out/."""

    label: str
    fleet: Fleet | None
    artifacts: dict[str, bytes]


EMPTY = Revision("nothing (no declarations yet)", None, {})


def open_checkout(root: Path) -> Checkout:
    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise HistoryError(f"{root.absolute()} is not inside a git repository") from None
    if repo.bare or repo.working_tree_dir is None:
        raise HistoryError(f"{root} is in a bare git repository; run mailgw in a checkout")
    prefix = root.resolve().relative_to(Path(repo.working_tree_dir).resolve()).as_posix()
    return Checkout(repo, "" if prefix == "." else prefix)


def resolve(checkout: Checkout, ref: str) -> git.Commit:
    try:
        return checkout.repo.commit(ref)
    except (BadName, BadObject, ValueError):
        raise HistoryError(f"unknown revision '{ref}'") from None


def default_base(checkout: Checkout) -> git.Commit | None:
    """The merge base of HEAD with main (or origin/main); None before the first commit."""
    if not checkout.has_commits:
        return None
    repo = checkout.repo
    for name in MAIN_BRANCHES:
        try:
            main = repo.commit(name)
        except (BadName, BadObject, ValueError):
            continue
        bases = repo.merge_base(repo.head.commit, main)
        if not bases:
            raise HistoryError(f"HEAD and '{name}' share no history; pass --base REF")
        return bases[0]
    raise HistoryError("there is no branch 'main' to compare with; pass --base REF")


def last_publish(checkout: Checkout) -> git.Commit | None:
    """The newest commit that changed out/: the declarations that out/ was built from."""
    if not checkout.has_commits:
        return None
    return next(checkout.repo.iter_commits(paths=checkout.path(OUT_DIR), max_count=1), None)


def files_at(commit: git.Commit, path: str) -> dict[str, bytes]:
    """Every blob under the directory `path` at `commit`, by path relative to it."""
    return {rel: blob.data_stream.read() for rel, blob in _blobs(commit, path)}


def revision(checkout: Checkout, commit: git.Commit | None, label: str) -> Revision:
    """The Fleet declared at `commit` and the out/ committed there."""
    if commit is None:
        return EMPTY
    label = f"{label} ({commit.hexsha[:12]})"
    artifacts = files_at(commit, checkout.path(OUT_DIR))
    try:
        gateway = commit.tree / checkout.path(GATEWAY_FILE)
    except KeyError:
        return Revision(label, None, artifacts)
    try:
        with tempfile.TemporaryDirectory(prefix="mailgw-base-") as tmp:
            root = Path(tmp)
            _materialise(root / GATEWAY_FILE, gateway)
            for directory in (DOMAINS_DIR, SOURCES_DIR, NATIONAL_DIR):
                for rel, blob in _blobs(commit, checkout.path(directory)):
                    _materialise(root / directory / rel, blob)
            try:
                declarations = load_declarations(root, cross_checked=False)
            except FindingsError as err:
                raise HistoryError(
                    f"the declarations at {label} do not load with this compiler "
                    f"({len(err.findings)} finding(s); first: {err.findings[0]}); "
                    "compare with another --base"
                ) from None
    except OSError as err:  # the temporary directory (TMPDIR): full, read-only, not ours
        where = tempfile.gettempdir()
        raise HistoryError(str(file_error(f"read the declarations at {label} into", err, where))) from None
    return Revision(label, build_fleet(declarations), artifacts)


def _blobs(commit: git.Commit, path: str) -> Iterator[tuple[str, git.Blob]]:
    try:
        tree = commit.tree / path
    except KeyError:
        return
    if not isinstance(tree, git.Tree):
        return
    for item in tree.traverse():
        if isinstance(item, git.Blob):
            yield PurePosixPath(item.path).relative_to(path).as_posix(), item


def _materialise(target: Path, blob: git.Blob) -> None:
    """Write a blob as the file (or symbolic link) the checkout would have."""
    target.parent.mkdir(parents=True, exist_ok=True)
    data = blob.data_stream.read()
    if blob.mode == _SYMLINK_MODE:
        os.symlink(os.fsdecode(data), target)
    else:
        target.write_bytes(data)
