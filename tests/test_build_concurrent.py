"""Two mailgw processes writing one out/: one writes, the other is refused, out/ is always a whole build.

Real processes, real signals: a build stopped (SIGSTOP, as Ctrl-Z does)
while it fills its staging directory keeps the lock, its staging directory
and out/; the build started meanwhile is refused and touches nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler import write
from compiler.pipeline import compile_repository
from tests.conftest import REPO
from tests.gitrepo import commit_all, fleet_repo

TIFPA = "domains/tifpa.example.org.yaml"
NEWCOMER = "  new.colleague: ncolleague\n"


def _busy(out: Path) -> str:
    return (
        f"mailgw: another mailgw is writing {out} (a build or publish running, or stopped with Ctrl-Z); "
        "out/ is left to it: run this again when it has finished\n"
    )


def _start(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "compiler", "-C", str(root), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def _toggle(root: Path) -> None:
    """Add or remove one recipient, so that the next build has files to write."""
    path = root / TIFPA
    text = path.read_text()
    path.write_text(
        text.replace(NEWCOMER, "") if NEWCOMER in text else text.replace("recipients:\n", f"recipients:\n{NEWCOMER}")
    )


def _stagings(root: Path) -> list[Path]:
    return sorted(root.glob(".out.staging-*"))


def assert_whole(out: Path) -> None:
    """out/ holds exactly what its MANIFEST.json lists, each file with its size and sha256."""
    manifest = json.loads((out / "MANIFEST.json").read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(manifest["artifacts"]) | {"MANIFEST.json"}
    for rel, entry in manifest["artifacts"].items():
        data = (out / rel).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}, rel


def _snapshot(out: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        p.relative_to(out).as_posix(): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
        for p in out.rglob("*")
        if p.is_file()
    }


def _alone(root: Path) -> dict[str, bytes]:
    """What one build alone writes for the declarations as they are now."""
    return compile_repository(root).artifacts


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.fixture
def fleet(tmp_path) -> Path:
    root = tmp_path / "gw"
    (root / "domains").mkdir(parents=True)
    shutil.copy(REPO / "gateway.yaml", root / "gateway.yaml")
    for path in (REPO / "domains").glob("*.yaml"):
        shutil.copy(path, root / "domains" / path.name)
    code, err = _finish(_start(root, "build"))
    assert code == 0, err
    return root


def _stop_while_staging(root: Path) -> subprocess.Popen:
    """A build with files to write, stopped (SIGSTOP) while its staging directory exists."""
    for _ in range(20):
        _toggle(root)
        first = _start(root, "build")
        while first.poll() is None:
            if _stagings(root):
                os.kill(first.pid, signal.SIGSTOP)
                return first
        assert _finish(first)[0] == 0  # it finished before it was seen writing: try again
    pytest.fail("no build was caught while writing in 20 attempts")


def test_a_stopped_build_keeps_its_staging_and_the_build_started_meanwhile_is_refused(fleet):
    out = (fleet / "out").absolute()
    first = _stop_while_staging(fleet)
    try:
        [staging] = _stagings(fleet)
        staged = sorted(p.relative_to(staging) for p in staging.rglob("*"))
        before = _snapshot(out)
        second = _start(fleet, "build")
        code, err = _finish(second)
        assert (code, err) == (2, _busy(out))
        assert _stagings(fleet) == [staging], "the refused build left the stopped build's staging directory alone"
        assert sorted(p.relative_to(staging) for p in staging.rglob("*")) == staged
        assert _snapshot(out) == before, "the refused build wrote nothing"
    finally:
        os.kill(first.pid, signal.SIGCONT)
    code, err = _finish(first)
    assert code == 0, err
    assert_whole(out)
    assert _stagings(fleet) == []
    assert _files(out) == _alone(fleet)
    code, err = _finish(_start(fleet, "build"))
    assert (code, err) == (0, f"{out} is up to date\n")


def test_builds_started_close_together_always_leave_a_whole_out(fleet):
    """Pairs of builds 0 to 80 ms apart, each pair with something to write: never a partial out/."""
    out = (fleet / "out").absolute()
    rng = random.Random(13)
    codes = []
    for _ in range(6):
        _toggle(fleet)
        first = _start(fleet, "build")
        time.sleep(rng.uniform(0, 0.08))
        second = _start(fleet, "build")
        for code, err in (_finish(first), _finish(second)):
            assert code in (0, 2), err
            assert code == 0 or err == _busy(out)
            codes.append(code)
        assert_whole(out)
        assert _stagings(fleet) == []
        assert _files(out) == _alone(fleet)
    assert 0 in codes


def test_a_killed_build_blocks_nobody_and_its_staging_is_removed(fleet):
    out = (fleet / "out").absolute()
    first = _stop_while_staging(fleet)
    [staging] = _stagings(fleet)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    first.stdout.close()
    first.stderr.close()
    code, err = _finish(_start(fleet, "build"))
    assert code == 0, err
    assert not staging.exists() and _stagings(fleet) == []
    assert_whole(out)


def test_build_and_publish_are_refused_while_another_mailgw_holds_out(tmp_path):
    root = tmp_path / "gw"
    repo = fleet_repo(root)
    _toggle(root)
    commit_all(repo, "tifpa: a new colleague")
    head, before = repo.head.commit, _snapshot(root / "out")
    holder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running build holds
        for verb in (["build"], ["publish", "--author", "CI <ci@gw.example.org>"]):
            code, err = _finish(_start(root, *verb))
            assert (code, err) == (2, _busy((root / "out").absolute())), verb
        assert _snapshot(root / "out") == before and repo.head.commit == head
    finally:
        os.close(holder)
    code, err = _finish(_start(root, "publish", "--author", "CI <ci@gw.example.org>"))
    assert code == 0, err
    assert repo.head.commit != head and not repo.is_dirty(untracked_files=True)


def test_the_lock_is_held_by_one_process_and_taken_once_per_process(tmp_path):
    out = tmp_path / "out"
    with write.exclusive(out), write.exclusive(out):  # publish holds it around write_tree, which asks again
        probe = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)
    probe = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on the way out
    finally:
        os.close(probe)
