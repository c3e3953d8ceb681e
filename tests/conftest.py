"""Shared fixtures: tiny gateway repositories, the CLI, and the real programs the tests run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from compiler.main import main

REPO = Path(__file__).resolve().parent.parent
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
# Which Debian package brings each program, for the message when it is missing.
PACKAGES = {
    "postmap": "postfix postfix-lmdb",
    "postconf": "postfix postfix-lmdb",
    "postfix": "postfix postfix-lmdb",
    "slapd": "slapd",
    "slapadd": "slapd",
    "ldapadd": "ldap-utils",
    "ldapsearch": "ldap-utils",
    "ldapmodify": "ldap-utils",
    "rspamd": "rspamd",
    "rspamadm": "rspamd",
    "clamd": "clamav-daemon",
    "puppet": "puppet",
    "slapcat": "slapd",
    "pg_ctlcluster": "postgresql",
    "chromium": "chromium",
    "systemd-analyze": "systemd",
    "ldapdelete": "ldap-utils",
}

GATEWAY = """\
mx_hosts: [mx1.gw.example.org, mx2.gw.example.org]
ldap: {base_dn: "ou=mailgw,dc=example,dc=org"}
"""

_skipped_for: dict[str, int] = {}


def program(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*programs): runs these real programs")


def pytest_runtest_setup(item):
    for marker in item.iter_markers("needs"):
        absent = [name for name in marker.args if program(name) is None]
        if absent:
            for name in absent:
                _skipped_for[name] = _skipped_for.get(name, 0) + 1
            pytest.skip(f"needs {', '.join(absent)} (Debian: {' '.join(PACKAGES.get(n, n) for n in absent)})")


def pytest_terminal_summary(terminalreporter):
    if not _skipped_for:
        return
    write = terminalreporter.write_line
    write("*" * 72, red=True, bold=True)
    write("REAL-PROGRAM TESTS WERE SKIPPED: these programs are not installed:", red=True, bold=True)
    for name, count in sorted(_skipped_for.items()):
        write(f"  {name}: {count} test(s) skipped; install Debian package(s): {PACKAGES.get(name, name)}", red=True)
    write("Run 'make test' as root on Debian to install them, or apt-get install them yourself.", red=True)
    write("*" * 72, red=True, bold=True)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line and not line.endswith("error(s)")]


@pytest.fixture
def make_repo(tmp_path):
    """Write a gateway repository: make_repo({'domains/x.yaml': '...'}) -> its root."""

    def make(files: dict[str, str | bytes], gateway: str | None = GATEWAY) -> Path:
        root = tmp_path / "repo"
        (root / "domains").mkdir(parents=True, exist_ok=True)
        if gateway is not None:
            (root / "gateway.yaml").write_text(gateway)
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(textwrap.dedent(content))
        return root

    return make


@pytest.fixture
def mailgw(capsys):
    """Run the CLI in-process: mailgw(root, 'build', ...) -> Result."""

    def run(root: Path, *args: str) -> Result:
        code = main(["--root", str(root), *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_mailgw_process(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "compiler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def domain_yaml(domain: str = "tifpa.example.org", **overrides: str) -> str:
    """A small valid domain declaration; keyword arguments replace whole top-level blocks."""
    blocks = {
        "domain": f"domain: {domain}\n",
        "site": "site: TIFPA\n",
        "admins": 'admins: ["@example/tifpa-mail"]\n',
        "delivery": "delivery:\n  nexthop: smtp:[smtp.tifpa.example.org]:25\n",
        "recipients": "recipients:\n  mario.rossi: mrossi\n  info: {kind: role, owners: [mrossi]}\n",
    }
    blocks.update(overrides)
    return "".join(block for block in blocks.values() if block)


# --- real Rspamd, clamd and the quarantine service, shared by the Rspamd suites (tests/rspamd_env.py) ---


@pytest.fixture(scope="session")
def hs_cache(request, tmp_path_factory) -> Path:
    """Rspamd's compiled Hyperscan databases, kept between test runs (the first compile takes ~20 s)."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("rspamd-hyperscan") if cache is not None else tmp_path_factory.mktemp("hyperscan")


@pytest.fixture(scope="session")
def clamd(tmp_path_factory):
    from tests import rspamd_env

    with rspamd_env.Clamd(tmp_path_factory.mktemp("clamd")) as daemon:
        yield daemon


@pytest.fixture(scope="session")
def quarantine_sink(tmp_path_factory):
    """The quarantine service: an HTTPS server on loopback that records every POST."""
    from tests import rspamd_env

    with rspamd_env.QuarantineSink(tmp_path_factory.mktemp("quarantine")) as server:
        yield server
