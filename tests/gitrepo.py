"""Tiny real git repositories for the GitOps tests: the bundled fleet committed on main, then edited."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import git
import ldif

from tests.conftest import REPO

ADMIN = git.Actor("Site Admin", "admin@tifpa.example.org")
# For the git and pre-commit processes the tests start: no global configuration leaks in.
GIT_ENV = {
    "GIT_AUTHOR_NAME": ADMIN.name,
    "GIT_AUTHOR_EMAIL": ADMIN.email,
    "GIT_COMMITTER_NAME": ADMIN.name,
    "GIT_COMMITTER_EMAIL": ADMIN.email,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}
# What a gateway repository commits besides the compiler: declarations, out/, generated files.
BUNDLED = ("gateway.yaml", "domains", "national", "out", "schema", ".github/CODEOWNERS")


def init(path: Path, *, bare: bool = False) -> git.Repo:
    path.mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(path, bare=bare, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", ADMIN.name)
        config.set_value("user", "email", ADMIN.email)
        config.set_value("commit", "gpgsign", "false")
    return repo


def copy_bundled(root: Path, names: tuple[str, ...] = BUNDLED) -> Path:
    for name in names:
        source, target = REPO / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy(source, target)
    return root


def commit_all(repo: git.Repo, message: str) -> git.Commit:
    repo.git.add("--all")
    return repo.index.commit(message, author=ADMIN, committer=ADMIN)


def fleet_repo(root: Path) -> git.Repo:
    """A gateway repository whose main holds the bundled fleet and its out/."""
    repo = init(root)
    copy_bundled(root)
    commit_all(repo, "the bundled fleet")
    return repo


def edit(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new, 1))


def bundled_out() -> dict[str, bytes]:
    """The committed out/ of the bundled fleet, MANIFEST.json aside (tests/test_build.py keeps it fresh)."""
    out = REPO / "out"
    return {
        path.relative_to(out).as_posix(): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name != "MANIFEST.json"
    }


def bundled_dns() -> list[str]:
    """The DN of every entry of the bundled directory, read by the `ldif` package."""
    return [
        dn
        for rel, data in bundled_out().items()
        if rel.startswith("ldap/") and rel.endswith(".ldif")
        for dn, _ in ldif.LDIFParser(io.BytesIO(data)).parse()
        if dn
    ]


def line_of(relpath: str, text: str) -> int:
    """The 1-based line of the bundled file that holds `text`."""
    return next(i for i, line in enumerate((REPO / relpath).read_text().splitlines(), 1) if text in line)
