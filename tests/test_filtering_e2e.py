"""Filtering on the wire: real SMTP through a real Postfix and a real Rspamd (with clamd), per domain and direction.

The test fleet is the bundled one (domains/ and gateway.yaml, so every policy
class of the bundled fleet is here) with only what cannot run on loopback
swapped: every next hop is one SMTP sink standing in for the sites' relays,
each site that declares relays gets one loopback address as its relay, the
map directory is the test instance's, the quarantine service is an HTTPS sink,
clamd is a private one with a one-signature database, and postscreen asks no
DNSBL. A test checks that the filter policies came out the same.

One Postfix, one Rspamd and one clamd serve the whole module. Postfix runs the
generated main.cf and master.cf with the test overrides of docs/mx.md; its
smtpd_milters is this Rspamd's milter (proxy worker) on a free port. Rspamd
runs the generated local.d/maps.d over the stock configuration, with the
offline overlay of tests/rspamd_env.py and its test-only X-Test-Score rule
(which places a message between two thresholds). Clients connect from:

    127.0.0.3          a stranger on the internet
    127.0.0.10, .11..  the relay of each site that declares relays, in site order

GTUBE travels in a text part over 8 KiB (rspamd_env.gtube): Rspamd 3.4 refuses
a shorter one outright, before any policy.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import smtplib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from compiler.filters import DirectionPolicy, strictness
from compiler.fleet import Fleet, build_fleet
from compiler.pipeline import compile_repository, load_declarations
from tests import rspamd_env as env
from tests.conftest import REPO, program
from tests.mx_harness import PostfixInstance, Sink, install, rmtree, sites_on_loopback, smtp_session, wait_for

pytestmark = [
    pytest.mark.needs("postfix", "postconf", "postmap", "rspamd", "clamd", "openssl"),
    pytest.mark.skipif(os.geteuid() != 0, reason="starting Postfix needs root (CI runs 'sudo make test')"),
]

BUNDLED = build_fleet(load_declarations(REPO))
STRANGER = "127.0.0.3"
RELAY_OF = {site: f"127.0.0.{10 + i}" for i, site in enumerate(sorted(BUNDLED.site_relays()))}
EXTERNAL = "someone@ext.example.net"
SPAM_REJECTED = "554 5.7.1 Spam message rejected"
VIRUS_REJECTED = "554 5.7.1 message refused: it contains a virus"


def recipient(domain: str) -> str:
    """A declared address of the domain that the site itself receives (not an external alias)."""
    return next(a.address for a in BUNDLED.domain(domain).addresses if a.kind != "external")


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

    def quarantined(self, sent: Sent, rcpts: list[str], policy: DirectionPolicy) -> env.Delivery:
        """Dropped, and POSTed once to the quarantine service with its envelope recipients."""
        self.dropped(sent)
        posts = [d for d in self.quarantine.take() if f"<{sent.message_id}>".encode() in d.body]
        assert [post.recipients for post in posts] == [rcpts]
        assert posts[0].body.startswith(f"X-Quarantine-Retention-Days: {policy.retention_days}\r\n".encode())
        return posts[0]


def _fleet_files(root: Path, sites: Sink, gateway_services: dict, map_directory: Path) -> None:
    """The bundled declarations with next hops, relays, map directory and services pointing at the test's."""
    gateway = yaml.safe_load((REPO / "gateway.yaml").read_text())
    gateway.update(gateway_services)
    gateway["postfix"] = {"map_directory": str(map_directory)}
    gateway["postscreen"].pop("dnsbl_sites")  # their queries would leave loopback
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
def gw(clamd, quarantine_sink, hs_cache):
    # Not pytest's tmp_path: Postfix's daemons run as 'postfix' and must traverse the path.
    base = Path(tempfile.mkdtemp(prefix="mailgw-filtering-"))
    base.chmod(0o755)
    sites, internet = Sink("sites"), Sink("internet")
    postfix = PostfixInstance(base / "mx")
    services = {"quarantine": {"url": quarantine_sink.url}, "clamav": {"socket": str(clamd.socket)}}
    rspamd = None
    try:
        _fleet_files(base / "repo", sites, services, postfix.conf / "mailgw")
        with sites_on_loopback():
            compiled = compile_repository(base / "repo")
        for rel, data in compiled.artifacts.items():
            (base / "out" / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / "out" / rel).write_bytes(data)
        tree = env.config_tree(
            base / "out", base / "rspamd", ca_file=quarantine_sink.cert, hs_cache=hs_cache, test_score=True
        )
        rspamd = env.Rspamd(tree).__enter__()
        install(postfix, base / "out", internet_port=internet.port, milter=f"inet:127.0.0.1:{rspamd.proxy_port}")
        postfix.start()
        gateway = Gateway(postfix, rspamd, sites, internet, quarantine_sink, compiled.fleet)
        gateway.base_score = _base_score(gateway)
        yield gateway
    finally:
        postfix.stop()
        if rspamd is not None:
            rspamd.__exit__(None, None, None)
        sites.stop()
        internet.stop()
        rmtree(base)


def _base_score(gw: Gateway) -> float:
    """What a plain message from a stranger scores here, so X-Test-Score can place one in a band."""
    rcpt = recipient("cnaf.example.org")
    sent = gw.send(STRANGER, EXTERNAL, [rcpt], env.message(sender=EXTERNAL, to=[rcpt]))
    status = gw.arrived(gw.sites, sent)["X-Spam-Status"]
    return float(re.search(r"score=(-?[0-9.]+)", status).group(1))


# --- the outcome a policy asks for, as the sender and the next hop see it --------------------


def _bands(policy: DirectionPolicy) -> list[tuple[float, str]]:
    """(a score in the band, the outcome) for every band of the policy, lowest first."""
    refused = "reject" if policy.notify_sender else "quarantine"
    steps = sorted(
        (t, a)
        for t, a in (
            (policy.spam.add_header, "add_header"),
            (policy.spam.rewrite_subject, "rewrite_subject"),
            (policy.spam.quarantine, "quarantine"),
            (policy.spam.reject, refused),
        )
        if t is not None
    )
    limits = [t for t, _ in steps]
    bands = [(limits[0] / 2 if limits else 2.0, "deliver")]
    return bands + [
        (round((low + high) / 2, 2), action)
        for (low, action), high in zip(steps, limits[1:] + [limits[-1] + 4], strict=True)
    ]


def _check(
    gw: Gateway,
    sent: Sent,
    outcome: str,
    policy: DirectionPolicy,
    rcpts: list[str],
    sink: Sink,
    subject: str,
    *,
    virus: bool = False,
) -> None:
    if outcome == "reject":
        assert sent.reply == (VIRUS_REJECTED if virus else SPAM_REJECTED)
        assert gw.quarantine.take() == []
        return
    if outcome == "quarantine":
        post = gw.quarantined(sent, rcpts, policy)
        if virus:
            assert f"X-Virus: infected, {env.VIRUS_NAME}.UNOFFICIAL\r\n".encode() in post.body.split(b"From:")[0]
        return
    assert sent.reply.startswith("250 2.0.0 Ok: queued as "), sent.reply
    delivered = gw.arrived(sink, sent)
    assert gw.quarantine.take() == []
    assert delivered["X-Virus"] == "clean"
    tagged = policy.spam.subject.replace("%s", subject)
    assert delivered["Subject"] == (tagged if outcome == "rewrite_subject" else subject)
    assert delivered["X-Spam-Status"].startswith("No, " if outcome == "deliver" else "Yes, ")
    assert delivered.get_all("X-Spam") == (None if outcome == "deliver" else ["Yes"])


# --- the test fleet is the bundled one ---------------------------------------------------------


def test_the_test_fleet_has_the_bundled_policies_and_a_relay_for_every_outbound_class(gw):
    assert gw.fleet.filters == BUNDLED.filters
    assert gw.fleet.default_filters == BUNDLED.default_filters
    with_relay = {BUNDLED.filters[d.name].outbound for d in BUNDLED.domains if relay_of(d.name)}
    assert with_relay == {policy.outbound for policy in BUNDLED.filters.values()}


def test_postfix_runs_the_generated_milter_settings_without_a_warning(gw):
    conf = gw.postfix.conf
    for name, value in (
        ("smtpd_milters", f"inet:127.0.0.1:{gw.rspamd.proxy_port}"),
        ("non_smtpd_milters", ""),
        ("milter_protocol", "6"),
        ("milter_default_action", "tempfail"),
        ("milter_macro_daemon_name", "mailgw_inbound"),
    ):
        assert gw.postfix.postconf("-h", name).stdout == f"{value}\n"
    assert gw.postfix.run(program("postfix"), "-c", str(conf), "check").stderr == ""
    assert not re.search(r"\b(warning|error|fatal|panic):", gw.postfix.log())


# --- inbound: every domain's policy -----------------------------------------------------------


@pytest.mark.parametrize("domain", sorted(BUNDLED.filters))
def test_inbound_gtube_gets_the_strongest_action_of_the_domain(gw, domain):
    policy, rcpts = BUNDLED.filters[domain].inbound, [recipient(domain)]
    gw.quarantine.take()
    sent = gw.send(STRANGER, EXTERNAL, rcpts, env.gtube(sender=EXTERNAL, to=rcpts))
    _check(gw, sent, policy.strongest_spam_action(), policy, rcpts, gw.sites, "test message")


@pytest.mark.parametrize("domain", sorted(BUNDLED.filters))
def test_inbound_scores_get_the_action_of_their_band(gw, domain):
    policy, rcpts = BUNDLED.filters[domain].inbound, [recipient(domain)]
    gw.quarantine.take()
    for score, outcome in _bands(policy):
        message = env.message(sender=EXTERNAL, to=rcpts, subject=f"band {score}", score=score - gw.base_score)
        _check(gw, gw.send(STRANGER, EXTERNAL, rcpts, message), outcome, policy, rcpts, gw.sites, f"band {score}")


@pytest.mark.parametrize("domain", sorted(BUNDLED.filters))
def test_inbound_virus_is_refused_or_quarantined(gw, domain):
    policy, rcpts = BUNDLED.filters[domain].inbound, [recipient(domain)]
    gw.quarantine.take()
    sent = gw.send(STRANGER, EXTERNAL, rcpts, env.virus(sender=EXTERNAL, to=rcpts))
    _check(gw, sent, policy.virus, policy, rcpts, gw.sites, "the file", virus=True)


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


def test_a_message_to_domains_of_two_classes_gets_the_stricter_policy(gw):
    classes = {}
    for domain, policy in sorted(BUNDLED.filters.items()):
        classes.setdefault(policy.inbound, domain)
    assert len(classes) >= 3
    gw.quarantine.take()
    for first in classes:
        for second in classes:
            if strictness(first) < strictness(second):
                rcpts = [recipient(classes[first]), recipient(classes[second])]
                sent = gw.send(STRANGER, EXTERNAL, rcpts, env.gtube(sender=EXTERNAL, to=rcpts))
                _check(gw, sent, first.strongest_spam_action(), first, rcpts, gw.sites, "test message")
    # Between tifpa's quarantine (10) and reject (15): cnaf alone would only tag the subject.
    tifpa, cnaf = BUNDLED.filters["tifpa.example.org"].inbound, BUNDLED.filters["cnaf.example.org"].inbound
    assert (tifpa.spam.quarantine, tifpa.spam.reject, cnaf.spam.reject) == (10, 15, None)
    rcpts = [recipient("cnaf.example.org"), recipient("tifpa.example.org")]
    message = env.message(sender=EXTERNAL, to=rcpts, subject="mixed", score=12.5 - gw.base_score)
    gw.quarantined(gw.send(STRANGER, EXTERNAL, rcpts, message), rcpts, tifpa)


# --- outbound: from the site relays -----------------------------------------------------------

OUTBOUND_DOMAINS = sorted(d for d in BUNDLED.filters if relay_of(d))


@pytest.mark.parametrize("domain", OUTBOUND_DOMAINS)
def test_outbound_gtube_from_the_site_relay_gets_the_sender_domain_s_policy(gw, domain):
    policy, sender = BUNDLED.filters[domain].outbound, f"someone@{domain}"
    gw.quarantine.take()
    sent = gw.send(relay_of(domain), sender, [EXTERNAL], env.gtube(sender=sender, to=[EXTERNAL]))
    _check(gw, sent, policy.strongest_spam_action(), policy, [EXTERNAL], gw.internet, "test message")


@pytest.mark.parametrize("domain", OUTBOUND_DOMAINS)
def test_outbound_scores_and_viruses_from_the_site_relay(gw, domain):
    policy, sender = BUNDLED.filters[domain].outbound, f"someone@{domain}"
    gw.quarantine.take()
    for score, outcome in _bands(policy):
        message = env.message(sender=sender, to=[EXTERNAL], subject=f"band {score}", score=score - gw.base_score)
        sent = gw.send(relay_of(domain), sender, [EXTERNAL], message)
        _check(gw, sent, outcome, policy, [EXTERNAL], gw.internet, f"band {score}")
    sent = gw.send(relay_of(domain), sender, [EXTERNAL], env.virus(sender=sender, to=[EXTERNAL]))
    _check(gw, sent, policy.virus, policy, [EXTERNAL], gw.internet, "the file", virus=True)


def test_a_site_relay_s_mail_to_a_served_domain_is_outbound(gw):
    """TIFPA's relay writing to CNAF: TIFPA's outbound policy (quarantine), not CNAF's inbound one (tag)."""
    outbound = BUNDLED.filters["tifpa.example.org"].outbound
    assert (outbound.strongest_spam_action(), BUNDLED.filters["cnaf.example.org"].inbound.strongest_spam_action()) == (
        "quarantine",
        "rewrite_subject",
    )
    gw.quarantine.take()
    rcpts, sender = [recipient("cnaf.example.org")], "Mario.Rossi@TIFPA.Example.ORG"
    sent = gw.send(relay_of("tifpa.example.org"), sender, rcpts, env.gtube(sender=sender, to=rcpts))
    gw.quarantined(sent, rcpts, outbound)


# --- who gets outbound policy: never guessed ----------------------------------------------------


def test_a_stranger_never_gets_outbound_policy(gw):
    """A stranger using TIFPA's sender domain gets the recipient's inbound policy, and may not relay."""
    gw.quarantine.take()
    rcpts, sender = [recipient("cnaf.example.org")], "mario.rossi@tifpa.example.org"
    sent = gw.send(STRANGER, sender, rcpts, env.gtube(sender=sender, to=rcpts))
    _check(gw, sent, "rewrite_subject", BUNDLED.filters["cnaf.example.org"].inbound, rcpts, gw.sites, "test message")
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

    At 12.5 points the outbound defaults refuse, TIFPA's outbound policy would
    quarantine, and the inbound defaults would only tag the subject.
    """
    outbound, inbound = BUNDLED.default_filters.outbound, BUNDLED.default_filters.inbound
    tifpa = BUNDLED.filters["tifpa.example.org"].outbound
    assert (outbound.spam.reject, tifpa.spam.reject, tifpa.notify_sender, inbound.spam.reject) == (10, 10, False, 15)
    gw.quarantine.take()
    message = env.message(sender=sender or EXTERNAL, to=[EXTERNAL], score=12.5 - gw.base_score)
    sent = gw.send(relay_of("tifpa.example.org"), sender, [EXTERNAL], message)
    _check(gw, sent, "reject", outbound, [EXTERNAL], gw.internet, "meeting notes")


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
