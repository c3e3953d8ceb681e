"""The Puppet class mailgw::slapd, proven by real `puppet apply` runs that run a real slapd.

The node lives under a temporary root. Its out/ trees are built by the
compiler (`mailgw build --out`) from the bundled fleet with a gateway.yaml
whose ldap section puts every node path under that root and the port on a
free one, so the configuration is loaded exactly as generated. The Debian
service is replaced by three shell lines given to the class (start, stop,
status), which run slapd the way /etc/init.d/slapd does, from the
/etc/default/slapd the class writes; they log each start and stop. Puppet,
slapd and every file stay under the temporary directory.

The tests run in order on one node (each Puppet run takes seconds):
first deployment, nothing to do, a change applied online, a hand edit
undone, an apply killed half-way and completed, a new reader password, a
configuration change (restart), and a configuration slapd refuses (the
previous one stays).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, program, run_mailgw_process
from tests.slapd import (
    MOVES,
    NEEDS_ROOT,
    READER_PASSWORD,
    GatewaySlapd,
    free_port,
    gateway_yaml,
    make_tls,
    normalise,
    parse_entries,
    reader_hash,
    repository,
)

pytestmark = [
    pytest.mark.needs(
        "puppet",
        "postmap",
        "slapd",
        "slapadd",
        "slapcat",
        "slapindex",
        "slaptest",
        "slappasswd",
        "ldapsearch",
        "ldapadd",
        "ldapmodify",
        "openssl",
    ),
    pytest.mark.needs_root(NEEDS_ROOT),
]

MODULE_PATH = REPO / "deploy" / "puppet"
NO_CHANGES, CHANGES = 0, 2  # puppet apply --detailed-exitcodes
FAILURES = 4  # bit set when a resource failed
BASE = "ou=mailgw,dc=example,dc=org"
MX_HOST = "mx1.gw.example.org"
NEW_PASSWORD = "another reader password"


class LdapNode:
    """An MX node under a temporary root that declares mailgw and mailgw::slapd."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "r"
        self.tls = make_tls(base / "tls")
        self.port = free_port()
        self.events = base / "events.log"
        self.hash = reader_hash()
        for directory in ("etc/postfix", "etc/rspamd/local.d", "etc/rspamd/maps.d", "etc/default", "etc/ldap"):
            (self.root / directory).mkdir(parents=True)  # what the Debian packages create
        for directory in ("var/lib/ldap", "run"):
            (self.root / directory).mkdir(parents=True)
        (base / "postfix-conf").mkdir()
        (base / "postfix-conf/main.cf").write_text("")
        self.ldap_paths = {
            "config_directory": str(self.root / "etc/ldap/mailgw.d"),
            "database_directory": str(self.root / "var/lib/ldap/mailgw"),
            "run_directory": str(self.root / "run/slapd"),
            "tls_certificate": str(self.root / "etc/mailgw/tls/ldap.crt"),
            "tls_key": str(self.root / "etc/mailgw/secrets/ldap-tls.key"),
        }
        self.pid_file = self.root / "run/slapd/slapd.pid"
        self._script("postmap", f'exec {program("postmap")} -c {base / "postfix-conf"} "$@"\n')
        # As /etc/init.d/slapd starts slapd: its -h, -F, -u and -g from /etc/default/slapd; then wait for it.
        self._script(
            "start",
            f"""\
            . {self.root / "etc/default/slapd"}
            echo start >> {self.events}
            {program("slapd")} -h "$SLAPD_SERVICES" -F "$SLAPD_CONF" -u "$SLAPD_USER" -g "$SLAPD_GROUP" $SLAPD_OPTIONS \
              || exit 1
            socket=${{SLAPD_SERVICES%% *}}
            for try in $(seq 300); do
              {program("ldapsearch")} -H "$socket" -Q -Y EXTERNAL -s base -b '' 1.1 >/dev/null 2>&1 && exit 0
              sleep 0.1
            done
            exit 1
            """,
        )
        self._script(
            "stop",
            f"""\
            pid=$(cat {self.pid_file} 2>/dev/null) || exit 0
            echo stop >> {self.events}
            kill "$pid" 2>/dev/null || exit 0
            for try in $(seq 200); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.05; done
            exit 1
            """,
        )
        self._script("status", f'kill -0 "$(cat {self.pid_file} 2>/dev/null)" 2>/dev/null\n')
        # ldapmodify killed half-way: the first half of the change records applied, then SIGKILL.
        self._script(
            "ldapmodify-killed",
            f"""\
            eval "changes=\\${{$#}}"
            {shlex.quote(sys.executable)} - "$changes" "{self.base / "half.ldif"}" <<'EOF'
            import sys
            header, *records = open(sys.argv[1]).read().split("\\n\\n")
            open(sys.argv[2], "w").write("\\n\\n".join([header, *records[: len(records) // 2]]) + "\\n")
            EOF
            echo "applying $(grep -c '^dn' {self.base / "half.ldif"}) of $(grep -c '^dn' "$changes") records" >&2
            {program("ldapmodify")} -H "$2" -Q -Y EXTERNAL -f {self.base / "half.ldif"}
            kill -KILL $$
            """,
        )

    def _script(self, name: str, body: str) -> None:
        path = self.base / name
        path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
        path.chmod(0o755)

    def out(self, name: str, edits: tuple[tuple[str, str], ...] = (), **ldap: object) -> Path:
        """`mailgw build --out` of the bundled fleet (with EDITS) for this node's paths and port."""
        gateway = gateway_yaml(
            (REPO / "gateway.yaml").read_text(), self.base, self.tls, self.port, **{**self.ldap_paths, **ldap}
        )
        repo = repository(self.base / f"repo-{name}", REPO, gateway, edits)
        done = run_mailgw_process("--root", str(repo), "build", "--out", str(self.base / f"out-{name}"), cwd=repo)
        assert done.returncode == 0, done.stderr
        return self.base / f"out-{name}"

    def manifest(self, out: Path, password_hash: str, ldapmodify: str, tls: bool) -> Path:
        secrets = self.root / "etc/mailgw/secrets"
        tls_lines = (
            f"  tls_certificate      => '{self.tls.certificate.read_text()}',\n"
            f"  tls_key              => Sensitive('{self.tls.key.read_text()}'),\n"
            if tls
            else ""
        )
        path = self.base / "site.pp"
        path.write_text(
            f"""\
class {{ 'mailgw':
  source                 => '{out}',
  state_dir              => '{self.root}/var/lib/mailgw',
  postfix_map_dir        => '{self.root}/etc/postfix/mailgw',
  postfix_config_dir     => '{self.root}/etc/postfix',
  rspamd_local_dir       => '{self.root}/etc/rspamd/local.d',
  rspamd_maps_dir        => '{self.root}/etc/rspamd/maps.d',
  ldif_dir               => '{self.root}/var/lib/mailgw/ldap',
  postmap_command        => ['{self.base}/postmap'],
  postfix_reload_command => ['/bin/true'],
  rspamd_reload_command  => ['/bin/true'],
  capture_notifier       => '{self.base}/mailgw-capture-notify',
}}
class {{ 'mailgw::slapd':
  reader_password_hash => Sensitive('{password_hash}'),
  reader_password      => Sensitive('{READER_PASSWORD}'),
  reader_password_file => '{secrets}/ldap-reader.password',
  reader_hash_file     => '{secrets}/ldap-reader.hash',
{tls_lines}  mx_host              => '{MX_HOST}',
  defaults_file        => '{self.root}/etc/default/slapd',
  user                 => 'root',
  group                => 'root',
  manage_package       => false,
  start_command        => '{self.base}/start',
  stop_command         => '{self.base}/stop',
  status_command       => '{self.base}/status',
  ldap_diff_command    => 'PYTHONPATH={REPO} {sys.executable} -m compiler ldap-diff',
  ldapmodify_command   => '{ldapmodify}',
}}
"""
        )
        return path

    def apply(
        self, out: Path, password_hash: str | None = None, ldapmodify: str = "ldapmodify", tls: bool = True
    ) -> subprocess.CompletedProcess:
        manifest = self.manifest(out, password_hash or self.hash, ldapmodify, tls)
        dirs = {name: self.base / "puppet" / name for name in ("confdir", "vardir", "codedir", "logdir", "rundir")}
        settings = [arg for name, path in dirs.items() for arg in (f"--{name}", str(path))]
        return subprocess.run(
            [program("puppet"), "apply", "--detailed-exitcodes", str(manifest), *settings]
            + ["--modulepath", str(MODULE_PATH), "--color=false"],
            capture_output=True,
            text=True,
            timeout=600,
        )

    def server(self, out: Path) -> GatewaySlapd:
        """Clients of the deployed slapd (the test's, not the class's: it neither starts nor stops it)."""
        return GatewaySlapd(out, self.tls, MX_HOST)

    def pid(self) -> int | None:
        return int(self.pid_file.read_text()) if self.pid_file.exists() else None

    def logged(self) -> list[str]:
        return self.events.read_text().split() if self.events.exists() else []

    def stop(self) -> None:
        subprocess.run([str(self.base / "stop")], timeout=30)


def directory_records(out: Path) -> dict:
    return normalise(parse_entries((out / "ldap/directory.ldif").read_bytes()))


def finds(server: GatewaySlapd, address: str, password: str = READER_PASSWORD) -> list[str]:
    """The DNs the reader finds for an address over StartTLS on loopback."""
    done = server.as_reader(
        "ldapsearch", "-LLL", "-b", BASE, f"(mailLocalAddress={address})", "1.1", url=server.tcp, password=password
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return [line[4:] for line in done.stdout.decode().splitlines() if line.startswith("dn: ")]


@pytest.fixture(scope="module")
def node() -> Iterator[LdapNode]:
    # A short path: the socket's path must fit in 108 bytes.
    node = LdapNode(Path(tempfile.mkdtemp(prefix="mailgw-pl-")))
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)


@pytest.fixture(scope="module")
def trees(node) -> dict[str, Path]:
    return {"first": node.out("first"), "moved": node.out("moved", MOVES)}


def test_the_first_run_configures_loads_and_starts_the_server(node, trees):
    run = node.apply(trees["first"])
    assert run.returncode == CHANGES, run.stdout + run.stderr
    assert node.logged() == ["start"]
    server = node.server(trees["first"])
    assert server.dump() == directory_records(trees["first"]), "slapcat holds exactly directory.ldif"
    assert finds(server, "mario.rossi@tifpa.example.org") == [f"uid=mrossi,ou=people,{BASE}"]
    # Exactly the generated configuration: slapcat -n0 shows what slapadd -n0 loaded from it.
    config = server.tool("slapcat", "-n0", "-F", str(server.config))
    assert config.returncode == 0
    assert b"olcSecurity: ssf=128\n" in config.stdout and b"olcSuffix: cn=reader," + BASE.encode() in config.stdout
    defaults = (node.root / "etc/default/slapd").read_text()
    assert f'SLAPD_SERVICES="{" ".join(server.listeners)}"\n' in defaults
    assert f'SLAPD_CONF="{server.config}"\n' in defaults
    secrets = node.root / "etc/mailgw/secrets"
    assert (secrets / "ldap-reader.hash").read_text() == f"userPassword: {node.hash}\n"
    assert (secrets / "ldap-reader.password").read_text() == READER_PASSWORD
    modes = {name: (secrets / name).stat().st_mode & 0o777 for name in ("ldap-reader.hash", "ldap-reader.password")}
    assert modes == {"ldap-reader.hash": 0o600, "ldap-reader.password": 0o640}
    assert (node.root / "etc/mailgw/secrets/ldap-tls.key").stat().st_mode & 0o777 == 0o640
    assert secrets.stat().st_mode & 0o777 == 0o711
    assert b"BEGIN CERTIFICATE" in (node.root / "etc/mailgw/tls/ldap.crt").read_bytes()


def test_a_second_run_changes_nothing(node, trees):
    pid = node.pid()
    run = node.apply(trees["first"])
    assert run.returncode == NO_CHANGES, run.stdout + run.stderr
    assert node.pid() == pid and node.logged() == ["start"]


def test_a_changed_directory_is_applied_online_and_the_reader_stays(node, trees):
    pid = node.pid()
    run = node.apply(trees["moved"])
    assert run.returncode == CHANGES, run.stdout + run.stderr
    assert node.pid() == pid and node.logged() == ["start"], "no restart, no reload"
    server = node.server(trees["moved"])
    assert server.dump() == directory_records(trees["moved"])
    assert finds(server, "m.rossi@tifpa.example.org") == [f"uid=pconti,ou=people,{BASE}"]
    assert finds(server, "seminari@tifpa.example.org") == [f"uid=mseminari,ou=people,{BASE}"]
    assert node.apply(trees["moved"]).returncode == NO_CHANGES


def test_a_server_edited_by_hand_is_brought_back(node, trees):
    server = node.server(trees["moved"])
    edits = (
        f"dn: uid=intruso,ou=people,{BASE}\nchangetype: add\nobjectClass: account\nuid: intruso\n\n"
        f"dn: uid=mrossi,ou=people,{BASE}\nchangetype: modify\ndelete: mailLocalAddress\n"
        "mailLocalAddress: mario.rossi@tifpa.example.org\n\n"
        f"dn: cn=info@tifpa.example.org,ou=roles,{BASE}\nchangetype: delete\n"
    )
    assert server.as_root("ldapmodify", data=edits.encode()).returncode == 0
    assert server.dump() != directory_records(trees["moved"])
    run = node.apply(trees["moved"])
    assert run.returncode == CHANGES, run.stdout + run.stderr
    assert server.dump() == directory_records(trees["moved"])


def test_an_apply_killed_half_way_is_completed_by_the_next_run(node, trees):
    server = node.server(trees["first"])
    killed = node.apply(trees["first"], ldapmodify=str(node.base / "ldapmodify-killed"))
    assert killed.returncode & FAILURES, killed.stdout + killed.stderr
    assert "applying " in killed.stdout + killed.stderr
    half = server.dump()
    assert half not in (directory_records(trees["first"]), directory_records(trees["moved"])), "stopped half-way"
    assert finds(server, "mario.rossi@tifpa.example.org"), "what both directories hold is there all along"
    run = node.apply(trees["first"])
    assert run.returncode == CHANGES, run.stdout + run.stderr
    assert server.dump() == directory_records(trees["first"])
    assert node.logged() == ["start"]


def test_a_new_reader_password_replaces_the_old_one(node, trees):
    server = node.server(trees["first"])
    run = node.apply(trees["first"], password_hash=reader_hash(NEW_PASSWORD))
    assert run.returncode == CHANGES, run.stdout + run.stderr
    assert finds(server, "info@tifpa.example.org", password=NEW_PASSWORD) == [
        f"cn=info@tifpa.example.org,ou=roles,{BASE}"
    ]
    refused = server.as_reader("ldapsearch", "-b", BASE, "(uid=mrossi)", url=server.tcp)
    assert refused.returncode == 49, "the old password no longer binds"
    assert node.apply(trees["first"]).returncode == CHANGES
    assert finds(server, "info@tifpa.example.org") == [f"cn=info@tifpa.example.org,ou=roles,{BASE}"]


def test_a_configuration_change_restarts_slapd_with_the_directory_kept(node, trees):
    limited = node.out("limited", size_limit=5)
    pid = node.pid()
    run = node.apply(limited)
    assert run.returncode == CHANGES, run.stdout + run.stderr
    assert node.logged() == ["start", "stop", "start"] and node.pid() != pid
    server = node.server(limited)
    assert server.dump() == directory_records(limited)
    cut = server.as_reader("ldapsearch", "-LLL", "-b", BASE, "(objectClass=*)", "1.1", url=server.tcp)
    assert cut.returncode == 4 and cut.stdout.count(b"dn: ") == 5, "the new size limit is in force"
    assert node.apply(limited).returncode == NO_CHANGES
    trees["limited"] = limited


def test_a_configuration_slapd_refuses_leaves_the_previous_one_running(node, trees):
    """A certificate file nobody installs (the class is told nothing about it): slapd cannot start with it."""
    broken = node.out("broken", size_limit=5, tls_certificate=str(node.root / "etc/mailgw/tls/missing.crt"))
    before = node.logged()
    run = node.apply(broken, tls=False)
    assert run.returncode & FAILURES, run.stdout + run.stderr
    assert "slapd did not start with the new configuration; the previous one is back" in run.stdout + run.stderr
    assert node.logged()[len(before) :] == ["stop", "start", "start"], "stopped, refused to start, started again"
    server = node.server(trees["limited"])
    assert finds(server, "mario.rossi@tifpa.example.org") == [f"uid=mrossi,ou=people,{BASE}"]
    config = server.tool("slapcat", "-n0", "-F", str(server.config))
    assert config.returncode == 0 and b"missing.crt" not in config.stdout, "the working configuration is in place"
    assert (server.config.parent / f"{server.config.name}.refused").is_dir(), "the refused one is kept to look at"
