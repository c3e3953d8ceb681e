"""out/dns: every zone snippet parses with dnspython and passes named-checkzone, and says what the YAML says.

Each snippet is wrapped the way a zone's owner would hold it: a synthetic SOA
and NS at the zone's apex, then the snippet as written. The expected records
come from gateway.yaml and domains/*.yaml as this test reads them (PyYAML),
never from the compiler.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
from pathlib import Path

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from compiler.main import main
from tests.conftest import REPO, program
from tests.dns_server import zone_text

GATEWAY = yaml.safe_load((REPO / "gateway.yaml").read_text())
DOMAINS = {
    data["domain"].encode("idna").decode() if not data["domain"].isascii() else data["domain"]: data
    for data in (yaml.safe_load(p.read_text()) for p in sorted((REPO / "domains").glob("*.yaml")))
}
SPF_RECORD = GATEWAY["dns"]["spf_record"]
MX_HOSTS = sorted(GATEWAY["mx_hosts"])


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundled") / "out"
    assert main(["--root", str(REPO), "build", "--out", str(out)]) == 0
    return out


def zone_of(out: Path, name: str) -> str:
    return (out / "dns" / f"{name}.zone").read_text()


def apex(name: str) -> str:
    """The zone a snippet goes into: the domain's own; for the gateway's records, the SRS domain's."""
    return GATEWAY["forwarding"]["srs_domain"] if name == SPF_RECORD else name


def parsed(out: Path, name: str) -> dns.zone.Zone:
    return dns.zone.from_text(zone_text(apex(name) + ".", zone_of(out, name)), apex(name) + ".", relativize=False)


def txt(zone: dns.zone.Zone, owner: str) -> list[str]:
    rdataset = zone.get_rdataset(owner + ".", "TXT")
    return sorted(b"".join(r.strings).decode() for r in rdataset) if rdataset else []


def test_out_dns_has_a_snippet_per_domain_and_the_gateway_s_own(out):
    assert sorted(p.name for p in (out / "dns").iterdir()) == sorted(
        [f"{name}.zone" for name in DOMAINS] + [f"{SPF_RECORD}.zone"]
    )


@pytest.mark.needs("named-checkzone")
def test_every_snippet_passes_named_checkzone_wrapped_in_a_zone(out, tmp_path):
    for path in sorted((out / "dns").iterdir()):
        name = path.name.removesuffix(".zone")
        wrapped = tmp_path / path.name
        wrapped.write_text(zone_text(apex(name) + ".", path.read_text()))
        done = subprocess.run(
            [program("named-checkzone"), "-k", "fail", "-n", "ignore", apex(name), str(wrapped)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and done.stdout.rstrip().endswith("OK"), f"{path.name}: {done.stdout}"
        assert parsed(out, name)  # and dnspython reads it too


def test_a_primary_domain_publishes_the_gateway_s_mx_spf_its_keys_and_dmarc(out):
    zone = parsed(out, "tifpa.example.org")
    declared = DOMAINS["tifpa.example.org"]
    mx = zone.get_rdataset("tifpa.example.org.", "MX")
    assert sorted((r.preference, r.exchange.to_text()) for r in mx) == [(10, f"{h}.") for h in MX_HOSTS]
    assert txt(zone, "tifpa.example.org") == [f"v=spf1 include:{SPF_RECORD} -all"]
    for key in declared["dkim"]["selectors"]:
        assert txt(zone, f"{key['name']}._domainkey.tifpa.example.org") == [
            f"v=DKIM1; k={key['algorithm']}; p={key['public_key']}"
        ]
    reports = ",".join(f"mailto:{a}" for a in declared["dmarc"]["reports"])
    assert txt(zone, "_dmarc.tifpa.example.org") == [f"v=DMARC1; p={declared['dmarc']['policy']}; rua={reports}"]
    assert txt(zone, "_smtp._tls.tifpa.example.org") == [
        "v=TLSRPTv1; rua=" + ",".join(f"mailto:{a}" for a in GATEWAY["dns"]["tls_reports"])
    ]
    cname = zone.get_rdataset("mta-sts.tifpa.example.org.", "CNAME")
    assert [r.target.to_text() for r in cname] == [GATEWAY["dns"]["mta_sts"]["policy_host"] + "."]


def test_a_backup_mx_domain_gets_the_gateway_at_a_lower_preference_and_no_spf(out):
    assert DOMAINS["lnf.example.org"]["role"] == "backup"
    zone = parsed(out, "lnf.example.org")
    mx = zone.get_rdataset("lnf.example.org.", "MX")
    primary = parsed(out, "tifpa.example.org").get_rdataset("tifpa.example.org.", "MX")
    assert {r.preference for r in mx} == {20} and {r.preference for r in primary} == {10}
    assert txt(zone, "lnf.example.org") == []
    assert zone.get_rdataset("_mta-sts.lnf.example.org.", "TXT") is None


def test_the_gateway_s_snippet_lists_every_node_address_in_its_spf_record(out):
    zone = parsed(out, SPF_RECORD)
    addresses = [a for host in MX_HOSTS for a in GATEWAY["dns"]["mx_addresses"][host]]
    [record] = txt(zone, SPF_RECORD)
    mechanisms = record.split()
    assert mechanisms[0] == "v=spf1" and mechanisms[-1] == "-all"
    assert sorted(mechanisms[1:-1]) == sorted(f"ip{6 if ':' in a else 4}:{a}" for a in addresses)
    for host in MX_HOSTS:
        found = [r.address for kind in ("A", "AAAA") for r in (zone.get_rdataset(host + ".", kind) or [])]
        assert sorted(found) == sorted(GATEWAY["dns"]["mx_addresses"][host])
    srs = GATEWAY["forwarding"]["srs_domain"]
    assert txt(zone, srs) == [f"v=spf1 include:{SPF_RECORD} -all"]
    arc = GATEWAY["forwarding"]["arc"]
    assert txt(zone, f"{arc['name']}._domainkey.{srs}") == [f"v=DKIM1; k=rsa; p={arc['public_key']}"]


def test_a_report_address_of_another_domain_gets_its_consent_in_that_domain_s_zone(out):
    reports = DOMAINS["cnaf.example.org"]["dmarc"]["reports"]
    destination = reports[0].rpartition("@")[2]
    assert destination in DOMAINS and destination != "cnaf.example.org"
    consent = f"cnaf.example.org._report._dmarc.{destination}"
    assert txt(parsed(out, destination), consent) == ["v=DMARC1"]
    # In cnaf's own snippet it is a comment that says where it belongs.
    assert f";   {consent}. " in zone_of(out, "cnaf.example.org")
    assert f"published by the zone of {destination}" in zone_of(out, "cnaf.example.org")


def test_every_txt_string_is_at_most_255_bytes_and_the_strings_join_to_the_record(out):
    zone = parsed(out, "tifpa.example.org")
    for name, rdataset in zone.iterate_rdatasets("TXT"):
        for rdata in rdataset:
            assert all(len(string) <= 255 for string in rdata.strings), name
    [key] = [k for k in DOMAINS["tifpa.example.org"]["dkim"]["selectors"] if k["algorithm"] == "rsa"]
    rdata = next(iter(zone.get_rdataset(f"{key['name']}._domainkey.tifpa.example.org.", "TXT")))
    assert len(rdata.strings) == 2 and len(rdata.strings[0]) == 255


def test_a_4096_bit_key_is_split_into_strings_that_join_back(make_repo, mailgw):
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096).public_key()
    p = base64.b64encode(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()
    gateway = (
        "mx_hosts: [mx1.gw.example.org]\nldap: {base_dn: 'dc=org'}\n"
        "dns: {spf_record: _spf.gw.example.org, mx_addresses: {mx1.gw.example.org: [192.0.2.11]}}\n"
    )
    root = make_repo(
        {
            "domains/tifpa.example.org.yaml": "domain: tifpa.example.org\nsite: TIFPA\nadmins: ['@x/y']\n"
            "delivery: {nexthop: 'smtp:[smtp.tifpa.example.org]:25'}\nrecipients: {mario.rossi: mrossi}\n"
            f"dkim: {{selectors: [{{name: big, public_key: '{p}'}}]}}\n"
        },
        gateway=gateway,
    )
    assert mailgw(root, "build").code == 0
    zone = dns.zone.from_text(
        zone_text("tifpa.example.org.", (root / "out/dns/tifpa.example.org.zone").read_text()),
        "tifpa.example.org.",
        relativize=False,
    )
    [rdata] = zone.get_rdataset("big._domainkey.tifpa.example.org.", "TXT")
    assert len(rdata.strings) == 3 and all(len(s) <= 255 for s in rdata.strings)
    assert b"".join(rdata.strings).decode() == f"v=DKIM1; k=rsa; p={p}"


def test_the_mta_sts_id_is_the_policy_s_and_changes_with_the_node_list(make_repo, mailgw, out):
    policy = (out / "mta-sts" / "mta-sts.txt").read_text()
    lines = policy.splitlines()
    assert lines[0] == "version: STSv1"
    assert [line.split(": ", 1)[1] for line in lines if line.startswith("mx: ")] == MX_HOSTS
    assert f"mode: {GATEWAY['dns']['mta_sts']['mode']}" in lines
    ids = set()
    for name in DOMAINS:
        for record in txt(parsed(out, name), f"_mta-sts.{name}"):
            ids.add(re.fullmatch(r"v=STSv1; id=([A-Za-z0-9]{1,32})", record).group(1))
    assert len(ids) == 1
    # Another node in mx_hosts: another policy, and another id for every domain.
    gateway = (
        (REPO / "gateway.yaml")
        .read_text()
        .replace("  - mx2.gw.example.org\n", "  - mx2.gw.example.org\n  - mx3.gw.example.org\n")
    )
    gateway = gateway.replace(
        '    mx2.gw.example.org: [192.0.2.12, "2001:db8:20::12"]\n',
        '    mx2.gw.example.org: [192.0.2.12, "2001:db8:20::12"]\n    mx3.gw.example.org: [192.0.2.13]\n',
    )
    files = {f"domains/{p.name}": p.read_text() for p in (REPO / "domains").glob("*.yaml")}
    root = make_repo(files, gateway=gateway)
    assert mailgw(root, "build").code == 0
    changed = (root / "out/mta-sts/mta-sts.txt").read_bytes()
    assert b"mx: mx3.gw.example.org" in changed
    record = (root / "out/dns/tifpa.example.org.zone").read_text()
    [new_id] = re.findall(r"v=STSv1; id=([A-Za-z0-9]+)", record)
    assert new_id not in ids
    assert hashlib.sha256(changed).hexdigest().startswith(new_id)


def test_no_dns_section_no_records(make_repo, mailgw):
    root = make_repo(
        {
            "domains/tifpa.example.org.yaml": "domain: tifpa.example.org\nsite: TIFPA\nadmins: ['@x/y']\n"
            "delivery: {nexthop: 'smtp:[smtp.tifpa.example.org]:25'}\nrecipients: {mario.rossi: mrossi}\n"
        }
    )
    assert mailgw(root, "build").code == 0
    assert not (root / "out" / "dns").exists() and not (root / "out" / "mta-sts").exists()


def test_dnspython_reads_the_owner_names_as_absolute(out):
    for path in (out / "dns").iterdir():
        for line in path.read_text().splitlines():
            if line and not line.startswith(";"):
                owner = line.split()[0]
                assert owner.endswith(".") and dns.name.from_text(owner).is_absolute(), line
                assert line.split()[2:3] == ["IN"] and dns.rdataclass.from_text(line.split()[2])
                assert dns.rdatatype.from_text(line.split()[3])
