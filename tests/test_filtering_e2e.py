"""Filtering on the wire: real SMTP through a real Postfix and a real Rspamd (with clamd), per domain and direction.

The test fleet is the bundled one (domains/ and gateway.yaml, so every policy
class of the bundled fleet is here) with only what cannot run on loopback
swapped: every next hop is one SMTP sink standing in for the sites' relays,
each site that declares relays gets one loopback address as its relay, the
map directory is the test instance's, the quarantine service is an HTTPS sink,
clamd is a private one with a one-signature database, and postscreen asks no
DNSBL. A test checks that the filter policies came out the same. What each
message must get is tests/filter_table.py, written by hand from the YAML.

One Postfix, one Rspamd and one clamd serve the whole module, in a private
network namespace (rspamd_env.private_network) where Rspamd keeps Debian's
stock workers (normal 11333, controller 11334) and the generated
worker-proxy.inc binds its milter proxy: on the stock port 11332 and on
milter.sock in its RUNDIR. Postfix runs the generated main.cf with the test
overrides of docs/mx.md; smtpd_milters names the socket in the test's RUNDIR
instead of Debian's /run/rspamd, and a test proves that with Debian's RUNDIR
the generated files meet at main.cf's socket. Rspamd runs the generated local.d/maps.d over the
stock configuration, with the offline overlay of tests/rspamd_env.py and its
test-only X-Test-Score rule (which places a message between two thresholds).
Clients connect from:

    127.0.0.3          a stranger on the internet
    127.0.0.10, .11..  the relay of each site that declares relays, in site order

GTUBE travels in a text part over 8 KiB (rspamd_env.gtube): Rspamd 3.4 refuses
a shorter one outright, before any policy.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import smtplib
import socket
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from compiler.fleet import Fleet, build_fleet
from compiler.pipeline import compile_repository, load_declarations
from tests import filter_table as table
from tests import rspamd_env as env
from tests.conftest import REPO, program
from tests.mx_harness import PostfixInstance, Sink, install, rmtree, sites_on_loopback, smtp_session, wait_for

pytestmark = [
    pytest.mark.needs("postfix", "postconf", "postmap", "rspamd", "clamd", "openssl"),
    pytest.mark.needs_root("starting Postfix in a private network namespace"),
]

BUNDLED = build_fleet(load_declarations(REPO))
STRANGER = "127.0.0.3"
RELAY_OF = {site: f"127.0.0.{10 + i}" for i, site in enumerate(sorted(BUNDLED.site_relays()))}
EXTERNAL = "someone@ext.example.net"
SPAM_REJECTED = "554 5.7.1 Spam message rejected"
VIRUS_REJECTED = "554 5.7.1 message refused: it contains a virus"
GENERATED_MILTER = "unix:/run/rspamd/milter.sock"  # out/postfix/main.cf: in Rspamd's RUNDIR on Debian


def recipient(domain: str) -> str:
    """A declared address of the domain that the site itself receives (not an external or a national alias)."""
    return next(a.address for a in BUNDLED.domain(domain).addresses if a.kind not in ("external", "national"))


def relay_of(domain: str) -> str | None:
    return RELAY_OF.get(BUNDLED.domain(domain).site)


@dataclass
class Sent:
    """One SMTP transaction: the reply that ended it, and the message's Message-ID."""

    reply: str
    message_id: str

    @property
    def queue_id(self) -> str:
        return re.search(r"queued as ([0-9A-F]+)", self.reply).group(1)


@dataclass
class Gateway:
    postfix: PostfixInstance
    rspamd: env.Rspamd
    sites: Sink
    internet: Sink
    quarantine: env.QuarantineSink
    fleet: Fleet
    base_score: float = 0.0

    def send(self, client: str, sender: str, rcpts: list[str], message: bytes) -> Sent:
        """MAIL, RCPT, DATA from `client`; the first reply that is not 2xx ends the transaction."""
        message_id = re.search(rb"^Message-ID: <([^>]+)>", message, re.M).group(1).decode()
        session = smtp_session(self.postfix.port, client)
        try:
            code, text = session.mail(sender)
            for rcpt in rcpts if code == 250 else []:
                code, text = session.rcpt(rcpt)
                if code != 250:
                    break
            if code == 250:
                code, text = session.data(message)
            return Sent(f"{code} {text.decode()}", message_id)
        finally:
            try:
                session.quit()
            except smtplib.SMTPServerDisconnected:
                session.close()

    def arrived(self, sink: Sink, sent: Sent) -> email.message.EmailMessage:
        """The message as its next hop received it."""

        def find():
            return [m for m in list(sink.messages) if f"<{sent.message_id}>".encode() in m.content]

        [message] = wait_for(find, 20, f"message {sent.message_id} to arrive at the {sink.name} sink")
        return email.message_from_bytes(message.content, policy=email.policy.default)

    def dropped(self, sent: Sent) -> None:
        """Accepted, then discarded on Rspamd's word: removed from the queue, delivered nowhere."""
        assert sent.reply.startswith("250 2.0.0 Ok: queued as "), sent.reply
        discarded = f"{sent.queue_id}: milter-discard: END-OF-MESSAGE from "
        wait_for(lambda: discarded in self.postfix.log(), 20, f"Postfix to log the discard of {sent.queue_id}")
        assert not [path for path in self.postfix.queue_files() if sent.queue_id in path]
        assert not [
            m
            for sink in (self.sites, self.internet)
            for m in list(sink.messages)
            if f"<{sent.message_id}>".encode() in m.content
        ]

    def quarantined(self, sent: Sent, rcpts: list[str], retention_days: int) -> env.Delivery:
        """Dropped, and POSTed once to the quarantine service with its envelope recipients."""
        self.dropped(sent)
        posts = [d for d in self.quarantine.take() if f"<{sent.message_id}>".encode() in d.body]
        assert [post.recipients for post in posts] == [rcpts]
        assert posts[0].body.startswith(f"X-Quarantine-Retention-Days: {retention_days}\r\n".encode())
        return posts[0]


def _fleet_files(root: Path, sites: Sink, gateway_services: dict, map_directory: Path) -> None:
    """The bundled declarations with next hops, relays, map directory and services pointing at the test's."""
    gateway = yaml.safe_load((REPO / "gateway.yaml").read_text())
    gateway.update(gateway_services)
    gateway["postfix"] = {"map_directory": str(map_directory)}
    gateway["postscreen"].pop("dnsbl_sites")  # their queries would leave loopback
    # The portal's release service would listen on a fixed port; tests/test_portal_e2e.py runs it on a free one.
    gateway.pop("portal", None)
    (root / "domains").mkdir(parents=True)
    (root / "gateway.yaml").write_text(yaml.safe_dump(gateway, allow_unicode=True))
    for path in sorted((REPO / "domains").glob("*.yaml")):
        domain = yaml.safe_load(path.read_text())
        domain["delivery"] = {"nexthop": f"smtp:[127.0.0.1]:{sites.port}"}
        domain.pop("outbound_relays", None)
        if domain["site"] in RELAY_OF:
            domain["outbound_relays"] = [RELAY_OF[domain["site"]]]
        (root / "domains" / path.name).write_text(yaml.safe_dump(domain, allow_unicode=True))


@pytest.fixture(scope="module")
def gw(clamd, hs_cache, tmp_path_factory):
    # Not pytest's tmp_path: Postfix's daemons run as 'postfix' and must traverse the path.
    base = Path(tempfile.mkdtemp(prefix="mailgw-filtering-"))
    base.chmod(0o755)
    with env.private_network():
        sites, internet = Sink("sites"), Sink("internet")
        postfix = PostfixInstance(base / "mx")
        rspamd = quarantine = None
        try:
            # The quarantine service too must listen inside the namespace, where Rspamd posts to it.
            quarantine = env.QuarantineSink(tmp_path_factory.mktemp("quarantine")).__enter__()
            services = {"quarantine": {"url": quarantine.url}, "clamav": {"socket": str(clamd.socket)}}
            _fleet_files(base / "repo", sites, services, postfix.conf / "mailgw")
            with sites_on_loopback():
                compiled = compile_repository(base / "repo")
            for rel, data in compiled.artifacts.items():
                (base / "out" / rel).parent.mkdir(parents=True, exist_ok=True)
                (base / "out" / rel).write_bytes(data)
            tree = env.config_tree(
                base / "out", base / "rspamd", ca_file=quarantine.cert, hs_cache=hs_cache, test_score=True
            )
            rspamd = env.Rspamd(tree, stock_ports=True).__enter__()
            install(postfix, base / "out", internet_port=internet.port, milter=f"unix:{milter_socket(tree)}")
            postfix.start()
            gateway = Gateway(postfix, rspamd, sites, internet, quarantine, compiled.fleet)
            gateway.base_score = _base_score(gateway)
            yield gateway
        finally:
            postfix.stop()
            if rspamd is not None:
                rspamd.__exit__(None, None, None)
            if quarantine is not None:
                quarantine.__exit__(None, None, None)
            sites.stop()
            internet.stop()
            rmtree(base)


def _base_score(gw: Gateway) -> float:
    """What a plain message from a stranger scores here, so X-Test-Score can place one in a band."""
    rcpt = recipient("cnaf.example.org")
    sent = gw.send(STRANGER, EXTERNAL, [rcpt], env.message(sender=EXTERNAL, to=[rcpt]))
    status = gw.arrived(gw.sites, sent)["X-Spam-Status"]
    return float(re.search(r"score=(-?[0-9.]+)", status).group(1))


# --- the outcome the table asks for, as the sender and the next hop see it --------------------


def _check(
    gw: Gateway,
    sent: Sent,
    outcome: str,
    policy: tuple[str, str],
    rcpts: list[str],
    sink: Sink,
    subject: str,
    *,
    virus: bool = False,
) -> None:
    """`policy`: (domain, direction) of filter_table whose subject tag and retention apply."""
    if outcome == "reject":
        assert sent.reply == (VIRUS_REJECTED if virus else SPAM_REJECTED)
        assert gw.quarantine.take() == []
        return
    if outcome == "quarantine":
        post = gw.quarantined(sent, rcpts, table.RETENTION_DAYS[policy])
        if virus:
            assert f"X-Virus: infected, {env.VIRUS_NAME}.UNOFFICIAL\r\n".encode() in post.body.split(b"From:")[0]
        return
    assert sent.reply.startswith("250 2.0.0 Ok: queued as "), sent.reply
    delivered = gw.arrived(sink, sent)
    assert gw.quarantine.take() == []
    assert delivered["X-Virus"] == "clean"
    tagged = table.SUBJECT[policy].replace("%s", subject)
    assert delivered["Subject"] == (tagged if outcome == "rewrite_subject" else subject)
    assert delivered["X-Spam-Status"].startswith("No, " if outcome == "deliver" else "Yes, ")
    assert delivered.get_all("X-Spam") == (None if outcome == "deliver" else ["Yes"])


# --- the test fleet is the bundled one ---------------------------------------------------------


def test_the_test_fleet_has_the_bundled_policies_and_a_relay_for_every_outbound_class(gw):
    assert gw.fleet.filters == BUNDLED.filters
    assert gw.fleet.default_filters == BUNDLED.default_filters
    assert set(table.DOMAINS) == {d.name for d in BUNDLED.domains}
    with_relay = {BUNDLED.filters[d.name].outbound for d in BUNDLED.domains if relay_of(d.name)}
    assert with_relay == {policy.outbound for policy in BUNDLED.filters.values()}


def milter_socket(tree: env.Tree) -> Path:
    """Where the generated worker-proxy.inc binds the milter when Rspamd's RUNDIR is the tree's."""
    return tree.root / "run" / "milter.sock"


def test_main_cf_names_the_socket_the_generated_worker_proxy_binds_on_debian(gw):
    """With Debian's RUNDIR (no --var=RUNDIR), Rspamd binds its milter proxy at main.cf's smtpd_milters."""
    generated = (REPO / "out" / "postfix" / "main.cf").read_text()
    assert f"\nsmtpd_milters = {GENERATED_MILTER}\n" in generated
    conf = gw.rspamd.tree.conf
    assert not (conf / "override.d" / "worker-proxy.inc").exists(), "the generated local.d file binds the proxy"
    dump = subprocess.run(
        [program("rspamadm"), f"--var=CONFDIR={conf}", f"--var=LOCAL_CONFDIR={conf}", "configdump", "-C"]
        + ["-c", str(conf / "rspamd.conf"), "worker"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dump.returncode == 0, dump.stderr
    workers = [json.loads(line) for line in dump.stdout.splitlines() if line.startswith("{")]
    (proxy,) = [worker["rspamd_proxy"] for worker in workers if "rspamd_proxy" in worker]
    assert proxy["milter"] is True
    # The stock port stays, for a main.cf not yet reloaded; the socket is the one smtpd (as 'postfix') may use.
    assert proxy["bind_socket"] == ["localhost:11332", "/run/rspamd/milter.sock mode=0666"]
    # Here, RUNDIR is the tree's: the socket Rspamd made there is the one this Postfix uses.
    made = milter_socket(gw.rspamd.tree)
    assert stat.S_ISSOCK(made.stat().st_mode) and stat.S_IMODE(made.stat().st_mode) == 0o666
    with socket.create_connection(("127.0.0.1", 11332), timeout=5):
        pass  # and the stock port still answers


def test_postfix_runs_the_generated_milter_settings_without_a_warning(gw):
    """Main.cf's milter settings as generated, smtpd_milters at the test's RUNDIR; its Rspamd scans every message."""
    conf = gw.postfix.conf
    here = f"unix:{milter_socket(gw.rspamd.tree)}"
    for name, value in (
        ("smtpd_milters", here),
        ("non_smtpd_milters", ""),
        ("milter_protocol", "6"),
        ("milter_default_action", "tempfail"),
        ("milter_macro_daemon_name", "mailgw_inbound"),
    ):
        assert gw.postfix.postconf("-h", name).stdout == f"{value}\n"
    assert gw.postfix.run(program("postfix"), "-c", str(conf), "check").stderr == ""
    assert not re.search(r"\b(warning|error|fatal|panic):", gw.postfix.log())
    rcpts = [recipient("ge.example.org")]
    sent = gw.send(STRANGER, EXTERNAL, rcpts, env.message(sender=EXTERNAL, to=rcpts))
    assert gw.arrived(gw.sites, sent)["X-Spam-Status"].startswith("No, score="), "scanned by the Rspamd on milter.sock"


# --- inbound: every domain's policy, as the table says -------------------------------------------


# Mail to no served domain is refused at RCPT TO here; tests/test_rspamd_scan.py scans it for the defaults.
@pytest.mark.parametrize(
    ("domain", "what", "outcome"), [row for row in table.rows("inbound") if row[0] != table.DEFAULTS], ids=str
)
def test_inbound_mail_gets_the_outcome_of_the_table(gw, domain, what, outcome):
    """A score in every band, GTUBE and a virus, from a stranger, to each served domain."""
    rcpts, policy = [recipient(domain)], (domain, "inbound")
    gw.quarantine.take()
    if what == "gtube":
        message, subject = env.gtube(sender=EXTERNAL, to=rcpts), "test message"
    elif what == "virus":
        message, subject = env.virus(sender=EXTERNAL, to=rcpts), "the file"
    else:
        subject = f"band {what}"
        message = env.message(sender=EXTERNAL, to=rcpts, subject=subject, score=what - gw.base_score)
    sent = gw.send(STRANGER, EXTERNAL, rcpts, message)
    _check(gw, sent, outcome, policy, rcpts, gw.sites, subject, virus=what == "virus")


def test_the_sender_cannot_forge_the_filter_headers(gw):
    rcpts = [recipient("cnaf.example.org")]
    forged = b"X-Spam: Yes\r\nX-Spam-Status: Yes, score=99.00\r\nX-Virus: clean\r\n"
    sent = gw.send(STRANGER, EXTERNAL, rcpts, forged + env.message(sender=EXTERNAL, to=rcpts))
    delivered = gw.arrived(gw.sites, sent)
    assert delivered.get_all("X-Spam") is None
    assert [status.split(",")[0] for status in delivered.get_all("X-Spam-Status")] == ["No"]
    assert delivered.get_all("X-Virus") == ["clean"]
    sent = gw.send(STRANGER, EXTERNAL, rcpts, b"X-Virus: clean\r\n" + env.virus(sender=EXTERNAL, to=rcpts))
    assert sent.reply == VIRUS_REJECTED


# A message to two domains of different classes gets the stricter class (docs/filtering.md: the one
# that keeps mail from its recipient at the lower score), worked out by hand:
# (the two domains, the score or GTUBE, the outcome, the domain whose policy applies).
MIXED = [
    (("cnaf.example.org", "ge.example.org"), "gtube", "reject", "ge.example.org"),  # cnaf alone: tagged
    (("cnaf.example.org", "ge.example.org"), 11, "rewrite_subject", "ge.example.org"),  # ge's '[SPAM]' tag
    (("cnaf.example.org", "tifpa.example.org"), 12.5, "quarantine", "tifpa.example.org"),  # cnaf alone: tagged
    (("ge.example.org", "tifpa.example.org"), 12.5, "quarantine", "tifpa.example.org"),  # ge alone: tagged
    (("tifpa.example.org", "cnaf.example.org"), "gtube", "reject", "tifpa.example.org"),
]


@pytest.mark.parametrize(("domains", "what", "outcome", "winner"), MIXED, ids=str)
def test_a_message_to_domains_of_two_classes_gets_the_stricter_policy(gw, domains, what, outcome, winner):
    rcpts = [recipient(domain) for domain in domains]
    gw.quarantine.take()
    if what == "gtube":
        message, subject = env.gtube(sender=EXTERNAL, to=rcpts), "test message"
    else:
        subject = "mixed"
        message = env.message(sender=EXTERNAL, to=rcpts, subject=subject, score=what - gw.base_score)
    sent = gw.send(STRANGER, EXTERNAL, rcpts, message)
    _check(gw, sent, outcome, (winner, "inbound"), rcpts, gw.sites, subject)


# --- outbound: from the site relays -----------------------------------------------------------

OUTBOUND_DOMAINS = sorted(d for d in table.DOMAINS if relay_of(d))


@pytest.mark.parametrize(
    ("domain", "what", "outcome"), [row for row in table.rows("outbound") if row[0] in OUTBOUND_DOMAINS], ids=str
)
def test_outbound_mail_from_the_site_relay_gets_the_outcome_of_the_table(gw, domain, what, outcome):
    policy, sender = (domain, "outbound"), f"someone@{domain}"
    gw.quarantine.take()
    if what == "gtube":
        message, subject = env.gtube(sender=sender, to=[EXTERNAL]), "test message"
    elif what == "virus":
        message, subject = env.virus(sender=sender, to=[EXTERNAL]), "the file"
    else:
        subject = f"band {what}"
        message = env.message(sender=sender, to=[EXTERNAL], subject=subject, score=what - gw.base_score)
    sent = gw.send(relay_of(domain), sender, [EXTERNAL], message)
    _check(gw, sent, outcome, policy, [EXTERNAL], gw.internet, subject, virus=what == "virus")


def test_a_site_relay_s_mail_to_a_served_domain_is_outbound(gw):
    """TIFPA's relay writing to CNAF: TIFPA's outbound policy (quarantine), not CNAF's inbound one (tag)."""
    assert table.GTUBE[("tifpa.example.org", "outbound")] == "quarantine"
    assert table.GTUBE[("cnaf.example.org", "inbound")] == "rewrite_subject"
    gw.quarantine.take()
    rcpts, sender = [recipient("cnaf.example.org")], "Mario.Rossi@TIFPA.Example.ORG"
    sent = gw.send(relay_of("tifpa.example.org"), sender, rcpts, env.gtube(sender=sender, to=rcpts))
    gw.quarantined(sent, rcpts, 14)


# --- who gets outbound policy: never guessed ----------------------------------------------------


def test_a_stranger_never_gets_outbound_policy(gw):
    """A stranger using TIFPA's sender domain gets the recipient's inbound policy, and may not relay."""
    gw.quarantine.take()
    rcpts, sender = [recipient("cnaf.example.org")], "mario.rossi@tifpa.example.org"
    sent = gw.send(STRANGER, sender, rcpts, env.gtube(sender=sender, to=rcpts))
    _check(gw, sent, "rewrite_subject", ("cnaf.example.org", "inbound"), rcpts, gw.sites, "test message")
    refused = gw.send(STRANGER, sender, [EXTERNAL], env.gtube(sender=sender, to=[EXTERNAL]))
    assert refused.reply == f"554 5.7.1 <{EXTERNAL}>: Relay access denied"


@pytest.mark.parametrize(
    ("relay_domain", "sender"),
    [
        ("tifpa.example.org", "someone@cnaf.example.org"),
        ("tifpa.example.org", "someone@Lnf.Example.ORG"),
        ("cnaf.example.org", "someone@lab.tifpa.example.org"),
        ("xn--citt-3na.example.org", "someone@TIFPA.EXAMPLE.ORG"),
    ],
)
def test_a_site_relay_may_not_send_as_another_site_s_domain(gw, relay_domain, sender):
    owner = BUNDLED.domain(sender.split("@")[1].lower())
    assert owner.site != BUNDLED.domain(relay_domain).site
    for rcpts in ([EXTERNAL], [recipient(relay_domain)]):
        sent = gw.send(relay_of(relay_domain), sender, rcpts, env.gtube(sender=sender, to=rcpts))
        assert sent.reply == (
            f"554 5.7.1 <{sender}>: Sender address rejected: {owner.name} is a domain of site "
            f"{owner.site}, not of this relay's site"
        )
    logged = f"NOQUEUE: reject: RCPT from unknown[{relay_of(relay_domain)}]: 554 5.7.1 <{sender}>"
    wait_for(lambda: logged in gw.postfix.log(), 10, "Postfix to log the refusal")


@pytest.mark.parametrize("sender", ["someone@example.net", "someone@sub.tifpa.example.org", ""])
def test_a_site_relay_forwarding_a_foreign_sender_gets_the_gateway_s_outbound_defaults(gw, sender):
    """TIFPA's relay with a sender the gateway does not serve (forwarded mail, a bounce): outbound, by default.

    At 12 points the outbound defaults refuse, TIFPA's outbound policy would
    quarantine, and the inbound defaults would only tag the subject.
    """
    assert dict(table.SCORES[(table.DEFAULTS, "outbound")])[12] == "reject"
    assert dict(table.SCORES[("tifpa.example.org", "outbound")])[12] == "quarantine"
    assert dict(table.SCORES[(table.DEFAULTS, "inbound")])[11] == "rewrite_subject"
    gw.quarantine.take()
    message = env.message(sender=sender or EXTERNAL, to=[EXTERNAL], score=12 - gw.base_score)
    sent = gw.send(relay_of("tifpa.example.org"), sender, [EXTERNAL], message)
    _check(gw, sent, "reject", (table.DEFAULTS, "outbound"), [EXTERNAL], gw.internet, "meeting notes")


# --- Rspamd down: last, since it stops the module's Rspamd -------------------------------------


def test_with_rspamd_down_mail_is_deferred_and_nothing_is_lost(gw):
    rcpts = [recipient("cnaf.example.org")]
    env._stop(gw.rspamd.process)
    try:
        sent = gw.send(STRANGER, EXTERNAL, rcpts, env.message(sender=EXTERNAL, to=rcpts))
        # smtpd could not reach the milter when the client connected: every MAIL FROM gets 4xx.
        assert sent.reply == "451 4.7.1 Service unavailable - try again later"
        assert gw.postfix.queue_files() == []
    finally:
        gw.rspamd.__enter__()
    sent = gw.send(STRANGER, EXTERNAL, rcpts, env.message(sender=EXTERNAL, to=rcpts))
    gw.arrived(gw.sites, sent)
