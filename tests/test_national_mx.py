"""The national domain over SMTP: a real Postfix running the generated configuration, sites as sinks.

The fleet and where each national address must arrive (written here from the declarations and
docs/national-aliases.md, never asked of the compiler):

    example.it           the national domain; its own role presidenza goes to the 'national' sink
    tifpa.example.org    mario.rossi (mrossi, "Mario Rossi"), anna.deluca (adeluca, "Anna De Luca"): 'tifpa' sink
    lnf.example.org      mario.rossi (mrossi2, "Mario Rossi": a homonym), m.rossi (an alias of mrossi): 'lnf' sink
    cnaf.example.org     luca.gallo (lgallo); later a third "Mario Rossi" (mrossi3): 'cnaf' sink, over LMTP

    mario.rossi@, mrossi@        -> mario.rossi@tifpa.example.org   (mrossi comes first in uid order)
    mario.rossi2@, mrossi2@      -> mario.rossi@lnf.example.org     (the homonym's stable suffix)
    anna.deluca@                 -> anna.deluca@tifpa.example.org   (a surname of two words, joined)
    presidenza@                  -> presidenza@example.it           (the national domain's own role)
    anything else, info@ too     -> 550 5.1.1 at RCPT TO

Then mrossi chooses m.rossi@lnf.example.org as primary address, and after the rebuild his national
addresses reach the lnf sink; then a third Mario Rossi arrives, and the first two keep their aliases.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from compiler.main import main
from compiler.targets.postfix import MAPS
from tests.conftest import program
from tests.mx_harness import PostfixInstance, Sink, install, rmtree, send, sites_on_loopback, wait_for

pytestmark = [
    pytest.mark.needs("postfix", "postconf", "postmap"),
    pytest.mark.needs_root("starting Postfix"),
]

STRANGER = "127.0.0.3"
NATIONAL = "example.it"
UNKNOWN_REPLY = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in relay recipient table"


@dataclass
class MX:
    base: Path
    instance: PostfixInstance
    sinks: dict[str, Sink]

    @property
    def repo(self) -> Path:
        return self.base / "repo"

    def send(self, rcpt: str, sender: str) -> str:
        return send(self.instance.port, STRANGER, sender, rcpt)

    def arrived(self, sink: str, delivered_as: str, sender: str) -> list:
        return wait_for(
            lambda: [m for m in self.sinks[sink].received(delivered_as) if m.mail_from == sender],
            20,
            f"mail from {sender} for {delivered_as} at the {sink} sink",
        )

    def mailgw(self, *args: str) -> None:
        with sites_on_loopback():
            assert main(["--root", str(self.repo), *args]) == 0

    def rebuild(self) -> None:
        """mailgw build, then what Puppet does on a node: each map indexed, one reload."""
        self.mailgw("build", "--out", str(self.base / "out"))
        maps = self.instance.conf / "mailgw"
        for name in MAPS:
            shutil.copy(self.base / "out" / "postfix" / name, maps / name)
            done = self.instance.run(program("postmap"), "-c", str(self.instance.conf), f"lmdb:{maps / name}")
            assert done.returncode == 0, done.stderr
        done = self.instance.run(program("postfix"), "-c", str(self.instance.conf), "reload")
        assert done.returncode == 0, done.stderr

    def ledger(self) -> dict[str, list[str]]:
        return yaml.safe_load((self.repo / "national" / "aliases.yaml").read_text())["aliases"]


def _domain(root: Path, name: str, sink: Sink, recipients: str, transport: str = "smtp") -> None:
    (root / "domains" / f"{name}.yaml").write_text(
        f"domain: {name}\nsite: {name.split('.')[0].upper()}\nadmins: ['@example/mail']\n"
        f'delivery: {{nexthop: "{transport}:[127.0.0.1]:{sink.port}"}}\nrecipients:\n{recipients}'
    )


@pytest.fixture(scope="module")
def mx():
    base = Path(tempfile.mkdtemp(prefix="mailgw-national-"))
    base.chmod(0o755)  # Postfix's daemons run as 'postfix' and must traverse the path
    sinks = {"tifpa": Sink("tifpa"), "lnf": Sink("lnf"), "cnaf": Sink("cnaf", lmtp=True), "national": Sink("national")}
    sinks["internet"] = Sink("internet")
    instance = PostfixInstance(base)
    root = base / "repo"
    (root / "domains").mkdir(parents=True)
    (root / "gateway.yaml").write_text(f"""\
mx_hosts: [mx1.gw.example.org]
postmaster: mailgw-team@example.net
ldap: {{base_dn: "ou=mailgw,dc=example,dc=org"}}
postfix: {{map_directory: {instance.conf / "mailgw"}}}
national: {{domain: {NATIONAL}}}
""")
    _domain(root, NATIONAL, sinks["national"], "  presidenza: {kind: role, owners: [mrossi]}\n")
    _domain(
        root,
        "tifpa.example.org",
        sinks["tifpa"],
        '  mario.rossi: {uid: mrossi, name: "Mario Rossi"}\n  anna.deluca: {uid: adeluca, name: "Anna De Luca"}\n',
    )
    _domain(
        root,
        "lnf.example.org",
        sinks["lnf"],
        '  mario.rossi: {uid: mrossi2, name: "Mario Rossi"}\n  m.rossi: {kind: alias, uid: mrossi}\n',
    )
    _domain(root, "cnaf.example.org", sinks["cnaf"], "  luca.gallo: lgallo\n", transport="lmtp")
    mx = MX(base, instance, sinks)
    try:
        mx.mailgw("national", "assign")
        mx.mailgw("build", "--out", str(base / "out"))
        install(instance, base / "out", internet_port=sinks["internet"].port, milter="")
        instance.start()
        yield mx
    finally:
        instance.stop()
        for sink in sinks.values():
            sink.stop()
        rmtree(base)


ROUTES = [
    ("mario.rossi", "tifpa", "mario.rossi@tifpa.example.org"),
    ("Mario.Rossi", "tifpa", "mario.rossi@tifpa.example.org"),
    ("mrossi", "tifpa", "mario.rossi@tifpa.example.org"),
    ("mario.rossi2", "lnf", "mario.rossi@lnf.example.org"),
    ("mrossi2", "lnf", "mario.rossi@lnf.example.org"),
    ("anna.deluca", "tifpa", "anna.deluca@tifpa.example.org"),
    ("adeluca", "tifpa", "anna.deluca@tifpa.example.org"),
    ("presidenza", "national", f"presidenza@{NATIONAL}"),
]


def test_national_addresses_reach_the_primary_address_at_the_person_s_site(mx):
    for local, sink, delivered_as in ROUTES:
        sender = f"route-{local.lower()}@sender.example.net"
        assert mx.send(f"{local}@{NATIONAL}", sender) == "250 2.1.5 Ok", local
        [message] = mx.arrived(sink, delivered_as, sender)
        assert message.rcpt_tos == (delivered_as,)


@pytest.mark.parametrize("local", ["nobody", "info", "mario.rossi3", "rossi.mario", "lgallo.x"])
def test_an_unknown_national_address_is_refused_at_rcpt_to(mx, local):
    rcpt = f"{local}@{NATIONAL}"
    assert mx.send(rcpt, "unknown@sender.example.net") == UNKNOWN_REPLY.format(rcpt=rcpt)


def test_a_new_primary_address_changes_the_route_and_a_third_homonym_renames_nobody(mx):
    before = mx.ledger()
    assert before["mrossi"][-1] == "mario.rossi" and before["mrossi2"][-1] == "mario.rossi2"
    mx.mailgw("national", "choose", "mrossi", "--primary", "m.rossi@lnf.example.org")
    mx.rebuild()
    sender = "after-choice@sender.example.net"
    assert mx.send(f"mario.rossi@{NATIONAL}", sender) == "250 2.1.5 Ok"
    mx.arrived("lnf", "m.rossi@lnf.example.org", sender)
    assert not [m for m in mx.sinks["tifpa"].messages if m.mail_from == sender], "no longer the old primary"

    with (mx.repo / "domains" / "cnaf.example.org.yaml").open("a") as cnaf:
        cnaf.write('  mario.rossi: {uid: mrossi3, name: "Mario Rossi"}\n')
    mx.mailgw("national", "assign")
    mx.rebuild()
    after = mx.ledger()
    assert {uid: after[uid] for uid in before} == before, "nobody already there is renamed"
    assert after["mrossi3"] == ["mrossi3", "mario.rossi3"]
    for local, sink, delivered_as in [
        ("mario.rossi", "lnf", "m.rossi@lnf.example.org"),
        ("mario.rossi2", "lnf", "mario.rossi@lnf.example.org"),
        ("mario.rossi3", "cnaf", "mario.rossi@cnaf.example.org"),
        ("mrossi3", "cnaf", "mario.rossi@cnaf.example.org"),
    ]:
        sender = f"third-{local}@sender.example.net"
        assert mx.send(f"{local}@{NATIONAL}", sender) == "250 2.1.5 Ok", local
        [message] = mx.arrived(sink, delivered_as, sender)
        assert message.rcpt_tos == (delivered_as,)
