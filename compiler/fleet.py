"""The Fleet: one normalised, sorted view of every declaration (the IR).

Targets read only this. Names are lower case and A-labels, addresses are
sorted, so nothing downstream depends on file or key order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from compiler.filters import FilterPolicy, resolve
from compiler.load import Document
from compiler.model import Alias, DomainDeclaration, GatewayDeclaration, NextHop, Person


@dataclass(frozen=True)
class DomainSource:
    doc: Document
    decl: DomainDeclaration


@dataclass(frozen=True)
class Declarations:
    """What the load and model stages produced: every file and its validated model."""
    gateway_doc: Document
    gateway: GatewayDeclaration
    domains: tuple[DomainSource, ...]


class Address(NamedTuple):
    """One address the MX accepts: who owns it, and where external aliases go."""
    address: str
    kind: str                  # person | alias | role | list | external
    uid: str | None            # the owning AAI uid of a person or alias address
    owners: tuple[str, ...]    # the managers of a role or list address
    targets: tuple[str, ...]   # external alias targets


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


def build_fleet(declarations: Declarations) -> Fleet:
    """Normalise checked declarations into the Fleet."""
    domains = tuple(sorted((_domain(source) for source in declarations.domains), key=lambda d: d.name))
    return Fleet(gateway=declarations.gateway, domains=domains,
                 filters={s.decl.domain: resolve(declarations.gateway.filters, s.decl.filters)
                          for s in declarations.domains},
                 default_filters=resolve(declarations.gateway.filters))


def _domain(source: DomainSource) -> Domain:
    decl = source.decl
    at = "@" + decl.domain
    addresses = [
        Address(local.lower() + at, r.kind, r.uid if isinstance(r, (Person, Alias)) else None,
                () if isinstance(r, (Person, Alias)) else tuple(sorted(set(r.owners))), ())
        for local, r in decl.recipients.items()
    ]
    addresses += [Address(local.lower() + at, "external", None, (), tuple(sorted(set(targets))))
                  for local, targets in decl.external_aliases.items()]
    addresses.sort()
    return Domain(name=decl.domain, site=decl.site, admins=tuple(sorted(set(decl.admins))), role=decl.role,
                  nexthops=tuple(decl.delivery.nexthop), recipient_check=decl.recipient_check,
                  addresses=tuple(addresses), source=source.doc.relpath)
