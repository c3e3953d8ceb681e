"""Stage 6, plan: what the MX will do differently, and whether that may go through unforced.

Two revisions are compared. Their Fleets give the meaning (per domain:
addresses added, removed and changed, external aliases, routing, every other
domain setting; the gateway's settings); their out/ trees give everything a
Fleet does not show (each changed artifact file, the LDAP entries of
out/ldap/*.ldif by DN, the Rspamd policy files). A changed directory entry
is shown under the domains whose addresses or domain links changed in it,
so that a uid with addresses in two domains shows under the one edited. The
Plan is plain data; its renderings live in compiler/commands/plan.py.

Safety guards (the verdict is the plan's, not the command line's): a domain
removed, more of a domain's addresses removed or changed than gateway.yaml's
`plan:` shares allow (30% each by default, when it had at least 10: octoDNS's
delete and update thresholds), a next hop changed, or the LDAP base DN
changed make the plan unsafe unless forced. The base's own thresholds judge a
change, so a change cannot loosen the guard that judges it.

Widenings (compiler/widenings.py: what lets more mail through or more clients
in) come first. One in a file that CODEOWNERS gives to the gateway team alone
(gateway.yaml) is approved by that team's review; any other (a section of a
domain file, which its site reviews) makes the plan unsafe until the gateway
team approves it with the label 'mailgw:widen' (MAILGW_WIDEN=1). Forcing does
not approve a widening.
REFERENCES: RFC 2849 (LDIF, read here), RFC 4524 (associatedDomain), transport(5) (next hops).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from compiler import codeowners, ldapdiff
from compiler.declarations import Address
from compiler.fleet import Domain, Fleet, network_order
from compiler.model import PlanSettings
from compiler.targets import submission
from compiler.targets.postfix import transport_nexthop
from compiler.widenings import Widening, widenings
from compiler.write import MANIFEST

REFERENCES = ("RFC 2849", "RFC 4524", "transport(5)")

BASE_DN_SETTING = "ldap.base_dn"
# How a merge request asks to go through with an unsafe plan: CI sets the
# environment variable when the merge request carries the label.
FORCE_LABEL = "mailgw:force"
FORCE_ENV = "MAILGW_FORCE"
# How the gateway team approves a widening in a file it does not own: the label, set by one of
# its members (the pull-request workflow checks who set it), makes CI set the variable.
WIDEN_LABEL = "mailgw:widen"
WIDEN_ENV = "MAILGW_WIDEN"
# gateway.yaml's plan: section as the model defaults it (30% removed, 30% changed, at least 10 addresses).
DEFAULT_GUARDS = PlanSettings()

# Which section of the plan shows a changed out/ file: the first prefix that matches.
FILE_SECTIONS = (
    ("policy", "rspamd/"),
    ("directory", "ldap/"),
    ("records", "dns/"),
    ("records", "mta-sts/"),
    ("artifacts", ""),
)
DIRECTORY_DIR, LDIF_SUFFIX = "ldap/", ".ldif"
# How a directory entry says which domains it serves (RFC 4524 domainRelatedObject; misc.schema).
DOMAIN_ATTRIBUTES, ADDRESS_ATTRIBUTES = ("associateddomain",), ("maillocaladdress",)
# The fields shown in sections of their own; `reserved` follows from the addresses (docs/mx.md), never a setting.
_OWN_SECTIONS = {"name", "addresses", "nexthops", "source", "reserved", "submission"}

T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    """One named thing before and after; None means absent on that side."""

    name: str
    before: str | None
    after: str | None

    @property
    def status(self) -> str:
        return "added" if self.before is None else "removed" if self.after is None else "changed"


@dataclass(frozen=True)
class FileChange:
    path: str  # relative to out/
    status: str  # added | removed | changed
    lines_added: int
    lines_removed: int

    @property
    def section(self) -> str:
        return next(name for name, prefix in FILE_SECTIONS if self.path.startswith(prefix))


@dataclass(frozen=True)
class DomainPlan:
    name: str
    status: str  # added | removed | changed
    addresses_before: int
    addresses_removed: int  # accepted before, not accepted after
    recipients: tuple[Change, ...]  # people, their aliases, roles, lists
    aliases: tuple[Change, ...]  # external aliases (forwarded by the MX)
    routing: Change | None  # the transport(5) value: where the mail goes
    settings: tuple[Change, ...]  # every other field of the domain
    directory: tuple[Change, ...]  # LDAP entries whose part for this domain changed
    dns: tuple[Change, ...] = ()  # record sets of out/dns/<domain>.zone: what the domain must publish
    guards: PlanSettings = DEFAULT_GUARDS  # the thresholds that judge it (the base's gateway.yaml)
    # Who may send as what through the submission services and the automation relay (docs/submission.md).
    senders: tuple[Change, ...] = ()

    @property
    def addresses_changed(self) -> int:
        """Accepted before and after, as something else (kind, uid, owners, targets)."""
        return sum(1 for c in self.recipients + self.aliases if c.status == "changed")

    def reasons(self) -> list[str]:
        if self.status == "removed":
            return [
                f"{self.name}: domain removed; the MX would reject all of its mail "
                f"({self.addresses_before} address(es))"
            ]
        judged = self.addresses_before >= max(self.guards.min_addresses, 1)
        reasons = [
            f"{self.name}: {count} of {self.addresses_before} addresses {what} "
            f"({round(100 * count / self.addresses_before)}%; more than {limit}% of a domain with at least "
            f"{self.guards.min_addresses})"
            for count, what, limit in (
                (self.addresses_removed, "removed", self.guards.max_removed_percent),
                (self.addresses_changed, "changed", self.guards.max_changed_percent),
            )
            if judged and 100 * count > limit * self.addresses_before
        ]
        if self.status == "changed" and self.routing is not None:
            reasons.append(f"{self.name}: next hop changed from {self.routing.before} to {self.routing.after}")
        return reasons


@dataclass(frozen=True)
class Plan:
    base: str  # what the plan compares against
    domains: tuple[DomainPlan, ...]
    gateway: tuple[Change, ...]  # gateway.yaml settings, as dotted names
    files: tuple[FileChange, ...]  # out/ files, MANIFEST.json aside
    directory: tuple[Change, ...]  # LDAP entries that serve no domain (the root, the branches)
    records: tuple[Change, ...] = ()  # the gateway's own DNS records (out/dns/<its SPF record>.zone)
    widenings: tuple[Widening, ...] = ()  # what lets more mail through or more clients in
    team: tuple[str, ...] = ()  # the gateway team (the base's gateway.yaml admins): who approves a widening

    def guard_reasons(self) -> list[str]:
        """Why the plan is unsafe that --force (the label 'mailgw:force') may override."""
        reasons = [reason for domain in self.domains for reason in domain.reasons()]
        reasons += [
            f"gateway: LDAP base DN changed from {c.before} to {c.after}; every directory entry moves"
            for c in self.gateway
            if c.name == BASE_DN_SETTING and c.status == "changed"
        ]
        return reasons

    def approval(self, widening: Widening) -> str:
        """'review' (CODEOWNERS gives its file to the gateway team alone) or 'label' (the team's label)."""
        return "review" if codeowners.team_reviews(widening.file, self.team) else "label"

    def widening_reasons(self) -> list[str]:
        """The widenings that only the gateway team's label (or --widen) lets through."""
        team = ", ".join(self.team) or "gateway.yaml names no admins"
        return [
            f"{w.where}: a widening the gateway team ({team}) has not approved: {w.change}"
            for w in self.widenings
            if self.approval(w) == "label"
        ]

    def reasons(self) -> list[str]:
        """Why the plan is unsafe; empty when it is safe."""
        return self.guard_reasons() + self.widening_reasons()

    @property
    def safe(self) -> bool:
        return not self.reasons()

    def verdict(self, forced: bool = False, widened: bool = False) -> str:
        """'safe', 'forced' (unsafe, and let through: forced, widenings approved) or 'unsafe' (refused)."""
        if self.safe:
            return "safe"
        held = (self.guard_reasons() and not forced) or (self.widening_reasons() and not widened)
        return "unsafe" if held else "forced"

    def allowed(self, forced: bool = False, widened: bool = False) -> bool:
        return self.verdict(forced, widened) != "unsafe"

    def summary(self) -> str:
        """One line: what changes, for the merge request and the publish commit."""
        statuses = Counter(d.status for d in self.domains)
        if len(self.domains) == 1:
            only = self.domains[0]
            head = only.name if only.status == "changed" else f"{only.name} {only.status}"
        elif self.domains:
            detail = ", ".join(f"{statuses[s]} {s}" for s in ("added", "removed") if statuses[s])
            head = f"{len(self.domains)} domains" + (f" ({detail})" if detail else "")
        else:
            head = ""
        details = [f"{len(self.widenings)} {_plural('widening', len(self.widenings))}"] if self.widenings else []
        addresses = Counter(c.status for d in self.domains for c in d.recipients + d.aliases)
        if addresses:
            details.append(f"+{addresses['added']} -{addresses['removed']} ~{addresses['changed']} addresses")
        counts = (
            (sum(1 for d in self.domains if d.routing and d.status == "changed"), "routing change"),
            (sum(len(d.settings) for d in self.domains), "setting change"),
            (sum(len(d.senders) for d in self.domains), "sending right"),
            (len(self.changed_entries()), "directory entry"),
            (sum(len(d.dns) for d in self.domains) + len(self.records), "DNS record change"),
            (sum(1 for f in self.files if f.section == "policy"), "policy file"),
            (len(self.gateway), "gateway setting"),
            (len(self.files), "out/ file"),
        )
        details += [f"{count} {_plural(noun, count)}" for count, noun in counts if count]
        if head and details:
            return f"{head}: {', '.join(details)}"
        return head or ", ".join(details) or "no changes"

    def changed_entries(self) -> set[str]:
        """The DNs of every changed entry, once each (one entry may serve several domains)."""
        return {c.name for d in self.domains for c in d.directory} | {c.name for c in self.directory}

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the JSON rendering; statuses and sections spelt out."""

        def change(c: Change) -> dict[str, str | None]:
            return {"name": c.name, "status": c.status, "before": c.before, "after": c.after}

        return {
            "base": self.base,
            "summary": self.summary(),
            "safe": self.safe,
            "reasons": self.reasons(),
            "widenings": [
                {**dataclasses.asdict(w), "approval": self.approval(w), "approvers": list(self.team)}
                for w in self.widenings
            ],
            "domains": [
                {
                    "name": d.name,
                    "status": d.status,
                    "addresses_before": d.addresses_before,
                    "addresses_removed": d.addresses_removed,
                    "addresses_changed": d.addresses_changed,
                    "recipients": [change(c) for c in d.recipients],
                    "aliases": [change(c) for c in d.aliases],
                    "routing": change(d.routing) if d.routing else None,
                    "settings": [change(c) for c in d.settings],
                    "directory": [change(c) for c in d.directory],
                    "senders": [change(c) for c in d.senders],
                    "dns": [change(c) for c in d.dns],
                }
                for d in self.domains
            ],
            "records": [change(c) for c in self.records],
            "gateway": [change(c) for c in self.gateway],
            "files": [{**dataclasses.asdict(f), "section": f.section} for f in self.files],
            "directory": [change(c) for c in self.directory],
        }


def _plural(noun: str, count: int) -> str:
    if count == 1:
        return noun
    return noun[:-1] + "ies" if noun.endswith("y") else noun + "s"


def make_plan(
    base: str, old_fleet: Fleet | None, old_out: dict[str, bytes], new_fleet: Fleet | None, new_out: dict[str, bytes]
) -> Plan:
    """Compare two revisions: Fleets (None: no declarations) and out/ trees (path -> bytes)."""
    old_domains = {d.name: d for d in old_fleet.domains} if old_fleet else {}
    new_domains = {d.name: d for d in new_fleet.domains} if new_fleet else {}
    entry_changes = directory_changes(old_out, new_out)
    by_domain: dict[str, list[Change]] = {}
    unowned = []
    names = set(old_domains) | set(new_domains)
    for change in entry_changes:
        owners = _entry_domains(change, names)
        for name in owners:
            by_domain.setdefault(name, []).append(change)
        if not owners:
            unowned.append(change)
    records = record_changes(old_out, new_out)
    # The base's gateway judges the change: its guards and its team (a change cannot pick its own judges).
    judge = old_fleet or new_fleet
    guards = judge.gateway.plan if judge else DEFAULT_GUARDS
    domains = []
    for name in sorted(names):
        old, new = old_domains.get(name), new_domains.get(name)
        plan = _domain_plan(name, old, new, tuple(by_domain.get(name, ())), guards)
        dns = tuple(records.get(name, ()))
        senders = sending_rights(old_fleet, new_fleet, name, plan)
        if plan is None and (dns or senders):
            plan = _domain_plan(name, old, new, (), guards, force=True)
        if plan is not None and senders:
            plan = dataclasses.replace(plan, senders=senders)
        if plan is not None:
            domains.append(dataclasses.replace(plan, dns=dns))
    gateway = _changes(
        _flatten(old_fleet.gateway) if old_fleet else {}, _flatten(new_fleet.gateway) if new_fleet else {}, str
    )
    return Plan(
        base=base,
        domains=tuple(domains),
        gateway=tuple(gateway),
        files=tuple(file_changes(old_out, new_out)),
        directory=tuple(unowned),
        records=tuple(c for zone, changes in sorted(records.items()) if zone not in names for c in changes),
        widenings=widenings(old_fleet, new_fleet),
        team=tuple(sorted(set(judge.gateway.admins))) if judge else (),
    )


def _domain_plan(
    name: str,
    old: Domain | None,
    new: Domain | None,
    directory: tuple[Change, ...],
    guards: PlanSettings = DEFAULT_GUARDS,
    *,
    force: bool = False,
) -> DomainPlan | None:
    old_addresses = {a.address: a for a in old.addresses} if old else {}
    new_addresses = {a.address: a for a in new.addresses} if new else {}
    address_changes = _changes(old_addresses, new_addresses, describe)
    recipients = tuple(c for c in address_changes if not _is_external(c, old_addresses, new_addresses))
    aliases = tuple(c for c in address_changes if _is_external(c, old_addresses, new_addresses))
    old_route, new_route = (transport_nexthop(d) if d else None for d in (old, new))
    routing = Change("next hop", old_route, new_route) if old_route != new_route else None
    settings = tuple(_changes(_settings(old), _settings(new), _show))
    status = "added" if old is None else "removed" if new is None else "changed"
    if status == "changed" and not (recipients or aliases or routing or settings or directory or force):
        return None
    return DomainPlan(
        name=name,
        status=status,
        addresses_before=len(old_addresses),
        addresses_removed=len(set(old_addresses) - set(new_addresses)),
        recipients=recipients,
        aliases=aliases,
        routing=routing,
        settings=settings if status == "changed" else (),
        directory=directory,
        guards=guards,
    )


def _is_external(change: Change, old: dict[str, Address], new: dict[str, Address]) -> bool:
    """An address change belongs to the external aliases when the address is one after (or was one)."""
    address = new.get(change.name) or old[change.name]
    return address.kind == "external"


def describe(address: Address) -> str:
    """What an address is, in words: 'person mrossi', 'role owned by gneri, mrossi', ..."""
    if address.kind == "person":
        return f"person {address.uid}"
    if address.kind == "alias":
        return f"alias of {address.uid}"
    if address.kind == "external":
        return "forwarded to " + ", ".join(address.targets)
    if address.kind == "national":
        return f"national alias of {address.uid}, to " + ", ".join(address.targets)
    return f"{address.kind} owned by " + ", ".join(address.owners)


def _settings(domain: Domain | None) -> dict[str, Any]:
    """Every field of the domain without a section of its own; new fields show up by themselves."""
    if domain is None:
        return {}
    return {f.name: getattr(domain, f.name) for f in dataclasses.fields(domain) if f.name not in _OWN_SECTIONS}


def _show(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
        return ", ".join(value) if value else "(none)"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)


def _flatten(model: BaseModel) -> dict[str, str]:
    """gateway.yaml as dotted names: {'ldap.base_dn': 'ou=...'}."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            flat[prefix] = _show(value)

    walk("", model.model_dump(mode="json"))
    return flat


def _changes(old: dict[str, T], new: dict[str, T], show: Callable[[T], str]) -> list[Change]:
    changes = []
    for name in sorted(set(old) | set(new)):
        before = show(old[name]) if name in old else None
        after = show(new[name]) if name in new else None
        if before != after:
            changes.append(Change(name, before, after))
    return changes


def file_changes(old: dict[str, bytes], new: dict[str, bytes]) -> list[FileChange]:
    """Every out/ file that differs, with lines added and removed (as multisets: no diff needed)."""
    changes = []
    for path in sorted(set(old) | set(new)):
        if path == MANIFEST or old.get(path) == new.get(path):
            continue
        before = Counter(old.get(path, b"").splitlines())
        after = Counter(new.get(path, b"").splitlines())
        status = "added" if path not in old else "removed" if path not in new else "changed"
        changes.append(FileChange(path, status, sum((after - before).values()), sum((before - after).values())))
    return changes


def directory_changes(old: dict[str, bytes], new: dict[str, bytes]) -> list[Change]:
    """Every LDAP entry of out/ldap/*.ldif added, removed or changed, by DN; before and after are its lines.

    Records that are the same bytes on both sides are set aside unparsed: a
    change to one domain leaves nearly every record of a large directory as
    it was, and parsing them all twice would be most of the plan's time.
    """
    old_records, new_records = _ldif_records(old), _ldif_records(new)
    unchanged = set(old_records) & set(new_records)
    old_entries = parse_ldif("\n\n".join(r for r in old_records if r not in unchanged))
    new_entries = parse_ldif("\n\n".join(r for r in new_records if r not in unchanged))
    return _changes(old_entries, new_entries, "\n".join)


def _ldif_records(out: dict[str, bytes]) -> list[str]:
    """The text between blank lines of every LDIF file of the directory, in order (a record, or comments)."""
    return [
        record
        for path in sorted(out)
        if path.startswith(DIRECTORY_DIR) and path.endswith(LDIF_SUFFIX)
        for record in out[path].decode("utf-8", "replace").split("\n\n")
    ]


def parse_ldif(text: str) -> dict[str, tuple[str, ...]]:
    """LDIF content records (RFC 2849) -> {dn: sorted 'type: value' lines}, read by ldap-diff's reader."""
    return {
        dn: tuple(sorted(f"{name}: {_text(value)}" for name, values in attributes.items() for value in values))
        for dn, attributes in ldapdiff.parse_records(text.encode("utf-8"))
        if dn is not None
    }


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _ldif_value(line: str) -> str:
    return line.partition(":")[2].strip()


def _entry_domains(change: Change, names: set[str]) -> set[str]:
    """The domains whose part of an entry changed: those its changed lines name, else those the entry serves.

    A uid's entry carries the addresses of every domain it has one in; a
    reviewer of one domain's change must not see it under the others. Only
    the directory's own links count (associatedDomain, the domain of a
    mailLocalAddress), not any value that happens to be an address (a
    forward target, an owner).
    """
    before = set(change.before.split("\n")) if change.before else set()
    after = set(change.after.split("\n")) if change.after else set()
    return (_domains_named(before ^ after) & names) or (_domains_named(before | after) & names)


def _domains_named(lines: set[str]) -> set[str]:
    found = set()
    for line in lines:
        attribute = line.partition(":")[0].strip().lower()
        if attribute in DOMAIN_ATTRIBUTES:
            found.add(_ldif_value(line).lower())
        elif attribute in ADDRESS_ATTRIBUTES:
            found.add(_ldif_value(line).rpartition("@")[2].lower())
    return found


# --- sending rights: the submission services and the automation relay (docs/submission.md) -------------------


def sending_rights(
    old_fleet: Fleet | None, new_fleet: Fleet | None, name: str, plan: DomainPlan | None
) -> tuple[Change, ...]:
    """Who gains or loses the right to send as what: addresses (their owners' logins), certificates and
    automation clients of one domain. Nobody has any without gateway.yaml's submission section."""
    fleets = (old_fleet, new_fleet)
    on = tuple(f is not None and f.gateway.submission is not None for f in fleets)
    old, new = (f.domain(name) if f is not None and o else None for f, o in zip(fleets, on, strict=True))
    if on[0] == on[1] and plan is not None:
        # The same service on both sides: only the addresses the plan shows changed can change owners.
        changed = {c.name for c in plan.recipients + plan.aliases}
    elif on[0] == on[1]:
        changed = set()
    else:
        changed = {a.address for d in (old, new) if d is not None for a in d.addresses}
    rights = _changes(_address_rights(old, changed), _address_rights(new, changed), str)
    rights += _changes(_client_rights(old, old_fleet), _client_rights(new, new_fleet), str)
    return tuple(rights)


def _address_rights(domain: Domain | None, addresses: set[str]) -> dict[str, str]:
    if domain is None or not addresses:
        return {}
    rights = {}
    for address in domain.addresses:
        if address.address in addresses:
            owners = submission.sender_owners(address.kind, address.uid, address.owners)
            if owners:
                rights[address.address] = "logins " + ", ".join(owners)
    return rights


def _client_rights(domain: Domain | None, fleet: Fleet | None) -> dict[str, str]:
    if domain is None or fleet is None or fleet.gateway.submission is None:
        return {}
    settings = fleet.gateway.submission
    rights = {
        f"certificate {name}": f"{cert.fingerprint} as {', '.join(submission.certificate_domains(domain.name, cert))}"
        for name, cert in domain.submission.client_certificates.items()
    }
    for name, client in domain.submission.automation_clients.items():
        networks = ", ".join(str(net) for net in sorted(set(client.networks), key=network_order))
        rights[f"automation client {name}"] = (
            f"from {networks} to {', '.join(sorted(set(client.destinations)))}, "
            f"{client.messages_per_hour} messages an hour (port {settings.automation_port(client.messages_per_hour)})"
        )
    return rights


# --- DNS records (docs/dns.md) ------------------------------------------------------------------------

DNS_DIR, ZONE_SUFFIX = "dns/", ".zone"


def record_changes(old: dict[str, bytes], new: dict[str, bytes]) -> dict[str, list[Change]]:
    """Zone (a domain, or the gateway's SPF record) -> its record sets added, removed or changed.

    A record set is one owner name and type; before and after are its data, ', '-joined, as the
    snippet writes them. Records another zone publishes (comments in a snippet) are that zone's.
    """
    zones = {
        path.removeprefix(DNS_DIR).removesuffix(ZONE_SUFFIX)
        for path in set(old) | set(new)
        if path.startswith(DNS_DIR) and path.endswith(ZONE_SUFFIX)
    }
    found: dict[str, list[Change]] = {}
    for zone in sorted(zones):
        path = f"{DNS_DIR}{zone}{ZONE_SUFFIX}"
        if old.get(path) == new.get(path):
            continue
        changes = _changes(_record_sets(old.get(path)), _record_sets(new.get(path)), str)
        if changes:
            found[zone] = changes
    return found


def _record_sets(zone: bytes | None) -> dict[str, str]:
    """'owner TYPE' -> its data, from a snippet's record lines ('owner ttl IN TYPE data')."""
    sets: dict[str, list[str]] = {}
    for line in (zone or b"").decode("ascii", "replace").splitlines():
        if not line or line.startswith(";"):
            continue
        owner, _ttl, _class, kind, data = line.split(None, 4)
        sets.setdefault(f"{owner} {kind}", []).append(data)
    return {name: ", ".join(sorted(data)) for name, data in sets.items()}
