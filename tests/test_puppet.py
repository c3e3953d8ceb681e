"""The Puppet module in deploy/puppet, proven by a real `puppet apply` into a temporary root directory.

Every run uses the compiler's real output (`mailgw build --out DIR`), main.cf and master.cf
included. A few more stand-in artifacts (a cidr table, an Rspamd override and map, an LDIF file)
exercise each category of the out/ contract; the fixture adds them to its copy of out/ and
regenerates that copy's MANIFEST.json entries, exactly as the compiler would list them
(`add_artifacts`).

The node starts as a fresh Debian one with Postfix installed with "No configuration": its
etc/postfix has no main.cf. The real postmap indexes the maps with no -c: it reads main.cf from
MAIL_CONFIG, which the module must set (the test machine has no /etc/postfix/main.cf either). The
real `postfix check` checks the new main.cf and master.cf from MAIL_CONFIG, with the node's own
queue and data directories under the temporary root. Postfix/Rspamd reloads and the LDAP loader
are small scripts that only log their calls, so each test can count them.

Puppet runs are slow (seconds each), so the first deployment is made once per module and every
test starts from a byte-for-byte copy of that node (`node.restore()`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from compiler.write import MANIFEST
from tests.conftest import REPO, program, run_mailgw_process

pytestmark = [
    pytest.mark.needs("puppet", "postmap", "postfix"),
    pytest.mark.skipif(os.geteuid() != 0, reason="postfix check creates the node's queue as root (CI runs as root)"),
]

MODULE_PATH = REPO / "deploy" / "puppet"
NO_CHANGES, CHANGES, COMPILE_FAILED = 0, 2, 1  # puppet apply --detailed-exitcodes
FAILURES = 4  # bit set when a resource failed

# Stand-ins for the categories the compiler does not emit yet; each is added only where the compiler
# wrote nothing at that path, so the compiler's own files always win.
STAND_INS = {
    "postfix/puppet_test_clients.cidr": b"# stand-in cidr table\n192.0.2.0/24\tREJECT\n",
    "rspamd/local.d/puppet_test_actions.conf": b"# stand-in override\nreject = 15;\n",
    "rspamd/maps.d/puppet_test_senders.map": b"spammer@example.net\n",
    "ldap/puppet_test.ldif": b"dn: ou=mailgw,dc=example,dc=org\nobjectClass: organizationalUnit\nou: mailgw\n",
}


def destination(artifact: str) -> str | None:
    """Where the out/ contract puts an artifact under the node's root (None: staged only)."""
    top, _, rest = artifact.partition("/")
    name = rest.rsplit("/", 1)[-1]
    if top == "postfix" and "/" not in rest:
        if "." not in name or name.endswith(".cidr"):
            return f"etc/postfix/mailgw/{name}"
        if name.endswith(".cf"):
            return f"etc/postfix/{name}"
    if top == "rspamd" and rest.startswith(("local.d/", "maps.d/")):
        return f"etc/rspamd/{rest}"
    if top == "ldap" and name.endswith(".ldif"):
        return f"var/lib/mailgw/ldap/{name}"
    return None


def add_artifacts(tree: Path, files: dict[str, bytes | None]) -> None:
    """Write (bytes) or delete (None) artifacts in a copy of out/ and regenerate their MANIFEST.json entries."""
    manifest = json.loads((tree / MANIFEST).read_text())
    for rel, data in files.items():
        if data is None:
            (tree / rel).unlink()
            del manifest["artifacts"][rel]
            continue
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
        manifest["artifacts"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (tree / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n")


def build_out(repo: Path, dest: Path) -> Path:
    """`mailgw build --out dest` as a user runs it, plus the stand-ins."""
    done = run_mailgw_process("--root", str(repo), "build", "--out", str(dest), cwd=repo)
    assert done.returncode == 0, done.stderr
    add_artifacts(dest, {rel: data for rel, data in STAND_INS.items() if not (dest / rel).exists()})
    return dest


def maps_of(tree: Path) -> list[str]:
    """The postmap sources of an out/ tree: files under postfix/ without an extension."""
    return sorted(p.name for p in (tree / "postfix").iterdir() if "." not in p.name)


@dataclass
class Run:
    code: int
    out: str
    err: str
    postmaps: list[str]  # the maps postmap indexed in this run, in order
    reloads: list[str]  # 'postfix', 'rspamd', 'ldap', in order
    checks: list[str]  # 'MAIL_CONFIG=...' of each `postfix check` in this run
    postmap_configs: list[str]  # 'MAIL_CONFIG=...' of each postmap in this run


class Node:
    """One MX node under a temporary root, deployed by puppet apply with the module."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        self.puppet_dirs = base / "puppet"
        self.postfix_conf = base / "postfix-conf"  # for the test's own queries: an empty main.cf
        self.postmap_log = base / "postmap.log"
        self.check_log = base / "check.log"
        self.reload_log = base / "reload.log"
        self.postmap_fails = base / "postmap-fails"  # while this file exists, postmap fails
        self.map_dir = self.root / "etc/postfix/mailgw"
        self.config_dir = self.root / "etc/postfix"
        self.staging = self.root / "var/lib/mailgw/out"
        for directory in (
            "etc/postfix",
            "etc/rspamd/local.d",
            "etc/rspamd/maps.d",
            "var/lib",
            "var/spool/postfix",
            "usr/local/sbin",
        ):
            (self.root / directory).mkdir(parents=True)  # what the Debian packages create: no main.cf
        (self.root / "var/lib/postfix").mkdir()
        shutil.chown(self.root / "var/lib/postfix", "postfix")
        self.postfix_conf.mkdir()
        (self.postfix_conf / "main.cf").write_text("")
        # postmap as the module runs it: no -c, so main.cf comes from MAIL_CONFIG.
        self._script(
            "postmap",
            f"""\
            [ -e '{self.postmap_fails}' ] && {{ echo 'postmap: fatal: injected failure' >&2; exit 1; }}
            echo "$*" >> '{self.postmap_log}'
            echo "MAIL_CONFIG=${{MAIL_CONFIG-}}" >> '{self.postmap_log}.env'
            exec '{program("postmap")}' "$@"
            """,
        )
        # The node's `postfix check`: the configuration in MAIL_CONFIG, with the node's queue and data directories.
        self._script(
            "postfix-check",
            f"""\
            echo "MAIL_CONFIG=${{MAIL_CONFIG-}}" >> '{self.check_log}'
            conf=$(mktemp -d) && trap 'rm -rf "$conf"' EXIT
            cp -- "$MAIL_CONFIG/main.cf" "$MAIL_CONFIG/master.cf" "$conf/" || exit 1
            printf 'queue_directory = %s\\ndata_directory = %s\\n' '{self.root}/var/spool/postfix' \\
                '{self.root}/var/lib/postfix' >> "$conf/main.cf"
            MAIL_CONFIG=$conf '{program("postfix")}' "$@"
            """,
        )
        self._script("reload", f"echo \"$1\" >> '{self.reload_log}'\n")

    def _script(self, name: str, body: str) -> None:
        path = self.base / name
        path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
        path.chmod(0o755)

    def site_manifest(self, source: str, first: str = "") -> Path:
        """The node's manifest; `first` is Puppet code applied before the class."""
        path = self.base / "site.pp"
        path.write_text(
            first
            + textwrap.dedent(f"""\
            class {{ 'mailgw':
              source                 => '{source}',
              state_dir              => '{self.root}/var/lib/mailgw',
              postfix_map_dir        => '{self.map_dir}',
              postfix_config_dir     => '{self.root}/etc/postfix',
              rspamd_local_dir       => '{self.root}/etc/rspamd/local.d',
              rspamd_maps_dir        => '{self.root}/etc/rspamd/maps.d',
              ldif_dir               => '{self.root}/var/lib/mailgw/ldap',
              postmap_command        => ['{self.base}/postmap'],
              postfix_check_command  => ['{self.base}/postfix-check', 'check'],
              postfix_reload_command => ['{self.base}/reload', 'postfix'],
              rspamd_reload_command  => ['{self.base}/reload', 'rspamd'],
              ldap_load_command      => ['{self.base}/reload', 'ldap'],
              capture_notifier       => '{self.root}/usr/local/sbin/mailgw-capture-notify',
            }}
            """)
        )
        return path

    def puppet(self, *args: str, modulepath: str = str(MODULE_PATH)) -> subprocess.CompletedProcess:
        """puppet with every directory it writes under the temporary base (nothing of the host's)."""
        dirs = {
            name: self.puppet_dirs / name
            for name in ("confdir", "vardir", "codedir", "logdir", "rundir", "ssldir", "publicdir")
        }
        settings = [arg for name, path in dirs.items() for arg in (f"--{name}", str(path))]
        return subprocess.run(
            [program("puppet"), *args, *settings, "--modulepath", modulepath, "--color=false"],
            capture_output=True,
            text=True,
            timeout=180,
        )

    def apply(self, source: Path | str, modulepath: str = str(MODULE_PATH), first: str = "") -> Run:
        logs = (self.postmap_log, self.reload_log, self.check_log, Path(f"{self.postmap_log}.env"))
        before = [len(self._lines(log)) for log in logs]
        done = self.puppet(
            "apply", "--detailed-exitcodes", str(self.site_manifest(str(source), first)), modulepath=modulepath
        )
        postmaps, reloads, checks, postmap_configs = (self._lines(log)[n:] for log, n in zip(logs, before, strict=True))
        return Run(
            done.returncode,
            done.stdout,
            done.stderr,
            [self._map_name(call) for call in postmaps],
            reloads,
            checks,
            postmap_configs,
        )

    @staticmethod
    def _map_name(postmap_args: str) -> str:
        """'lmdb:/.../.transport.building' (built under a temporary name) -> 'transport'."""
        return Path(postmap_args.split(":", 1)[1]).name.removeprefix(".").removesuffix(".building")

    @staticmethod
    def _lines(path: Path) -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    def query(self, table: str, key: str, kind: str = "lmdb", directory: Path | None = None) -> str | None:
        """What the deployed table answers, asked with the real postmap."""
        done = subprocess.run(
            [
                program("postmap"),
                "-c",
                str(self.postfix_conf),
                "-q",
                key,
                f"{kind}:{(directory or self.map_dir) / table}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.stderr == "", done.stderr
        return done.stdout.rstrip("\n") if done.returncode == 0 else None

    def files(self, root: Path | None = None) -> dict[str, bytes]:
        root = root or self.root
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    def deployed_files(self) -> dict[str, bytes]:
        """What the services read: every file but the staging copy."""
        staging = self.staging.relative_to(self.root).as_posix() + "/"
        return {rel: data for rel, data in self.files().items() if not rel.startswith(staging)}

    def snapshot(self) -> dict[str, tuple[bytes, int, int]]:
        """Every file under the root: bytes, inode and mtime (a rewrite with equal bytes shows too)."""
        return {
            rel: (data, (self.root / rel).stat().st_ino, (self.root / rel).stat().st_mtime_ns)
            for rel, data in self.files().items()
        }

    def save(self) -> None:
        self.pristine = self.base / "pristine"
        shutil.copytree(self.root, self.pristine, symlinks=True)

    def restore(self) -> None:
        """Back to the state right after the first deployment (same paths, same bytes)."""
        shutil.rmtree(self.root)
        shutil.copytree(self.pristine, self.root, symlinks=True)
        for log in (self.postmap_log, Path(f"{self.postmap_log}.env"), self.check_log, self.reload_log):
            log.unlink(missing_ok=True)
        self.postmap_fails.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def fleet_out(tmp_path_factory) -> Path:
    """The bundled fleet compiled by the real compiler, plus the stand-in categories."""
    return build_out(REPO, tmp_path_factory.mktemp("out") / "out")


@pytest.fixture(scope="module")
def first(tmp_path_factory, fleet_out) -> tuple[Node, Run]:
    """A node after its first deployment of fleet_out."""
    node = Node(tmp_path_factory.mktemp("node"))
    run = node.apply(fleet_out)
    node.save()
    return node, run


@pytest.fixture
def node(first) -> Node:
    node, _ = first
    node.restore()
    return node


# The maps a new person changes: they are a recipient, and may send as their address (gateway.yaml's submission).
NEW_PERSON_MAPS = ["relay_recipients", "sender_logins"]


def changed_fleet(tmp_path: Path, edit: str) -> Path:
    """out/ of the bundled fleet with one more line in domains/tifpa.example.org.yaml's recipients."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "domains", repo / "domains")
    shutil.copy(REPO / "gateway.yaml", repo / "gateway.yaml")
    shutil.copytree(REPO / "national", repo / "national")  # the new person's national alias waits for assign
    domain = repo / "domains/tifpa.example.org.yaml"
    domain.write_text(domain.read_text().replace("recipients:\n", f"recipients:\n  {edit}\n", 1))
    return build_out(repo, tmp_path / "out")


def test_the_module_passes_puppet_parser_validate(tmp_path):
    node = Node(tmp_path)
    manifests = sorted(str(p) for p in MODULE_PATH.rglob("*.pp"))
    assert len(manifests) >= 5
    done = node.puppet("parser", "validate", *manifests)
    assert done.returncode == 0, done.stderr
    broken = tmp_path / "broken.pp"
    broken.write_text("class broken { file { '/x': ensure => }\n")
    assert node.puppet("parser", "validate", str(broken)).returncode != 0, "the validator can fail"


def test_first_run_deploys_every_artifact_and_indexes_every_map(first, fleet_out):
    node, run = first
    assert run.code == CHANGES, run.out + run.err
    assert sorted(run.postmaps) == maps_of(fleet_out) and len(run.postmaps) >= 5
    assert sorted(run.reloads) == ["ldap", "postfix", "rspamd"], "each service once"
    assert [r for r in run.reloads if r != "ldap"] == ["rspamd", "postfix"], "main.cf names Rspamd's milter socket"
    artifacts = json.loads((fleet_out / MANIFEST).read_text())["artifacts"]
    placed = {artifact: destination(artifact) for artifact in artifacts}
    for directory in (
        "etc/postfix/mailgw/",
        "etc/postfix/",
        "etc/rspamd/local.d/",
        "etc/rspamd/maps.d/",
        "var/lib/mailgw/ldap/",
    ):
        assert any(place and place.rsplit("/", 1)[0] + "/" == directory for place in placed.values()), directory
    for artifact, place in placed.items():
        compiled = (fleet_out / artifact).read_bytes()
        assert (node.pristine / "var/lib/mailgw/out" / artifact).read_bytes() == compiled, "staged"
        if place is not None:
            assert (node.pristine / place).read_bytes() == compiled, place
    for name in maps_of(fleet_out):
        assert (node.pristine / f"etc/postfix/mailgw/{name}.lmdb").stat().st_size > 0
    notifier = node.pristine / "usr/local/sbin/mailgw-capture-notify"  # master.cf's pipe service runs it
    assert notifier.read_bytes() == (REPO / "deploy/puppet/mailgw/files/capture_notify.py").read_bytes()
    assert notifier.stat().st_mode & 0o777 == 0o755
    assert not list(node.pristine.rglob(".*building*")), "no temporary table left behind"


def test_a_fresh_node_without_main_cf_is_deployed_by_its_first_run(first, fleet_out):
    """Postfix installed with "No configuration": postmap and the check read the staged main.cf (MAIL_CONFIG)."""
    node, run = first
    assert run.code == CHANGES, run.out + run.err
    staged_config = f"MAIL_CONFIG={node.staging}/postfix"
    assert run.postmap_configs == [staged_config] * len(maps_of(fleet_out)), "postmap without -c, from MAIL_CONFIG"
    assert run.checks == [staged_config], "the new main.cf and master.cf are checked once"
    for name in ("main.cf", "master.cf"):
        assert (node.pristine / "etc/postfix" / name).read_bytes() == (fleet_out / "postfix" / name).read_bytes()


def _broken(fleet_out: Path, tmp_path: Path, name: str, line: bytes) -> Path:
    """out/ with one more address (a changed map) and a line Postfix cannot read appended to main.cf or master.cf."""
    tree = changed_fleet(tmp_path, "nuovo.arrivo: narrivo")
    add_artifacts(tree, {f"postfix/{name}": (tree / "postfix" / name).read_bytes() + line})
    return tree


@pytest.mark.parametrize(
    "name, line, complaint",
    [
        ("main.cf", b"this line is not a parameter\n", "missing '=' after attribute name"),
        ("master.cf", b"smtp inet n - n\n", "bad field count"),
    ],
)
def test_a_configuration_postfix_check_refuses_fails_the_run_and_the_running_one_stays(
    node, fleet_out, tmp_path, name, line, complaint
):
    tree = _broken(fleet_out, tmp_path, name, line)
    before = {rel: data for rel, data in node.deployed_files().items() if rel.startswith("etc/postfix/")}

    run = node.apply(tree)
    assert run.code & FAILURES, run.out + run.err
    assert complaint in run.out + run.err
    assert "mailgw postfix check" in run.out + run.err
    assert run.postmaps == [] and "postfix" not in run.reloads, "no table indexed, no reload"
    after = {rel: data for rel, data in node.deployed_files().items() if rel.startswith("etc/postfix/")}
    assert after == before, "main.cf, master.cf and every table stay as they were"
    assert node.query("relay_recipients", "nuovo.arrivo@tifpa.example.org") is None

    fixed = node.apply(changed_fleet(tmp_path / "fixed", "nuovo.arrivo: narrivo"))
    assert fixed.code == CHANGES, fixed.out + fixed.err
    assert fixed.checks == [], "the running main.cf and master.cf are the good ones: nothing new to check"
    assert fixed.postmaps == NEW_PERSON_MAPS and "postfix" in fixed.reloads
    assert node.query("relay_recipients", "nuovo.arrivo@tifpa.example.org") == "person"


def test_the_deployed_tables_answer_as_compiled(node):
    assert node.query("relay_domains", "tifpa.example.org") == "OK"
    assert node.query("relay_recipients", "mario.rossi@tifpa.example.org") == "person"
    assert node.query("relay_recipients", "nobody@tifpa.example.org") is None
    assert node.query("transport", "cnaf.example.org").startswith("lmtp:")
    assert node.query("forward_alias", "g.verdi@tifpa.example.org") == "giuseppe.verdi@example.net"
    assert node.query("puppet_test_clients.cidr", "192.0.2.7", kind="cidr") == "REJECT"
    assert node.query("puppet_test_clients.cidr", "198.51.100.7", kind="cidr") is None


def test_a_second_run_changes_nothing_and_reloads_nothing(node, fleet_out):
    before = node.snapshot()
    run = node.apply(fleet_out)
    assert run.code == NO_CHANGES, run.out + run.err
    assert run.postmaps == [] and run.reloads == [] and run.checks == []
    assert node.snapshot() == before


def test_one_changed_map_is_reindexed_alone_and_postfix_reloads_once(node, tmp_path):
    changed = changed_fleet(tmp_path, "nuovo.arrivo: narrivo")
    before = node.snapshot()
    old_table = tmp_path / "old" / "relay_recipients.lmdb"  # what a daemon holding the old table sees
    old_table.parent.mkdir()
    old_table.hardlink_to(node.map_dir / "relay_recipients.lmdb")

    run = node.apply(changed)
    assert run.code == CHANGES, run.out + run.err
    assert run.postmaps == NEW_PERSON_MAPS
    # The new person is in the directory too: the LDAP loader runs once, Postfix reloads once, Rspamd not at all.
    assert sorted(run.reloads) == ["ldap", "postfix"]
    assert node.query("relay_recipients", "nuovo.arrivo@tifpa.example.org") == "person"
    after = node.snapshot()
    changed_files = {rel for rel in after if before.get(rel) != after[rel]}
    assert changed_files == {
        *(f"etc/postfix/mailgw/{name}" for name in NEW_PERSON_MAPS),
        *(f"etc/postfix/mailgw/{name}.lmdb" for name in NEW_PERSON_MAPS),
        *(f"var/lib/mailgw/out/postfix/{name}" for name in NEW_PERSON_MAPS),
        "var/lib/mailgw/out/ldap/directory.ldif",
        "var/lib/mailgw/ldap/directory.ldif",
    }
    # The table was replaced by a rename, never rewritten in place: the old inode still holds the old table.
    assert old_table.read_bytes() == before["etc/postfix/mailgw/relay_recipients.lmdb"][0]
    assert node.query("relay_recipients", "nuovo.arrivo@tifpa.example.org", directory=old_table.parent) is None
    assert node.query("relay_recipients", "mario.rossi@tifpa.example.org", directory=old_table.parent) == "person"


def test_a_tree_that_does_not_match_its_manifest_is_refused_and_nothing_moves(node, tmp_path):
    tree = changed_fleet(tmp_path, "nuovo.arrivo: narrivo")  # a legitimate change, held back with the rest
    transport = tree / "postfix/transport"  # same size, another meaning: only the sha256 tells
    transport.write_bytes(transport.read_bytes().replace(b"lmtp:", b"smtp:"))
    (tree / "postfix/virtual_alias").unlink()
    (tree / "postfix/unlisted").write_bytes(b"x\ty\n")
    manifest = json.loads((tree / MANIFEST).read_text())
    manifest["artifacts"]["postfix/relay_domains"]["size"] += 1
    relay_domains_size = (tree / "postfix/relay_domains").stat().st_size
    (tree / MANIFEST).write_text(json.dumps(manifest))
    before = node.snapshot()

    run = node.apply(tree)
    assert run.code == COMPILE_FAILED, run.out + run.err
    assert "does not match its MANIFEST.json; nothing deployed" in run.err
    for problem in (
        f"postfix/relay_domains: {relay_domains_size} bytes, MANIFEST.json says {relay_domains_size + 1}",
        "postfix/transport: sha256 ",
        "postfix/virtual_alias: listed in MANIFEST.json but missing",
        "postfix/unlisted: in the tree but not listed in MANIFEST.json",
    ):
        assert problem in run.err, run.err
    assert "relay_recipients" not in run.err, "only the bad artifacts are named"
    assert run.postmaps == [] and run.reloads == []
    assert node.snapshot() == before, "the previous deployment stays byte for byte"
    assert node.query("transport", "cnaf.example.org").startswith("lmtp:")


def test_a_tree_changed_after_the_catalog_was_compiled_is_not_deployed(node, tmp_path):
    """out/ changes under a run (a git pull, a file server update): the staged copy fails its sha256."""
    tree = changed_fleet(tmp_path, "nuovo.arrivo: narrivo")
    add_artifacts(tree, {"rspamd/local.d/puppet_test_actions.conf": b"reject = 20;\n"})  # sound, held back too
    recipients = tree / "postfix/relay_recipients"
    tamper = (
        f"exec {{ 'out/ changes after the catalog was compiled':\n"
        f"  command => ['/bin/sed', '-i', 's/^nuovo[.]arrivo@/intruso@/', '{recipients}'],\n"
        f"  before  => Class['mailgw'],\n}}\n"
    )
    staged_recipients = (node.staging / "postfix/relay_recipients").read_bytes()
    before = node.deployed_files()

    run = node.apply(tree, first=tamper)
    assert b"intruso@" in recipients.read_bytes(), "the tree did change under the run"
    assert run.code & FAILURES, run.out + run.err
    assert "File written to disk did not match desired checksum; discarding changes" in run.err
    assert "Skipping because of failed dependencies" in run.out + run.err
    assert run.postmaps == [] and run.reloads == []
    assert node.deployed_files() == before, "nothing deployed, not even the sound change"
    assert (node.staging / "postfix/relay_recipients").read_bytes() == staged_recipients, "not even staged"


@pytest.mark.parametrize(
    "manifest, message",
    [
        (None, "MANIFEST.json is missing; refusing to deploy an unverifiable tree"),
        ("{not json", "MANIFEST.json is not JSON"),
        ('{"format": 2, "artifacts": {}}', "MANIFEST.json: format 2, expected 1"),
        (
            '{"format": 1, "artifacts": {"../../etc/shadow": {"sha256": "' + "0" * 64 + '", "size": 1}}}',
            "../../etc/shadow: not a plain relative path",
        ),
    ],
)
def test_an_unreadable_manifest_is_refused(node, tmp_path, manifest, message):
    tree = tmp_path / "out"
    tree.mkdir()
    if manifest is not None:
        (tree / MANIFEST).write_text(manifest)
    before = node.snapshot()
    run = node.apply(tree)
    assert run.code == COMPILE_FAILED and message in run.err, run.err
    assert node.snapshot() == before


def test_an_artifact_the_module_cannot_place_is_refused(node, fleet_out, tmp_path):
    tree = tmp_path / "out"
    shutil.copytree(fleet_out, tree)
    add_artifacts(tree, {"postfix/header_checks.pcre": b"/^Subject: x/ REJECT\n"})
    before = node.snapshot()
    run = node.apply(tree)
    assert run.code == COMPILE_FAILED
    assert "no rule says where these go on the MX node, so nothing is deployed: postfix/header_checks.pcre" in run.err
    assert node.snapshot() == before


def test_a_failed_postmap_keeps_the_old_table_and_the_next_run_completes_it(node, tmp_path):
    changed = changed_fleet(tmp_path, "nuovo.arrivo: narrivo")
    old_source = (node.map_dir / "relay_recipients").read_bytes()
    node.postmap_fails.touch()

    failed = node.apply(changed)
    assert failed.code & FAILURES, failed.out + failed.err
    assert "injected failure" in failed.out + failed.err
    # Postfix has nothing new to reload (the table was not replaced); the directory, also changed, loads.
    assert failed.reloads == ["ldap"]
    assert (node.map_dir / "relay_recipients").read_bytes() == old_source
    assert node.query("relay_recipients", "nuovo.arrivo@tifpa.example.org") is None
    assert node.query("relay_recipients", "mario.rossi@tifpa.example.org") == "person"
    assert not list(node.map_dir.glob(".*")), "no temporary table left behind"

    node.postmap_fails.unlink()
    retried = node.apply(changed)  # the staged copy is already current: only the index step is left
    assert retried.code == CHANGES, retried.out + retried.err
    assert retried.postmaps == NEW_PERSON_MAPS and retried.reloads == ["postfix"]
    assert node.query("relay_recipients", "nuovo.arrivo@tifpa.example.org") == "person"


def test_rolling_back_to_an_earlier_out_restores_it_and_removes_what_came_later(node, fleet_out, tmp_path):
    later = changed_fleet(tmp_path, "nuovo.arrivo: narrivo")
    add_artifacts(
        later,
        {
            "rspamd/local.d/puppet_test_later.conf": b"# came later\n",
            "postfix/puppet_test_later.cidr": b"203.0.113.0/24\tREJECT\n",
            "ldap/puppet_test.ldif": None,
        },
    )
    before = node.files()
    forward = node.apply(later)
    assert forward.code == CHANGES, forward.out + forward.err
    assert (node.root / "etc/rspamd/local.d/puppet_test_later.conf").exists()
    assert not (node.root / "var/lib/mailgw/ldap/puppet_test.ldif").exists(), "removed from out/, removed here"

    back = node.apply(fleet_out)
    assert back.code == CHANGES, back.out + back.err
    assert back.postmaps == NEW_PERSON_MAPS
    assert sorted(back.reloads) == ["ldap", "postfix", "rspamd"], "each service once"
    assert [r for r in back.reloads if r != "ldap"] == ["rspamd", "postfix"], "main.cf names Rspamd's milter socket"
    after = node.files()
    assert after.keys() == before.keys(), "what came later is gone, what went is back"
    assert {rel for rel in after if not rel.endswith(".lmdb") and after[rel] != before[rel]} == set()
    assert node.query("relay_recipients", "nuovo.arrivo@tifpa.example.org") is None
    assert (node.root / "etc/rspamd/maps.d").is_dir()


def test_out_served_as_puppet_url_deploys_the_same_files(first, fleet_out, tmp_path):
    served, _ = first
    modules = tmp_path / "modules"
    shutil.copytree(fleet_out, modules / "mailgw_out" / "files" / "out")
    node = Node(tmp_path / "node")
    run = node.apply("puppet:///modules/mailgw_out/out", modulepath=f"{MODULE_PATH}:{modules}")
    assert run.code == CHANGES, run.out + run.err
    assert sorted(run.postmaps) == maps_of(fleet_out)
    expected = {
        rel: data
        for rel, data in served.files(served.pristine).items()
        if not rel.endswith(".lmdb") and not rel.startswith("var/lib/mailgw/deployed.")
    }
    deployed = {rel: data for rel, data in node.files().items() if rel in expected}
    assert deployed == expected
    assert node.query("relay_domains", "tifpa.example.org") == "OK"
