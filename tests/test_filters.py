"""The filter policy: layering of defaults, normal forms, classes and their order, and the rules."""

from __future__ import annotations

import re

import pytest

from compiler.filters import strictness
from compiler.fleet import build_fleet
from compiler.pipeline import load_declarations
from tests.conftest import GATEWAY, domain_yaml

QUARANTINE = "quarantine: {url: 'https://quarantine.gw.example.org/api'}\n"


def _fleet(make_repo, files, gateway=GATEWAY):
    return build_fleet(load_declarations(make_repo(files, gateway=gateway)))


def _domain(name="tifpa.example.org", filters=""):
    return {f"domains/{name}.yaml": domain_yaml(name, filters=filters)}


def test_without_declarations_every_domain_gets_the_built_in_policy(make_repo):
    fleet = _fleet(make_repo, _domain())
    policy = fleet.filters["tifpa.example.org"]
    assert policy == fleet.default_filters
    inbound, outbound = policy.inbound, policy.outbound
    # docs/filtering.md: header at 5, subject at 7, reject at 15; no spam quarantine.
    assert (inbound.spam.add_header, inbound.spam.rewrite_subject, inbound.spam.quarantine, inbound.spam.reject) == (
        5.0,
        7.0,
        None,
        15.0,
    )
    assert (inbound.virus, inbound.quarantine, inbound.spam.subject) == ("reject", False, "[SPAM] %s")
    assert (outbound.spam.reject, outbound.spam.add_header, outbound.notify_sender) == (10.0, None, True)


def test_a_domain_overrides_the_gateway_field_by_field(make_repo):
    gateway = (
        GATEWAY
        + QUARANTINE
        + (
            "filters:\n  inbound:\n    spam: {add_header: 4, rewrite_subject: 6, subject: '[SPAM] %s', reject: 20}\n"
            "    quarantine: {enabled: true, retention_days: 20}\n"
        )
    )
    fleet = _fleet(
        make_repo,
        {
            **_domain(
                filters="filters:\n  inbound:\n    spam: {reject: false, subject: '*** SPAM *** %s'}\n"
                "    quarantine: {retention_days: 7}\n"
            ),
            **_domain("cnaf.example.org"),
        },
        gateway=gateway,
    )
    tifpa, cnaf = fleet.filters["tifpa.example.org"].inbound, fleet.filters["cnaf.example.org"].inbound
    # Set by the domain: reject off, its own subject and retention; inherited: the rest.
    assert (tifpa.spam.add_header, tifpa.spam.rewrite_subject, tifpa.spam.reject) == (4.0, 6.0, None)
    assert (tifpa.spam.subject, tifpa.quarantine, tifpa.retention_days) == ("*** SPAM *** %s", True, 7)
    assert (cnaf.spam.reject, cnaf.spam.subject, cnaf.retention_days) == (20.0, "[SPAM] %s", 20)
    assert fleet.default_filters.inbound == cnaf


def test_lists_are_normalised_sorted_and_deduplicated(make_repo):
    fleet = _fleet(
        make_repo,
        _domain(
            filters=(
                "filters:\n  inbound:\n    block:\n"
                "      senders: ['Offers@Spam.Example.com', '@Città.example.net', 'offers@spam.example.com']\n"
                "      networks: ['192.0.2.7', '2001:DB8:0::/48', '198.51.100.0/24']\n"
            )
        ),
    )
    block = fleet.filters["tifpa.example.org"].block
    assert block.senders == ("@xn--citt-3na.example.net", "offers@spam.example.com")
    assert block.networks == ("192.0.2.7/32", "198.51.100.0/24", "2001:db8::/48")
    assert not fleet.filters["tifpa.example.org"].allow


def test_same_policy_same_class_name_and_a_change_makes_another(make_repo):
    fleet = _fleet(
        make_repo,
        {
            **_domain(),
            **_domain("cnaf.example.org"),
            **_domain("ge.example.org", filters="filters:\n  inbound:\n    spam: {add_header: 4.5}\n"),
        },
    )
    names = {name: policy.inbound.name for name, policy in fleet.filters.items()}
    assert names["tifpa.example.org"] == names["cnaf.example.org"] != names["ge.example.org"]
    assert names["tifpa.example.org"].startswith("mailgw_inbound_")
    # Lists do not make a class: they are matched per recipient domain.
    listed = _fleet(make_repo, _domain(filters="filters:\n  inbound:\n    allow: {senders: ['@example.net']}\n"))
    assert listed.filters["tifpa.example.org"].inbound.name == names["cnaf.example.org"]


def _policy(make_repo, spam, virus="reject", quarantine="false"):
    gateway = GATEWAY + QUARANTINE
    body = f"filters:\n  inbound:\n    spam: {spam}\n    virus: {virus}\n    quarantine: {{enabled: {quarantine}}}\n"
    return _fleet(make_repo, _domain(filters=body), gateway).filters["tifpa.example.org"].inbound


def test_strictness_puts_the_lowest_refusal_first(make_repo):
    tag_only = _policy(make_repo, "{add_header: 3, rewrite_subject: 5, reject: false}")
    late_reject = _policy(make_repo, "{add_header: 5, rewrite_subject: 7, reject: 20}")
    quarantine = _policy(make_repo, "{add_header: 5, rewrite_subject: 7, quarantine: 9, reject: 30}", quarantine="true")
    early_reject = _policy(make_repo, "{add_header: 5, rewrite_subject: 7, reject: 12}")
    virus_quarantine = _policy(
        make_repo, "{add_header: 5, rewrite_subject: 7, reject: 12}", virus="quarantine", quarantine="true"
    )
    ordered = sorted([tag_only, late_reject, virus_quarantine, early_reject, quarantine], key=strictness)
    assert ordered == [quarantine, early_reject, virus_quarantine, late_reject, tag_only]


def test_outbound_without_notification_quarantines_instead_of_rejecting(make_repo):
    gateway = GATEWAY + QUARANTINE
    fleet = _fleet(
        make_repo,
        _domain(filters=("filters:\n  outbound:\n    notify_sender: false\n    quarantine: {enabled: true}\n")),
        gateway,
    )
    tifpa, default = fleet.filters["tifpa.example.org"].outbound, fleet.default_filters.outbound
    assert (tifpa.spam.reject, tifpa.notify_sender, tifpa.quarantine) == (10.0, False, True)
    assert (default.spam.reject, default.notify_sender, default.quarantine) == (10.0, True, False)


def test_without_a_domain_the_policy_is_the_gateway_s(make_repo):
    """The policy of mail of no served domain: gateway.yaml over the built-in defaults, written out by hand."""
    gateway = GATEWAY + QUARANTINE + "filters:\n  inbound:\n    spam: {add_header: 4, reject: false}\n"
    fleet = _fleet(make_repo, _domain(filters="filters:\n  inbound:\n    spam: {add_header: 3}\n"), gateway)
    inbound = fleet.default_filters.inbound
    assert (inbound.spam.add_header, inbound.spam.rewrite_subject, inbound.spam.quarantine, inbound.spam.reject) == (
        4.0,
        7.0,
        None,
        None,
    )
    assert (inbound.virus, inbound.quarantine, inbound.retention_days, inbound.spam.subject) == (
        "reject",
        False,
        30,
        "[SPAM] %s",
    )
    assert fleet.filters["tifpa.example.org"].inbound.spam.add_header == 3.0


# --- the rules, beyond the one case each in tests/error_cases.py ----------------------


def _errors(make_repo, mailgw, files, gateway=GATEWAY):
    result = mailgw(make_repo(files, gateway=gateway), "validate")
    return [line for line in result.lines if ": error[" in line]


def _codes(lines):
    return [re.search(r"error\[([a-z-]+)\]", line)[1] for line in lines]


def test_threshold_order_blames_the_file_that_set_the_value(make_repo, mailgw):
    gateway = GATEWAY + "filters:\n  inbound:\n    spam: {add_header: 6, rewrite_subject: 8}\n"
    lines = _errors(make_repo, mailgw, _domain(filters="filters:\n  inbound:\n    spam: {reject: 7}\n"), gateway)
    assert lines == [
        "domains/tifpa.example.org.yaml:11:20: error[threshold-order]: filters.inbound.spam.reject "
        "is 7, but it must be above rewrite_subject (8, set at gateway.yaml:5:44)"
    ]
    # A lower threshold set by the domain under a gateway's higher one: the lower is reported.
    lines = _errors(
        make_repo, mailgw, _domain(filters="filters:\n  inbound:\n    spam: {rewrite_subject: 16}\n"), GATEWAY
    )
    assert lines == [
        "domains/tifpa.example.org.yaml:11:29: error[threshold-order]: filters.inbound.spam."
        "rewrite_subject is 16, but it must be below reject (15, the built-in default)"
    ]


def test_equal_thresholds_are_out_of_order_but_a_turned_off_one_is_skipped(make_repo, mailgw):
    lines = _errors(
        make_repo,
        mailgw,
        _domain(filters=("filters:\n  inbound:\n    spam: {add_header: 7, rewrite_subject: false, reject: 7}\n")),
    )
    assert _codes(lines) == ["threshold-order"]
    assert (
        _errors(
            make_repo,
            mailgw,
            _domain(filters=("filters:\n  inbound:\n    spam: {add_header: 9, rewrite_subject: false, reject: 12}\n")),
        )
        == []
    )


def test_a_gateway_problem_is_reported_once_at_the_gateway(make_repo, mailgw):
    gateway = GATEWAY + "filters:\n  outbound:\n    spam: {add_header: 12}\n"
    lines = _errors(make_repo, mailgw, {**_domain(), **_domain("cnaf.example.org")}, gateway)
    assert lines == [
        "gateway.yaml:5:24: error[threshold-order]: filters.outbound.spam.add_header is 12, but it "
        "must be below reject (10, the built-in default)"
    ]


def test_quarantine_off_where_a_domain_turns_it_off_under_a_gateway_that_uses_it(make_repo, mailgw):
    gateway = GATEWAY + QUARANTINE + "filters:\n  inbound:\n    virus: quarantine\n    quarantine: {enabled: true}\n"
    lines = _errors(
        make_repo, mailgw, _domain(filters="filters:\n  inbound:\n    quarantine: {enabled: false}\n"), gateway
    )
    assert lines == [
        "domains/tifpa.example.org.yaml:11:27: error[quarantine-disabled]: filters.inbound.quarantine."
        "enabled is false, but filters.inbound.virus (set at gateway.yaml:6:12) sends mail to the "
        "quarantine"
    ]


def test_silent_drop_is_fine_with_the_outbound_quarantine_on(make_repo, mailgw):
    assert (
        _errors(
            make_repo,
            mailgw,
            _domain(filters=("filters:\n  outbound:\n    notify_sender: false\n    quarantine: {enabled: true}\n")),
            GATEWAY + QUARANTINE,
        )
        == []
    )


def test_overlapping_but_different_entries_are_not_a_conflict(make_repo, mailgw):
    """Block a whole domain but allow one address of it: the exception is meant (block wins, docs)."""
    assert (
        _errors(
            make_repo,
            mailgw,
            _domain(
                filters=(
                    "filters:\n  inbound:\n    allow: {senders: ['news@example.net'], networks: ['192.0.2.0/24']}\n"
                    "    block: {senders: ['@example.net'], networks: ['192.0.2.0/25']}\n"
                )
            ),
        )
        == []
    )


def test_lists_are_inbound_and_domain_only(make_repo, mailgw):
    lines = _errors(make_repo, mailgw, _domain(filters="filters:\n  outbound:\n    block: {senders: ['@x.net']}\n"))
    assert _codes(lines) == ["unknown-field"]
    lines = _errors(make_repo, mailgw, _domain(), GATEWAY + "filters:\n  inbound:\n    allow: {senders: ['@x.net']}\n")
    assert _codes(lines) == ["unknown-field"]


@pytest.mark.parametrize("value", ["true", "0", "100.5", "'6'", "7.125", "-3"])
def test_bad_thresholds(make_repo, mailgw, value):
    lines = _errors(make_repo, mailgw, _domain(filters=f"filters:\n  inbound:\n    spam: {{reject: {value}}}\n"))
    assert len(lines) == 1 and "error[bad-threshold]" in lines[0]


@pytest.mark.parametrize(
    "template",
    [
        "'[SPAM]'",
        "'%s %s'",
        "'[$SPAM] %s'",
        "'[\"SPAM\"] %s'",
        "'[SPAM\\] %s'",
        "'100% %s'",
        "' %s'",
        "'[Spam\u00e9] %s'",
        '"[SPAM]\\t%s"',
    ],
)
def test_bad_subject_templates(make_repo, mailgw, template):
    lines = _errors(make_repo, mailgw, _domain(filters=f"filters:\n  inbound:\n    spam: {{subject: {template}}}\n"))
    assert len(lines) == 1 and "error[bad-subject]" in lines[0], lines


@pytest.mark.parametrize(
    "url",
    [
        "http://q.example.org/api",
        "https://q.example.org/api?x=1",
        "https://u@q.example.org/",
        "https://q.example.org/a b",
        "https://q_x.example.org/",
        "https://q.example.org:99999/",
        'https://q.example.org/"',
        "https://q.example.org/#top",
    ],
)
def test_bad_quarantine_urls(make_repo, mailgw, url):
    lines = _errors(make_repo, mailgw, _domain(), GATEWAY + f"quarantine: {{url: '{url}'}}\n")
    assert len(lines) == 1 and "error[bad-url]" in lines[0], lines


@pytest.mark.parametrize(
    ("kind", "entry", "code"),
    [
        ("senders", "'spammer'", "bad-sender"),
        ("senders", "'a b@x.net'", "bad-sender"),
        ("senders", "'@'", "bad-sender"),
        ("senders", "'@x_y.net'", "bad-sender"),
        ("networks", "'10.0.0.1/8'", "bad-network"),
        ("networks", "'0.0.0.0/0'", "bad-network"),
        ("networks", "'::/8'", "bad-network"),
        ("networks", "'192.0.2.0/24 #x'", "bad-network"),
        ("networks", "'example.net'", "bad-network"),
    ],
)
def test_bad_list_entries(make_repo, mailgw, kind, entry, code):
    lines = _errors(make_repo, mailgw, _domain(filters=f"filters:\n  inbound:\n    block: {{{kind}: [{entry}]}}\n"))
    assert len(lines) == 1 and f"error[{code}]" in lines[0], lines
