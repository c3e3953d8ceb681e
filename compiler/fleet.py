"""The Fleet: one normalised, sorted view of every declaration (the IR).

Targets read only this. Names are lower case and A-labels, addresses are
sorted, so nothing downstream depends on file or key order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.declarations import Address, Declarations, DomainSource
from compiler.filters import FilterPolicy, resolve
from compiler.model import GatewayDeclaration, IPNetwork, NextHop


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

    @property
    def transport(self) -> str:
        return self.nexthops[0].transport


@dataclass(frozen=True)
class Fleet:
    gateway: GatewayDeclaration
    domains: tuple[Domain, ...]
    # Domain name -> its resolved filter policy; default_filters: the gateway's own (docs/filtering.md).
    filters: dict[str, FilterPolicy] = field(default_factory=dict)
    default_filters: FilterPolicy | None = None

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
    domains = tuple(sorted((_domain(source) for source in declarations.domains), key=lambda d: d.name))
    return Fleet(
        gateway=declarations.gateway,
        domains=domains,
        filters={s.decl.domain: resolve(declarations.gateway.filters, s.decl.filters) for s in declarations.domains},
        default_filters=resolve(declarations.gateway.filters),
    )


def _domain(source: DomainSource) -> Domain:
    decl = source.decl
    return Domain(
        name=decl.domain,
        site=decl.site,
        admins=tuple(sorted(set(decl.admins))),
        role=decl.role,
        nexthops=tuple(decl.delivery.nexthop),
        recipient_check=decl.recipient_check,
        addresses=tuple(sorted(source.addresses)),
        source=source.doc.relpath,
        relays=tuple(sorted(set(decl.outbound_relays), key=network_order)),
    )


def network_order(net: IPNetwork) -> tuple[int, int, int]:
    """IPv4 before IPv6, then by address and prefix (networks of two versions do not compare)."""
    return net.version, int(net.network_address), net.prefixlen
