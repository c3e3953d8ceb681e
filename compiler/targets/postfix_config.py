"""The MX's Postfix configuration: main.cf and master.cf from templates, and the cidr tables they name.

main.cf and master.cf are rendered from templates/postfix/*.j2 (postconf(5),
master(5)); an undefined template variable is an error, never an empty
string. The cidr tables (cidr_table(5)) are read by Postfix as they are:
Puppet copies them next to the maps and never runs postmap on them.

main.cf puts Rspamd in the SMTP path as a milter (the address and the
service name come from the rspamd target), and gives each site that has
relays a restriction class: its relays may send as the site's own domains,
not as another site's (docs/mx.md, docs/filtering.md).

Every value that reaches these files went through compiler.values: host
names, the map directory (letters, digits, '.', '_', '-', '/'), site codes
(letters, digits, '_', '-'), networks printed by the ipaddress module, DNSBL
domains and filters; none can carry whitespace, a comma or a brace that would
change a line's meaning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from compiler import capture
from compiler.fleet import Fleet, network_order
from compiler.model import DnsblSite, IPNetwork
from compiler.targets import postfix, rspamd, submission
from compiler.targets.postfix import HEADER, captured

REFERENCES = (
    "postconf(5)",
    "master(5)",
    "cidr_table(5)",
    "postscreen(8)",
    "access(5)",
    "ADDRESS_VERIFICATION_README",
    "POSTSCREEN_README",
    "STANDARD_CONFIGURATION_README",
    "RESTRICTION_CLASS_README",
    "MILTER_README",
    "tcp_table(5) (postsrsd)",
    "pipemap_table(5)",
    "regexp_table(5)",
)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "postfix"

# Constants of the generated main.cf that `mailgw explain` replays.
MYNETWORKS = ("127.0.0.1/32", "[::1]/128")
RECIPIENT_DELIMITER = "+"
UNVERIFIED_REJECT_REASON = "Recipient address unknown at its site"
FORGED_HELO_TEXT = "You are not this mail gateway"
CIDR_TABLES = ("site_relays.cidr", "site_relay_senders.cidr", "postscreen_access.cidr")

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)


def artifacts(fleet: Fleet) -> dict[str, bytes]:
    files = {
        "postfix/main.cf": render("main.cf.j2", main_cf_context(fleet)),
        "postfix/master.cf": render("master.cf.j2", master_cf_context(fleet)),
        "postfix/site_relays.cidr": render_cidr(site_relays(fleet)),
        "postfix/site_relay_senders.cidr": render_cidr(site_relay_senders(fleet)),
        "postfix/postscreen_access.cidr": render_cidr(postscreen_access(fleet)),
    }
    files.update(automation_tables(fleet))
    return files


def render(template: str, context: dict[str, Any]) -> bytes:
    return _ENV.get_template(template).render(context).encode("ascii")


def main_cf_context(fleet: Fleet) -> dict[str, Any]:
    gateway = fleet.gateway
    return {
        "header": HEADER.rstrip("\n"),
        "mx_hosts": sorted(gateway.mx_hosts),
        "map_directory": gateway.postfix.map_directory,
        "mynetworks": MYNETWORKS,
        "recipient_delimiter": RECIPIENT_DELIMITER,
        "unverified_reject_reason": UNVERIFIED_REJECT_REASON,
        "forged_helo_text": FORGED_HELO_TEXT,
        "forged_helo_patterns": [forged_helo_pattern(host) for host in sorted(gateway.mx_hosts)],
        "postscreen": gateway.postscreen,
        "dnsbl_sites": [dnsbl_site(site) for site in gateway.postscreen.dnsbl_sites],
        "relay_sites": relay_sites(fleet),
        "rspamd_milter": rspamd.MILTER,
        "milter_daemon_name": rspamd.INBOUND_DAEMON,
        "notices": notice_services(fleet),
        "submission": submission.services(fleet),
        "restriction_classes": restriction_classes(fleet),
        "forwarding": forwarding(fleet),
    }


def master_cf_context(fleet: Fleet) -> dict[str, Any]:
    return {
        "header": HEADER.rstrip("\n"),
        "release": release_service(fleet),
        "submission": submission.services(fleet),
        "map_directory": fleet.gateway.postfix.map_directory,
        "outbound_daemon": rspamd.OUTBOUND_DAEMON,
        "forwarding": forwarding(fleet),
        "notices": notice_services(fleet),
    }


def restriction_classes(fleet: Fleet) -> list[str]:
    """smtpd_restriction_classes: the site relays' classes, then those of certificates and automation clients."""
    services = submission.services(fleet)
    return [site.restriction_class for site in relay_sites(fleet)] + (services.restriction_classes if services else [])


def forged_helo_pattern(host: str) -> str:
    """The regexp(5) body matching an MX host as a client may write it: dots literal, an address also in brackets."""
    escaped = host.replace(".", "\\.")
    return f"\\[?{escaped}\\]?" if host.replace(".", "").isdigit() else escaped


@dataclass(frozen=True)
class ReleaseService:
    """The smtpd the quarantine portal re-injects released mail into (gateway.yaml portal.release_service)."""

    service: str  # master.cf service name: 'IP:port'
    clients: tuple[str, ...]  # mynetworks of the service: the portal's hosts ('[ipv6]/len' as Postfix writes it)


def release_service(fleet: Fleet) -> ReleaseService | None:
    portal = fleet.gateway.portal
    if portal is None:
        return None
    clients = sorted(set(portal.release_clients), key=network_order)
    return ReleaseService(
        portal.release_service,
        tuple(str(net) if net.version == 4 else f"[{net.network_address}]/{net.prefixlen}" for net in clients),
    )


@dataclass(frozen=True)
class NoticeServices:
    """Capture and notify's services in master.cf (compiler/capture.py): the notifier and where it submits."""

    transport: str  # the pipe(8) service that runs the notifier, once per person told
    notifier: str
    user: str
    sender: str  # the notices' sender: the gateway team's mailbox, which gets their bounces
    service: str  # master.cf service name of the loopback smtpd the notices enter: 'IP:port'
    host: str
    port: int
    cleanup: str  # that smtpd's cleanup, without recipient_bcc_maps


def notice_services(fleet: Fleet) -> NoticeServices | None:
    """Only when some domain captures (and there is a postmaster to send the notices as: check.py says so)."""
    if not fleet.postmaster or not captured(fleet):
        return None
    service = fleet.gateway.capture.notice_service
    host, _, port = service.rpartition(":")
    return NoticeServices(
        capture.NOTICE_TRANSPORT,
        capture.NOTIFIER,
        capture.NOTIFIER_USER,
        fleet.postmaster,
        service,
        host.strip("[]"),
        int(port),
        capture.NO_CAPTURE_CLEANUP,
    )


@dataclass(frozen=True)
class Forwarding:
    """External aliases forwarded through a second pass (docs/mx.md): its smtpd, its cleanup, postsrsd's lookups."""

    service: str  # master.cf service name of the second pass's smtpd: 'IP:port'
    srs_domain: str
    forward_lookup: str  # postsrsd's tcp_table(5) lookups: 'IP:port'
    reverse_lookup: str
    alias_maps: str  # the second pass's virtual_alias_maps
    daemon_name: str = rspamd.FORWARD_DAEMON  # what Rspamd is told (settings.conf's forwarding rule)
    cleanup: str = "mailgw_forward_cleanup"
    transport: str = postfix.FORWARD_TRANSPORT

    @property
    def srs_pattern(self) -> str:
        """A regexp(5) for the SRS addresses of the SRS domain, in main.cf ('$$' is a '$')."""
        escaped = self.srs_domain.replace(".", "\\.")
        return f"/^(srs[01][-+=].+@{escaped})$$/ $${{1}}"


def forwarding(fleet: Fleet) -> Forwarding | None:
    settings = fleet.gateway.forwarding
    if settings is None:
        return None
    maps = fleet.gateway.postfix.map_directory
    return Forwarding(
        settings.service,
        settings.srs_domain,
        settings.srs_forward_lookup,
        settings.srs_reverse_lookup,
        f"lmdb:{maps}/{postfix.FORWARD_MAP}, lmdb:{maps}/virtual_alias",
    )


@dataclass(frozen=True)
class RelaySite:
    """A site with relays: its restriction class in main.cf accepts the site's own sender domains."""

    site: str
    domains: tuple[str, ...]

    @property
    def restriction_class(self) -> str:
        # Site codes are letters, digits, '_' and '-' (values.site): a valid main.cf parameter name.
        return f"mailgw_site_{self.site}"


def relay_sites(fleet: Fleet) -> list[RelaySite]:
    """Every site that declares relays, with all of its domains (the relays of a site send for all of them)."""
    return [RelaySite(site, tuple(d.name for d in fleet.domains if d.site == site)) for site in fleet.site_relays()]


def dnsbl_site(site: DnsblSite) -> str:
    """'domain[=filter][*weight]' (postconf(5) postscreen_dnsbl_sites)."""
    text = site.domain
    if site.filter is not None:
        text += f"={site.filter}"
    if site.weight != 1:
        text += f"*{site.weight}"
    return text


def site_relays(fleet: Fleet) -> list[tuple[IPNetwork, str, str]]:
    """(network, 'permit', site) for each site relay network; one site per network (check.py)."""
    relays = {(net, domain.site) for domain in fleet.domains for net in domain.relays}
    return [(net, "permit", site) for net, site in sorted(relays, key=lambda r: (network_order(r[0]), r[1]))]


def site_relay_senders(fleet: Fleet) -> list[tuple[IPNetwork, str, str]]:
    """(network, the site's restriction class, site): which sender domains each relay may use."""
    classes = {site.site: site.restriction_class for site in relay_sites(fleet)}
    return [(net, classes[site], site) for net, _, site in site_relays(fleet)]


def postscreen_access(fleet: Fleet) -> list[tuple[IPNetwork, str, str]]:
    """The gateway's access list, most specific network first: in a cidr table the first match decides."""
    entries = fleet.gateway.postscreen.access.items()
    ordered = sorted(entries, key=lambda e: (e[0].version, -e[0].prefixlen, int(e[0].network_address)))
    return [(net, action, "") for net, action in ordered]


def render_cidr(entries: Iterable[tuple[IPNetwork, str, str]]) -> bytes:
    """One 'network<TAB>result' line per entry, after a '# site' comment when the entry has one."""
    lines = [HEADER]
    for net, result, site in entries:
        if site:
            lines.append(f"# site {site}\n")
        lines.append(f"{net}\t{result}\n")
    return "".join(lines).encode("ascii")


# --- authenticated submission and the automation relay (docs/submission.md) --------------------------------


def automation_tables(fleet: Fleet) -> dict[str, bytes]:
    """automation_<port>.cidr for each automation service: client network -> the client's restriction class."""
    files = {}
    for port, entries in submission.automation_tables(fleet).items():
        lines = [HEADER]
        for net, rule in entries:
            lines.append(f"# automation client {rule.name} of {rule.domain}\n")
            lines.append(f"{net}\t{rule.restriction_class}\n")
        files[f"postfix/{submission.automation_table_name(port)}"] = "".join(lines).encode("ascii")
    return files
