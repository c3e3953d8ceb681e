"""The MX at its edges, over SMTP: the reserved mailboxes, the HELO check, a verify site's refusal, SMTPUTF8.

A real Postfix runs the generated out/postfix on loopback (tests/mx_harness.py, as
in test_mx_e2e.py); its next hops are SMTP and LMTP sinks. The fleet, and where
each reserved address must arrive (written here from the declarations, not from
the compiler):

    gateway.yaml      postmaster: mailgw-team@example.net     (a mailbox on "the internet" sink)
    tifpa.example.org smtp, list; declares postmaster (a role), not abuse
    cnaf.example.org  lmtp, list; declares neither
    lnf.example.org   smtp, list, backup; declares abuse as an external alias, not postmaster
    ge.example.org    smtp, verify; its site knows postmaster@ and abuse@
    posta.example.org lmtp, verify; declares neither

    bare postmaster, postmaster@<node>     -> mailgw-team@example.net
    postmaster@ or abuse@ declared          -> as declared (the site, or the alias target)
    not declared, smtp next hop, list       -> the site, like any recipient
    not declared, lmtp next hop             -> mailgw-team@example.net (a mailbox server has no postmaster)
    not declared, verify domain, smtp       -> the site is asked, as for every address
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from compiler.main import main
from compiler.mx import Tables, explain
from compiler.pipeline import Compiled, compile_repository
from tests.conftest import REPO, program
from tests.mx_harness import (
    LOOPBACK,
    PostfixInstance,
    RcptAttempt,
    Sink,
    install,
    rcpt_reply,
    rmtree,
    send,
    sites_on_loopback,
    smtp_session,
    wait_for,
)

pytestmark = [
    pytest.mark.needs("postfix", "postconf", "postmap", "postqueue"),
    pytest.mark.skipif(os.geteuid() != 0, reason="starting Postfix needs root (CI runs 'sudo make test')"),
]

STRANGER = "127.0.0.3"
TEAM = "mailgw-team@example.net"
GENOVA_KNOWS = {
    "postmaster@ge.example.org",
    "abuse@ge.example.org",
    "marco.ricci@ge.example.org",
    "sindaco@xn--citt-3na.example.org",
}
# What the Genova relay answers for addresses it refuses, by local part: a site's own enhanced status codes.
GENOVA_REFUSES = {
    "disabled": "550 5.2.1 mailbox disabled",
    "full": "552 5.2.2 mailbox full",
    "nobody": "550 5.1.1 no such user here",
}


class GenovaSink(Sink):
    """The verify site's relay: known addresses accepted, the others refused with the site's own codes."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.lower().partition("@")[0]
        if local in GENOVA_REFUSES:
            with self._lock:
                self.rcpts.append(RcptAttempt(envelope.mail_from, address, False))
            code, status, text = GENOVA_REFUSES[local].split(" ", 2)
            return f"{code} {status} <{address}>: {text}"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


@dataclass
class MX:
    instance: PostfixInstance
    sinks: dict[str, Sink]
    compiled: Compiled

    def send(self, rcpt: str, helo: str = "client.example.net", sender: str = "edge-test@example.net") -> str:
        return send(self.instance.port, STRANGER, sender, rcpt, helo)

    def arrived(self, sink: str, rcpt: str, sender: str) -> list:
        return wait_for(
            lambda: [m for m in self.sinks[sink].received(rcpt) if m.mail_from == sender],
            20,
            f"mail from {sender} to {rcpt} at the {sink} sink",
        )


def _fleet(root: Path, sinks: dict[str, Sink], map_directory: Path) -> None:
    (root / "domains").mkdir(parents=True)
    (root / "gateway.yaml").write_text(f"""\
mx_hosts: [mx1.gw.example.org, mx2.gw.example.org]
postmaster: {TEAM}
ldap: {{base_dn: "ou=mailgw,dc=example,dc=org"}}
postfix: {{map_directory: {map_directory}}}
""")
    domains = {
        "tifpa.example.org": f"""\
site: TIFPA
delivery: {{nexthop: "smtp:[127.0.0.1]:{sinks["tifpa"].port}"}}
recipients:
  mario.rossi: mrossi
  postmaster: {{kind: role, owners: [mrossi]}}
""",
        "cnaf.example.org": f"""\
site: CNAF
delivery: {{nexthop: "lmtp:[127.0.0.1]:{sinks["cnaf"].port}"}}
recipients:
  luca.gallo: lgallo
""",
        "lnf.example.org": f"""\
site: LNF
role: backup
delivery: {{nexthop: "smtp:[127.0.0.1]:{sinks["lnf"].port}"}}
recipients:
  carlo.esposito: cesposito
external_aliases:
  abuse: [abuse-desk@example.com]
""",
        "ge.example.org": f"""\
site: GENOVA
delivery: {{nexthop: "[127.0.0.1]:{sinks["genova"].port}"}}
recipient_check: verify
recipients:
  marco.ricci: mricci
""",
        "xn--citt-3na.example.org": f"""\
site: GENOVA
delivery: {{nexthop: "[127.0.0.1]:{sinks["genova"].port}"}}
recipients:
  sindaco: {{kind: role, owners: [mricci]}}
""",
        "posta.example.org": f"""\
site: POSTA
delivery: {{nexthop: "lmtp:[127.0.0.1]:{sinks["posta"].port}"}}
recipient_check: verify
""",
    }
    for name, body in domains.items():
        written = "città.example.org" if name.startswith("xn--") else name  # an IDN domain, as a site writes it
        (root / "domains" / f"{name}.yaml").write_text(f"domain: {written}\nadmins: ['@example/mail']\n{body}")


@pytest.fixture(scope="module")
def mx():
    # Not pytest's tmp_path: Postfix's daemons run as 'postfix' and must traverse the path.
    base = Path(tempfile.mkdtemp(prefix="mailgw-edges-"))
    base.chmod(0o755)
    sinks = {
        "tifpa": Sink("tifpa"),
        "cnaf": Sink("cnaf", lmtp=True),
        "lnf": Sink("lnf"),
        "genova": GenovaSink("genova", known=GENOVA_KNOWS),
        "posta": Sink("posta", lmtp=True),
        "internet": Sink("internet"),
    }
    instance = PostfixInstance(base)
    try:
        _fleet(base / "repo", sinks, instance.conf / "mailgw")
        with sites_on_loopback():
            assert main(["--root", str(base / "repo"), "build", "--out", str(base / "out")]) == 0
            compiled = compile_repository(base / "repo")
        install(instance, base / "out", internet_port=sinks["internet"].port, milter="")
        instance.start()
        yield MX(instance, sinks, compiled)
    finally:
        instance.stop()
        for sink in sinks.values():
            sink.stop()
        rmtree(base)


# --- 1: the gateway's own postmaster -------------------------------------------------------------


@pytest.mark.parametrize("rcpt", ["postmaster", "Postmaster", "POSTMASTER"])
def test_bare_postmaster_goes_to_the_gateway_team_and_never_loops(mx, rcpt):
    """RFC 5321 4.5.1: RCPT TO:<postmaster> from anyone; it becomes postmaster@ the node, then the team's mailbox."""
    sender = f"bare-{rcpt}@example.net"
    assert mx.send(rcpt, sender=sender) == "250 2.1.5 Ok"
    [message] = mx.arrived("internet", TEAM, sender)
    assert message.rcpt_tos == (TEAM,)
    for name, sink in mx.sinks.items():
        assert not [m for m in sink.messages if m.mail_from == sender and TEAM not in m.rcpt_tos], name
    mx.instance.wait_for_empty_queue()
    assert not [m for m in mx.sinks["internet"].messages if m.mail_from == "" and sender in m.rcpt_tos], "no bounce"
    assert "postmaster@mx1.gw.example.org" not in "".join(
        rcpt for sink in mx.sinks.values() for m in sink.messages for rcpt in m.rcpt_tos
    )


def test_the_node_names_are_no_mail_domain_for_strangers(mx):
    for rcpt in ("postmaster@mx1.gw.example.org", "abuse@mx2.gw.example.org", "root@mx1.gw.example.org"):
        assert mx.send(rcpt) == f"554 5.7.1 <{rcpt}>: Relay access denied"


# --- 2: postmaster@ and abuse@ of every served domain ---------------------------------------------

# (recipient, the sink it must reach, the envelope recipient it must arrive with): from the table above.
RESERVED_ROUTES = [
    ("postmaster@tifpa.example.org", "tifpa", "postmaster@tifpa.example.org"),
    ("abuse@tifpa.example.org", "tifpa", "abuse@tifpa.example.org"),
    ("postmaster@cnaf.example.org", "internet", TEAM),
    ("abuse@cnaf.example.org", "internet", TEAM),
    ("postmaster@lnf.example.org", "lnf", "postmaster@lnf.example.org"),
    ("abuse@lnf.example.org", "internet", "abuse-desk@example.com"),
    ("postmaster@ge.example.org", "genova", "postmaster@ge.example.org"),
    ("abuse@ge.example.org", "genova", "abuse@ge.example.org"),
    ("postmaster@posta.example.org", "internet", TEAM),
    ("Abuse@POSTA.example.org", "internet", TEAM),
]


@pytest.mark.parametrize("rcpt, sink, delivered_as", RESERVED_ROUTES)
def test_postmaster_and_abuse_of_every_domain_are_accepted_and_reach_a_mailbox(mx, rcpt, sink, delivered_as):
    sender = f"reserved-{rcpt.lower().replace('@', '.')}@example.net"
    assert mx.send(rcpt, sender=sender) == "250 2.1.5 Ok"
    [message] = mx.arrived(sink, delivered_as, sender)
    assert message.rcpt_tos == (delivered_as,)
    if sink == "internet" and delivered_as == TEAM:
        assert not mx.sinks[rcpt.lower().split("@")[1].split(".")[0]].saw_rcpt(rcpt), "not at the mailbox server"
    assert not [m for m in mx.sinks["internet"].messages if m.mail_from == "" and sender in m.rcpt_tos], "no bounce"


@pytest.mark.parametrize("rcpt, sink, delivered_as", RESERVED_ROUTES)
def test_explain_agrees_about_the_reserved_addresses(mx, rcpt, sink, delivered_as):
    explanation = explain(mx.compiled.fleet, Tables(mx.compiled.artifacts), rcpt)
    assert explanation.accepted and explanation.reply == "250 2.1.5 Ok"
    if sink != "genova":  # a verify site decides; explain says so
        assert [d.recipient for d in explanation.deliveries] == [delivered_as]


def test_a_posta_mailbox_server_is_never_asked_about_its_reserved_addresses(mx):
    assert mx.send("abuse@posta.example.org", sender="probe-check@example.net") == "250 2.1.5 Ok"
    mx.arrived("internet", TEAM, "probe-check@example.net")
    assert not mx.sinks["posta"].saw_rcpt("abuse@posta.example.org"), "no address verification probe"


def test_every_bundled_list_domain_accepts_postmaster_and_abuse(tmp_path):
    """The repository's own fleet: every list domain's postmaster@ and abuse@ are in relay_recipients (real postmap)."""
    out = tmp_path / "out"
    assert main(["--root", str(REPO), "build", "--out", str(out)]) == 0
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_bytes((out / "postfix/main.cf").read_bytes())
    table = f"lmdb:{out / 'postfix/relay_recipients'}"

    def postmap(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([program("postmap"), "-c", str(conf), *args], capture_output=True, text=True, timeout=60)

    assert postmap(table).returncode == 0
    list_domains = [
        path.name.removesuffix(".yaml")
        for path in sorted((REPO / "domains").glob("*.yaml"))
        if yaml.safe_load(path.read_text()).get("recipient_check", "list") == "list"
    ]
    assert len(list_domains) >= 4
    for domain in list_domains:
        for local in ("postmaster", "abuse"):
            done = postmap("-q", f"{local}@{domain}", table)
            assert done.returncode == 0 and done.stdout.strip(), f"{local}@{domain} would get 550"


# --- 3: the HELO check ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "helo",
    ["mx1.gw.example.org", "mx1.gw.example.org.", "MX2.GW.EXAMPLE.ORG.", "Mx1.Gw.Example.Org..", "mx2.gw.example.org"],
)
def test_a_client_greeting_with_the_gateway_s_name_in_any_spelling_is_refused(mx, helo):
    reply = mx.send("mario.rossi@tifpa.example.org", helo=helo, sender="helo-forger@example.net")
    assert reply == f"554 5.7.1 <{helo}>: Helo command rejected: You are not this mail gateway"


@pytest.mark.parametrize("helo", ["mx1.gw.example.org.example.net", "xmx1.gw.example.org", "mx1-gw.example.org"])
def test_other_names_that_merely_contain_the_gateway_s_name_are_not_refused(mx, helo):
    assert mx.send("mario.rossi@tifpa.example.org", helo=helo, sender="helo-ok@example.net") == "250 2.1.5 Ok"


# --- 5: what a verify domain's sender sees when the site refuses ----------------------------------


def _documented_verify_refusal() -> str:
    """The reply docs/mx.md promises when a verify domain's site says no, with '<addr>' for the address."""
    rows = [line for line in (REPO / "docs/mx.md").read_text().splitlines() if "the site's relay refuses it" in line]
    assert len(rows) == 1, rows
    return re.search(r"`(550 [^`]+)`", rows[0]).group(1)


@pytest.mark.parametrize("local", sorted(GENOVA_REFUSES))
def test_a_verify_site_s_refusal_reaches_the_sender_as_docs_mx_md_says(mx, local):
    rcpt = f"{local}@ge.example.org"
    session = smtp_session(mx.instance.port, STRANGER)
    try:
        reply = rcpt_reply(session, "verify-edge@example.net", rcpt)
    finally:
        session.quit()
    assert reply == _documented_verify_refusal().replace("<addr>", f"<{rcpt}>")
    assert mx.sinks["genova"].saw_rcpt(rcpt), "the site was asked"


# --- 6: internationalised domains and SMTPUTF8 ----------------------------------------------------


def _raw_session(port: int, commands: list[bytes]) -> list[str]:
    """Each command's whole reply (continuation lines joined), for commands smtplib will not send as written."""
    with socket.create_connection((LOOPBACK, port), timeout=30, source_address=(STRANGER, 0)) as sock:
        replies, stream = [], sock.makefile("rb")
        stream.readline()  # the banner
        for command in commands:
            sock.sendall(command + b"\r\n")
            lines = [stream.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(stream.readline())
            replies.append(" | ".join(line.decode("utf-8", "replace").rstrip() for line in lines))
        return replies


def test_smtputf8_is_not_offered_so_an_idn_domain_is_reached_by_its_a_label(mx):
    """A site relay may lack SMTPUTF8, and Postfix bounces a message that requires it: the MX does not offer it."""
    ehlo, utf8_mail, mail, u_label, a_label, _ = _raw_session(
        mx.instance.port,
        [
            b"EHLO client.example.net",
            b"MAIL FROM:<eai@example.net> SMTPUTF8",
            b"MAIL FROM:<eai@example.net>",
            "RCPT TO:<sindaco@città.example.org>".encode(),
            b"RCPT TO:<sindaco@xn--citt-3na.example.org>",
            b"QUIT",
        ],
    )
    assert "SMTPUTF8" not in ehlo.upper() and "8BITMIME" in ehlo.upper()
    assert utf8_mail == "555 5.5.4 Unsupported option: SMTPUTF8"
    assert mail == "250 2.1.0 Ok"
    assert u_label == "501 5.1.3 Bad recipient address syntax", "refused at RCPT TO: nothing is queued"
    assert a_label == "250 2.1.5 Ok"
    assert mx.send("Sindaco@XN--CITT-3NA.example.org", sender="a-label@example.net") == "250 2.1.5 Ok"
    [message] = mx.arrived("genova", "Sindaco@XN--CITT-3NA.example.org", "a-label@example.net")
    assert message.rcpt_tos == ("Sindaco@XN--CITT-3NA.example.org",), "the envelope as the sender wrote it"
