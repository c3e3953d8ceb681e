"""mailgw sync --propose: each changed domain as one commit on its own branch, sync/<domain>, off HEAD.

The commit holds the domain's sources/<domain>.yaml only, and its message is
the plan, so the merge request that the scheduled workflow opens from the
branch reads like a hand-made one and goes through the same checks and
CODEOWNERS. The commit is made from a temporary index (gitpython): the
checkout, its index and its branch are left as they were.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import git
from gitdb.base import IStream  # type: ignore[import-untyped]
from gitdb.exc import BadName, BadObject  # type: ignore[import-untyped]

from compiler.history import Checkout

BRANCH_PREFIX = "sync/"
_FILE_MODE = 0o100644


@dataclass(frozen=True)
class Proposal:
    branch: str
    commit: git.Commit
    fresh: bool  # False: the branch already held this very change on top of HEAD


def branch_name(domain: str) -> str:
    return BRANCH_PREFIX + domain


def propose(checkout: Checkout, domain: str, rel: str, data: bytes, message: str, author: git.Actor | None) -> Proposal:
    """Commit `data` as `rel` (relative to the gateway root) on sync/<domain>, on top of HEAD."""
    repo = checkout.repo
    base = repo.head.commit
    path = checkout.path(rel)
    blob = repo.odb.store(IStream(git.Blob.type, len(data), io.BytesIO(data)))
    name = branch_name(domain)
    # The same change already proposed (by an earlier run, here or pushed): keep that commit.
    for ref in (f"refs/heads/{name}", f"refs/remotes/origin/{name}"):
        try:
            earlier = repo.commit(ref)
            if earlier.parents == (base,) and (earlier.tree / path).binsha == blob.binsha:
                repo.create_head(name, earlier, force=True)
                return Proposal(name, earlier, fresh=False)
        except (BadName, BadObject, ValueError, KeyError):
            continue
    index = git.IndexFile.from_tree(repo, base)
    index.add([git.BaseIndexEntry((_FILE_MODE, blob.binsha, 0, path))], write=False)
    tree = index.write_tree()
    commit = git.Commit.create_from_tree(
        repo, tree, message, parent_commits=[base], head=False, author=author, committer=author
    )
    repo.create_head(name, commit, force=True)
    return Proposal(name, commit, fresh=True)
