"""main.cf, master.cf and the cidr tables: rendered from templates, read by the real postconf without a warning."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from compiler import values
from compiler.pipeline import compile_repository
from compiler.targets import postfix_config
from compiler.targets.postfix import MAPS
from tests.conftest import GATEWAY, REPO, domain_yaml, example, program, reached
from tests.mx_harness import age

# What relaying depends on: never on what a site or the gateway file declares.
RELAY_PARAMETERS = {
    "mynetworks": "127.0.0.1/32 [::1]/128",
    "smtpd_relay_restrictions": "permit_mynetworks, check_client_access cidr:/etc/postfix/mailgw/site_relays.cidr, "
    "reject_unauth_destination",
    "smtpd_recipient_restrictions": "reject_non_fqdn_recipient, check_recipient_access "
    "lmdb:/etc/postfix/mailgw/recipient_verification",
    "relay_domains": "lmdb:/etc/postfix/mailgw/relay_domains",
    "relay_recipient_maps": "lmdb:/etc/postfix/mailgw/relay_recipients",
    "smtpd_reject_unlisted_recipient": "yes",
    "mydestination": "",
    "permit_mx_backup_networks": "",
    "parent_domain_matches_subdomains": "debug_peer_list, fast_flush_domains, mynetworks, "
    "permit_mx_backup_networks, qmqpd_authorized_clients",
}


def _config_dir(tmp_path: Path, artifacts: dict[str, bytes]) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for name in ("main.cf", "master.cf"):
        (conf / name).write_bytes(artifacts[f"postfix/{name}"])
        age(conf / name)
    return conf


def postconf_complaints(conf: Path) -> str:
    """Everything postconf prints on stderr for the configuration: non-default, all, master.cf services."""
    complaints = ""
    for args in (["-n"], [], ["-M"], ["-F"], ["-P"]):
        done = subprocess.run([program("postconf"), "-c", str(conf), *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        complaints += done.stderr
    return complaints


def parameter(conf: Path, name: str) -> str:
    done = subprocess.run(
        [program("postconf"), "-c", str(conf), "-h", name], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.rstrip("\n")


def _committed_out() -> dict[str, bytes]:
    return {f"postfix/{p.name}": p.read_bytes() for p in (REPO / "out" / "postfix").iterdir()}


@pytest.mark.needs("postconf")
def test_the_committed_configuration_gives_postconf_no_warning(tmp_path):
    assert postconf_complaints(_config_dir(tmp_path, _committed_out())) == ""


@pytest.mark.needs("postconf")
def test_a_minimal_fleet_gives_postconf_no_warning(make_repo, tmp_path):
    """No relays, no DNSBL sites, no access list: empty values stay valid."""
    compiled = compile_repository(make_repo({"domains/tifpa.example.org.yaml": domain_yaml()}))
    conf = _config_dir(tmp_path, compiled.artifacts)
    assert postconf_complaints(conf) == ""
    assert parameter(conf, "postscreen_dnsbl_sites") == ""
    assert compiled.artifacts["postfix/site_relays.cidr"].count(b"\n") == 1, "only the header"


@pytest.mark.needs("postconf")
def test_the_warning_check_itself_catches_an_unused_parameter(tmp_path):
    artifacts = _committed_out()
    artifacts["postfix/main.cf"] += b"relay_recipients_maps = lmdb:/etc/postfix/mailgw/relay_recipients\n"
    assert "unused parameter: relay_recipients_maps" in postconf_complaints(_config_dir(tmp_path, artifacts))


@pytest.mark.needs("postconf")
def test_every_table_is_a_generated_artifact_of_a_known_type(tmp_path):
    conf = _config_dir(tmp_path, _committed_out())
    listed = subprocess.run([program("postconf"), "-c", str(conf), "-n"], capture_output=True, text=True).stdout
    references = set(re.findall(r"\b(\w+):(/etc/postfix/mailgw/[\w.]+)", listed))
    generated = {("lmdb", f"/etc/postfix/mailgw/{name}") for name in MAPS} | {
        ("cidr", f"/etc/postfix/mailgw/{name}") for name in postfix_config.CIDR_TABLES
    }
    # One table per automation service of gateway.yaml (ports 2525 and 2526).
    generated |= {("cidr", f"/etc/postfix/mailgw/automation_{port}.cidr") for port in (2525, 2526)}
    # gateway.yaml declares forwarding: the second pass's virtual_alias_maps (docs/mx.md).
    generated.add(("lmdb", "/etc/postfix/mailgw/forward_alias"))
    assert references == generated
    types = subprocess.run([program("postconf"), "-c", str(conf), "-m"], capture_output=True, text=True).stdout.split()
    assert {"lmdb", "cidr", "inline", "regexp"} <= set(types)


@pytest.mark.needs("postconf")
def test_a_postfix_command_without_its_own_configuration_fails_on_every_machine():
    """The tests give every postconf/postmap/postqueue -c DIR; one that forgets fails here too, not only
    on machines where Debian's installer wrote no /etc/postfix/main.cf (tests/conftest.py sets MAIL_CONFIG)."""
    done = subprocess.run([program("postconf"), "-m"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert "postconf: fatal: open " in done.stderr and "/no-postfix-config-here/main.cf: " in done.stderr


@pytest.mark.needs("postconf")
def test_postscreen_owns_port_25_and_hands_clients_to_smtpd(tmp_path):
    conf = _config_dir(tmp_path, _committed_out())
    services = subprocess.run(
        [program("postconf"), "-c", str(conf), "-M"], capture_output=True, text=True
    ).stdout.splitlines()
    fields = {tuple(line.split()[:2]): line.split() for line in services}
    assert fields[("smtp", "inet")][7] == "postscreen" and fields[("smtp", "inet")][6] == "1"
    assert fields[("smtpd", "pass")][7] == "smtpd"
    assert {("dnsblog", "unix"), ("tlsproxy", "unix"), ("verify", "unix"), ("lmtp", "unix")} <= set(fields)
    assert all(line.split()[4] == "n" for line in services), "no service is chrooted"


@pytest.mark.needs("postconf")
def test_gateway_postscreen_settings_reach_main_cf(tmp_path):
    conf = _config_dir(tmp_path, _committed_out())
    assert parameter(conf, "postscreen_dnsbl_sites") == (
        "zen.spamhaus.org=127.0.0.[2..11]*3, bl.spamcop.net*2, b.barracudacentral.org=127.0.0.2*2, "
        "list.dnswl.org=127.0.[0..255].[1..3]*-2"
    )
    assert parameter(conf, "postscreen_dnsbl_threshold") == "3"
    assert parameter(conf, "postscreen_dnsbl_action") == "enforce"
    assert parameter(conf, "postscreen_denylist_action") == "drop"
    assert parameter(conf, "postscreen_access_list") == (
        "permit_mynetworks, cidr:/etc/postfix/mailgw/postscreen_access.cidr, cidr:/etc/postfix/mailgw/site_relays.cidr"
    )
    assert parameter(conf, "smtpd_helo_restrictions") == (
        "permit_mynetworks, check_helo_access regexp:{ { /^mx1\\.gw\\.example\\.org\\.*$$/ REJECT You are not "
        "this mail gateway }, { /^mx2\\.gw\\.example\\.org\\.*$$/ REJECT You are not this mail gateway } }"
    )


@pytest.mark.needs("postconf")
def test_relaying_does_not_depend_on_the_declarations(make_repo, tmp_path):
    """The widest relays a site may declare, and a gateway access list permitting networks, change nothing
    in what decides relaying: only site_relays.cidr lists the declared networks."""
    gateway = GATEWAY + "postscreen:\n  access: {198.51.100.0/24: permit, '2001:db8::/32': permit}\n"
    root = make_repo(
        {"domains/tifpa.example.org.yaml": domain_yaml(relays="outbound_relays: [192.0.2.0/24, '2001:db8:1::/64']\n")},
        gateway=gateway,
    )
    compiled = compile_repository(root)
    for artifacts, where in ((compiled.artifacts, "a declared fleet"), (_committed_out(), "the bundled fleet")):
        conf = _config_dir(tmp_path / where.replace(" ", "-"), artifacts)
        for name, value in RELAY_PARAMETERS.items():
            assert parameter(conf, name) == value, f"{name} in {where}"
    assert compiled.artifacts["postfix/site_relays.cidr"].decode().splitlines()[1:] == [
        "# site TIFPA",
        "192.0.2.0/24\tpermit",
        "# site TIFPA",
        "2001:db8:1::/64\tpermit",
    ]


@pytest.mark.needs("postconf")
def test_every_smtp_message_goes_to_rspamd_and_waits_while_it_is_down(tmp_path):
    """The milter settings come from the Rspamd target; only the portal's and the forwarding pass's services
    override them in master.cf."""
    conf = _config_dir(tmp_path, _committed_out())
    settings = {
        name: parameter(conf, name)
        for name in (
            "smtpd_milters",
            "non_smtpd_milters",
            "milter_protocol",
            "milter_default_action",
            "milter_macro_daemon_name",
        )
    }
    assert settings == {
        # Rspamd's proxy worker on the unix socket the generated worker-proxy.inc binds in Rspamd's RUNDIR
        # (/run/rspamd on Debian); tests/test_filtering_e2e.py proves the two agree, with a real Rspamd.
        "smtpd_milters": "unix:/run/rspamd/milter.sock",
        "non_smtpd_milters": "",
        "milter_protocol": "6",
        "milter_default_action": "tempfail",
        "milter_macro_daemon_name": "mailgw_inbound",
    }
    overrides = subprocess.run([program("postconf"), "-c", str(conf), "-P"], capture_output=True, text=True)
    # Only two services skip Rspamd: the quarantine portal's release service (its mail was scanned before it was
    # held) and the capture notices' service of gateway.yaml (the MX writes those notices itself). The
    # submission services (587, 465) and the automation relay (gateway.yaml's 2525, 2526) are outbound mail; the
    # forwarding pass (gateway.yaml's forwarding) goes through Rspamd under a name of its own: only its ARC seal.
    assert [line for line in overrides.stdout.splitlines() if "milter" in line] == [
        "127.0.0.1:10026/inet/smtpd_milters =",
        "127.0.0.1:10027/inet/milter_macro_daemon_name = mailgw_forward",
        *(f"{port}/inet/milter_macro_daemon_name = mailgw_outbound" for port in (587, 465, 2525, 2526)),
        "127.0.0.1:10028/inet/smtpd_milters =",
    ]


SITES = {
    "domains/a.example.org.yaml": domain_yaml(
        "a.example.org", site="site: SITE-A_1\n", relays="outbound_relays: [192.0.2.1, 192.0.2.16/28]\n"
    ),
    "domains/a2.example.org.yaml": domain_yaml("a2.example.org", site="site: SITE-A_1\n"),
    "domains/b.example.org.yaml": domain_yaml(
        "b.example.org", site="site: B\n", relays="outbound_relays: ['2001:db8:b::/64']\n"
    ),
    "domains/c.example.org.yaml": domain_yaml("c.example.org", site="site: C\n"),
}


def _query(conf: Path, table: str, key: str) -> str | None:
    done = subprocess.run([program("postmap"), "-c", str(conf), "-q", key, table], capture_output=True, text=True)
    assert done.stderr == ""
    return done.stdout.rstrip("\n") if done.returncode == 0 else None


@pytest.mark.needs("postconf", "postmap")
def test_a_site_relay_may_send_as_its_own_site_s_domains_and_no_other_served_one(make_repo, tmp_path):
    """Each relay network leads to its site's restriction class: the site's domains OK, other served ones refused."""
    compiled = compile_repository(make_repo(SITES))
    conf = _config_dir(tmp_path, compiled.artifacts)
    tables = conf / "tables"
    tables.mkdir()
    for name in ("site_relay_senders.cidr", "sender_sites"):
        (tables / name).write_bytes(compiled.artifacts[f"postfix/{name}"])
    assert subprocess.run([program("postmap"), "-c", str(conf), f"lmdb:{tables / 'sender_sites'}"]).returncode == 0
    assert postconf_complaints(conf) == ""
    assert parameter(conf, "smtpd_sender_restrictions") == (
        "reject_non_fqdn_sender, check_client_access cidr:/etc/postfix/mailgw/site_relay_senders.cidr"
    )
    assert parameter(conf, "smtpd_restriction_classes") == "mailgw_site_B, mailgw_site_SITE-A_1"

    cidr = f"cidr:{tables / 'site_relay_senders.cidr'}"
    assert [_query(conf, cidr, ip) for ip in ("192.0.2.1", "192.0.2.20", "2001:db8:b::9", "192.0.2.2")] == [
        "mailgw_site_SITE-A_1",
        "mailgw_site_SITE-A_1",
        "mailgw_site_B",
        None,
    ]
    for site, own in (("SITE-A_1", {"a.example.org", "a2.example.org"}), ("B", {"b.example.org"})):
        restrictions = parameter(conf, f"mailgw_site_{site}")
        inline, served = re.fullmatch(
            r"check_sender_access (inline:\{.*\}), check_sender_access lmdb:(\S+)", restrictions
        ).groups()
        assert served == "/etc/postfix/mailgw/sender_sites"
        for domain in ("a.example.org", "a2.example.org", "b.example.org", "c.example.org", "example.net"):
            verdict = _query(conf, inline, domain) or _query(conf, f"lmdb:{tables / 'sender_sites'}", domain)
            if domain in own:
                assert verdict == "OK"
            elif domain == "example.net":
                assert verdict is None, "a domain the gateway does not serve (forwarded mail) passes"
            else:
                owner = {"a.example.org": "SITE-A_1", "a2.example.org": "SITE-A_1", "b.example.org": "B"}.get(
                    domain, "C"
                )
                assert verdict == f"REJECT {domain} is a domain of site {owner}, not of this relay's site"


@pytest.mark.needs("postconf")
def test_without_site_relays_no_restriction_class_is_declared(make_repo, tmp_path):
    compiled = compile_repository(make_repo({"domains/tifpa.example.org.yaml": domain_yaml()}))
    conf = _config_dir(tmp_path, compiled.artifacts)
    assert parameter(conf, "smtpd_restriction_classes") == ""
    assert compiled.artifacts["postfix/site_relay_senders.cidr"].count(b"\n") == 1, "only the header"


def test_postscreen_access_table_puts_the_most_specific_network_first(make_repo):
    gateway = GATEWAY + (
        "postscreen:\n  access:\n    192.0.2.0/24: reject\n    '2001:db8::/32': reject\n"
        "    192.0.2.25: permit\n    10.0.0.0/8: reject\n    '2001:db8::25': permit\n"
    )
    compiled = compile_repository(make_repo({"domains/tifpa.example.org.yaml": domain_yaml()}, gateway=gateway))
    assert compiled.artifacts["postfix/postscreen_access.cidr"].decode().splitlines()[1:] == [
        "192.0.2.25/32\tpermit",
        "192.0.2.0/24\treject",
        "10.0.0.0/8\treject",
        "2001:db8::25/128\tpermit",
        "2001:db8::/32\treject",
    ]


def test_a_network_two_domains_of_one_site_declare_is_listed_once(make_repo):
    root = make_repo(
        {
            "domains/tifpa.example.org.yaml": domain_yaml(relays="outbound_relays: [198.51.100.10]\n"),
            "domains/lab.tifpa.example.org.yaml": domain_yaml(
                "lab.tifpa.example.org", relays="outbound_relays: 198.51.100.10/32\n"
            ),
        }
    )
    lines = compile_repository(root).artifacts["postfix/site_relays.cidr"].decode().splitlines()
    assert lines[1:] == ["# site TIFPA", "198.51.100.10/32\tpermit"]


def test_an_undefined_template_variable_is_an_error(make_repo):
    compiled = compile_repository(make_repo({"domains/tifpa.example.org.yaml": domain_yaml()}))
    context = postfix_config.main_cf_context(compiled.fleet)
    del context["map_directory"]
    with pytest.raises(jinja2.UndefinedError, match="map_directory"):
        postfix_config.render("main.cf.j2", context)


def test_generated_files_start_with_the_regeneration_header():
    for name, data in _committed_out().items():
        assert data.startswith(b"# generated by 'mailgw build'"), name


# Relay networks, valid or not by construction (docs/declarations.md: at most a /24 or /64, a unicast network
# without host bits); the standard library's ipaddress writes and classifies them, never the compiler.
_V4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
_V6 = st.integers(0x2000 << 112, (0x4000 << 112) - 1).map(ipaddress.IPv6Address)  # 2000::/3, global unicast
# Multicast, reserved (240/4), link-local: no relay sends from there; loopback and 0.0.0.0/8 are the node
# itself (docs/declarations.md, "site relay network").
_NOT_UNICAST = ["224.0.0.0/4", "240.0.0.0/5", "169.254.0.0/16", "ff00::/8", "fe80::/10"]
_THE_NODE = ["127.0.0.0/8", "0.0.0.0/8", "::1/128"]


def _unicast(net) -> bool:
    mapped = isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None
    node = any(net.version == n.version and net.overlaps(n) for n in map(ipaddress.ip_network, _THE_NODE))
    return not (net.is_multicast or net.is_unspecified or net.is_link_local or net.is_reserved or mapped or node)


_small_networks = st.one_of(st.tuples(_V4, st.integers(24, 32)), st.tuples(_V6, st.integers(64, 128))).map(
    lambda ap: ipaddress.ip_network(ap, strict=False)
)


@settings(max_examples=300, deadline=None)
@given(_small_networks.filter(_unicast), st.booleans())
def test_a_small_unicast_network_is_accepted_and_printed_plainly(net, bare):
    example("relay networks: accepted")
    text = str(net.network_address) if bare and net.num_addresses == 1 else str(net)
    accepted = values.relay_network(text)
    reached("relay networks: accepted", f"IPv{net.version}")
    assert accepted == net
    assert str(accepted) == str(net) and str(accepted).replace(":", "").replace(".", "").replace("/", "").isalnum()


def _inside(base_offset: tuple[str, int]):
    """A small network (a /24 or /64 at least) inside the base network."""
    base = ipaddress.ip_network(base_offset[0])
    address = base.network_address + base_offset[1] % base.num_addresses
    return ipaddress.ip_network((address, 24 if base.version == 4 else 64), strict=False)


_refused_networks = st.one_of(
    st.tuples(_V4, st.integers(1, 23)).map(lambda ap: (str(ipaddress.ip_network(ap, strict=False)), "too-large")),
    st.tuples(_V6, st.integers(1, 63)).map(lambda ap: (str(ipaddress.ip_network(ap, strict=False)), "too-large")),
    st.tuples(_V4, st.integers(24, 31))
    .filter(lambda ap: int(ap[0]) % 2 ** (32 - ap[1]))
    .map(lambda ap: (f"{ap[0]}/{ap[1]}", "host-bits")),
    st.tuples(st.sampled_from(_NOT_UNICAST + _THE_NODE[:2]), st.integers(0, 2**64 - 1))
    .map(_inside)
    .map(lambda net: (str(net), "not-unicast")),
    st.tuples(_small_networks, st.sampled_from([" ", ",", "#", "%eth0", ";", "\t"])).map(
        lambda nc: (f"{nc[0]}{nc[1]}", "junk")
    ),
)


@settings(max_examples=300, deadline=None)
@given(_refused_networks)
def test_a_network_too_large_with_host_bits_not_unicast_or_with_junk_is_refused(case):
    example("relay networks: refused")
    text, why = case
    with pytest.raises(PydanticCustomError) as refused:
        values.relay_network(text)
    reached("relay networks: refused", why)
    assert refused.value.type == ("relay-network-too-large" if why == "too-large" else "bad-network"), text


@pytest.mark.parametrize(
    "text",
    [
        "0.0.0.0/0",
        "::/0",
        "0.0.0.0/1",
        "128.0.0.0/1",
        "10.0.0.0/23",
        "2001:db8::/63",
        "224.0.0.0/24",
        "0.0.0.0/32",
        "fe80::/64",
        "192.0.2.1/24",
        "192.0.2.0/24 ",
        "192.0.2.0/24,10.0.0.0/8",
        "::ffff:192.0.2.1",
        "fe80::1%eth0",
        "[::1]/128",
        "192.0.2.0/24#x",
    ],
)
def test_networks_that_could_open_the_relay_or_break_a_line_are_refused(text):
    with pytest.raises(PydanticCustomError):
        values.relay_network(text)
