"""The generated Rspamd configuration: its shape, its safety, and rspamadm configtest on it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from compiler import values
from compiler.fleet import build_fleet
from compiler.pipeline import compile_repository, load_declarations
from compiler.targets import rspamd
from tests import rspamd_env
from tests.conftest import GATEWAY, REPO, domain_yaml

QUARANTINE = "quarantine: {url: 'https://quarantine.gw.example.org/api'}\n"

# Every feature at once: several classes per direction, lists of both kinds with IPv6, quarantine
# with two retentions, an IDN domain and one with a '-' in it.
FEATURES = {
    "gateway": GATEWAY + QUARANTINE + ("filters:\n  inbound:\n    quarantine: {enabled: true}\n"),
    "domains/strict.example.org.yaml": domain_yaml(
        "strict.example.org",
        filters=(
            "filters:\n  inbound:\n    spam: {quarantine: 8, reject: 12}\n    virus: quarantine\n"
            "    quarantine: {retention_days: 14}\n"
            "  outbound:\n    notify_sender: false\n    quarantine: {enabled: true, retention_days: 7}\n"
        ),
    ),
    "domains/tag-only.example.org.yaml": domain_yaml(
        "tag-only.example.org",
        filters=("filters:\n  inbound:\n    spam: {rewrite_subject: 6, subject: '*** SPAM *** %s', reject: false}\n"),
    ),
    "domains/città.example.org.yaml": domain_yaml(
        "città.example.org",
        filters=(
            "filters:\n  inbound:\n"
            "    allow: {senders: ['friend@partner.example.net', '@trusted.example.net'],"
            " networks: ['198.51.100.0/28', '2001:db8:f00d::/48']}\n"
            "    block: {senders: ['@bulk.example.com'], networks: ['203.0.113.0/24', '2001:db8:bad::/48']}\n"
        ),
    ),
}


def _build(make_repo, files: dict, out: Path) -> Path:
    files = dict(files)
    root = make_repo(files, gateway=files.pop("gateway", GATEWAY))
    for rel, data in compile_repository(root).artifacts.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    return out


def _fleet(make_repo, files: dict):
    files = dict(files)
    return build_fleet(load_declarations(make_repo(files, gateway=files.pop("gateway", GATEWAY))))


def test_rules_go_outbound_then_inbound_strictest_first_then_the_fallbacks(make_repo):
    fleet = _fleet(make_repo, FEATURES)
    rules = rspamd.settings_rules(fleet)
    assert [r.priority for r in rules] == list(range(len(rules), 0, -1))
    directions = [r.direction for r in rules]
    assert directions == sorted(directions, key=lambda d: d != "outbound")
    inbound = [r for r in rules if r.direction == "inbound"]
    assert [r.domains for r in inbound] == [
        ("strict.example.org",),
        ("xn--citt-3na.example.org",),
        ("tag-only.example.org",),
        (),
    ]
    assert [r.domains for r in rules if r.direction == "outbound"][-1] == ()
    assert rules[-1].name == fleet.default_filters.inbound.name + "_fallback"
    assert len({r.name for r in rules}) == len(rules)


def test_action_thresholds_keep_reject_and_discard_for_forced_verdicts(make_repo):
    fleet = _fleet(make_repo, FEATURES)
    strict, tag_only = fleet.filters["strict.example.org"], fleet.filters["tag-only.example.org"]
    assert rspamd.action_thresholds(strict.inbound) == [
        ("reject", "12"),
        ("discard", "8"),
        ("rewrite subject", "7"),
        ("add header", "5"),
        ("greylist", "null"),
    ]
    assert rspamd.action_thresholds(tag_only.inbound) == [
        ("reject", "1000000"),
        ("discard", "1000000"),
        ("rewrite subject", "6"),
        ("add header", "5"),
        ("greylist", "null"),
    ]
    # Outbound without notification: spam over the reject threshold is quarantined instead.
    assert rspamd.action_thresholds(strict.outbound)[:2] == [("reject", "1000000"), ("discard", "10")]


def test_each_class_turns_off_the_virus_verdict_it_does_not_use(make_repo):
    rules = {r.domains: r for r in rspamd.settings_rules(_fleet(make_repo, FEATURES)) if r.direction == "inbound"}
    assert rules[("strict.example.org",)].symbols_disabled == ["FORCE_ACTION_MAILGW_VIRUS_REJECT"]
    assert rules[("tag-only.example.org",)].symbols_disabled == ["FORCE_ACTION_MAILGW_VIRUS_QUARANTINE"]


def test_maps_hold_the_normalised_lists_one_per_line(make_repo, tmp_path):
    out = _build(make_repo, FEATURES, tmp_path)
    maps = out / "rspamd" / "maps.d"
    assert (maps / "mailgw_block_networks.xn--citt-3na.example.org.map").read_text() == (
        rspamd.HEADER + "2001:db8:bad::/48\n203.0.113.0/24\n"
    )
    assert (maps / "mailgw_allow_senders.xn--citt-3na.example.org.map").read_text() == (
        rspamd.HEADER + "@trusted.example.net\nfriend@partner.example.net\n"
    )
    assert not (maps / "mailgw_block_senders.strict.example.org.map").exists()
    assert (
        (maps / "mailgw_gtube.map")
        .read_text()
        .endswith("/XJS\\*C4JDBQADN1\\.NSBN3\\*2IDNEN\\*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL\\*C\\.34X/\n")
    )
    for path in (out / "rspamd").rglob("*"):
        if path.is_file():
            assert path.read_text().startswith(rspamd.HEADER), path


def test_quarantine_exporter_knows_the_retention_of_every_quarantining_class(make_repo, tmp_path):
    text = (_build(make_repo, FEATURES, tmp_path) / "rspamd/local.d/metadata_exporter.conf").read_text()
    assert 'url = "https://quarantine.gw.example.org/api";' in text and "defer = true;" in text
    classes = rspamd.quarantine_classes(rspamd.settings_rules(_fleet(make_repo, FEATURES)))
    assert sorted(set(classes.values())) == [7, 14, 30]
    for name, days in classes.items():
        assert f'["{name}"] = {days}' in text


def test_no_quarantine_exporter_when_no_class_uses_the_quarantine(make_repo, tmp_path):
    plain = _build(make_repo, {"domains/tifpa.example.org.yaml": domain_yaml()}, tmp_path)
    assert "rules" not in (plain / "rspamd/local.d/metadata_exporter.conf").read_text()


def test_symbols_of_two_domains_never_collide():
    assert rspamd.symbol_suffix("a-b.example.org") != rspamd.symbol_suffix("a.b.example.org")
    assert rspamd.symbol_suffix("xn--citt-3na.example.org") == "XN____CITT__3NA_EXAMPLE_ORG"


@pytest.mark.parametrize("value", ["a\nb", "caf\u00e9", "a\x00", "a\u202eb"])
def test_ucl_strings_refuse_what_no_escape_carries(value):
    with pytest.raises(ValueError):
        rspamd.ucl_string(value)


@pytest.mark.parametrize(
    "value, written",
    [
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("$CONFDIR ${X}", '"\\u0024CONFDIR \\u0024\\u007bX\\u007d"'),
        ("[{= 7*7 =}] {# #} {% x %}", '"[\\u007b= 7*7 =\\u007d] \\u007b# #\\u007d \\u007b% x %\\u007d"'),
    ],
)
def test_ucl_strings_escape_quotes_variables_and_template_markers(value, written):
    """What Rspamd would read as syntax is escaped; tests/test_injection.py reads such values back with configdump."""
    assert rspamd.ucl_string(value) == written


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x24F), max_size=70))
def test_every_accepted_subject_template_is_one_safe_ucl_string(text):
    try:
        template = values.subject_template(text)
    except PydanticCustomError:
        return
    rendered = rspamd.ucl_string(template)
    assert rendered.count('"') == 2 and "$" not in rendered and template.count("%") == 1


def test_generated_files_are_ascii_and_deterministic(make_repo, tmp_path):
    first = _build(make_repo, FEATURES, tmp_path / "a")
    second = _build(make_repo, FEATURES, tmp_path / "b")
    files = sorted(p.relative_to(first) for p in (first / "rspamd").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in (second / "rspamd").rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes()
        (first / rel).read_bytes().decode("ascii")


# --- rspamadm configtest ----------------------------------------------------------------


def _configtest(out: Path, dest: Path, hs_cache: Path) -> subprocess.CompletedProcess:
    return rspamd_env.configtest(rspamd_env.config_tree(out, dest, hs_cache=hs_cache))


@pytest.mark.needs("rspamadm")
def test_configtest_passes_without_a_warning_on_the_bundled_fleet(tmp_path, rspamadm_hs_cache):
    out = tmp_path / "out"
    for rel, data in compile_repository(REPO).artifacts.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    result = _configtest(out, tmp_path / "tree", rspamadm_hs_cache)
    assert (result.returncode, result.stdout, result.stderr) == (0, "syntax OK\n", "")


@pytest.mark.needs("rspamadm")
def test_configtest_passes_without_a_warning_on_every_feature(make_repo, tmp_path, rspamadm_hs_cache):
    result = _configtest(_build(make_repo, FEATURES, tmp_path / "out"), tmp_path / "tree", rspamadm_hs_cache)
    assert (result.returncode, result.stdout, result.stderr) == (0, "syntax OK\n", "")


# The gateway's own defaults quarantine below the reject threshold, or quarantine and never reject.
GATEWAY_QUARANTINES = [
    "filters:\n  inbound:\n    spam: {quarantine: 10, reject: 15}\n    quarantine: {enabled: true}\n",
    "filters:\n  inbound:\n    spam: {quarantine: 10, reject: false}\n    quarantine: {enabled: true}\n",
]


@pytest.mark.needs("rspamadm")
@pytest.mark.parametrize("filters", GATEWAY_QUARANTINES, ids=["below-reject", "no-reject"])
def test_configtest_passes_with_a_quarantine_in_the_gateway_defaults(make_repo, tmp_path, filters, rspamadm_hs_cache):
    files = {"gateway": GATEWAY + QUARANTINE + filters, "domains/tifpa.example.org.yaml": domain_yaml()}
    result = _configtest(_build(make_repo, files, tmp_path / "out"), tmp_path / "tree", rspamadm_hs_cache)
    assert (result.returncode, result.stdout, result.stderr) == (0, "syntax OK\n", "")


@pytest.mark.needs("rspamadm")
def test_configtest_does_fail_on_a_broken_file(make_repo, tmp_path, rspamadm_hs_cache):
    """The check above can fail: one stray brace in a generated file and rspamadm refuses the tree."""
    out = _build(make_repo, FEATURES, tmp_path / "out")
    with open(out / "rspamd/local.d/settings.conf", "a") as settings:
        settings.write("}\n")
    result = _configtest(out, tmp_path / "tree", rspamadm_hs_cache)
    assert result.returncode != 0 and "syntax OK" not in result.stdout


# --- the Postfix side, for the integrator -------------------------------------------------

RELAYS = {
    "domains/a.example.org.yaml": domain_yaml(
        "a.example.org", site="site: SITE-A\n", outbound_relays="outbound_relays: [192.0.2.1]\n"
    ),
    "domains/a2.example.org.yaml": domain_yaml(
        "a2.example.org",
        site="site: SITE-A\n",
        filters=("filters:\n  outbound:\n    notify_sender: false\n    quarantine: {enabled: true}\n"),
    ),
    "domains/b.example.org.yaml": domain_yaml(
        "b.example.org", site="site: SITE-B\n", outbound_relays="outbound_relays: ['2001:db8:b::/64', 192.0.2.64/28]\n"
    ),
    "domains/c.example.org.yaml": domain_yaml("c.example.org", site="site: SITE-C\n"),
}


def test_an_outbound_class_takes_only_the_relays_of_the_sites_owning_its_domains(make_repo):
    """A relay never gets a policy its site did not choose: only its own domains' classes, or the defaults."""
    fleet = _fleet(make_repo, {"gateway": GATEWAY + QUARANTINE, **RELAYS})
    outbound = {rule.domains: rule.relays for rule in rspamd.settings_rules(fleet) if rule.direction == "outbound"}
    assert outbound == {
        # a2 declares no relay, but SITE-A's relay sends for every domain of SITE-A.
        ("a2.example.org",): ("192.0.2.1/32",),
        ("a.example.org", "b.example.org", "c.example.org"): ("192.0.2.1/32", "192.0.2.64/28", "2001:db8:b::/64"),
        (): ("192.0.2.1/32", "192.0.2.64/28", "2001:db8:b::/64"),
    }
    assert all(rule.relays == () for rule in rspamd.settings_rules(fleet) if rule.direction == "inbound")


def test_outbound_rules_match_a_relay_by_the_client_address(make_repo, tmp_path):
    files = {"gateway": GATEWAY + QUARANTINE, **RELAYS}
    settings = (_build(make_repo, files, tmp_path) / "rspamd/local.d/settings.conf").read_text()
    assert settings.count('  ip = ["192.0.2.1/32"];\n') == 1
    assert settings.count('expression = "(request_header:mta_name | authenticated | ip) & from";') == 2
    assert settings.count('expression = "request_header:mta_name | authenticated | ip";') == 1


def test_without_site_relays_outbound_rules_have_no_address_condition(make_repo, tmp_path):
    without = (_build(make_repo, FEATURES, tmp_path) / "rspamd/local.d/settings.conf").read_text()
    assert "ip = " not in without and 'expression = "request_header:mta_name | authenticated";' in without


def test_the_outbound_daemon_name_is_what_the_outbound_rules_match(make_repo, tmp_path):
    settings = (_build(make_repo, FEATURES, tmp_path) / "rspamd/local.d/settings.conf").read_text()
    assert f'request_header = {{ "MTA-Name" = "^{rspamd.OUTBOUND_DAEMON}$"; }}' in settings
    assert rspamd.INBOUND_DAEMON != rspamd.OUTBOUND_DAEMON
