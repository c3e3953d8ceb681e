"""Mail the world trusts, on the wire: DKIM signing, SRS and ARC for forwarded mail, through a real Postfix,
a real Rspamd (with clamd) and a real postsrsd, checked with dkimpy and pyspf against the generated zones.

One gateway serves the whole module: a test fleet of two sites (tifpa signs with an RSA and an Ed25519 key,
cnaf declares no DKIM), each with a relay on loopback, an external alias, and gateway.yaml's forwarding with
an ARC key. Postfix runs the generated main.cf and master.cf with the test overrides of docs/mx.md and its
milter at the test's Rspamd; postsrsd runs in the foreground with its own secret, on free ports, as
forwarding declares them. The private keys are written where gateway.yaml's dkim.key_directory says, as
Puppet installs them on a node.

Every public key a verifier uses is read from the generated out/dns zones (never from the declarations):
a small authoritative server (tests/dns_server.py) serves them to pyspf, and dkimpy reads them through a
lookup function over the same zones. Clients connect from:

    127.0.0.3     a stranger on the internet
    127.0.0.10    tifpa's relay
    127.0.0.11    cnaf's relay
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import subprocess
import tempfile
from pathlib import Path

import dkim
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest
import spf
import yaml

from compiler import dkim as keys
from compiler.pipeline import compile_repository
from tests import rspamd_env as env
from tests.dns_server import DnsServer, zone_text
from tests.mx_harness import (
    PostfixInstance,
    Sink,
    free_port,
    install,
    install_forward_map,
    rmtree,
    sites_on_loopback,
    smtp_session,
    start_postsrsd,
    stop_postsrsd,
    wait_for,
)

pytestmark = [
    pytest.mark.needs("postfix", "postconf", "postmap", "postsrsd", "rspamd", "clamd", "openssl"),
    pytest.mark.needs_root("starting Postfix"),
]

STRANGER, TIFPA_RELAY, CNAF_RELAY = "127.0.0.3", "127.0.0.10", "127.0.0.11"
SRS_DOMAIN = "gw.example.org"
NODE_ADDRESS = "192.0.2.11"  # the MX node's public address, as dns.mx_addresses declares it
EXTERNAL = "someone@ext.example.net"
# The original sender's own SPF: only its own server may send for it, not the gateway.
EXTERNAL_SPF = "v=spf1 ip4:203.0.113.5 -all"


def _domain(name: str, site: str, sites: Sink, relay: str, extra: dict) -> dict:
    return {
        "domain": name,
        "site": site,
        "admins": [f"@example/{site.lower()}"],
        "delivery": {"nexthop": f"smtp:[127.0.0.1]:{sites.port}"},
        "outbound_relays": [relay],
        **extra,
    }


class Gateway:
    def __init__(self, base: Path, clamd, hs_cache: Path):
        self.base = base
        self.sites, self.internet = Sink("sites"), Sink("internet")
        self.postfix = PostfixInstance(base / "mx")
        self.keys = base / "keys"
        self.keys.mkdir()
        self.pairs = {"rsa1": keys.generate("rsa"), "ed1": keys.generate("ed25519"), "arc1": keys.generate("rsa")}
        lookups = {"forward": free_port(), "reverse": free_port(), "service": free_port()}
        self.srs_ports = lookups
        gateway = {
            "mx_hosts": ["mx1.gw.example.org"],
            "postmaster": "gw-team@example.net",
            "ldap": {"base_dn": "ou=mailgw,dc=example,dc=org"},
            "postfix": {"map_directory": str(self.postfix.conf / "mailgw")},
            "quarantine": {"url": f"https://127.0.0.1:{free_port()}/quarantine"},  # nothing here is quarantined
            "clamav": {"socket": str(clamd.socket)},
            "dkim": {"key_directory": str(self.keys)},
            "dns": {"spf_record": f"_spf.{SRS_DOMAIN}", "mx_addresses": {"mx1.gw.example.org": [NODE_ADDRESS]}},
            "forwarding": {
                "srs_domain": SRS_DOMAIN,
                "srs_secret_file": str(base / "postsrsd.secret"),
                "srs_forward_lookup": f"127.0.0.1:{lookups['forward']}",
                "srs_reverse_lookup": f"127.0.0.1:{lookups['reverse']}",
                "service": f"127.0.0.1:{lookups['service']}",
                "arc": {"name": "arc1", "public_key": self.pairs["arc1"].public_key},
            },
        }
        selectors = [
            {"name": name, "algorithm": self.pairs[name].algorithm, "public_key": self.pairs[name].public_key}
            for name in ("rsa1", "ed1")
        ]
        domains = [
            _domain(
                "tifpa.example.org",
                "TIFPA",
                self.sites,
                TIFPA_RELAY,
                {
                    "recipients": {"mario.rossi": "mrossi"},
                    "external_aliases": {"g.verdi": ["giuseppe.verdi@example.net"]},
                    "dkim": {"selectors": selectors},
                },
            ),
            _domain("cnaf.example.org", "CNAF", self.sites, CNAF_RELAY, {"recipients": {"luca.gallo": "lgallo"}}),
        ]
        repo = base / "repo"
        (repo / "domains").mkdir(parents=True)
        (repo / "gateway.yaml").write_text(yaml.safe_dump(gateway))
        for domain in domains:
            (repo / "domains" / f"{domain['domain']}.yaml").write_text(yaml.safe_dump(domain))
        with sites_on_loopback():
            compiled = compile_repository(repo)
        self.out = base / "out"
        for rel, data in compiled.artifacts.items():
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.out / rel).write_bytes(data)
        # The secrets Puppet installs: the private keys, postsrsd's secret.
        for name, pair in self.pairs.items():
            domain = SRS_DOMAIN if name == "arc1" else "tifpa.example.org"
            (self.keys / f"{domain}.{name}.key").write_bytes(pair.private_key)
        (base / "postsrsd.secret").write_text("a secret of this test run only\n")
        self.zones = {
            path.name.removesuffix(".zone"): path.read_text() for path in sorted((self.out / "dns").glob("*.zone"))
        }
        self.postsrsd: subprocess.Popen | None = None
        self.dns = DnsServer(
            {
                f"{SRS_DOMAIN}.": zone_text(f"{SRS_DOMAIN}.", self.zones[f"_spf.{SRS_DOMAIN}"]),
                "tifpa.example.org.": zone_text("tifpa.example.org.", self.zones["tifpa.example.org"]),
                "ext.example.net.": zone_text("ext.example.net.", f'@ IN TXT "{EXTERNAL_SPF}"\n'),
            }
        )
        tree = env.config_tree(self.out, base / "rspamd", hs_cache=hs_cache)
        # Rspamd asks the test's DNS server (which refuses everything outside its zones), and checks SPF and
        # DMARC for clients on loopback too: here the stranger is on loopback, on the internet it is not.
        (tree.conf / "local.d" / "options.inc").write_text(
            f'dns {{ nameserver = ["{self.dns.address}"]; timeout = 1s; retransmits = 0; }}\ncheck_local = true;\n'
        )
        self.rspamd = env.Rspamd(tree)

    def start(self) -> None:
        self.dns.__enter__()
        self.rspamd.__enter__()
        self.postsrsd = start_postsrsd(self.out)
        install(
            self.postfix, self.out, internet_port=self.internet.port, milter=f"inet:127.0.0.1:{self.rspamd.proxy_port}"
        )
        install_forward_map(self.postfix, self.out)
        self.postfix.start()

    def stop(self) -> None:
        self.postfix.stop()
        stop_postsrsd(self.postsrsd)
        self.rspamd.__exit__(None, None, None)
        self.dns.__exit__(None, None, None)
        self.sites.stop()
        self.internet.stop()

    def send(self, client: str, sender: str, rcpt: str, message: bytes) -> str:
        session = smtp_session(self.postfix.port, client)
        try:
            code, text = session.mail(sender)
            if code == 250:
                code, text = session.rcpt(rcpt)
            if code == 250:
                code, text = session.data(message)
            return f"{code} {text.decode()}"
        finally:
            try:
                session.quit()
            except smtplib.SMTPServerDisconnected:
                session.close()

    def arrived(self, sink: Sink, marker: str):
        found = wait_for(
            lambda: [m for m in list(sink.messages) if marker.encode() in m.content],
            30,
            f"the message {marker} at the {sink.name} sink\n{self.postfix.log()[-3000:]}",
        )
        assert len(found) == 1
        return found[0]

    def txt(self, name: bytes | str, timeout: int = 5) -> bytes | None:
        """dkimpy's DNS lookup, answered from the generated zones the DNS server holds: the TXT strings, joined."""
        wanted = dns.name.from_text(name.decode() if isinstance(name, bytes) else name)
        for origin, zone in self.dns.zones.items():
            node = zone.get_node(wanted) if wanted.is_subdomain(origin) else None
            rdataset = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.TXT) if node is not None else None
            if rdataset:
                return b"".join(next(iter(rdataset)).strings)
        return None


@pytest.fixture(scope="module")
def gw(clamd, hs_cache):
    # Not pytest's tmp_path: Postfix's daemons run as 'postfix' and must traverse the path.
    base = Path(tempfile.mkdtemp(prefix="mailgw-dkim-srs-"))
    base.chmod(0o755)
    gateway = Gateway(base, clamd, hs_cache)
    try:
        gateway.start()
        yield gateway
    finally:
        gateway.stop()
        rmtree(base)


def message(sender: str, to: str, marker: str, subject: str = "hello") -> bytes:
    return (
        f"From: Sender <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <{marker}@test.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"Hello,\r\nthis is {marker}.\r\n"
    ).encode()


# --- SRS and ARC: an external alias -----------------------------------------------------------------


def test_an_external_alias_is_forwarded_with_an_srs_sender_of_the_gateway_and_an_arc_seal(gw):
    sent = gw.send(
        STRANGER, EXTERNAL, "g.verdi@tifpa.example.org", message(EXTERNAL, "g.verdi@tifpa.example.org", "fwd1")
    )
    assert sent.startswith("250 "), sent
    forwarded = gw.arrived(gw.internet, "fwd1")
    assert forwarded.rcpt_tos == ("giuseppe.verdi@example.net",)
    local, _, domain = forwarded.mail_from.rpartition("@")
    assert domain == SRS_DOMAIN and local.startswith("SRS0=") and local.endswith("=ext.example.net=someone")
    # ARC: one set, sealed as the SRS domain, and the chain verifies against the generated zone's key.
    parsed = email.message_from_bytes(forwarded.content, policy=email.policy.default)
    assert len(parsed.get_all("ARC-Seal")) == 1
    assert f"d={SRS_DOMAIN}" in parsed["ARC-Seal"] and "s=arc1" in parsed["ARC-Seal"]
    cv, results, reason = dkim.arc_verify(forwarded.content, dnsfunc=gw.txt)
    assert cv == dkim.CV_Pass, (cv, results, reason)
    # The results sealed are those the first pass saw from the stranger's address (not the node's own), and
    # its headers reach the receiver unchanged: one Authentication-Results, one X-Spam-Status, the first pass's.
    sealed = parsed["ARC-Authentication-Results"]
    assert "mailgw_inbound" in sealed and "does not designate 127.0.0.3" in sealed and f"mailfrom={EXTERNAL}" in sealed
    assert [h.split(";")[0] for h in parsed.get_all("Authentication-Results")] == ["mailgw_inbound"]
    assert len(parsed.get_all("X-Spam-Status")) == 1 and parsed["X-Spam-Status"] != "No, score=0.00"


# pyspf asks dnspython's deprecated dns.resolver.query().
@pytest.mark.filterwarnings("ignore:please use dns.resolver.resolve:DeprecationWarning")
def test_spf_of_the_forwarded_mail_passes_for_the_gateway_s_domain(gw):
    forwarded = gw.arrived(gw.internet, "fwd1")
    with _resolving(gw.dns):
        srs = spf.check2(i=NODE_ADDRESS, s=forwarded.mail_from, h="mx1.gw.example.org")
        original = spf.check2(i=NODE_ADDRESS, s=EXTERNAL, h="mx1.gw.example.org")
    assert srs[0] == "pass", srs
    assert original[0] == "fail", "without SRS the gateway would be sending for ext.example.net"


def test_a_bounce_to_the_srs_address_goes_back_to_the_original_sender(gw):
    srs_address = gw.arrived(gw.internet, "fwd1").mail_from
    bounce = message("MAILER-DAEMON@example.net", srs_address, "bounce1", subject="Undelivered Mail Returned")
    assert gw.send(STRANGER, "", srs_address, bounce).startswith("250 ")
    returned = gw.arrived(gw.internet, "bounce1")
    assert returned.rcpt_tos == (EXTERNAL,) and returned.mail_from == "<>"


def test_an_srs_address_postsrsd_does_not_sign_is_refused_at_rcpt(gw):
    forged = f"SRS0=abcd=ZZ=ext.example.net=victim@{SRS_DOMAIN}"
    reply = gw.send(STRANGER, "", forged, message("x@example.net", forged, "forged1"))
    assert reply.startswith("550 5.1.1 "), reply


def test_mail_relayed_to_a_site_keeps_its_envelope_sender(gw):
    sent = gw.send(
        STRANGER, EXTERNAL, "mario.rossi@tifpa.example.org", message(EXTERNAL, "mario.rossi@tifpa.example.org", "site1")
    )
    assert sent.startswith("250 "), sent
    relayed = gw.arrived(gw.sites, "site1")
    assert relayed.mail_from == EXTERNAL
    assert b"ARC-Seal" not in relayed.content


# --- DKIM -------------------------------------------------------------------------------------------


def _signatures(content: bytes) -> list[str]:
    return email.message_from_bytes(content, policy=email.policy.default).get_all("DKIM-Signature") or []


def test_mail_from_a_site_relay_is_signed_with_both_keys_and_both_verify_against_the_zone(gw):
    sender = "mario.rossi@tifpa.example.org"
    assert gw.send(TIFPA_RELAY, sender, "friend@example.net", message(sender, "friend@example.net", "out1")).startswith(
        "250 "
    )
    signed = gw.arrived(gw.internet, "out1")
    signatures = _signatures(signed.content)
    assert sorted("a=ed25519-sha256" in s for s in signatures) == [False, True], signatures
    assert all("d=tifpa.example.org" in s.replace(" ", "") for s in signatures)
    verifier = dkim.DKIM(signed.content)
    assert [verifier.verify(idx=i, dnsfunc=gw.txt) for i in range(len(signatures))] == [True, True]


def test_inbound_mail_is_not_signed_even_from_a_signing_domain(gw):
    sender = "mario.rossi@tifpa.example.org"  # a stranger claiming the domain: inbound all the same
    assert gw.send(
        STRANGER, sender, "mario.rossi@tifpa.example.org", message(sender, "mario.rossi@tifpa.example.org", "in1")
    ).startswith("250 ")
    assert _signatures(gw.arrived(gw.sites, "in1").content) == []


def test_the_forwarding_pass_signs_nothing_a_stranger_sends_as_a_signing_domain(gw):
    """An external alias forwards a stranger's mail claiming tifpa: neither pass may give it tifpa's signature."""
    sender = "mario.rossi@tifpa.example.org"
    alias = "g.verdi@tifpa.example.org"
    assert gw.send(STRANGER, sender, alias, message(sender, alias, "fwd-forged")).startswith("250 ")
    assert _signatures(gw.arrived(gw.internet, "fwd-forged").content) == []


def test_a_site_s_mail_to_an_external_alias_is_signed_on_the_way_in_only(gw):
    """From a site relay: signed once with both keys on the first pass; the forwarding pass adds no signature."""
    sender = "mario.rossi@tifpa.example.org"
    alias = "g.verdi@tifpa.example.org"
    assert gw.send(TIFPA_RELAY, sender, alias, message(sender, alias, "fwd-site")).startswith("250 ")
    forwarded = gw.arrived(gw.internet, "fwd-site")
    signatures = _signatures(forwarded.content)
    assert sorted("a=ed25519-sha256" in s for s in signatures) == [False, True], signatures
    verifier = dkim.DKIM(forwarded.content)
    assert [verifier.verify(idx=i, dnsfunc=gw.txt) for i in range(len(signatures))] == [True, True]


def test_a_bounce_is_not_signed_whatever_its_from_says(gw):
    """An empty envelope sender names no domain to hold the From: to: cnaf's relay claiming tifpa gets nothing."""
    claimed = "mario.rossi@tifpa.example.org"
    assert gw.send(CNAF_RELAY, "", "friend@example.net", message(claimed, "friend@example.net", "bounce1")).startswith(
        "250 "
    )
    assert _signatures(gw.arrived(gw.internet, "bounce1").content) == []


def test_mail_of_a_domain_without_dkim_is_not_signed(gw):
    sender = "luca.gallo@cnaf.example.org"
    assert gw.send(CNAF_RELAY, sender, "friend@example.net", message(sender, "friend@example.net", "out2")).startswith(
        "250 "
    )
    assert _signatures(gw.arrived(gw.internet, "out2").content) == []


class _resolving:
    """dnspython's default resolver (what pyspf asks) pointed at the test's DNS server, for the block."""

    def __init__(self, server: DnsServer):
        self.server = server

    def __enter__(self):
        self.saved = dns.resolver.default_resolver
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = ["127.0.0.1"], self.server.port
        dns.resolver.default_resolver = resolver

    def __exit__(self, *exc):
        dns.resolver.default_resolver = self.saved
