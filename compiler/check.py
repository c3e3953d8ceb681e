"""Stage 3, check: rules that need more than one value, file or domain at once.

Each rule returns every finding it sees; where two places conflict, the
finding stands at one and its message names the other.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

import idna

from compiler import capture, values
from compiler.declarations import Declarations, DomainSource
from compiler.filters import DIRECTIONS, SPAM_ACTIONS, Setting, merged
from compiler.findings import Finding
from compiler.fleet import RESERVED_LOCAL_PARTS, gateway_postmaster
from compiler.load import Document
from compiler.sync import synced
from compiler.targets.ldap import escape_dn_value


def check(declarations: Declarations) -> list[Finding]:
    findings: list[Finding] = []
    for rule in RULES:
        findings += rule(declarations)
    return findings


def _where(source: DomainSource, loc: tuple[str | int, ...], at_key: bool = False) -> str:
    return source.doc.location(loc, at_key=at_key)


def file_name_matches_domain(decls: Declarations) -> list[Finding]:
    findings = []
    for source in decls.domains:
        stem = PurePosixPath(source.doc.relpath).name.removesuffix(".yaml")
        # The A-label, or for an IDN domain its lower-case Unicode form.
        if stem not in (source.decl.domain, idna.decode(source.decl.domain)):
            findings.append(
                source.doc.finding(
                    ("domain",),
                    "file-name-mismatch",
                    f"domain '{source.decl.domain}' is declared in '{source.doc.relpath}'; "
                    f"the file must be named domains/{source.decl.domain}.yaml",
                )
            )
    return findings


def one_file_per_domain(decls: Declarations) -> list[Finding]:
    first: dict[str, DomainSource] = {}
    findings = []
    for source in sorted(decls.domains, key=lambda s: s.doc.relpath):
        name = source.decl.domain
        if name in first:
            findings.append(
                source.doc.finding(
                    ("domain",),
                    "duplicate-domain",
                    f"domain '{name}' is already declared at {_where(first[name], ('domain',))}",
                )
            )
        else:
            first[name] = source
    return findings


def one_declaration_per_address(decls: Declarations) -> list[Finding]:
    """Local parts are case-insensitive, and an address is a recipient or an external alias, not both."""
    findings = []
    for source in decls.domains:
        if len({entry.address for entry in source.addresses}) == len(source.addresses):
            continue  # addresses are stored folded: no two spellings of one address here
        seen: dict[str, tuple[str, str]] = {}
        for entry in source.addresses:
            folded, loc = entry.key.lower(), (entry.section, entry.key)
            if folded in seen:
                findings.append(
                    source.doc.finding(
                        loc,
                        "duplicate-address",
                        f"address '{folded}@{source.decl.domain}' is already declared at "
                        f"{_where(source, seen[folded], at_key=True)}",
                        at_key=True,
                    )
                )
            else:
                seen[folded] = loc
    return findings


def list_domains_accept_someone(decls: Declarations) -> list[Finding]:
    return [
        source.doc.finding(
            ("recipient_check",),
            "empty-recipient-list",
            "recipient_check is 'list' but no recipients or external aliases are "
            "declared, so the MX would reject all mail for the domain",
        )
        for source in decls.domains
        # The national domain's people have generated addresses (compiler/national.py).
        if source.decl.recipient_check == "list" and not source.addresses and source.decl.domain != _national(decls)
    ]


def nexthop_is_not_the_gateway(decls: Declarations) -> list[Finding]:
    own = set(decls.gateway.mx_hosts)
    return [
        source.doc.finding(
            ("delivery", "nexthop", i),
            "nexthop-loop",
            f"next hop '{hop.host}' is one of the gateway's own MX hosts; mail would loop",
        )
        for source in decls.domains
        for i, hop in enumerate(source.decl.delivery.nexthop)
        if hop.host in own
    ]


def owners_are_known_uids(decls: Declarations) -> list[Finding]:
    known = {entry.uid for source in decls.domains for entry in source.addresses if entry.uid}
    findings = []
    for source in decls.domains:
        for entry in source.addresses:
            for owner in entry.owners:
                if owner not in known:
                    # Owners are stored sorted: locate the one written in the file.
                    node, _, _ = source.doc.walk(("recipients", entry.key, "owners"))
                    written = [getattr(item, "value", None) for item in getattr(node, "value", [])]
                    index = written.index(owner) if owner in written else 0
                    findings.append(
                        source.doc.finding(
                            ("recipients", entry.key, "owners", index),
                            "unknown-owner",
                            f"owner '{owner}' of '{entry.key}' is not the uid of any person or alias in the fleet",
                        )
                    )
    return findings


def _accepted(decls: Declarations) -> dict[str, set[str]]:
    """Served domain -> the lower-case local parts it accepts: its addresses, postmaster and abuse."""
    accepted = {
        source.decl.domain: {entry.key.lower() for entry in source.addresses} | set(RESERVED_LOCAL_PARTS)
        for source in decls.domains
    }
    if decls.national is not None and decls.national.domain in accepted:  # and the national aliases
        accepted[decls.national.domain] |= {alias.key for alias in decls.national.aliases}
    return accepted


def _national(decls: Declarations) -> str | None:
    return decls.gateway.national.domain if decls.gateway.national is not None else None


def _postmaster_where(decls: Declarations) -> tuple[Document, tuple[str | int, ...], str]:
    """Where the gateway's postmaster is set: its own field, or the MX host its default comes from."""
    if decls.gateway.postmaster is not None:
        return decls.gateway_doc, ("postmaster",), "postmaster"
    return decls.gateway_doc, ("mx_hosts",), "postmaster (the default, from mx_hosts)"


@dataclass(frozen=True)
class _Target:
    """An address the MX forwards mail to itself, and where it is written (looked up only for a finding)."""

    address: str
    doc: Document
    loc: tuple[str | int, ...]  # for an external alias: the alias; the target's index is found on demand
    what: str
    in_list: bool = False

    def finding(self, code: str, message: str) -> Finding:
        loc = self.loc
        if self.in_list:
            # Targets are stored sorted and folded: locate the one written in the file.
            node, _, _ = self.doc.walk(loc)
            written = [getattr(item, "value", None) for item in getattr(node, "value", [])]
            loc += (next((i for i, w in enumerate(written) if w and w.lower() == self.address.lower()), 0),)
        return self.doc.finding(loc, code, message)


def _targets(decls: Declarations) -> list[_Target]:
    """Every address the MX forwards mail to itself (external alias targets, the gateway's postmaster)."""
    found = [
        _Target(target, source.doc, ("external_aliases", entry.key), f"target '{target}'", in_list=True)
        for source in decls.domains
        for entry in source.addresses
        for target in entry.targets
    ]
    postmaster = gateway_postmaster(decls.gateway)
    if postmaster is not None:
        doc, loc, what = _postmaster_where(decls)
        found.append(_Target(postmaster, doc, loc, f"{what} '{postmaster}'"))
    return found


def alias_targets_exist(decls: Declarations) -> list[Finding]:
    """A target in a domain this gateway serves by list must be declared there, or the MX bounces it.

    A target at one of the gateway's own MX hosts never arrives: no node receives mail for their names.
    """
    listed = {s.decl.domain for s in decls.domains if s.decl.recipient_check == "list"}
    own = set(decls.gateway.mx_hosts)
    accepted = None
    findings = []
    for target in _targets(decls):
        target_local, _, target_domain = target.address.lower().partition("@")
        if target_domain in own:
            findings.append(
                target.finding(
                    "alias-to-mx-host",
                    f"{target.what} is at '{target_domain}', one of the gateway's own MX hosts, which receive no "
                    "mail; name a mailbox elsewhere",
                )
            )
            continue
        if target_domain not in listed:
            continue
        accepted = accepted if accepted is not None else _accepted(decls)
        if target_local not in accepted[target_domain]:
            findings.append(
                target.finding(
                    "undeclared-alias-target",
                    f"{target.what} is in '{target_domain}', which this gateway serves, but is not declared there",
                )
            )
    return findings


def gateway_has_a_postmaster(decls: Declarations) -> list[Finding]:
    """The nodes' own postmaster (and the LMTP domains' postmaster@ and abuse@) must reach a mailbox."""
    if gateway_postmaster(decls.gateway) is not None:
        return []
    return [
        decls.gateway_doc.finding(
            ("mx_hosts",),
            "missing-postmaster",
            "no MX host is a host name to take the default postmaster from; declare postmaster: "
            "the gateway team's mailbox (like 'mail-gateway@example.org')",
            at_key=True,
        )
    ]


def alias_chains_end(decls: Declarations) -> list[Finding]:
    """External aliases that lead back to themselves would loop on the MX until the hop limit.

    The MX's own aliases count too: postmaster@ and abuse@ of an LMTP domain that declares neither go to
    the gateway's postmaster.
    """
    graph: dict[str, list[str]] = {}
    where: dict[str, tuple[Document, tuple[str | int, ...], bool]] = {}
    for source in decls.domains:
        for entry in source.addresses:
            if entry.targets:
                graph[entry.address] = sorted({t.lower() for t in entry.targets})
                where[entry.address] = (source.doc, ("external_aliases", entry.key), True)
    postmaster = gateway_postmaster(decls.gateway)
    if postmaster is not None:
        doc, loc, _ = _postmaster_where(decls)
        for source in decls.domains:
            if source.decl.delivery.nexthop[0].transport != "lmtp":
                continue
            declared = {entry.address for entry in source.addresses}
            for local in RESERVED_LOCAL_PARTS:
                address = f"{local}@{source.decl.domain}"
                if address not in declared:
                    graph[address] = [postmaster.lower()]
                    where[address] = (doc, loc, False)
    # One depth-first walk; every cycle shows up as at least one back edge.
    findings, done, reported = [], set(), set()
    for start in sorted(graph):
        if start in done:
            continue
        path, stack = [start], [iter(graph[start])]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                done.add(path.pop())
            elif child in path:
                cycle = path[path.index(child) :]
                first = min(cycle)
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    turn = cycle.index(first)
                    shown = cycle[turn:] + cycle[:turn] + [first]
                    doc, loc, at_key = where[first]
                    findings.append(
                        doc.finding(loc, "alias-loop", "external aliases loop: " + " -> ".join(shown), at_key=at_key)
                    )
            elif child in graph and child not in done:
                path.append(child)
                stack.append(iter(graph[child]))
    return findings


def subdomains_stay_with_their_site(decls: Declarations) -> list[Finding]:
    by_name = {s.decl.domain: s for s in decls.domains}
    findings = []
    for name, source in sorted(by_name.items()):
        labels = name.split(".")
        for i in range(1, len(labels) - 1):
            parent = by_name.get(".".join(labels[i:]))
            # The sites' domains may lie under the national domain (lnf.infn.it under infn.it).
            if parent and parent.decl.site != source.decl.site and parent.decl.domain != _national(decls):
                findings.append(
                    source.doc.finding(
                        ("domain",),
                        "subdomain-overlap",
                        f"'{name}' (site {source.decl.site}) lies under '{parent.decl.domain}' of site "
                        f"{parent.decl.site}, declared at {_where(parent, ('domain',))}; a subdomain belongs "
                        f"to its parent's site",
                    )
                )
    return findings


def relay_networks_belong_to_one_site(decls: Declarations) -> list[Finding]:
    """A relay network lets its site send through the MX; two sites must not claim the same addresses."""
    claims = [
        (source, i, net)
        for source in sorted(decls.domains, key=lambda s: s.doc.relpath)
        for i, net in enumerate(source.decl.outbound_relays)
    ]
    findings = []
    for later, (source, i, net) in enumerate(claims):
        for other, j, other_net in claims[:later]:
            if other.decl.site != source.decl.site and net.version == other_net.version and net.overlaps(other_net):
                findings.append(
                    source.doc.finding(
                        ("outbound_relays", i),
                        "relay-network-claimed",
                        f"relay network {net} of site {source.decl.site} overlaps {other_net}, claimed by site "
                        f"{other.decl.site} at {_where(other, ('outbound_relays', j))}; a relay belongs to one site",
                    )
                )
                break
    return findings


def relays_are_not_the_gateway(decls: Declarations) -> list[Finding]:
    """A relay network holding one of the MX hosts (given as an address) would let the node relay as a site."""
    own = [ipaddress.IPv4Address(host) for host in decls.gateway.mx_hosts if values.host_is_address(host)]
    return [
        source.doc.finding(
            ("outbound_relays", i),
            "relay-network-is-gateway",
            f"relay network {net} holds {host}, one of the gateway's own MX hosts; a site relay is a host of its site",
        )
        for source in decls.domains
        for i, net in enumerate(source.decl.outbound_relays)
        for host in own
        if net.version == 4 and host in net
    ]


def addresses_fit_the_directory(decls: Declarations) -> list[Finding]:
    """What the LDAP directory names an entry by (docs/ldap.md) must fit OpenLDAP's mdb (values.DIRECTORY_MAX_RDN).

    A domain's entry is 'associatedDomain=DOMAIN'; a list, role or external alias address has an entry
    'cn=ADDRESS' of its own (a person's addresses are values of the uid's entry, not names).
    """
    limit = values.DIRECTORY_MAX_RDN
    findings = []
    for source in decls.domains:
        domain = source.decl.domain
        if len(f"associatedDomain={domain}") > limit:
            findings.append(
                source.doc.finding(
                    ("domain",),
                    "directory-limit",
                    f"domain '{domain}' has {len(domain)} characters; the LDAP directory names a domain's entry "
                    f"'associatedDomain=DOMAIN', at most {limit} characters, so the domain may have at most "
                    f"{limit - len('associatedDomain=')}",
                )
            )
            continue
        for entry in source.addresses:
            if entry.kind in ("list", "role", "external") and len(f"cn={escape_dn_value(entry.address)}") > limit:
                findings.append(
                    source.doc.finding(
                        (entry.section, entry.key),
                        "directory-limit",
                        f"address '{entry.address}' is too long for the LDAP directory, which names a "
                        f"{entry.kind} address's entry 'cn=ADDRESS' in at most {limit} characters",
                        at_key=True,
                    )
                )
    return findings


# --- the filter policy's rules (docs/filtering.md) ---------------------------------------


@dataclass(frozen=True)
class _Scope:
    """One file whose filter settings are checked: gateway.yaml, or a domain with the gateway under it."""

    doc: Document
    origin: str
    settings: dict[tuple[str, ...], Setting]
    gateway_doc: Document

    def where(self, path: tuple[str, ...]) -> str:
        setting = self.settings[path]
        if setting.origin == "default":
            return "the built-in default"
        doc = self.doc if setting.origin == self.origin else self.gateway_doc
        line, col = doc.position(("filters",) + path)
        return f"set at {doc.relpath}:{line}:{col}"

    def owns(self, path: tuple[str, ...]) -> bool:
        return self.settings[path].origin == self.origin

    def finding(self, path: tuple[str, ...], code: str, message: str) -> Finding:
        return self.doc.finding(("filters",) + path, code, message)


def _scopes(decls: Declarations) -> list[_Scope]:
    gateway = decls.gateway.filters
    scopes = [_Scope(decls.gateway_doc, "gateway", merged(gateway), decls.gateway_doc)]
    scopes += [_Scope(s.doc, "domain", merged(gateway, s.decl.filters), decls.gateway_doc) for s in decls.domains]
    return scopes


def _label(path: tuple[str, ...]) -> str:
    return "filters." + ".".join(path)


def thresholds_rise(decls: Declarations) -> list[Finding]:
    """add_header < rewrite_subject < quarantine < reject, among those that are on."""
    findings = []
    for scope in _scopes(decls):
        for direction in DIRECTIONS:
            paths = [(direction, "spam", a) for a in SPAM_ACTIONS if scope.settings[(direction, "spam", a)].value]
            for lower, upper in itertools.pairwise(paths):
                low, high = scope.settings[lower].value, scope.settings[upper].value
                if low < high or not (scope.owns(lower) or scope.owns(upper)):
                    continue
                if scope.owns(upper):
                    message = (
                        f"{_label(upper)} is {high:g}, but it must be above {lower[-1]} ({low:g}, {scope.where(lower)})"
                    )
                    findings.append(scope.finding(upper, "threshold-order", message))
                else:
                    message = (
                        f"{_label(lower)} is {low:g}, but it must be below {upper[-1]} ({high:g}, {scope.where(upper)})"
                    )
                    findings.append(scope.finding(lower, "threshold-order", message))
    return findings


def quarantine_is_on_where_used(decls: Declarations) -> list[Finding]:
    findings = []
    for scope in _scopes(decls):
        for direction in DIRECTIONS:
            enabled = (direction, "quarantine", "enabled")
            if scope.settings[enabled].value:
                continue
            uses = [
                path
                for path in ((direction, "spam", "quarantine"), (direction, "virus"))
                if scope.settings[path].value not in (False, "reject")
            ]
            for path in uses:
                if scope.owns(path):
                    what = "'quarantine'" if path[-1] == "virus" else f"{scope.settings[path].value:g}"
                    findings.append(
                        scope.finding(
                            path,
                            "quarantine-disabled",
                            (
                                f"{_label(path)} is {what}, but the quarantine is off for {direction} mail "
                                f"({_label(enabled)}: false, {scope.where(enabled)}); "
                                "turn it on or choose another action"
                            ),
                        )
                    )
            if uses and scope.owns(enabled) and not any(scope.owns(path) for path in uses):
                findings.append(
                    scope.finding(
                        enabled,
                        "quarantine-disabled",
                        (
                            f"{_label(enabled)} is false, but {_label(uses[0])} ({scope.where(uses[0])}) "
                            "sends mail to the quarantine"
                        ),
                    )
                )
    return findings


def outbound_refusals_reach_someone(decls: Declarations) -> list[Finding]:
    """A silently refused outbound message must at least be kept in the quarantine."""
    notify, enabled = ("outbound", "notify_sender"), ("outbound", "quarantine", "enabled")
    findings = []
    for scope in _scopes(decls):
        if scope.settings[notify].value or scope.settings[enabled].value:
            continue
        path = notify if scope.owns(notify) else enabled if scope.owns(enabled) else None
        if path is not None:
            findings.append(
                scope.finding(
                    path,
                    "silent-drop",
                    (
                        f"{_label(notify)} is false and the outbound quarantine is off ({scope.where(enabled)}), "
                        "so refused outbound mail would vanish; notify the sender or enable the outbound quarantine"
                    ),
                )
            )
    return findings


def quarantine_service_declared(decls: Declarations) -> list[Finding]:
    if decls.gateway.quarantine is not None:
        return []
    return [
        scope.finding(
            (d, "quarantine", "enabled"),
            "no-quarantine-service",
            f"{_label((d, 'quarantine', 'enabled'))} is true, but gateway.yaml declares no "
            "quarantine service to send the messages to (quarantine.url)",
        )
        for scope in _scopes(decls)
        for d in DIRECTIONS
        if scope.settings[(d, "quarantine", "enabled")].value and scope.owns((d, "quarantine", "enabled"))
    ]


def lists_do_not_contradict(decls: Declarations) -> list[Finding]:
    """The same sender or network may not be both allowed and blocked by one domain."""
    findings = []
    for source in decls.domains:
        inbound = source.decl.filters.inbound
        for kind in ("senders", "networks"):
            allowed = {entry: i for i, entry in enumerate(getattr(inbound.allow, kind))}
            for i, entry in enumerate(getattr(inbound.block, kind)):
                if entry in allowed:
                    line, col = source.doc.position(("filters", "inbound", "allow", kind, allowed[entry]))
                    findings.append(
                        source.doc.finding(
                            ("filters", "inbound", "block", kind, i),
                            "list-conflict",
                            f"'{entry}' is both blocked here and allowed at {source.doc.relpath}:{line}:{col}; "
                            "keep it in one list",
                        )
                    )
    return findings


RULES: tuple[Callable[[Declarations], list[Finding]], ...] = (
    file_name_matches_domain,
    one_file_per_domain,
    one_declaration_per_address,
    list_domains_accept_someone,
    nexthop_is_not_the_gateway,
    owners_are_known_uids,
    gateway_has_a_postmaster,
    alias_targets_exist,
    alias_chains_end,
    subdomains_stay_with_their_site,
    relay_networks_belong_to_one_site,
    relays_are_not_the_gateway,
    addresses_fit_the_directory,
    thresholds_rise,
    quarantine_is_on_where_used,
    outbound_refusals_reach_someone,
    quarantine_service_declared,
    lists_do_not_contradict,
)


# --- domains whose addresses mailgw sync writes (docs/sync-format.md) ------------------------


def sourced_domains_are_synced(decls: Declarations) -> list[Finding]:
    """A domain with a source and no synced file yet accepts nobody: the first sync must come first."""
    return [
        source.doc.finding(
            ("source",),
            "not-synced",
            f"{source.decl.domain} has a source but {synced.relpath(source.decl.domain)} does not exist yet; "
            f"run 'mailgw sync {source.decl.domain}' and commit the file with this change",
            at_key=True,
        )
        for source in decls.domains
        if source.decl.source is not None and source.doc.sections is None and not source.addresses
    ]


RULES += (sourced_domains_are_synced,)


# --- the national alias domain and capture-and-notify (docs/national-aliases.md, docs/site-admins.md) ---


def national_aliases_hold(decls: Declarations) -> list[Finding]:
    """The ledger, the choices and the national domain's own file (compiler/national.py finds them)."""
    return list(decls.national.findings) if decls.national is not None else []


def _routes(decls: Declarations) -> dict[str, tuple[str, ...]]:
    """What the MX rewrites an address into: external aliases and national aliases (virtual_alias)."""
    routes = {entry.address: entry.targets for source in decls.domains for entry in source.addresses if entry.targets}
    if decls.national is not None:
        routes.update((alias.address, alias.targets) for alias in decls.national.aliases)
    return routes


def captures_hold(decls: Declarations) -> list[Finding]:
    """Captured addresses exist; the copy and the notices go to mailboxes that are not captured themselves.

    A destination or a person told that is captured (or whose mail reaches a
    captured address) would have the capture's own mail captured again.
    """
    capturing = [source for source in decls.domains if source.decl.capture is not None]
    if not capturing:
        return []
    findings = []
    declared_in = {source.decl.domain: {entry.address for entry in source.addresses} for source in capturing}
    captured = []
    for source in capturing:
        spec = source.decl.capture
        assert spec is not None
        seen: set[str] = set()
        for i, local in enumerate(spec.addresses):
            address = f"{local.lower()}@{source.decl.domain}"
            if address in seen:
                findings.append(
                    source.doc.finding(("capture", "addresses", i), "capture-twice", f"'{local}' is listed twice")
                )
            elif source.decl.recipient_check == "list" and address not in declared_in[source.decl.domain]:
                findings.append(
                    source.doc.finding(
                        ("capture", "addresses", i),
                        "capture-undeclared",
                        f"'{local}' is not an address of {source.decl.domain}: capture declared addresses only",
                    )
                )
            seen.add(address)
            captured.append(address)
    reached = capture.reaching(captured, _routes(decls))
    listed = {s.decl.domain for s in decls.domains if s.decl.recipient_check == "list"}
    own = set(decls.gateway.mx_hosts)
    accepted = None
    for source in capturing:
        spec = source.decl.capture
        assert spec is not None
        places: list[tuple[tuple[str | int, ...], str, str]] = [
            (("capture", "destination"), spec.destination, "destination")
        ]
        places += [(("capture", "notify", i), person, "person told") for i, person in enumerate(spec.notify)]
        for loc, target, what in places:
            local, _, domain = target.lower().partition("@")
            if target.lower() in reached:
                findings.append(
                    source.doc.finding(
                        loc,
                        "capture-loop",
                        f"the {what} '{target}' is captured itself (its mail reaches "
                        f"{reached[target.lower()]}): the capture's own mail would be captured again",
                    )
                )
            elif domain in own:
                findings.append(
                    source.doc.finding(
                        loc, "capture-to-mx-host", f"the {what} '{target}' is at one of the gateway's own MX hosts"
                    )
                )
            elif domain in listed:
                accepted = accepted if accepted is not None else _accepted(decls)
                if local not in accepted[domain]:
                    findings.append(
                        source.doc.finding(
                            loc,
                            "undeclared-capture-target",
                            f"the {what} '{target}' is in '{domain}', which this gateway serves, "
                            "but is not declared there",
                        )
                    )
    return findings


def names_agree(decls: Declarations) -> list[Finding]:
    """A person has one name: where several addresses of a uid carry one, it is the same everywhere."""
    first: dict[str, tuple[str, str]] = {}
    findings = []
    for source in sorted(decls.domains, key=lambda s: s.doc.relpath):
        for entry in source.addresses:
            if not entry.name or entry.uid is None:
                continue
            loc = ("recipients", entry.key, "name")
            if entry.uid not in first:
                first[entry.uid] = (entry.name, source.doc.location(loc))
            elif first[entry.uid][0] != entry.name:
                name, where = first[entry.uid]
                findings.append(
                    source.doc.finding(
                        loc,
                        "name-conflict",
                        f"{entry.uid} is named '{name}' at {where}; a person has one name "
                        "(write it once, or the same everywhere)",
                    )
                )
    return findings


RULES += (names_agree, national_aliases_hold, captures_hold)


# --- authenticated submission and the automation relay (docs/submission.md) ----------------------


def submission_needs_the_service(decls: Declarations) -> list[Finding]:
    """A domain's certificates and automation clients need gateway.yaml's submission section to mean anything."""
    if decls.gateway.submission is not None:
        return []
    return [
        source.doc.finding(
            ("submission",),
            "no-submission-service",
            "this domain declares client certificates or automation clients, but gateway.yaml declares no "
            "submission service (submission:) for them to use",
            at_key=True,
        )
        for source in decls.domains
        if source.decl.submission.client_certificates or source.decl.submission.automation_clients
    ]


def automation_rates_have_a_service(decls: Declarations) -> list[Finding]:
    settings = decls.gateway.submission
    if settings is None:
        return []
    rates = sorted(service.messages_per_hour for service in settings.automation_services)
    offered = ", ".join(str(rate) for rate in rates) if rates else "none"
    return [
        source.doc.finding(
            ("submission", "automation_clients", name, "messages_per_hour"),
            "unknown-automation-rate",
            f"automation client '{name}': no automation service of gateway.yaml has the rate "
            f"{client.messages_per_hour} messages per hour (the rates offered: {offered})",
        )
        for source in decls.domains
        for name, client in source.decl.submission.automation_clients.items()
        if settings.automation_port(client.messages_per_hour) is None
    ]


def certificates_send_as_their_site(decls: Declarations) -> list[Finding]:
    """A certificate may send as its own site's domains only, as a site relay does."""
    site_of = {source.decl.domain: source.decl.site for source in decls.domains}
    findings = []
    for source in decls.domains:
        for name, cert in source.decl.submission.client_certificates.items():
            for i, domain in enumerate(cert.sender_domains):
                if site_of.get(domain) == source.decl.site:
                    continue
                why = (
                    f"is a domain of site {site_of[domain]}, not of site {source.decl.site}"
                    if domain in site_of
                    else "is not a domain of the gateway"
                )
                findings.append(
                    source.doc.finding(
                        ("submission", "client_certificates", name, "sender_domains", i),
                        "certificate-domain",
                        f"client certificate '{name}' may not send as '{domain}': it {why}",
                    )
                )
    return findings


def one_declaration_per_certificate(decls: Declarations) -> list[Finding]:
    first: dict[str, tuple[DomainSource, str]] = {}
    findings = []
    for source in sorted(decls.domains, key=lambda s: s.doc.relpath):
        for name, cert in source.decl.submission.client_certificates.items():
            loc = ("submission", "client_certificates", name, "fingerprint")
            if cert.fingerprint in first:
                other, other_name = first[cert.fingerprint]
                where = _where(other, ("submission", "client_certificates", other_name, "fingerprint"))
                findings.append(
                    source.doc.finding(
                        loc,
                        "duplicate-certificate",
                        f"client certificate '{name}' has the fingerprint of '{other_name}', declared at {where}; "
                        "one certificate, one declaration",
                    )
                )
            else:
                first[cert.fingerprint] = (source, name)
    return findings


def automation_networks_belong_to_one_client(decls: Declarations) -> list[Finding]:
    """Each address reaches one automation client's destinations and rate: networks of two clients never overlap."""
    claims = [
        (source, name, i, net)
        for source in sorted(decls.domains, key=lambda s: s.doc.relpath)
        for name, client in source.decl.submission.automation_clients.items()
        for i, net in enumerate(client.networks)
    ]
    findings = []
    for later, (source, name, i, net) in enumerate(claims):
        for other, other_name, j, other_net in claims[:later]:
            if (other, other_name) != (source, name) and net.version == other_net.version and net.overlaps(other_net):
                where = _where(other, ("submission", "automation_clients", other_name, "networks", j))
                findings.append(
                    source.doc.finding(
                        ("submission", "automation_clients", name, "networks", i),
                        "automation-network-claimed",
                        f"network {net} of automation client '{name}' overlaps {other_net} of automation client "
                        f"'{other_name}' at {where}; an address belongs to one client",
                    )
                )
                break
    return findings


def automation_clients_are_not_the_gateway(decls: Declarations) -> list[Finding]:
    own = [ipaddress.IPv4Address(host) for host in decls.gateway.mx_hosts if values.host_is_address(host)]
    return [
        source.doc.finding(
            ("submission", "automation_clients", name, "networks", i),
            "automation-network-is-gateway",
            f"network {net} of automation client '{name}' holds {host}, one of the gateway's own MX hosts",
        )
        for source in decls.domains
        for name, client in source.decl.submission.automation_clients.items()
        for i, net in enumerate(client.networks)
        for host in own
        if net.version == 4 and host in net
    ]


def automation_destinations_exist(decls: Declarations) -> list[Finding]:
    """An address destination in a domain the gateway serves by list must be accepted there, or mail would bounce."""
    listed = {s.decl.domain for s in decls.domains if s.decl.recipient_check == "list"}
    accepted = None
    findings = []
    for source in decls.domains:
        for name, client in source.decl.submission.automation_clients.items():
            for i, destination in enumerate(client.destinations):
                local, at, domain = destination.partition("@")
                if not at or domain not in listed:
                    continue
                accepted = accepted if accepted is not None else _accepted(decls)
                if local not in accepted[domain]:
                    findings.append(
                        source.doc.finding(
                            ("submission", "automation_clients", name, "destinations", i),
                            "undeclared-destination",
                            f"destination '{destination}' of automation client '{name}' is in '{domain}', which "
                            "this gateway serves, but is not declared there",
                        )
                    )
    return findings


def submission_ports_are_free(decls: Declarations) -> list[Finding]:
    """Every service of an MX node listens on its own port: the LDAP server and the release service have theirs."""
    settings = decls.gateway.submission
    if settings is None:
        return []
    taken = {decls.gateway.ldap.port: "the LDAP server (ldap.port)"}
    if decls.gateway.portal is not None:
        taken[int(decls.gateway.portal.release_service.rpartition(":")[2])] = "the release service (portal)"
    ports: list[tuple[tuple[str | int, ...], int]] = [
        (("submission", "starttls_port"), settings.starttls_port),
        (("submission", "implicit_tls_port"), settings.implicit_tls_port),
    ]
    ports += [
        (("submission", "automation_services", i, "port"), service.port)
        for i, service in enumerate(settings.automation_services)
    ]
    return [
        decls.gateway_doc.finding(loc, "port-taken", f"port {port} is already the port of {taken[port]}")
        for loc, port in ports
        if port in taken
    ]


RULES += (
    submission_needs_the_service,
    automation_rates_have_a_service,
    certificates_send_as_their_site,
    one_declaration_per_certificate,
    automation_networks_belong_to_one_client,
    automation_clients_are_not_the_gateway,
    automation_destinations_exist,
    submission_ports_are_free,
)


# --- DKIM keys, the DNS records and forwarded mail (docs/dns.md) --------------------------------------


def dkim_selectors_are_distinct(decls: Declarations) -> list[Finding]:
    """A selector names one record and one key file: two keys of one domain never share it."""
    findings = []
    for source in decls.domains:
        seen: dict[str, int] = {}
        for i, key in enumerate(source.decl.dkim.selectors if source.decl.dkim else []):
            if key.name in seen:
                findings.append(
                    source.doc.finding(
                        ("dkim", "selectors", i, "name"),
                        "duplicate-selector",
                        f"selector '{key.name}' is already declared at "
                        f"{_where(source, ('dkim', 'selectors', seen[key.name], 'name'))}",
                    )
                )
            else:
                seen[key.name] = i
    return findings


def one_signing_key_per_algorithm(decls: Declarations) -> list[Finding]:
    """One signature per algorithm: two RSA signatures of one domain add nothing but bytes and CPU.

    During a rotation the new key is published with signing: false, then takes over (docs/site-admins.md).
    """
    findings = []
    for source in decls.domains:
        signing: dict[str, int] = {}
        for i, key in enumerate(source.decl.dkim.selectors if source.decl.dkim else []):
            if not key.signing:
                continue
            if key.algorithm in signing:
                first = source.decl.dkim.selectors[signing[key.algorithm]] if source.decl.dkim else key
                findings.append(
                    source.doc.finding(
                        ("dkim", "selectors", i, "signing"),
                        "two-signing-keys",
                        f"selectors '{first.name}' and '{key.name}' both sign with {key.algorithm}; during a "
                        f"rotation give the key that does not sign yet (or any more) 'signing: false'",
                    )
                )
            else:
                signing[key.algorithm] = i
    return findings


def dns_names_every_mx_host(decls: Declarations) -> list[Finding]:
    """The MX records name every MX host, and the gateway's SPF record lists each one's addresses."""
    dns = decls.gateway.dns
    if dns is None:
        return []
    doc, hosts = decls.gateway_doc, decls.gateway.mx_hosts
    findings = [
        doc.finding(
            ("dns", "mx_addresses", host),
            "unknown-mx-host",
            f"mx_addresses names '{host}', which is not one of mx_hosts ({', '.join(hosts)})",
            at_key=True,
        )
        for host in dns.mx_addresses
        if host not in hosts
    ]
    if findings:
        return findings  # a misspelt host name: one finding, not a second one for the host it left out
    for i, host in enumerate(hosts):
        if values.host_is_address(host):
            findings.append(
                doc.finding(
                    ("mx_hosts", i),
                    "mx-host-is-an-address",
                    f"MX host '{host}' is an address, and an MX record names a host (RFC 5321 5.1); with a dns "
                    "section every MX host is a host name",
                )
            )
        elif host not in dns.mx_addresses:
            findings.append(
                doc.finding(
                    ("dns", "mx_addresses"),
                    "mx-host-without-address",
                    f"MX host '{host}' has no addresses in mx_addresses; the gateway's SPF record lists them all",
                    at_key=True,
                )
            )
    return findings


def forwarding_is_the_gateways_own(decls: Declarations) -> list[Finding]:
    """The SRS domain is the gateway's: no site serves it, and no MX host is named like it.

    Its own services listen on distinct loopback ports (postsrsd's two lookups, the forwarding pass, the release).
    """
    forwarding = decls.gateway.forwarding
    if forwarding is None:
        return []
    doc, findings = decls.gateway_doc, []
    served = {source.decl.domain: source for source in decls.domains}
    if forwarding.srs_domain in served:
        findings.append(
            doc.finding(
                ("forwarding", "srs_domain"),
                "srs-domain-served",
                f"srs_domain '{forwarding.srs_domain}' is a domain of site {served[forwarding.srs_domain].decl.site} "
                f"({_where(served[forwarding.srs_domain], ('domain',))}); SRS addresses need a domain of the "
                "gateway's own",
            )
        )
    if forwarding.srs_domain in decls.gateway.mx_hosts:
        findings.append(
            doc.finding(
                ("forwarding", "srs_domain"),
                "srs-domain-served",
                f"srs_domain '{forwarding.srs_domain}' is an MX host's own name; name a mail domain of the gateway",
            )
        )
    services: dict[str, str] = {}
    if decls.gateway.portal is not None:
        services[decls.gateway.portal.release_service] = "portal.release_service"
    services.setdefault(decls.gateway.capture.notice_service, "capture.notice_service")
    for name in ("srs_forward_lookup", "srs_reverse_lookup", "service"):
        address = getattr(forwarding, name)
        if address in services:
            findings.append(
                doc.finding(
                    ("forwarding", name),
                    "duplicate-service",
                    f"forwarding.{name} {address} is also {services[address]}; each service needs a port of its own",
                )
            )
        services.setdefault(address, f"forwarding.{name}")
    return findings


RULES += (
    dkim_selectors_are_distinct,
    one_signing_key_per_algorithm,
    dns_names_every_mx_host,
    forwarding_is_the_gateways_own,
)
