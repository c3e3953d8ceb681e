"""The Fleet: one normalised, sorted view of every declaration (the IR).

Targets read only this. Names are lower case and A-labels, addresses are
sorted, so nothing downstream depends on file or key order.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from compiler.declarations import Address, Declarations, DomainSource, NationalResolution
from compiler.filters import FilterPolicy, resolve
from compiler.model import Capture, DkimKey, Dmarc, DomainSubmission, GatewayDeclaration, IPNetwork, NextHop


@dataclass(frozen=True)
class Domain:
    name: str
    site: str
    admins: tuple[str, ...]
    role: str
    nexthops: tuple[NextHop, ...]
    recipient_check: str
    addresses: tuple[Address, ...]
    source: str
    relays: tuple[IPNetwork, ...] = ()  # the site's relays allowed to send outbound through the MX
    # postmaster@ and abuse@ of the domain when it declares neither as an address: accepted all the same.
    reserved: tuple[str, ...] = ()
    # Addresses whose every message is copied, with a notice (docs/site-admins.md); None: no capture.
    capture: Capture | None = None
    # Its client certificates and automation clients (docs/submission.md).
    submission: DomainSubmission = field(default_factory=DomainSubmission)
    # Its DKIM keys in selector order, and its DMARC record (docs/dns.md).
    dkim: tuple[DkimKey, ...] = ()
    dmarc: Dmarc | None = None

    @property
    def transport(self) -> str:
        return self.nexthops[0].transport

    @property
    def reserved_to_gateway(self) -> bool:
        """An LMTP next hop is a mailbox server, with no postmaster of its own: the gateway team takes them."""
        return self.transport == "lmtp"


# RFC 5321 4.5.1 (postmaster) and RFC 2142 (abuse): every domain that receives mail receives these.
RESERVED_LOCAL_PARTS = ("abuse", "postmaster")


@dataclass(frozen=True)
class Fleet:
    gateway: GatewayDeclaration
    domains: tuple[Domain, ...]
    # The gateway team's mailbox (gateway.yaml postmaster, or its default); "" when there is none to take.
    postmaster: str = ""
    # Domain name -> its resolved filter policy; default_filters: the gateway's own (docs/filtering.md).
    filters: dict[str, FilterPolicy] = field(default_factory=dict)
    default_filters: FilterPolicy | None = None
    # The national alias domain (gateway.yaml national.domain); its Domain holds the generated aliases too.
    national: str | None = None

    def domain(self, name: str) -> Domain | None:
        return next((d for d in self.domains if d.name == name), None)

    def site_relays(self) -> dict[str, tuple[IPNetwork, ...]]:
        """Site -> the relay networks its domains declare: a relay belongs to its site, not to one domain."""
        relays: dict[str, set[IPNetwork]] = {}
        for domain in self.domains:
            relays.setdefault(domain.site, set()).update(domain.relays)
        return {site: tuple(sorted(nets, key=network_order)) for site, nets in sorted(relays.items()) if nets}


def build_fleet(declarations: Declarations) -> Fleet:
    """Normalise checked declarations into the Fleet."""
    national = declarations.national
    domains = tuple(sorted((_domain(source, national) for source in declarations.domains), key=lambda d: d.name))
    return Fleet(
        gateway=declarations.gateway,
        domains=domains,
        postmaster=gateway_postmaster(declarations.gateway) or "",
        filters={s.decl.domain: resolve(declarations.gateway.filters, s.decl.filters) for s in declarations.domains},
        default_filters=resolve(declarations.gateway.filters),
        national=national.domain if national is not None else None,
    )


def gateway_postmaster(gateway: GatewayDeclaration) -> str | None:
    """gateway.yaml's postmaster, else postmaster@ the domain of the first MX host named by a host name."""
    if gateway.postmaster is not None:
        return gateway.postmaster
    named = [host for host in gateway.mx_hosts if host.count(".") >= 2 and not host.replace(".", "").isdigit()]
    return f"postmaster@{named[0].partition('.')[2]}" if named else None


def _domain(source: DomainSource, national: NationalResolution | None = None) -> Domain:
    decl = source.decl
    addresses = tuple(sorted(source.addresses))
    if national is not None and national.domain == decl.domain:  # its own addresses, and the generated aliases
        declared = addresses
        addresses = tuple(sorted(source.addresses + list(national.aliases)))
    else:
        declared = addresses
    return Domain(
        name=decl.domain,
        site=decl.site,
        admins=tuple(sorted(set(decl.admins))),
        role=decl.role,
        nexthops=tuple(decl.delivery.nexthop),
        recipient_check=decl.recipient_check,
        addresses=addresses,
        source=source.doc.relpath,
        relays=tuple(sorted(set(decl.outbound_relays), key=network_order)),
        reserved=tuple(
            f"{local}@{decl.domain}"
            for local in RESERVED_LOCAL_PARTS
            if not _declares(declared, f"{local}@{decl.domain}")
        ),
        capture=decl.capture,
        submission=decl.submission,
        dkim=tuple(sorted(decl.dkim.selectors, key=lambda key: key.name)) if decl.dkim else (),
        dmarc=decl.dmarc,
    )


def _declares(addresses: tuple[Address, ...], address: str) -> bool:
    """Is `address` among `addresses` (sorted by address)? A lookup, not a scan: a domain may hold a million."""
    at = bisect.bisect_left(addresses, (address,))
    return at < len(addresses) and addresses[at].address == address


def network_order(net: IPNetwork) -> tuple[int, int, int]:
    """IPv4 before IPv6, then by address and prefix (networks of two versions do not compare)."""
    return net.version, int(net.network_address), net.prefixlen
