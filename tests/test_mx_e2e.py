"""The MX on the wire: a real Postfix runs the generated out/postfix on loopback, and real SMTP sessions test it.

A test fleet is compiled by `mailgw build` like any other. Its next hops are
SMTP and LMTP sinks (aiosmtpd) on 127.0.0.1, one per site, the first next hop
of two domains is a dead port (so the fallback hop is used), its site relay is
127.0.0.2, and its map_directory is the test instance's. Clients connect from
127.0.0.x source addresses:

    127.0.0.2  a relay of site TIFPA (outbound_relays)
    127.0.0.3  a stranger on the internet
    127.0.0.4  allowlisted by postscreen (gateway access list: permit)
    127.0.0.5  denylisted by postscreen (gateway access list: reject)

The generated main.cf and master.cf are copied as they are and the maps are
indexed with postmap, as Puppet does on a node. Then, for this instance only:

    queue_directory, data_directory  private directories (paths)
    master.cf 'smtp inet'            becomes '127.0.0.1:PORT inet' (a free port)
    inet_interfaces = 127.0.0.1      nothing listens beyond loopback
    myhostname = mx1.gw.example.org  what Puppet gives each node (its host name)
    relayhost = [127.0.0.1]:PORT     'the internet' is a sink, not the MX hosts in DNS
    smtpd_peername_lookup = no       no reverse DNS for 127.0.0.x: no traffic leaves loopback
    maillog_file(_prefixes)          Postfix logs to a file the tests read
    smtpd_milters =                  no Rspamd here (test_filtering_e2e.py runs one)

The test fleet declares no DNSBL sites, since their queries would leave
loopback; the postscreen access list is exercised instead.
"""

from __future__ import annotations

import concurrent.futures
import re
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from compiler.main import main
from compiler.mx import REJECTED, SITE_DECIDES, Tables, explain
from compiler.pipeline import compile_repository
from tests.conftest import program
from tests.mx_harness import (
    PostfixInstance,
    Sink,
    free_port,
    install,
    rcpt_reply,
    rmtree,
    send,
    sites_on_loopback,
    smtp_session,
    wait_for,
)

pytestmark = [
    pytest.mark.needs("postfix", "postconf", "postmap", "postqueue", "openssl"),
    pytest.mark.needs_root("starting Postfix"),
]

SITE_RELAY, STRANGER, ALLOWLISTED, DENYLISTED = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
GENOVA_KNOWS = {"marco.ricci@ge.example.org", "info@ge.example.org", "new.colleague@ge.example.org"}


@dataclass
class MX:
    port: int
    instance: PostfixInstance
    sinks: dict[str, Sink]
    root: Path
    compiled: object

    def send(self, client: str, sender: str, rcpt: str, helo: str = "client.example.net") -> str:
        return send(self.port, client, sender, rcpt, helo)

    def delivered(self, sink: str, rcpt: str, timeout: float = 20):
        return wait_for(lambda: self.sinks[sink].received(rcpt), timeout, f"{rcpt} to arrive at the {sink} sink")

    def nowhere_else(self, sink: str, rcpt: str) -> None:
        for name, other in self.sinks.items():
            if name != sink:
                assert not other.received(rcpt), f"{rcpt} also arrived at the {name} sink"

    def bounces_to(self, sender: str) -> list:
        return [m for m in self.sinks["internet"].received(sender) if m.mail_from == ""]


def _fleet(root: Path, sinks: dict[str, Sink], map_directory: Path) -> None:
    dead = free_port()  # nothing listens there: the next hop after it must be used
    (root / "domains").mkdir(parents=True)
    (root / "gateway.yaml").write_text(f"""\
mx_hosts: [mx1.gw.example.org, mx2.gw.example.org]
ldap: {{base_dn: "ou=mailgw,dc=example,dc=org"}}
postfix: {{map_directory: {map_directory}}}
postscreen:
  access:
    {ALLOWLISTED}/32: permit
    {DENYLISTED}/32: reject
""")
    domains = {
        "tifpa.example.org": f"""\
site: TIFPA
admins: ["@example/tifpa-mail"]
delivery:
  nexthop: ["smtp:[127.0.0.1]:{dead}", "smtp:[127.0.0.1]:{sinks["tifpa"].port}"]
outbound_relays: [{SITE_RELAY}]
recipients:
  mario.rossi: mrossi
  info: {{kind: role, owners: [mrossi]}}
external_aliases:
  g.verdi: [giuseppe.verdi@example.net]
""",
        "cnaf.example.org": f"""\
site: CNAF
admins: ["@example/cnaf-mail"]
delivery:
  nexthop: ["lmtp:[127.0.0.1]:{dead}", "lmtp:[127.0.0.1]:{sinks["cnaf"].port}"]
recipients:
  luca.gallo: lgallo
""",
        "ge.example.org": f"""\
site: GENOVA
admins: ["@example/genova-mail"]
delivery:
  nexthop: "[127.0.0.1]:{sinks["genova"].port}"
recipient_check: verify
recipients:
  marco.ricci: mricci
external_aliases:
  ext.friend: [friend@example.net]
""",
        "lnf.example.org": f"""\
site: LNF
admins: ["@example/lnf-mail"]
role: backup
delivery:
  nexthop: "smtp:[127.0.0.1]:{sinks["lnf"].port}"
recipients:
  carlo.esposito: cesposito
""",
    }
    for name, body in domains.items():
        (root / "domains" / f"{name}.yaml").write_text(f"domain: {name}\n" + body)


@pytest.fixture(scope="module")
def mx():
    # Not pytest's tmp_path: Postfix's daemons run as 'postfix' and must traverse the path.
    base = Path(tempfile.mkdtemp(prefix="mailgw-mx-"))
    base.chmod(0o755)
    sinks = {
        "tifpa": Sink("tifpa"),
        "cnaf": Sink("cnaf", lmtp=True),
        "genova": Sink("genova", known=GENOVA_KNOWS),
        "lnf": Sink("lnf"),
        "internet": Sink("internet"),
    }
    instance = PostfixInstance(base)
    try:
        root = base / "repo"
        _fleet(root, sinks, instance.conf / "mailgw")
        with sites_on_loopback():
            assert main(["--root", str(root), "build", "--out", str(base / "out")]) == 0
            compiled = compile_repository(root)
        # No milter: the filtering has its own suite (test_filtering_e2e.py).
        install(instance, base / "out", internet_port=sinks["internet"].port, milter="")
        instance.start()
        yield MX(instance.port, instance, sinks, root, compiled)
    finally:
        instance.stop()
        for sink in sinks.values():
            sink.stop()
        rmtree(base)


def test_postfix_check_passes_and_the_instance_starts_cleanly(mx):
    """'postfix check' on the generated configuration in a private layout, then the start: no warning."""
    done = mx.instance.run(program("postfix"), "-c", str(mx.instance.conf), "check")
    assert done.returncode == 0 and done.stderr == ""
    problems = [line for line in mx.instance.log().splitlines() if re.search(r"\b(warning|error|fatal|panic):", line)]
    assert problems == []
    assert "daemon started" in mx.instance.log()


def test_unknown_recipient_of_a_list_domain_gets_550_and_nothing_is_queued_or_bounced(mx):
    sender = "unknown-test@example.net"
    for rcpt in ("nobody@tifpa.example.org", "nobody@cnaf.example.org", "nobody@lnf.example.org"):
        reply = mx.send(STRANGER, sender, rcpt)
        assert reply == (f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in relay recipient table")
    # From a site relay too: an unknown address of a gateway domain never enters the queue.
    assert mx.send(SITE_RELAY, sender, "nobody@tifpa.example.org").startswith("550 5.1.1 ")
    logged = "NOQUEUE: reject: RCPT from unknown[127.0.0.3]: 550 5.1.1 <nobody@tifpa.example.org>"
    wait_for(lambda: logged in mx.instance.log(), 10, "Postfix to log the refusal")
    mx.instance.wait_for_empty_queue()
    assert mx.instance.queue_files() == []
    assert "Mail queue is empty" in mx.instance.queue_listing()
    assert mx.bounces_to(sender) == []
    for sink in mx.sinks.values():
        assert not sink.saw_rcpt("nobody@tifpa.example.org")


def test_declared_recipient_arrives_at_its_site_with_the_envelope_unchanged(mx):
    sender = "Alice.Sender+x@example.net"
    assert mx.send(STRANGER, sender, "mario.rossi@tifpa.example.org") == "250 2.1.5 Ok"
    [message] = mx.delivered("tifpa", "mario.rossi@tifpa.example.org")
    assert message.mail_from == sender
    assert message.rcpt_tos == ("mario.rossi@tifpa.example.org",)
    mx.nowhere_else("tifpa", "mario.rossi@tifpa.example.org")
    # The first next hop is dead, so the second one of the list took the mail.
    assert re.search(
        r"postfix/smtp\[\d+\]: connect to 127\.0\.0\.1\[127\.0\.0\.1\]:\d+: Connection refused", mx.instance.log()
    )


def test_case_variants_and_plus_extensions_are_accepted_and_delivered_as_written(mx):
    for rcpt in (
        "Mario.Rossi@TIFPA.Example.ORG",
        "mario.rossi+seminars@tifpa.example.org",
        "MARIO.ROSSI+Talk@Tifpa.example.org",
    ):
        assert mx.send(STRANGER, "case-test@example.net", rcpt) == "250 2.1.5 Ok"
        [message] = mx.delivered("tifpa", rcpt)
        assert message.rcpt_tos == (rcpt,), "the envelope recipient keeps its case and +extension"
    # The extension never stands for the user: nobody+mario.rossi is nobody.
    assert mx.send(STRANGER, "case-test@example.net", "nobody+mario.rossi@tifpa.example.org").startswith("550 5.1.1")


def test_lmtp_domain_is_delivered_to_the_site_mailbox_server(mx):
    assert mx.send(STRANGER, "lmtp-test@example.net", "luca.gallo@cnaf.example.org") == "250 2.1.5 Ok"
    [message] = mx.delivered("cnaf", "luca.gallo@cnaf.example.org")
    assert message.mail_from == "lmtp-test@example.net"
    assert re.search(
        r"postfix/lmtp\[\d+\]: [0-9A-F]+: to=<luca\.gallo@cnaf\.example\.org>, "
        rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{mx.sinks['cnaf'].port}, .*status=sent",
        mx.instance.log(),
    )


def test_external_alias_arrives_at_the_external_destination_and_not_at_the_site(mx):
    for rcpt in ("g.verdi@tifpa.example.org", "G.Verdi+news@TIFPA.example.org"):
        sender = f"alias-test-{len(rcpt)}@example.net"
        assert mx.send(STRANGER, sender, rcpt) == "250 2.1.5 Ok"
        wait_for(
            lambda sender=sender: [
                m for m in mx.sinks["internet"].received("giuseppe.verdi@example.net") if m.mail_from == sender
            ],
            20,
            "the alias target to arrive",
        )
    assert not mx.sinks["tifpa"].saw_rcpt("g.verdi@tifpa.example.org")
    assert not mx.sinks["internet"].received("giuseppe.verdi+news@example.net"), "the +extension is not passed on"


def test_backup_mx_domain_is_relayed_to_its_site(mx):
    assert mx.send(STRANGER, "backup-test@example.net", "carlo.esposito@lnf.example.org") == "250 2.1.5 Ok"
    [message] = mx.delivered("lnf", "carlo.esposito@lnf.example.org")
    assert message.mail_from == "backup-test@example.net"
    mx.nowhere_else("lnf", "carlo.esposito@lnf.example.org")


def test_domains_the_gateway_does_not_serve_get_relay_access_denied(mx):
    for rcpt in ("someone@example.com", "x@sub.tifpa.example.org", "root@mx1.gw.example.org"):
        assert mx.send(STRANGER, "relay-test@example.net", rcpt) == f"554 5.7.1 <{rcpt}>: Relay access denied"
    mx.instance.wait_for_empty_queue()


def test_a_site_relay_may_send_outbound_and_no_other_client_may(mx):
    assert mx.send(SITE_RELAY, "mario.rossi@tifpa.example.org", "colleague@example.com") == "250 2.1.5 Ok"
    [message] = mx.delivered("internet", "colleague@example.com")
    assert message.mail_from == "mario.rossi@tifpa.example.org"
    for client in (STRANGER, ALLOWLISTED):
        assert (
            mx.send(client, "mario.rossi@tifpa.example.org", "other@example.com")
            == "554 5.7.1 <other@example.com>: Relay access denied"
        )
    assert not mx.sinks["internet"].received("other@example.com")


def test_verify_domain_asks_its_site_and_answers_as_the_site_does(mx):
    rcpts = ["nobody@ge.example.org", "marco.ricci@ge.example.org", "new.colleague@ge.example.org"]

    def ask(rcpt):
        session = smtp_session(mx.port, STRANGER)
        try:
            return rcpt_reply(session, "verify-test@example.net", rcpt)
        finally:
            session.quit()

    # In parallel: each first answer waits for the site's reply to the MX's probe.
    with concurrent.futures.ThreadPoolExecutor(len(rcpts)) as pool:
        replies = dict(zip(rcpts, pool.map(ask, rcpts), strict=False))
    assert replies["nobody@ge.example.org"] == (
        "550 5.1.1 <nobody@ge.example.org>: Recipient address rejected: "
        "undeliverable address: Recipient address unknown at its site"
    )
    assert replies["marco.ricci@ge.example.org"] == "250 2.1.5 Ok"
    assert replies["new.colleague@ge.example.org"] == "250 2.1.5 Ok", "known to the site, not declared: accepted"
    assert mx.sinks["genova"].saw_rcpt("nobody@ge.example.org")[0].mail_from == "double-bounce@mx1.gw.example.org"
    assert mx.send(STRANGER, "verify-test@example.net", "new.colleague@ge.example.org") == "250 2.1.5 Ok"
    mx.delivered("genova", "new.colleague@ge.example.org")


def test_external_alias_of_a_verify_domain_is_not_probed(mx):
    assert mx.send(STRANGER, "verify-alias@example.net", "ext.friend@ge.example.org") == "250 2.1.5 Ok"
    mx.delivered("internet", "friend@example.net")
    assert not mx.sinks["genova"].saw_rcpt("ext.friend@ge.example.org")
    assert not mx.sinks["internet"].saw_rcpt("friend@example.net")[0].mail_from.startswith("double-bounce")


def test_postscreen_drops_a_denylisted_client(mx):
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtp_session(mx.port, DENYLISTED)
    assert refused.value.smtp_code == 521
    # postlogd writes the log line on its own time, possibly after the client saw the 521.
    wait_for(lambda: f"DENYLISTED [{DENYLISTED}]" in mx.instance.log(), 10, "postscreen to log the denylisting")


def test_a_client_greeting_with_the_gateway_s_own_name_is_refused(mx):
    reply = mx.send(STRANGER, "helo-test@example.net", "mario.rossi@tifpa.example.org", helo="MX1.gw.example.org")
    assert reply == "554 5.7.1 <MX1.gw.example.org>: Helo command rejected: You are not this mail gateway"


def test_starttls_is_offered_with_the_node_certificate(mx):
    session = smtp_session(mx.port, STRANGER)
    try:
        assert session.has_extn("starttls")
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        assert session.starttls(context=context)[0] == 220
        certificate = session.sock.getpeercert(binary_form=True)
        assert certificate and b"mx1.gw.example.org" in certificate
        assert not session.has_extn("vrfy")
    finally:
        session.quit()


EXPLAINED = [
    ("mario.rossi@tifpa.example.org", STRANGER),
    ("Mario.Rossi+Talk@TIFPA.example.org", STRANGER),
    ("info@tifpa.example.org", STRANGER),
    ("nobody@tifpa.example.org", STRANGER),
    ("nobody@tifpa.example.org", SITE_RELAY),
    ("g.verdi+x@tifpa.example.org", STRANGER),
    ("luca.gallo@cnaf.example.org", STRANGER),
    ("carlo.esposito@lnf.example.org", STRANGER),
    ("nobody@lnf.example.org", ALLOWLISTED),
    ("x@sub.tifpa.example.org", STRANGER),
    ("someone@example.com", STRANGER),
    ("someone@example.com", ALLOWLISTED),
    ("someone@example.com", SITE_RELAY),
    ("nobody@ge.example.org", STRANGER),
    ("marco.ricci@ge.example.org", STRANGER),
    ("ext.friend@ge.example.org", STRANGER),
    ("mario.rossi@tifpa.example.org", DENYLISTED),
]


@pytest.mark.parametrize("address,client", EXPLAINED)
def test_explain_agrees_with_postfix(mx, mailgw, address, client):
    explanation = explain(mx.compiled.fleet, Tables(mx.compiled.artifacts), address, client)
    if explanation.stage == "connect":
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtp_session(mx.port, client)
        assert f"{refused.value.smtp_code} {refused.value.smtp_error.decode()}" == explanation.reply
    else:
        session = smtp_session(mx.port, client)
        try:
            reply = rcpt_reply(session, "explain-test@example.net", address)
        finally:
            session.quit()
        if explanation.verdict == SITE_DECIDES:
            site_knows = address.lower() in GENOVA_KNOWS
            assert reply == (explanation.reply if site_knows else explanation.reply_if_site_rejects)
        else:
            assert reply == explanation.reply
    with sites_on_loopback():
        cli = mailgw(mx.root, "explain", address, "--client", client)
    assert cli.code == (1 if explanation.verdict == REJECTED else 0), cli.err
    assert explanation.reply in cli.out
