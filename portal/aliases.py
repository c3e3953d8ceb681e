"""The national alias page: a person sees their national aliases and chooses their extended alias and primary address.

The portal never imports the compiler: it runs `mailgw` (installed beside
the portal) on its own clone of the gateway repository (portal.json
national.repository). A choice goes through the GitOps loop like any change:

1. the clone is brought to the base: origin/main after a fetch when the clone
   has a remote 'origin', else main; the person's branch national/<uid> is
   taken instead while it holds choices not merged yet;
2. `mailgw national choose` records the choice (it refuses an alias that is
   not a free form of the person's name, or an address that is not theirs);
3. `mailgw validate`, then `mailgw plan --base BASE`: either refusing stops here;
4. one commit with GitPython on national/<uid>, the plan as its message,
   pushed to origin when there is one; the merge request, its review and
   the publish of out/ then make it happen on the MX.

One request at a time works in the clone (a lock on its git directory), and
the clone is always left at the base with a clean work tree.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import git
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from portal.config import Config

log = logging.getLogger("mailgw.portal.aliases")
BRANCH_PREFIX = "national/"
BASE_BRANCH = "main"
REMOTE = "origin"
FILES = ("national/aliases.yaml", "national/choices.yaml")
TIMEOUT = 300
_threads = threading.Lock()


class Refused(Exception):
    """The rules (or the plan) refuse the choice; the message is for the person who made it."""


class RepositoryError(Exception):
    """The clone cannot be used now (missing, a fetch or push that fails): the page answers 503."""


@dataclass(frozen=True)
class Proposal:
    branch: str
    commit: str
    pushed: bool


class Page(Protocol):
    def __call__(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse: ...


class Choices:
    """`mailgw national show` and `choose` on the clone, and the commit of a choice."""

    def __init__(self, repository: str | Path, mailgw: str | Path | None = None):
        self.path = Path(repository)
        # The compiler's command comes with the portal: the same installation, the same bin directory.
        self.mailgw = Path(mailgw) if mailgw is not None else Path(sys.executable).parent / "mailgw"

    def _repo(self) -> git.Repo:
        try:
            return git.Repo(self.path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise RepositoryError(f"{self.path} is not a clone of the gateway repository") from None

    @contextmanager
    def _locked(self) -> Iterator[git.Repo]:
        repo = self._repo()
        with _threads, open(Path(repo.git_dir) / "mailgw-portal.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another portal process on the same clone waits its turn
            try:
                yield repo
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _mailgw(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [str(self.mailgw), "-C", str(self.path), *args],
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                env={**os.environ, "GITHUB_ACTIONS": "", "MAILGW_FORCE": ""},  # never forced from here
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RepositoryError(f"cannot run {self.mailgw}: {err}") from None

    def _base(self, repo: git.Repo) -> tuple[str, git.Commit]:
        """Fetch from origin when there is one: 'origin/main' (or 'main') and its commit."""
        try:
            if REMOTE in [remote.name for remote in repo.remotes]:
                repo.remote(REMOTE).fetch(prune=True)
                name = f"{REMOTE}/{BASE_BRANCH}"
            else:
                name = BASE_BRANCH
            return name, repo.commit(name)
        except (git.GitCommandError, ValueError) as err:
            raise RepositoryError(f"cannot read {BASE_BRANCH} of {self.path}: {err}") from None

    def _start(self, repo: git.Repo, uid: str, base: git.Commit) -> git.Commit:
        """The person's branch while it holds choices not merged yet, else the base; checked out, clean."""
        start = base
        for ref in (f"{REMOTE}/{BRANCH_PREFIX}{uid}", f"{BRANCH_PREFIX}{uid}"):
            try:
                tip = repo.commit(ref)
            except (git.BadName, ValueError):
                continue
            if not repo.is_ancestor(tip, base):
                start = tip
            break
        self._checkout(repo, start)
        return start

    @staticmethod
    def _checkout(repo: git.Repo, commit: git.Commit) -> None:
        repo.git.checkout("--detach", "--force", commit.hexsha)
        repo.git.clean("-fdq")

    def show(self, uid: str) -> dict[str, Any] | None:
        """What `mailgw national show UID --format json` says; None when the uid has no national alias."""
        with self._locked() as repo:
            _, base = self._base(repo)
            self._start(repo, uid, base)
            done = self._mailgw("national", "show", "--format", "json", "--", uid)
            self._checkout(repo, base)
        if done.returncode == 1:
            log.info("no national aliases for %s: %s", uid, done.stderr.strip())
            return None
        if done.returncode != 0:
            raise RepositoryError(f"mailgw national show {uid}: {done.stderr.strip()}")
        shown: dict[str, Any] = json.loads(done.stdout)
        return shown

    def propose(self, uid: str, alias: str | None, primary: str | None, author: git.Actor) -> Proposal:
        """Commit the choice on national/<uid> (and push it), or raise Refused with the reason."""
        with self._locked() as repo:
            base_name, base = self._base(repo)
            start = self._start(repo, uid, base)
            try:
                return self._propose(repo, uid, alias, primary, author, base_name, start)
            finally:
                self._checkout(repo, base)

    def _propose(
        self,
        repo: git.Repo,
        uid: str,
        alias: str | None,
        primary: str | None,
        author: git.Actor,
        base_name: str,
        start: git.Commit,
    ) -> Proposal:
        choice = [*(["--alias", alias] if alias else []), *(["--primary", primary] if primary else [])]
        if not choice:
            raise Refused("Choose an alias or a primary address first.")
        done = self._mailgw("national", "choose", *choice, "--", uid)
        if done.returncode != 0:
            raise Refused(_reason(done.stderr))
        if not repo.git.status("--porcelain", "--", *FILES):
            raise Refused("That is already your choice: nothing changes.")
        for verb in (["validate"], ["plan", "--base", base_name]):
            checked = self._mailgw(*verb)
            if checked.returncode != 0:
                log.warning("%s refused %s's choice: %s", verb[0], uid, checked.stderr.strip())
                raise Refused(f"The gateway's checks refuse this choice ({verb[0]}): {_reason(checked.stderr)}")
        plan = checked.stdout
        repo.index.add(list(FILES))
        what = ", ".join(f"{name} {value}" for name, value in (("alias", alias), ("primary", primary)) if value)
        message = (
            f"national: {uid} chooses {what}\n\n{plan}\nchosen by {uid} on the portal (docs/national-aliases.md)\n"
        )
        committer = git.Actor("mailgw portal", author.email)
        commit = repo.index.commit(message, parent_commits=[start], author=author, committer=committer)
        branch = f"{BRANCH_PREFIX}{uid}"
        repo.create_head(branch, commit, force=True)
        pushed = False
        if REMOTE in [remote.name for remote in repo.remotes]:
            try:
                repo.remote(REMOTE).push(f"refs/heads/{branch}:refs/heads/{branch}", force=True).raise_if_error()
                pushed = True
            except git.GitCommandError as err:
                raise RepositoryError(f"cannot push {branch} to {REMOTE}: {err}") from None
        log.info("%s chose %s: %s on %s", uid, what, commit.hexsha[:12], branch)
        return Proposal(branch, commit.hexsha, pushed)


def _reason(stderr: str) -> str:
    """The lines of a mailgw refusal that say why, without its 'mailgw:' prefix or the error count."""
    lines = [line.removeprefix("mailgw: ") for line in stderr.splitlines() if line and not line.endswith("error(s)")]
    lines = [line.removeprefix("national choose: refused: ") for line in lines if not line.startswith("::")]
    return " ".join(lines[:3]) or "the checks failed"


Handler = Callable[[Request, Any], Awaitable[Response]]


def routes(
    config: Config,
    signed_in: Callable[[Handler], Callable[[Request], Awaitable[Response]]],
    page: Page,
    error: Callable[..., HTMLResponse],
) -> list[Route]:
    """GET /aliases: what the person has and may choose; POST /aliases: propose a choice."""
    if config.national is None:
        return []
    choices = Choices(config.national.repository)

    async def aliases(request: Request, viewer: Any) -> Response:
        proposal, refusal, alias, primary = None, None, None, None
        try:
            if request.method == "POST":
                form = await request.form()
                alias = _text(form.get("alias"))
                primary = _text(form.get("primary"))
                author = git.Actor(viewer.uid, config.digest_sender)
                try:
                    proposal = await run_in_threadpool(choices.propose, viewer.uid, alias, primary, author)
                except Refused as refused:
                    refusal = str(refused)
            shown = await run_in_threadpool(choices.show, viewer.uid)
        except RepositoryError as err:
            log.error("%s", err)
            return error(request, 503, "Choices are not available", "Please try again in a few minutes.", viewer)
        status = 200 if refusal is None else 409
        return page(
            request,
            "aliases.html",
            status,
            viewer=viewer,
            shown=shown,
            proposal=proposal,
            refusal=refusal,
            domain=config.national.domain if config.national else "",
        )

    return [Route("/aliases", signed_in(aliases), methods=["GET", "POST"])]


def _text(value: Any) -> str | None:
    """A form field as text (at most a local part or an address long), or None when empty."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:320]
