"""A real Rspamd, started on the generated configuration, scans mail and does what each policy says.

Three Rspamd instances: the bundled fleet (every policy class of domains/ and
gateway.yaml, inbound and outbound), a fleet built to exercise the semantics
(lists, mixed recipients, fallbacks, the quarantine service), and one whose
clamd is missing. A real clamd with a one-signature database scans for
viruses; a small HTTPS server stands in for the quarantine service.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from compiler.fleet import build_fleet
from compiler.pipeline import compile_repository, load_declarations
from tests import filter_table as table
from tests import rspamd_env as env
from tests.conftest import GATEWAY, REPO, domain_yaml

pytestmark = pytest.mark.needs("rspamd", "rspamadm", "clamd", "openssl")

# How Rspamd names each outcome of tests/filter_table.py (a quarantined message is discarded after the POST).
RSPAMD_ACTION = {
    "reject": "reject",
    "quarantine": "discard",
    "rewrite_subject": "rewrite subject",
    "add_header": "add header",
    "deliver": "no action",
}
EXTERNAL = "someone@ext.example.net"
OUTBOUND = {"MTA-Name": "mailgw_outbound"}


@pytest.fixture(scope="session")
def sink(quarantine_sink):
    return quarantine_sink


def _start(root: Path, gateway: dict, domains: dict[str, str], sink, hs_cache):
    """Compile the declarations into root/out and start Rspamd on them; yields (fleet, rspamd)."""
    repo = root / "repo"
    (repo / "domains").mkdir(parents=True)
    (repo / "gateway.yaml").write_text(yaml.safe_dump(gateway, allow_unicode=True))
    for name, text in domains.items():
        (repo / "domains" / name).write_text(text)
    compiled = compile_repository(repo)
    for rel, data in compiled.artifacts.items():
        (root / "out" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "out" / rel).write_bytes(data)
    tree = env.config_tree(root / "out", root / "rspamd", ca_file=sink.cert, hs_cache=hs_cache, test_score=True)
    return compiled.fleet, env.Rspamd(tree)


def _services(gateway: dict, clamd_socket: Path, sink) -> dict:
    return {**gateway, "quarantine": {"url": sink.url}, "clamav": {"socket": str(clamd_socket)}}


# --- the bundled fleet: every policy is shown by a scan --------------------------------

BUNDLED = build_fleet(load_declarations(REPO))


@pytest.fixture(scope="module")
def bundled(tmp_path_factory, clamd, sink, hs_cache):
    gateway = _services(yaml.safe_load((REPO / "gateway.yaml").read_text()), clamd.socket, sink)
    domains = {p.name: p.read_text() for p in (REPO / "domains").glob("*.yaml")}
    fleet, rspamd = _start(tmp_path_factory.mktemp("bundled"), gateway, domains, sink, hs_cache)
    assert fleet.filters == BUNDLED.filters, "the services swapped in for the test changed no policy"
    with rspamd:
        yield rspamd


def _scan(rspamd, kind: str, *, sender: str, rcpt: list[str], headers=None):
    make = {"ham": env.message, "gtube": env.gtube, "virus": env.virus}[kind]
    return rspamd.scan(make(sender=sender, to=rcpt), rcpt=rcpt, sender=sender, headers=headers)


def _scan_at(rspamd, target: float, base: float, *, sender, rcpt, headers):
    """A message scoring `target` (X-Test-Score), rescanned while DNS noise keeps it more than 0.25 away."""
    points = target - base
    for _ in range(4):
        scan = rspamd.scan(
            env.message(sender=sender, to=rcpt, subject="scored", score=points),
            rcpt=rcpt,
            sender=sender,
            headers=headers,
        )
        if abs(scan.score - target) < 0.25:
            return scan
        points += target - scan.score
    pytest.fail(f"no scan scored {target} (the last scored {scan.score})")


def _check_policy(rspamd, sink, key: tuple[str, str], rule: str, *, sender: str, rcpt: list[str], headers=None):
    """Every row of the table for `key` (domain, direction): a score in each band, GTUBE, a virus; all by `rule`."""
    sink.take()
    ham = _scan(rspamd, "ham", sender=sender, rcpt=rcpt, headers=headers)
    assert ham.rule == rule
    assert ham.milter["add_headers"]["X-Virus"]["value"] == "clean"

    for target, outcome in table.SCORES[key]:
        scan = _scan_at(rspamd, target, ham.score, sender=sender, rcpt=rcpt, headers=headers)
        assert (scan.rule, scan.action) == (rule, RSPAMD_ACTION[outcome]), f"score {scan.score}"
        assert [q.recipients for q in sink.take()] == ([rcpt] if outcome == "quarantine" else [])
        if outcome == "rewrite_subject":
            assert scan.subject == table.SUBJECT[key].replace("%s", "scored")

    spam = _scan(rspamd, "gtube", sender=sender, rcpt=rcpt, headers=headers)
    assert (spam.rule, spam.action) == (rule, RSPAMD_ACTION[table.GTUBE[key]])
    if table.GTUBE[key] == "rewrite_subject":
        assert spam.subject == table.SUBJECT[key].replace("%s", "test message")
    quarantined = sink.take()
    if table.GTUBE[key] == "quarantine":
        assert [(q.recipients, q.headers["X-Rspamd-from"]) for q in quarantined] == [(rcpt, sender)]
        retention = f"X-Quarantine-Retention-Days: {table.RETENTION_DAYS[key]}\r\n"
        assert quarantined[0].body.startswith(retention.encode())
    else:
        assert quarantined == []

    virus = _scan(rspamd, "virus", sender=sender, rcpt=rcpt, headers=headers)
    assert virus.options("CLAM_VIRUS") == [env.VIRUS_NAME + ".UNOFFICIAL"]
    assert virus.action == RSPAMD_ACTION[table.VIRUS[key]]
    quarantined = sink.take()
    if table.VIRUS[key] == "quarantine":
        assert [q.recipients for q in quarantined] == [rcpt]
        assert f"X-Virus: infected, {env.VIRUS_NAME}.UNOFFICIAL\r\n".encode() in quarantined[0].body.split(b"From:")[0]
    else:
        assert virus.smtp_message == "message refused: it contains a virus" and quarantined == []


@pytest.mark.parametrize("domain", table.DOMAINS)
def test_bundled_inbound_policy(bundled, sink, domain):
    rule = BUNDLED.filters[domain].inbound.name
    _check_policy(bundled, sink, (domain, "inbound"), rule, sender=EXTERNAL, rcpt=[f"postmaster@{domain}"])


@pytest.mark.parametrize("domain", table.DOMAINS)
def test_bundled_outbound_policy(bundled, sink, domain):
    rule = BUNDLED.filters[domain].outbound.name
    _check_policy(
        bundled, sink, (domain, "outbound"), rule, sender=f"someone@{domain}", rcpt=[EXTERNAL], headers=OUTBOUND
    )


def test_bundled_defaults_for_mail_of_no_domain(bundled, sink):
    """Inbound to no served domain and outbound from a foreign sender: the gateway's own policy."""
    inbound, outbound = (
        f"{BUNDLED.default_filters.inbound.name}_fallback",
        f"{BUNDLED.default_filters.outbound.name}_fallback",
    )
    _check_policy(bundled, sink, (table.DEFAULTS, "inbound"), inbound, sender=EXTERNAL, rcpt=["x@elsewhere.example"])
    _check_policy(
        bundled,
        sink,
        (table.DEFAULTS, "outbound"),
        outbound,
        sender="list-bounces@lists.example.com",
        rcpt=[EXTERNAL],
        headers=OUTBOUND,
    )


@pytest.mark.parametrize(
    ("ip", "sender", "expected"),
    [
        ("198.51.100.11", "someone@tifpa.example.org", "tifpa.example.org"),  # TIFPA's relay, TIFPA's domain
        ("198.51.100.10", "someone@Lab.Tifpa.Example.ORG", "lab.tifpa.example.org"),  # another domain of TIFPA
        ("2001:db8:cafe::25", "someone@cnaf.example.org", "cnaf.example.org"),  # CNAF's relay network (IPv6)
        ("203.0.113.5", "someone@tifpa.example.org", "outbound defaults"),  # CNAF's relay claiming TIFPA
        ("198.51.100.10", "someone@example.net", "outbound defaults"),  # a sender the gateway does not serve
        ("198.51.100.12", "someone@tifpa.example.org", "inbound"),  # next to TIFPA's relays: a stranger
        ("192.0.2.10", "someone@tifpa.example.org", "inbound"),
    ],
)
def test_bundled_site_relays_are_told_by_their_address(bundled, ip, sender, expected):
    """A relay's mail is outbound, with its sender domain's class only when that domain is of the relay's site."""
    rcpt = [EXTERNAL]
    scan = bundled.scan(env.message(sender=sender, to=rcpt), rcpt=rcpt, sender=sender, ip=ip)
    rule = {
        "outbound defaults": BUNDLED.default_filters.outbound.name + "_fallback",
        "inbound": BUNDLED.default_filters.inbound.name + "_fallback",
    }.get(expected)
    assert scan.rule == (rule or BUNDLED.filters[expected].outbound.name)


# GTUBE to two domains of different inbound classes: the stricter class applies (docs/filtering.md),
# worked out by hand: (first, second, the domain whose class applies, the outcome).
STRICTER = [
    ("cnaf.example.org", "ge.example.org", "ge.example.org", "reject"),  # cnaf alone would tag the subject
    ("cnaf.example.org", "tifpa.example.org", "tifpa.example.org", "reject"),
    ("ge.example.org", "tifpa.example.org", "tifpa.example.org", "reject"),  # tifpa quarantines from 10
]


@pytest.mark.parametrize(("first", "second", "winner", "outcome"), STRICTER, ids=str)
def test_bundled_message_to_two_classes_gets_the_stricter(bundled, sink, first, second, winner, outcome):
    assert BUNDLED.filters[first].inbound != BUNDLED.filters[second].inbound
    for rcpt in ([f"postmaster@{first}", f"postmaster@{second}"], [f"postmaster@{second}", f"postmaster@{first}"]):
        scan = _scan(bundled, "gtube", sender=EXTERNAL, rcpt=rcpt)
        assert (scan.rule, scan.action) == (BUNDLED.filters[winner].inbound.name, RSPAMD_ACTION[outcome])
        assert sink.take() == []


# --- the semantics, on a fleet made for them ------------------------------------------------

SEMANTICS = {
    "strict.example.org.yaml": domain_yaml(
        "strict.example.org",
        filters=(
            "filters:\n  inbound:\n    spam: {quarantine: 8, reject: 12}\n    virus: quarantine\n"
            "    quarantine: {retention_days: 14}\n"
            "  outbound:\n    notify_sender: false\n    quarantine: {enabled: true, retention_days: 7}\n"
        ),
    ),
    "tagonly.example.org.yaml": domain_yaml(
        "tagonly.example.org",
        filters=("filters:\n  inbound:\n    spam: {rewrite_subject: 6, subject: '*** SPAM *** %s', reject: false}\n"),
    ),
    "plain.example.org.yaml": domain_yaml("plain.example.org"),
    "lists.example.org.yaml": domain_yaml(
        "lists.example.org",
        filters=(
            "filters:\n  inbound:\n"
            "    allow:\n"
            "      senders: ['friend@partner.example.net', '@trusted.example.net', 'news@bulk.example.com']\n"
            "      networks: ['198.51.100.0/28', '2001:db8:f00d::/48']\n"
            "    block:\n      senders: ['spammer@spam.example.net', '@bulk.example.com', 'boss@plain.example.org']\n"
            "      networks: ['203.0.113.0/24', '2001:db8:bad::/48']\n"
        ),
    ),
}
SEMANTICS_GATEWAY = yaml.safe_load(
    GATEWAY
    + (
        "filters:\n  inbound:\n    spam: {add_header: 5, rewrite_subject: 7, reject: 15}\n"
        "    quarantine: {enabled: true, retention_days: 30}\n"
    )
)
BLOCKED = "message refused: the recipient's domain blocks this sender"


@pytest.fixture(scope="module")
def semantics(tmp_path_factory, clamd, sink, hs_cache):
    fleet, rspamd = _start(
        tmp_path_factory.mktemp("semantics"),
        _services(SEMANTICS_GATEWAY, clamd.socket, sink),
        SEMANTICS,
        sink,
        hs_cache,
    )
    with rspamd:
        yield fleet, rspamd


@pytest.mark.parametrize(
    ("sender", "ip"),
    [
        ("spammer@spam.example.net", "192.0.2.10"),
        ("anyone@bulk.example.com", "192.0.2.10"),
        (EXTERNAL, "203.0.113.55"),
        (EXTERNAL, "2001:db8:bad::25"),
    ],
)
def test_a_blocked_sender_or_network_is_refused(semantics, sender, ip):
    _, rspamd = semantics
    scan = rspamd.scan(
        env.message(sender=sender, to=["a@lists.example.org"]), rcpt=["a@lists.example.org"], sender=sender, ip=ip
    )
    assert (scan.action, scan.smtp_message) == ("reject", BLOCKED)


def test_a_block_list_counts_for_a_message_to_its_domain_among_others(semantics):
    _, rspamd = semantics
    rcpt = ["a@plain.example.org", "b@lists.example.org"]
    scan = rspamd.scan(
        env.message(sender="spammer@spam.example.net", to=rcpt), rcpt=rcpt, sender="spammer@spam.example.net"
    )
    assert (scan.action, scan.smtp_message) == ("reject", BLOCKED)
    only_plain = rspamd.scan(
        env.message(sender="spammer@spam.example.net", to=rcpt[:1]), rcpt=rcpt[:1], sender="spammer@spam.example.net"
    )
    assert only_plain.action == "no action"


@pytest.mark.parametrize(
    ("sender", "ip"),
    [
        ("friend@partner.example.net", "192.0.2.10"),
        ("Someone@Trusted.Example.NET", "192.0.2.10"),
        (EXTERNAL, "198.51.100.9"),
        (EXTERNAL, "2001:db8:f00d::7"),
    ],
)
def test_an_allowed_sender_or_network_is_never_spam_but_still_virus_checked(semantics, sender, ip):
    _, rspamd = semantics
    rcpt = ["a@lists.example.org", "b@lists.example.org"]
    spam = rspamd.scan(env.gtube(sender=sender, to=rcpt), rcpt=rcpt, sender=sender, ip=ip)
    assert spam.action == "no action" and "MAILGW_GTUBE" in spam.symbols
    virus = rspamd.scan(env.virus(sender=sender, to=rcpt), rcpt=rcpt, sender=sender, ip=ip)
    assert virus.action == "reject"


def test_an_allow_list_counts_only_when_every_recipient_is_in_its_domain(semantics):
    _, rspamd = semantics
    rcpt = ["a@lists.example.org", "b@plain.example.org"]
    scan = rspamd.scan(
        env.gtube(sender="friend@partner.example.net", to=rcpt), rcpt=rcpt, sender="friend@partner.example.net"
    )
    assert scan.action == "reject"


def test_block_wins_over_an_allowed_exception(semantics):
    """'@bulk.example.com' is blocked and 'news@bulk.example.com' allowed: the block applies."""
    _, rspamd = semantics
    scan = rspamd.scan(
        env.message(sender="news@bulk.example.com", to=["a@lists.example.org"]),
        rcpt=["a@lists.example.org"],
        sender="news@bulk.example.com",
    )
    assert (scan.action, scan.smtp_message) == ("reject", BLOCKED)


def test_lists_are_inbound_only(semantics):
    """A site relay's mail to a served domain is outbound: that domain's block list does not apply."""
    _, rspamd = semantics
    message = env.message(sender="boss@plain.example.org", to=["a@lists.example.org"])
    inbound = rspamd.scan(message, rcpt=["a@lists.example.org"], sender="boss@plain.example.org")
    outbound = rspamd.scan(message, rcpt=["a@lists.example.org"], sender="boss@plain.example.org", headers=OUTBOUND)
    assert (inbound.action, outbound.action) == ("reject", "no action")


def test_a_message_to_several_classes_gets_the_strictest(semantics, sink):
    fleet, rspamd = semantics
    policy = {
        name: fleet.filters[name].inbound for name in ("strict.example.org", "tagonly.example.org", "plain.example.org")
    }
    sink.take()
    rcpt = ["a@tagonly.example.org", "b@strict.example.org"]
    # About 10 points: strict quarantines (8 to 12), tag-only would only tag the subject.
    base = rspamd.scan(env.message(sender=EXTERNAL, to=rcpt), rcpt=rcpt, sender=EXTERNAL).score
    scan = _scan_at(rspamd, 10, base, sender=EXTERNAL, rcpt=rcpt, headers=None)
    assert (scan.rule, scan.action) == (policy["strict.example.org"].name, "discard")
    assert [q.recipients for q in sink.take()][-1:] == [rcpt]
    rcpt = ["a@tagonly.example.org", "b@plain.example.org"]
    scan = rspamd.scan(env.gtube(sender=EXTERNAL, to=rcpt), rcpt=rcpt, sender=EXTERNAL)
    assert (scan.rule, scan.action) == (policy["plain.example.org"].name, "reject")
    scan = rspamd.scan(env.gtube(sender=EXTERNAL, to=rcpt[:1]), rcpt=rcpt[:1], sender=EXTERNAL)
    assert (scan.action, scan.subject) == ("rewrite subject", "*** SPAM *** test message")


def test_outbound_from_an_authenticated_client(semantics, sink):
    fleet, rspamd = semantics
    sink.take()
    scan = rspamd.scan(
        env.gtube(sender="user@strict.example.org", to=[EXTERNAL]),
        rcpt=[EXTERNAL],
        sender="user@strict.example.org",
        headers={"User": "mrossi"},
    )
    assert (scan.rule, scan.action) == (fleet.filters["strict.example.org"].outbound.name, "discard")
    [quarantined] = sink.take()
    assert quarantined.body.startswith(b"X-Quarantine-Retention-Days: 7\r\n")
    assert quarantined.headers["X-Rspamd-user"] == "mrossi"


def test_another_daemon_name_is_not_outbound(semantics):
    fleet, rspamd = semantics
    scan = rspamd.scan(
        env.message(sender="user@strict.example.org", to=[EXTERNAL]),
        rcpt=[EXTERNAL],
        sender="user@strict.example.org",
        headers={"MTA-Name": "mailgw_inbound"},
    )
    assert scan.rule == fleet.default_filters.inbound.name + "_fallback"


def test_quarantine_service_down_defers_the_message(semantics, sink):
    _, rspamd = semantics
    sink.take()
    sink.status = 503
    try:
        scan = rspamd.scan(
            env.virus(sender=EXTERNAL, to=["a@strict.example.org"]), rcpt=["a@strict.example.org"], sender=EXTERNAL
        )
    finally:
        sink.status = 200
    assert (scan.action, scan.smtp_message) == ("soft reject", "deferred")
    assert len(sink.take()) == 1


def test_delivered_mail_carries_the_spam_and_virus_headers(semantics):
    _, rspamd = semantics
    scan = rspamd.scan(
        env.gtube(sender=EXTERNAL, to=["a@tagonly.example.org"]), rcpt=["a@tagonly.example.org"], sender=EXTERNAL
    )
    headers = scan.milter["add_headers"]
    assert headers["X-Virus"]["value"] == "clean"
    assert headers["X-Spam-Status"]["value"].startswith("Yes, score=")


# --- through the milter, as Postfix will ask -------------------------------------------------


def test_milter_outbound_is_told_by_the_daemon_name_macro(semantics, sink):
    _fleet, rspamd = semantics
    sink.take()
    message = env.gtube(sender="user@strict.example.org", to=[EXTERNAL])
    outbound = env.milter_check(
        rspamd.proxy_port, message, sender="user@strict.example.org", rcpt=[EXTERNAL], daemon_name="mailgw_outbound"
    )
    assert outbound.verdict == "discard"
    assert sink.take()[0].body.startswith(b"X-Quarantine-Retention-Days: 7\r\n")
    inbound = env.milter_check(rspamd.proxy_port, message, sender="user@strict.example.org", rcpt=[EXTERNAL])
    assert (inbound.verdict, inbound.reply) == ("reply", "554 5.7.1 Spam message rejected")
    assert sink.take() == []


def test_milter_replies_postfix_acts_on(semantics):
    _, rspamd = semantics
    tagged = env.milter_check(
        rspamd.proxy_port,
        env.gtube(sender=EXTERNAL, to=["a@tagonly.example.org"]),
        sender=EXTERNAL,
        rcpt=["a@tagonly.example.org"],
    )
    assert tagged.verdict == "accept"
    assert ("change", "Subject", "*** SPAM *** test message") in tagged.headers
    assert ("add", "X-Virus", "clean") in tagged.headers
    virus = env.milter_check(
        rspamd.proxy_port,
        env.virus(sender=EXTERNAL, to=["a@plain.example.org"]),
        sender=EXTERNAL,
        rcpt=["a@plain.example.org"],
    )
    assert (virus.verdict, virus.reply) == ("reply", "554 5.7.1 message refused: it contains a virus")
    blocked = env.milter_check(
        rspamd.proxy_port,
        env.message(sender="x@bulk.example.com", to=["a@lists.example.org"]),
        sender="x@bulk.example.com",
        rcpt=["a@lists.example.org"],
    )
    assert (blocked.verdict, blocked.reply) == ("reply", f"554 5.7.1 {BLOCKED}")
    ham = env.milter_check(
        rspamd.proxy_port,
        env.message(sender=EXTERNAL, to=["a@plain.example.org"]),
        sender=EXTERNAL,
        rcpt=["a@plain.example.org"],
    )
    assert ham.verdict == "accept" and ("add", "X-Virus", "clean") in ham.headers
    # Between add_header (5) and rewrite_subject (7): the header Postfix adds is X-Spam: Yes.
    base = rspamd.scan(
        env.message(sender=EXTERNAL, to=["a@plain.example.org"]), rcpt=["a@plain.example.org"], sender=EXTERNAL
    ).score
    marked = env.milter_check(
        rspamd.proxy_port,
        env.message(sender=EXTERNAL, to=["a@plain.example.org"], score=6 - base),
        sender=EXTERNAL,
        rcpt=["a@plain.example.org"],
    )
    assert marked.verdict == "accept" and ("change", "X-Spam", "Yes") in marked.headers


# --- clamd down -------------------------------------------------------------------------------


def test_without_clamd_mail_is_deferred_not_passed_unscanned(tmp_path, sink, hs_cache):
    missing = tmp_path / "no-clamd.sock"
    _fleet, rspamd = _start(
        tmp_path,
        _services(SEMANTICS_GATEWAY, missing, sink),
        {"plain.example.org.yaml": SEMANTICS["plain.example.org.yaml"]},
        sink,
        hs_cache,
    )
    with rspamd:
        scan = rspamd.scan(
            env.message(sender=EXTERNAL, to=["a@plain.example.org"]), rcpt=["a@plain.example.org"], sender=EXTERNAL
        )
        milter = env.milter_check(
            rspamd.proxy_port,
            env.message(sender=EXTERNAL, to=["a@plain.example.org"]),
            sender=EXTERNAL,
            rcpt=["a@plain.example.org"],
        )
    assert (scan.action, scan.smtp_message) == ("soft reject", "virus scanner unavailable, try again later")
    assert (milter.verdict, milter.reply) == ("reply", "451 4.7.1 virus scanner unavailable, try again later")
