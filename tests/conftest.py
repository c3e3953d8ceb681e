"""Shared fixtures: tiny gateway repositories, the CLI, and the real programs the tests run.

A test that runs a real program says so with `@pytest.mark.needs("prog", ...)`;
one that must run as root (starting Postfix, mounting a file system) with
`@pytest.mark.needs_root("why")`. When one of them cannot run it is skipped,
counted and listed in a banner at the end of the run; under CI (the `CI`
variable set) such a skip fails the run. `--hide-program NAME` runs the
tests as if NAME were not installed (tests/test_conftest.py proves the banner).

Property tests count the examples that reach their assertions
(`reached(...)`); the share of each is shown at the end of the run, and one
under MIN_REACHED fails it.

Under pytest-xdist (pyproject.toml runs the suite on two workers, a module
per worker) the workers send their counts to the controller, which prints
the banner and the shares and fails the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event

from compiler.main import main

REPO = Path(__file__).resolve().parent.parent
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
# Which Debian package brings each program, for the message when it is missing (scripts/system-packages).
PACKAGES = {
    "postmap": "postfix postfix-lmdb",
    "postconf": "postfix postfix-lmdb",
    "postfix": "postfix postfix-lmdb",
    "postqueue": "postfix",
    "slapd": "slapd",
    "slapadd": "slapd",
    "slapcat": "slapd",
    "ldapadd": "ldap-utils",
    "ldapsearch": "ldap-utils",
    "ldapmodify": "ldap-utils",
    "ldapdelete": "ldap-utils",
    "rspamd": "rspamd",
    "rspamadm": "rspamd",
    "clamd": "clamav-daemon",
    "puppet": "puppet",
    "openssl": "openssl",
    "unshare": "util-linux",
    "setpriv": "util-linux",
    "mount": "mount",
    "pg_ctlcluster": "postgresql",
    "chromium": "chromium",
    "systemd-analyze": "systemd",
    "postsrsd": "postsrsd",
    "named-checkzone": "bind9-utils",
    "git": "git",
    "ssh-keygen": "openssh-client",
    "jq": "jq",
    "dovecot": "dovecot-core dovecot-ldap",
    "doveconf": "dovecot-core",
}
# Examples of a property test that must reach its assertions (the rest are counted as discarded).
MIN_REACHED = 0.8

GATEWAY = """\
mx_hosts: [mx1.gw.example.org, mx2.gw.example.org]
ldap: {base_dn: "ou=mailgw,dc=example,dc=org"}
"""

_hidden: set[str] = set()
_skipped_for: Counter[str] = Counter()  # a missing program -> the tests skipped for it
_skipped_root: Counter[str] = Counter()  # why a test needs root -> the tests skipped
_skipped_other: dict[str, str] = {}  # a test that needs a program or root, skipped for another reason -> why
_examples: Counter[str] = Counter()  # property test -> examples run
_reached: Counter[str] = Counter()  # property test -> examples that reached the assertions
_COUNTED = pytest.StashKey[bool]()  # the test was skipped, and counted, by pytest_runtest_setup


def program(name: str) -> str | None:
    if name in _hidden:
        return None
    return shutil.which(name, path=SBIN_PATH)


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_addoption(parser):
    parser.addoption(
        "--hide-program",
        action="append",
        default=[],
        metavar="NAME",
        help="run as if this program were not installed (its tests are skipped, and fail the run under CI)",
    )


def pytest_configure(config):
    _hidden.update(config.getoption("--hide-program"))
    # A Postfix command given no -c of its own finds no configuration, on every machine: without this it
    # would read /etc/postfix/main.cf where Debian's installer wrote one, and fail only where it did not.
    config._mailgw_no_postfix_config = tempfile.TemporaryDirectory(prefix="mailgw-tests-")
    os.environ["MAIL_CONFIG"] = os.path.join(config._mailgw_no_postfix_config.name, "no-postfix-config-here")


def pytest_unconfigure(config):
    holder = getattr(config, "_mailgw_no_postfix_config", None)
    if holder is not None:
        holder.cleanup()


def pytest_runtest_setup(item):
    for marker in item.iter_markers("needs_root"):
        if os.geteuid() != 0:
            why = marker.args[0] if marker.args else "it runs as root"
            _skipped_root[why] += 1
            item.stash[_COUNTED] = True
            pytest.skip(f"needs root: {why}")
    absent = sorted({name for marker in item.iter_markers("needs") for name in marker.args if program(name) is None})
    if absent:
        _skipped_for.update(absent)
        item.stash[_COUNTED] = True
        pytest.skip(f"needs {', '.join(absent)} (Debian: {' '.join(PACKAGES.get(n, n) for n in absent)})")


def pytest_collection_modifyitems(items):
    """On pytest-xdist workers the modules that run `puppet apply` go first: each apply is seconds of Ruby, and
    started last they would leave one worker running them alone at the end. The order within a module stays."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    puppet = {item.path for item in items for m in item.iter_markers("needs") if "puppet" in m.args}
    items.sort(key=lambda item: item.path not in puppet)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that needs a real program or root and was skipped some other way counts as skipped too."""
    report = yield
    needy = item.get_closest_marker("needs") or item.get_closest_marker("needs_root")
    if report.skipped and needy and not hasattr(report, "wasxfail") and not item.stash.get(_COUNTED, False):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped_other[item.nodeid] = reason
    return report


def reached(test: str, what: str) -> None:
    """Count an example of a property test that reached its assertions, and tell hypothesis's statistics."""
    _reached[test] += 1
    event(f"reached the assertions: {what}")


def example(test: str) -> None:
    """Count an example of a property test (call first thing in the test)."""
    _examples[test] += 1


def _low_reach() -> list[str]:
    return [test for test, runs in _examples.items() if runs and _reached[test] / runs < MIN_REACHED]


def _counts() -> dict[str, dict[str, int] | dict[str, str]]:
    return {
        "skipped_for": dict(_skipped_for),
        "skipped_root": dict(_skipped_root),
        "skipped_other": dict(_skipped_other),
        "examples": dict(_examples),
        "reached": dict(_reached),
    }


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """Under pytest-xdist each worker counts its own skips and examples: the controller adds them up."""
    counts = getattr(node, "workeroutput", {}).get("mailgw_counts", {})
    _skipped_for.update(counts.get("skipped_for", {}))
    _skipped_root.update(counts.get("skipped_root", {}))
    _skipped_other.update(counts.get("skipped_other", {}))
    _examples.update(counts.get("examples", {}))
    _reached.update(counts.get("reached", {}))


def pytest_sessionfinish(session, exitstatus):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller judges the whole run
        workeroutput["mailgw_counts"] = _counts()
        return
    failing = under_ci() and (_skipped_for or _skipped_root or _skipped_other)
    if (failing or _low_reach()) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    write = terminalreporter.write_line
    if _examples:
        write("property tests: examples that reached their assertions")
        for test, runs in sorted(_examples.items()):
            low = "   BELOW THE MINIMUM" if _reached[test] / runs < MIN_REACHED else ""
            write(f"  {test}: {_reached[test]} of {runs} ({_reached[test] / runs:.0%}){low}", red=bool(low))
        if _low_reach():
            write(f"the run FAILS: a property test reached its assertions in less than {MIN_REACHED:.0%} of examples")
    if not (_skipped_for or _skipped_root or _skipped_other):
        return
    write("*" * 72, red=True, bold=True)
    if _skipped_for:
        write("REAL-PROGRAM TESTS WERE SKIPPED: these programs are not installed:", red=True, bold=True)
        for name, count in sorted(_skipped_for.items()):
            write(f"  {name}: {count} test(s) skipped; install Debian package(s): {PACKAGES.get(name, name)}", red=True)
        write("Run 'make test' as root on Debian to install them, or apt-get install them yourself.", red=True)
    if _skipped_root:
        write("ROOT-ONLY TESTS WERE SKIPPED: this run is not root:", red=True, bold=True)
        for why, count in sorted(_skipped_root.items()):
            write(f"  {count} test(s) skipped: {why}", red=True)
        write("Run 'sudo make test' (as CI does) to run them.", red=True)
    if _skipped_other:
        write("TESTS OF REAL PROGRAMS SKIPPED FOR ANOTHER REASON:", red=True, bold=True)
        for nodeid, why in sorted(_skipped_other.items()):
            write(f"  {nodeid}: {why}", red=True)
    if under_ci():
        write("CI is set: a skipped real-program or root-only test FAILS the run.", red=True, bold=True)
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
    # One directory per pytest-xdist worker: two Rspamds never write the same database file at once.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    name = f"rspamd-hyperscan-{worker}" if worker else "rspamd-hyperscan"
    return cache.mkdir(name) if cache is not None else tmp_path_factory.mktemp("hyperscan")


@pytest.fixture(scope="module")
def rspamadm_hs_cache(tmp_path_factory) -> Path:
    """hs_cache for the rspamadm runs of one module (configtest, configdump): each regexp map compiled once.

    rspamadm compiles the Hyperscan database of every regexp map it loads, most of its run time on a fresh tree.
    The module's own directory: its rspamadm runs come one at a time, and nothing else compiles into it.
    """
    return tmp_path_factory.mktemp("rspamadm-hyperscan")


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
