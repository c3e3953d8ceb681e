"""What the load and model stages produce: each file's document, its validated model and its addresses.

These are the inputs of the check stage and of the Fleet; the targets never
see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from compiler.findings import Finding, Note
from compiler.load import Document
from compiler.model import DomainDeclaration, GatewayDeclaration, NationalAliases, NationalChoices


class Address(NamedTuple):
    """One address the MX accepts: who owns it, where external aliases go, and how it was written."""

    address: str  # local@domain, lower case, A-labels
    kind: str  # person | alias | role | list | external
    uid: str | None  # the owning AAI uid of a person or alias address
    owners: tuple[str, ...]  # the managers of a role or list address (sorted, unique)
    targets: tuple[str, ...]  # external alias targets (sorted, unique)
    key: str = ""  # the local part as written in the file, to locate findings
    name: str = ""  # a person's name as declared on this address ("" when none is)

    @property
    def section(self) -> str:
        return "external_aliases" if self.kind == "external" else "recipients"


@dataclass(frozen=True)
class DomainSource:
    """One domain file: its document, its validated fields, and its addresses in file order.

    The addresses come from the model (decl.recipients, decl.external_aliases)
    or, for a large file of simple lines, from compiler.fastpath; in that
    case decl carries no recipients of its own. Read addresses from here.
    """

    doc: Document
    decl: DomainDeclaration
    addresses: list[Address]


def addresses_of(decl: DomainDeclaration) -> list[Address]:
    """The addresses of a declaration validated by the model."""
    at = "@" + decl.domain
    found = [
        Address(
            key.lower() + at,
            r.kind,
            getattr(r, "uid", None),
            tuple(sorted(set(getattr(r, "owners", ())))),
            (),
            key,
            getattr(r, "name", None) or "",
        )
        for key, r in decl.recipients.items()
    ]
    found += [
        Address(key.lower() + at, "external", None, (), tuple(sorted(set(targets))), key)
        for key, targets in decl.external_aliases.items()
    ]
    return found


# --- the national alias domain (docs/national-aliases.md) ----------------------------------------


@dataclass(frozen=True)
class NationalFiles:
    """national/aliases.yaml and national/choices.yaml as loaded; a document is None when its file does not exist."""

    aliases_doc: Document | None
    aliases: NationalAliases
    choices_doc: Document | None
    choices: NationalChoices


@dataclass(frozen=True)
class NationalPerson:
    """A person of the fleet (a uid with addresses of its own) as the national domain sees them."""

    uid: str
    name: str | None
    addresses: tuple[str, ...]  # what the uid owns (person and alias addresses), sorted: the primary's choices
    primary: str  # where the national aliases go: the choice, else the default
    default_primary: str
    simple: str | None  # the local part uid@, when it is this person's
    extended: str | None  # the active name.surname form (the choice, else the default)
    default_extended: str | None
    forms: tuple[str, ...]  # the extended forms the name allows, best first
    owned: tuple[str, ...]  # every alias national/aliases.yaml gives this uid


@dataclass(frozen=True)
class NationalResolution:
    """The national domain resolved: its aliases (kind 'national'), each person, what is wrong and what is missing."""

    domain: str
    aliases: tuple[Address, ...]
    people: dict[str, NationalPerson]
    reserved: frozenset[str]  # local parts never given: RFC 2142, postmaster, the national domain's own addresses
    findings: tuple[Finding, ...]
    notes: tuple[Note, ...]


@dataclass(frozen=True)
class Declarations:
    """What the load and model stages produced: every file and its validated model."""

    gateway_doc: Document
    gateway: GatewayDeclaration
    domains: tuple[DomainSource, ...]
    national_files: NationalFiles | None = None
    national: NationalResolution | None = None
