"""mailgw dns check against a real DNS server on loopback (tests/dns_server.py): missing, stale and correct, exactly.

The published zones start from the generated snippets and are then changed by
hand the way a zone drifts: a record left out, one with old data, one more TXT
record beside the SPF one. What each line must say is written here, from the
changes made.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from compiler.main import main
from tests.conftest import REPO
from tests.dns_server import DnsServer, zone_text

GATEWAY = yaml.safe_load((REPO / "gateway.yaml").read_text())
SPF_RECORD = GATEWAY["dns"]["spf_record"]
SRS_DOMAIN = GATEWAY["forwarding"]["srs_domain"]
TIFPA = yaml.safe_load((REPO / "domains/tifpa.example.org.yaml").read_text())
STATUS = re.compile(r"^(correct|missing|stale|failed) +(\S+) (\S+)")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundled") / "out"
    assert main(["--root", str(REPO), "build", "--out", str(out)]) == 0
    return out


def snippet(out: Path, name: str) -> str:
    return (out / "dns" / f"{name}.zone").read_text()


def without(text: str, owner: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith(owner + " "))


def check(mailgw, server: DnsServer | None, name: str, resolver: str | None = None):
    result = mailgw(REPO, "dns", "check", name, "--resolver", resolver or server.address, "--timeout", "2")
    statuses = {}
    for line in result.out.splitlines():
        match = STATUS.match(line)
        if match:
            statuses[(match[2], match[3])] = match[1]
    return result, statuses


def test_a_zone_that_drifted_shows_missing_stale_and_correct_records_exactly(out, mailgw):
    [rsa, ed] = sorted(TIFPA["dkim"]["selectors"], key=lambda k: k["algorithm"] != "rsa")
    published = snippet(out, "tifpa.example.org")
    published = without(published, f"{ed['name']}._domainkey.tifpa.example.org.")  # never published
    published = published.replace("p=reject;", "p=none;")  # the old DMARC policy
    published += 'tifpa.example.org. 300 IN TXT "google-site-verification=abc"\n'  # not SPF: ignored
    published = without(published, "_smtp._tls.tifpa.example.org.")
    with DnsServer({"tifpa.example.org.": zone_text("tifpa.example.org.", published)}) as server:
        result, statuses = check(mailgw, server, "tifpa.example.org")
    assert statuses == {
        ("tifpa.example.org.", "MX"): "correct",
        ("tifpa.example.org.", "TXT"): "correct",
        (f"{rsa['name']}._domainkey.tifpa.example.org.", "TXT"): "correct",
        (f"{ed['name']}._domainkey.tifpa.example.org.", "TXT"): "missing",
        ("_dmarc.tifpa.example.org.", "TXT"): "stale",
        ("_mta-sts.tifpa.example.org.", "TXT"): "correct",
        ("mta-sts.tifpa.example.org.", "CNAME"): "correct",
        ("_smtp._tls.tifpa.example.org.", "TXT"): "missing",
        # cnaf.example.org reports to dmarc@tifpa.example.org: tifpa's zone consents.
        ("cnaf.example.org._report._dmarc.tifpa.example.org.", "TXT"): "correct",
    }
    assert result.code == 1
    assert result.out.splitlines()[-1] == "summary: 6 correct, 2 missing, 1 stale"
    stale = result.out.split("stale    _dmarc.tifpa.example.org. TXT\n")[1].splitlines()[:2]
    assert stale == [
        '           publishes:    "v=DMARC1; p=none; rua=mailto:dmarc-reports@tifpa.example.org"',
        '           must publish: "v=DMARC1; p=reject; rua=mailto:dmarc-reports@tifpa.example.org"',
    ]


def test_every_record_correct_exits_0(out, mailgw):
    with DnsServer({"tifpa.example.org.": zone_text("tifpa.example.org.", snippet(out, "tifpa.example.org"))}) as dns:
        result, statuses = check(mailgw, dns, "tifpa.example.org")
    assert result.code == 0, result.out
    assert set(statuses.values()) == {"correct"} and len(statuses) == 9


def test_the_gateway_s_own_records_are_checked_by_its_spf_record_name(out, mailgw):
    gateway = snippet(out, SPF_RECORD)
    with DnsServer({f"{SRS_DOMAIN}.": zone_text(f"{SRS_DOMAIN}.", gateway)}) as dns:
        result, statuses = check(mailgw, dns, SPF_RECORD)
    assert result.code == 0, result.out
    assert (SPF_RECORD + ".", "TXT") in statuses and (SRS_DOMAIN + ".", "MX") in statuses


def test_two_spf_records_or_a_site_mx_left_in_front_of_the_gateway_are_stale(out, mailgw):
    published = snippet(out, "tifpa.example.org")
    published += 'tifpa.example.org. 300 IN TXT "v=spf1 mx -all"\n'  # two SPF records: a permerror (RFC 7208)
    published += "tifpa.example.org. 300 IN MX 5 smtp.tifpa.example.org.\n"  # mail would bypass the gateway
    with DnsServer({"tifpa.example.org.": zone_text("tifpa.example.org.", published)}) as dns:
        result, statuses = check(mailgw, dns, "tifpa.example.org")
    assert statuses[("tifpa.example.org.", "TXT")] == "stale"
    assert statuses[("tifpa.example.org.", "MX")] == "stale"
    assert result.code == 1


def test_a_backup_mx_domain_keeps_its_own_mx_in_front(out, mailgw):
    published = snippet(out, "lnf.example.org") + "lnf.example.org. 300 IN MX 10 mx.lnf.example.org.\n"
    with DnsServer({"lnf.example.org.": zone_text("lnf.example.org.", published)}) as dns:
        result, statuses = check(mailgw, dns, "lnf.example.org")
    assert statuses == {("lnf.example.org.", "MX"): "correct"}
    assert result.code == 0, result.out


def test_a_domain_that_publishes_nothing_is_all_missing(mailgw):
    with DnsServer({"example.org.": zone_text("example.org.", "")}) as dns:
        result, statuses = check(mailgw, dns, "ge.example.org")
    assert set(statuses.values()) == {"missing"} and result.code == 1


def test_a_server_that_does_not_answer_exits_2(mailgw):
    with DnsServer({"example.net.": zone_text("example.net.", "")}) as dns:
        result, statuses = check(mailgw, dns, "ge.example.org")  # outside its zones: REFUSED
    assert set(statuses.values()) == {"failed"} and result.code == 2


def test_a_name_that_is_no_domain_of_the_gateway_is_a_usage_error(mailgw):
    result = mailgw(REPO, "dns", "check", "example.com", "--resolver", "127.0.0.1:9")
    assert result.code == 2
    assert result.err == (
        f"mailgw: dns check: example.com is neither a domain of domains/ nor the gateway's own {SPF_RECORD}\n"
    )
    assert mailgw(REPO, "dns", "check", "bad domain", "--resolver", "127.0.0.1").code == 2
