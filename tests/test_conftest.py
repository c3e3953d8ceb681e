"""The skip banner: a test that cannot run its real program (or cannot run as root) is listed, and fails CI.

Each case runs pytest in a child process (on pytest-xdist workers, as the suite
runs, and for the main cases in one process too) on a three-test file, with this
repository's tests/conftest.py as its plugin and slapd hidden (--hide-program):
as if slapd were not installed, whatever this machine has.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, program

PROBE = """\
import pytest
import yaml


@pytest.mark.needs("slapd", "ldapadd")
def test_runs_slapd():
    pass


@pytest.mark.needs_root("mounting a file system")
def test_mounts():
    pass


def test_plain():
    pass
"""


# pyproject.toml runs the suite on pytest-xdist workers; the counts must come out the same in one process.
WORKERS = pytest.mark.parametrize("workers", ["2", "0"], ids=["xdist", "one-process"])


def _pytest(
    tmp_path: Path, *, ci: bool, user: list[str] | None = None, probe: str = PROBE, workers: str = "2"
) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(probe)
    tmp_path.chmod(0o777)  # the run as another user writes its own temporary directory here
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "1"} if ci else {})
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [
            *(user or []),
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",
            "-c",
            str(REPO / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "--basetemp",
            str(tmp_path / "basetemp"),
            "--hide-program",
            "slapd",
            "--numprocesses",
            workers,
            str(tmp_path / "test_probe.py"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _banner(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line == "*" * 72]
    assert len(starts) == 2, stdout
    return lines[starts[0] + 1 : starts[1]]


@WORKERS
def test_under_ci_a_missing_program_fails_the_run_and_the_banner_names_it(tmp_path, workers):
    done = _pytest(tmp_path, ci=True, workers=workers)
    assert done.returncode == 1, done.stdout + done.stderr
    banner = _banner(done.stdout)
    assert banner[:2] == [
        "REAL-PROGRAM TESTS WERE SKIPPED: these programs are not installed:",
        "  slapd: 1 test(s) skipped; install Debian package(s): slapd",
    ]
    assert banner[-1] == "CI is set: a skipped real-program or root-only test FAILS the run."
    assert "needs slapd (Debian: slapd)" in done.stdout


def test_locally_a_missing_program_is_a_loud_warning(tmp_path):
    done = _pytest(tmp_path, ci=False, workers="0")
    assert done.returncode == 0, done.stdout + done.stderr
    banner = _banner(done.stdout)
    assert "  slapd: 1 test(s) skipped; install Debian package(s): slapd" in banner
    assert not any("CI is set" in line for line in banner)


@pytest.mark.needs("setpriv")
@pytest.mark.needs_root("running the child as another user")
def test_under_ci_a_root_only_test_run_without_root_fails_the_run():
    nobody = [program("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    # Not pytest's tmp_path: its parent is root's alone, and the child runs as nobody.
    with tempfile.TemporaryDirectory(prefix="mailgw-conftest-") as tmp:
        # One process: the child as nobody starts no worker of its own (the counts' transfer is proven above).
        done = _pytest(Path(tmp), ci=True, user=nobody, workers="0")
    assert done.returncode == 1, done.stdout + done.stderr
    banner = _banner(done.stdout)
    assert "ROOT-ONLY TESTS WERE SKIPPED: this run is not root:" in banner
    assert "  1 test(s) skipped: mounting a file system" in banner
    assert "CI is set: a skipped real-program or root-only test FAILS the run." in banner


HALF_REACHED = """\
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import example, reached


@settings(max_examples=60, database=None, derandomize=True)
@given(st.integers(0, 9))
def test_returns_early_half_the_time(n):
    example("half")
    if n < 5:
        return
    reached("half", "n >= 5")
    assert n >= 5
"""


@WORKERS
def test_a_property_test_that_mostly_skips_its_assertions_fails_the_run(tmp_path, workers):
    done = _pytest(tmp_path, ci=False, probe=HALF_REACHED, workers=workers)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    [share] = [line for line in lines if line.startswith("  half: ")]
    reached, _, runs = share.removeprefix("  half: ").partition(" (")[0].partition(" of ")
    assert int(reached) < 0.8 * int(runs) and share.endswith("BELOW THE MINIMUM")
    assert "the run FAILS: a property test reached its assertions in less than 80% of examples" in lines
    assert "1 passed" in lines[-1]


def test_ci_runs_the_tests_with_ci_set():
    """.ci/run sets CI, and the workflow passes it through sudo (which would drop it): skips fail there."""
    assert 'export CI="${CI:-1}"' in (REPO / ".ci" / "run").read_text().splitlines()
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "pull-request.yml").read_text())
    runs = [step["run"] for step in workflow["jobs"]["test"]["steps"] if "make" in step.get("run", "")]
    assert runs == ["sudo --preserve-env=CI make build test"]
