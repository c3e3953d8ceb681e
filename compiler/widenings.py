"""Widenings: the changes that let more mail through the MX, or more clients in, and where they are declared.

The plan (compiler/plan.py) shows them first and makes them unsafe unless the
gateway team approves them (docs/site-admins.md). They are read from the two
Fleets, never from rendered text: a site relay network that is new for its
site, a domain whose recipient check goes from 'list' to 'verify', a
postscreen permit added or reject dropped, a DNSBL site dropped, its weight
lowered or an allowlist added, the DNSBL threshold raised or an action
weakened, a spam quarantine or reject threshold raised or turned off, a virus
action weakened, a quarantine turned off, an allow list entry added or a
block list entry dropped; a client certificate or automation client a
domain file declares, or widens (docs/submission.md), the submission
services turned on, and an address whose mail is now copied to a capture
destination (a copy leaves the site's hands).

Each kind is one entry of KINDS: a function from the base Fleet (None: no
declarations yet) and the new one to the widenings it finds. A new way to let
mail in (automation networks, submission rights, ...) adds its entry there.
A change is judged against the base; against no declarations at all, the
built-in defaults are the base, so a first fleet's relays and permits are
widenings too. The rest of what a plan shows (removals, other settings) is
never a widening: narrowing is always safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from compiler.filters import DIRECTIONS, FilterDefaults, FilterPolicy, resolve
from compiler.fleet import Domain, Fleet
from compiler.model import AutomationClient, IPNetwork, PostscreenSettings
from compiler.pipeline import GATEWAY_FILE
from compiler.targets import submission

GATEWAY = "gateway"
# postscreen's actions, weakest first (postscreen(8): ignore lets the client on, drop hangs up).
_ACTION_STRENGTH = {"ignore": 0, "enforce": 1, "drop": 2}
# The spam actions that keep a message from its recipient; tagging (header, subject) delivers it all the same.
_WITHHOLDING_ACTIONS = ("quarantine", "reject")


@dataclass(frozen=True)
class Widening:
    kind: str  # the name of its entry in KINDS
    where: str  # the domain, or 'gateway' for gateway.yaml's own settings
    change: str  # what now gets through, in words
    file: str  # the declaration that says it, relative to the gateway root (who reviews it: CODEOWNERS)


Finder = Callable[[Fleet | None, Fleet], Iterator[Widening]]


@dataclass(frozen=True)
class Kind:
    name: str
    title: str  # for people: the plan's views group by it
    find: Finder


def widenings(old: Fleet | None, new: Fleet | None) -> tuple[Widening, ...]:
    """Every widening from `old` to `new`: the gateway's first, then by domain, then in the order of KINDS."""
    if new is None:  # nothing declared lets nothing through
        return ()
    order = {kind.name: index for index, kind in enumerate(KINDS)}
    found = {widening for kind in KINDS for widening in kind.find(old, new)}
    return tuple(sorted(found, key=lambda w: (w.where != GATEWAY, w.where, order[w.kind], w.change)))


def title(kind: str) -> str:
    return next(k.title for k in KINDS if k.name == kind)


# --- relay networks: who may send through the MX to anywhere ---------------------------------


def _within(net: IPNetwork, wider: IPNetwork) -> bool:
    return net.version == wider.version and net.subnet_of(wider)  # type: ignore[arg-type]


def _relay_networks(old: Fleet | None, new: Fleet) -> Iterator[Widening]:
    """A network in a domain's outbound_relays that no relay network of its site held before."""
    before = old.site_relays() if old else {}
    for domain in new.domains:
        held = before.get(domain.site, ())
        for net in domain.relays:
            if not any(_within(net, wider) for wider in held):
                yield Widening(
                    "relay_networks",
                    domain.name,
                    f"relay network {net} of site {domain.site} may send mail through the MX to anywhere",
                    domain.source,
                )


# --- the recipient check: which addresses the MX accepts -------------------------------------


def _domains(fleet: Fleet | None) -> dict[str, Domain]:
    return {d.name: d for d in fleet.domains} if fleet else {}


def _recipient_checks(old: Fleet | None, new: Fleet) -> Iterator[Widening]:
    """A domain that accepts what its site confirms (verify) instead of its declared list."""
    before = _domains(old)
    for domain in new.domains:
        was = before.get(domain.name)
        if domain.recipient_check == "verify" and (was is None or was.recipient_check != "verify"):
            change = "recipient check 'verify'" if was is None else "recipient check from 'list' to 'verify'"
            yield Widening(
                "recipient_check",
                domain.name,
                f"{change}: the MX accepts every address the site's next hop does not refuse",
                domain.source,
            )


# --- postscreen: which clients reach smtpd ---------------------------------------------------


def _postscreen(old: Fleet | None, new: Fleet) -> Iterator[Widening]:
    before = old.gateway.postscreen if old else PostscreenSettings()
    after = new.gateway.postscreen
    for change in _postscreen_changes(before, after):
        yield Widening("postscreen", GATEWAY, change, GATEWAY_FILE)


def _postscreen_changes(before: PostscreenSettings, after: PostscreenSettings) -> Iterator[str]:
    for net, action in after.access.items():
        if action == "permit" and before.access.get(net) != "permit":
            yield f"postscreen permits {net}: its clients skip the DNSBL and protocol tests"
    for net, action in before.access.items():
        if action == "reject" and net not in after.access:
            yield f"postscreen no longer rejects {net}"
    # A site is its domain and reply filter: a changed filter is the old site dropped and a new one asked.
    old_sites = {(s.domain, s.filter): s.weight for s in before.dnsbl_sites}
    new_sites = {(s.domain, s.filter): s.weight for s in after.dnsbl_sites}
    for (domain, reply), weight in old_sites.items():
        name = domain + (f"={reply}" if reply else "")
        if (domain, reply) not in new_sites and weight > 0:
            yield f"DNSBL site {name} (weight {weight}) no longer asked"
        elif (domain, reply) in new_sites and new_sites[(domain, reply)] < weight:
            yield f"DNSBL site {name}: weight lowered from {weight} to {new_sites[(domain, reply)]}"
    for (domain, reply), weight in new_sites.items():
        if (domain, reply) not in old_sites and weight < 0:
            yield f"DNSBL allowlist {domain + (f'={reply}' if reply else '')} (weight {weight}) added"
    if before.dnsbl_sites and after.dnsbl_threshold > before.dnsbl_threshold:
        yield f"DNSBL threshold raised from {before.dnsbl_threshold} to {after.dnsbl_threshold}"
    for setting in ("dnsbl_action", "denylist_action"):
        was, now = getattr(before, setting), getattr(after, setting)
        if _ACTION_STRENGTH[now] < _ACTION_STRENGTH[was]:
            yield f"postscreen {setting} weakened from {was} to {now}"


# --- filters: what Rspamd and ClamAV keep from the recipient ---------------------------------


def _filters(old: Fleet | None, new: Fleet) -> Iterator[Widening]:
    """The gateway's defaults against its old ones; each domain's policy against its old one (or the defaults).

    A domain that only inherits a widened default says nothing of its own: the
    gateway's widening is shown once, under gateway.yaml.
    """
    builtin = resolve(FilterDefaults())
    old_defaults = (old.default_filters if old else None) or builtin
    new_defaults = new.default_filters or builtin
    inherited = set(_policy_changes(old_defaults, new_defaults))
    for change in sorted(inherited):
        yield Widening("filters", GATEWAY, change, GATEWAY_FILE)
    old_domains = _domains(old)
    for domain in new.domains:
        after = new.filters.get(domain.name, new_defaults)
        before = old.filters.get(domain.name, old_defaults) if old and domain.name in old_domains else new_defaults
        for change in _policy_changes(before, after):
            if change not in inherited:
                yield Widening("filters", domain.name, change, domain.source)


def _score(value: float | None) -> str:
    return "off" if value is None else f"{value:g}"


def _policy_changes(before: FilterPolicy, after: FilterPolicy) -> Iterator[str]:
    for direction in DIRECTIONS:
        was, now = before.direction(direction), after.direction(direction)
        for action in _WITHHOLDING_ACTIONS:
            old_score, new_score = getattr(was.spam, action), getattr(now.spam, action)
            if old_score is not None and (new_score is None or new_score > old_score):
                verb = "turned off" if new_score is None else "raised"
                yield f"{direction} spam {action} threshold {verb}: {_score(old_score)} -> {_score(new_score)}"
        if was.virus == "reject" and now.virus != "reject":
            yield f"{direction} viruses no longer rejected: {was.virus} -> {now.virus}"
        if was.quarantine and not now.quarantine:
            yield f"{direction} quarantine turned off"
    for kind in ("senders", "networks"):
        for entry in sorted(set(getattr(after.allow, kind)) - set(getattr(before.allow, kind))):
            yield f"inbound allow list: {entry} added (its mail is never spam)"
        for entry in sorted(set(getattr(before.block, kind)) - set(getattr(after.block, kind))):
            yield f"inbound block list: {entry} removed"


# --- submission: who sends out without a login (docs/submission.md) ---------------------------


def _submission(old: Fleet | None, new: Fleet) -> Iterator[Widening]:
    """The submission services turned on (gateway.yaml); a client certificate, or a domain it may send as, that
    its domain file did not declare before; an automation client's new network, destination or higher rate.

    A login's addresses are not judged here: they follow the addresses the plan shows, like the recipients.
    """
    if new.gateway.submission is None:
        return
    was_on = old is not None and old.gateway.submission is not None
    if not was_on:
        yield Widening(
            "submission",
            GATEWAY,
            "the submission services open: AAI logins send as the addresses they own",
            GATEWAY_FILE,
        )
    before = _domains(old) if was_on else {}
    for domain in new.domains:
        was = before.get(domain.name)
        old_certificates = (
            {
                c.fingerprint: set(submission.certificate_domains(domain.name, c))
                for c in was.submission.client_certificates.values()
            }
            if was
            else {}
        )
        for name, cert in sorted(domain.submission.client_certificates.items()):
            domains = submission.certificate_domains(domain.name, cert)
            held = old_certificates.get(cert.fingerprint)
            if held is None:
                change = f"client certificate {name} ({cert.fingerprint}) may send as {', '.join(domains)}"
            elif added := [d for d in domains if d not in held]:
                change = f"client certificate {name} may now also send as {', '.join(added)}"
            else:
                continue
            yield Widening("submission", domain.name, change, domain.source)
        old_clients = was.submission.automation_clients if was else {}
        for name, client in sorted(domain.submission.automation_clients.items()):
            yield from (
                Widening("submission", domain.name, f"automation client {name}: {change}", domain.source)
                for change in _automation_changes(old_clients.get(name), client)
            )


def _automation_changes(before: AutomationClient | None, after: AutomationClient) -> Iterator[str]:
    if before is None:
        networks, destinations = ", ".join(map(str, after.networks)), ", ".join(after.destinations)
        yield f"{networks} may send without a login to {destinations}, {after.messages_per_hour} messages an hour"
        return
    for net in after.networks:
        if not any(_within(net, wider) for wider in before.networks):
            yield f"{net} may send without a login"
    held = set(before.destinations)
    added = [d for d in after.destinations if d not in held and d.rpartition("@")[2] not in held]
    if added:
        yield f"may now also send to {', '.join(added)}"
    if after.messages_per_hour > before.messages_per_hour:
        yield f"rate raised from {before.messages_per_hour} to {after.messages_per_hour} messages an hour"


# --- capture: whose mail is copied, and to where (docs/site-admins.md) -------------------------------


def _capture(old: Fleet | None, new: Fleet) -> Iterator[Widening]:
    """An address of a domain whose mail is now copied to a destination it was not copied to before."""
    before = _domains(old)
    for domain in new.domains:
        if domain.capture is None:
            continue
        was = before.get(domain.name)
        held = was.capture if was else None
        for local in sorted(set(domain.capture.addresses)):
            if held is not None and held.destination == domain.capture.destination and local in held.addresses:
                continue
            yield Widening(
                "capture",
                domain.name,
                f"every message to {local}@{domain.name} is copied to {domain.capture.destination}",
                domain.source,
            )


KINDS: tuple[Kind, ...] = (
    Kind("relay_networks", "relay networks", _relay_networks),
    Kind("recipient_check", "recipient check", _recipient_checks),
    Kind("postscreen", "postscreen and DNSBL", _postscreen),
    Kind("filters", "spam and virus filters", _filters),
    Kind("submission", "certificates and automation clients", _submission),
    Kind("capture", "captured addresses", _capture),
)
