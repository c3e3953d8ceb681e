"""The filter policy: what the gateway does with spam and viruses, per domain and direction.

gateway.yaml `filters:` sets the fleet's defaults over the built-in ones below;
a domain's `filters:` overrides them field by field. The result, one
`FilterPolicy` per domain, is what the targets read (docs/filtering.md).

Direction: inbound is mail the MX receives for a served domain; outbound is
mail a site's relay (or, later, an authenticated user) sends through the MX.
Allow and block lists are per domain and inbound only.

The rules that need more than one value (threshold order, quarantine use,
contradictory lists) are check rules at the end of this module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainValidator, StrictBool

from compiler import values
from compiler.findings import Finding

if TYPE_CHECKING:
    from compiler.fleet import Declarations
    from compiler.load import Document

REFERENCES = ("docs/filtering.md",)

DIRECTIONS = ("inbound", "outbound")
# The spam actions in the order their thresholds must rise.
SPAM_ACTIONS = ("add_header", "rewrite_subject", "quarantine", "reject")


# --- declarations -------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


Threshold = Annotated[float | bool | None, PlainValidator(
    lambda v: None if v is None else values.threshold(v), json_schema_input_type=float | Literal[False] | None)]
SubjectTemplate = Annotated[str, AfterValidator(values.subject_template)]
SenderPattern = Annotated[str, PlainValidator(values.sender_pattern, json_schema_input_type=str)]
Network = Annotated[str, PlainValidator(values.client_network, json_schema_input_type=str)]
RetentionDays = Annotated[int, PlainValidator(values.retention_days, json_schema_input_type=int)]


class SpamActions(_Strict):
    """Score thresholds of the spam actions; false turns one off, leaving it out inherits it."""
    add_header: Threshold = None
    rewrite_subject: Threshold = None
    subject: SubjectTemplate | None = None
    quarantine: Threshold = None
    reject: Threshold = None


class QuarantineSettings(_Strict):
    enabled: StrictBool | None = None
    retention_days: RetentionDays | None = None


class SenderList(_Strict):
    """Envelope senders ('name@example.net', '@example.net') and client networks (CIDR)."""
    senders: list[SenderPattern] = []
    networks: list[Network] = []


class DirectionFilters(_Strict):
    spam: SpamActions = SpamActions()
    virus: Literal["reject", "quarantine"] | None = None
    quarantine: QuarantineSettings = QuarantineSettings()


class OutboundFilters(DirectionFilters):
    notify_sender: StrictBool | None = None


class DomainInboundFilters(DirectionFilters):
    allow: SenderList = SenderList()
    block: SenderList = SenderList()


class FilterDefaults(_Strict):
    """gateway.yaml `filters:`: the defaults of every domain."""
    inbound: DirectionFilters = DirectionFilters()
    outbound: OutboundFilters = OutboundFilters()


class DomainFilters(_Strict):
    """A domain's `filters:`: overrides of the gateway's defaults, and the domain's own lists."""
    inbound: DomainInboundFilters = DomainInboundFilters()
    outbound: OutboundFilters = OutboundFilters()


class QuarantineService(_Strict):
    """Where Rspamd sends quarantined messages (an HTTPS POST of the message)."""
    url: Annotated[str, PlainValidator(values.https_url, json_schema_input_type=str)]


class ClamavSettings(_Strict):
    socket: Annotated[str, AfterValidator(values.absolute_path)] = "/run/clamav/clamd.ctl"


MODELS = (SpamActions, QuarantineSettings, SenderList, DirectionFilters, OutboundFilters, DomainInboundFilters,
          FilterDefaults, DomainFilters, QuarantineService, ClamavSettings)


# --- the resolved policy (IR) -------------------------------------------------------

@dataclass(frozen=True)
class SpamPolicy:
    add_header: float | None
    rewrite_subject: float | None
    quarantine: float | None
    reject: float | None
    subject: str


@dataclass(frozen=True)
class DirectionPolicy:
    direction: str
    spam: SpamPolicy
    virus: str                # reject | quarantine
    quarantine: bool
    retention_days: int
    notify_sender: bool       # outbound: tell the local sender (reject) or not (quarantine silently)

    @property
    def name(self) -> str:
        """A stable name of this policy class: the same policy always gets the same name."""
        canonical = json.dumps([self.direction, vars(self.spam), self.virus, self.quarantine,
                                self.retention_days, self.notify_sender], sort_keys=True)
        return f"mailgw_{self.direction}_{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"

    @property
    def refuse_at(self) -> float | None:
        """The lowest score at which the message is not delivered (quarantined or rejected)."""
        limits = [t for t in (self.spam.quarantine, self.spam.reject) if t is not None]
        return min(limits) if limits else None

    def strongest_spam_action(self) -> str:
        """What happens to a message above every threshold (GTUBE): the action with the highest one."""
        if self.spam.reject is not None:
            return "reject" if self.notify_sender else "quarantine"
        for action in ("quarantine", "rewrite_subject", "add_header"):
            if getattr(self.spam, action) is not None:
                return action
        return "deliver"


@dataclass(frozen=True)
class SenderLists:
    senders: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.senders or self.networks)


@dataclass(frozen=True)
class FilterPolicy:
    """One domain's resolved policy: both directions and its inbound allow and block lists."""
    inbound: DirectionPolicy
    outbound: DirectionPolicy
    allow: SenderLists = SenderLists()
    block: SenderLists = SenderLists()

    def direction(self, name: str) -> DirectionPolicy:
        return self.inbound if name == "inbound" else self.outbound


def strictness(policy: DirectionPolicy) -> tuple:
    """Sort key, strictest first: when one message reaches domains of several classes, the first wins.

    Stricter means: mail is kept from the recipient (quarantine or reject) at a
    lower score; then a lower reject, subject and header threshold; then
    viruses rejected rather than quarantined; then the class name, so the order
    is total.
    """
    def limit(value: float | None) -> float:
        return float("inf") if value is None else value
    return (limit(policy.refuse_at), limit(policy.spam.reject), limit(policy.spam.rewrite_subject),
            limit(policy.spam.add_header), policy.virus != "reject", policy.name)


# --- resolution ---------------------------------------------------------------------

# What a gateway gets when gateway.yaml says nothing about filters.
BUILTIN: dict[tuple, Any] = {
    ("inbound", "spam", "add_header"): 5.0,
    ("inbound", "spam", "rewrite_subject"): 7.0,
    ("inbound", "spam", "subject"): "[SPAM] %s",
    ("inbound", "spam", "quarantine"): False,
    ("inbound", "spam", "reject"): 15.0,
    ("inbound", "virus"): "reject",
    ("inbound", "quarantine", "enabled"): False,
    ("inbound", "quarantine", "retention_days"): 30,
    ("outbound", "spam", "add_header"): False,
    ("outbound", "spam", "rewrite_subject"): False,
    ("outbound", "spam", "subject"): "[SPAM] %s",
    ("outbound", "spam", "quarantine"): False,
    ("outbound", "spam", "reject"): 10.0,
    ("outbound", "virus"): "reject",
    ("outbound", "quarantine", "enabled"): False,
    ("outbound", "quarantine", "retention_days"): 30,
    ("outbound", "notify_sender"): True,
}


@dataclass(frozen=True)
class Setting:
    value: Any
    origin: str      # default | gateway | domain


def explicit(model: BaseModel, prefix: tuple = ()) -> dict[tuple, Any]:
    """The policy fields a declaration sets, by path; lists are not policy fields."""
    found: dict[tuple, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name in ("allow", "block"):
            continue
        if isinstance(value, BaseModel):
            found.update(explicit(value, prefix + (name,)))
        elif value is not None:
            found[prefix + (name,)] = value
    return found


def merged(gateway: FilterDefaults, domain: DomainFilters | None = None) -> dict[tuple, Setting]:
    """Every policy field with its value and where that value comes from."""
    settings = {path: Setting(value, "default") for path, value in BUILTIN.items()}
    settings.update((path, Setting(value, "gateway")) for path, value in explicit(gateway).items())
    if domain is not None:
        settings.update((path, Setting(value, "domain")) for path, value in explicit(domain).items())
    return settings


def _direction_policy(settings: dict[tuple, Setting], direction: str) -> DirectionPolicy:
    def get(*path):
        value = settings[(direction,) + path].value
        return None if value is False and path[0] == "spam" else value
    spam = SpamPolicy(*(get("spam", action) for action in SPAM_ACTIONS), subject=get("spam", "subject"))
    notify = get("notify_sender") if direction == "outbound" else True
    return DirectionPolicy(direction, spam, get("virus"), get("quarantine", "enabled"),
                           get("quarantine", "retention_days"), notify)


def _sender_lists(lists: SenderList) -> SenderLists:
    return SenderLists(tuple(sorted(set(lists.senders))), tuple(sorted(set(lists.networks))))


def resolve(gateway: FilterDefaults, domain: DomainFilters | None = None) -> FilterPolicy:
    """The policy of a domain (or, without one, the gateway's defaults)."""
    settings = merged(gateway, domain)
    lists = domain.inbound if domain is not None else DomainInboundFilters()
    return FilterPolicy(_direction_policy(settings, "inbound"), _direction_policy(settings, "outbound"),
                        _sender_lists(lists.allow), _sender_lists(lists.block))


# --- check rules ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Scope:
    """One file whose filter settings are checked: gateway.yaml, or a domain with the gateway under it."""
    doc: Document
    origin: str
    settings: dict[tuple, Setting]
    gateway_doc: Document

    def where(self, path: tuple) -> str:
        setting = self.settings[path]
        if setting.origin == "default":
            return "the built-in default"
        doc = self.doc if setting.origin == self.origin else self.gateway_doc
        line, col = doc.position(("filters",) + path)
        return f"set at {doc.relpath}:{line}:{col}"

    def owns(self, path: tuple) -> bool:
        return self.settings[path].origin == self.origin

    def finding(self, path: tuple, code: str, message: str) -> Finding:
        return self.doc.finding(("filters",) + path, code, message)


def _scopes(decls: Declarations) -> list[_Scope]:
    gateway = decls.gateway.filters
    scopes = [_Scope(decls.gateway_doc, "gateway", merged(gateway), decls.gateway_doc)]
    scopes += [_Scope(s.doc, "domain", merged(gateway, s.decl.filters), decls.gateway_doc) for s in decls.domains]
    return scopes


def _label(path: tuple) -> str:
    return "filters." + ".".join(path)


def thresholds_rise(decls: Declarations) -> list[Finding]:
    """add_header < rewrite_subject < quarantine < reject, among those that are on."""
    findings = []
    for scope in _scopes(decls):
        for direction in DIRECTIONS:
            paths = [(direction, "spam", a) for a in SPAM_ACTIONS if scope.settings[(direction, "spam", a)].value]
            for lower, upper in zip(paths, paths[1:]):
                low, high = scope.settings[lower].value, scope.settings[upper].value
                if low < high or not (scope.owns(lower) or scope.owns(upper)):
                    continue
                if scope.owns(upper):
                    message = (f"{_label(upper)} is {high:g}, but it must be above {lower[-1]} ({low:g}, "
                               f"{scope.where(lower)})")
                    findings.append(scope.finding(upper, "threshold-order", message))
                else:
                    message = (f"{_label(lower)} is {low:g}, but it must be below {upper[-1]} ({high:g}, "
                               f"{scope.where(upper)})")
                    findings.append(scope.finding(lower, "threshold-order", message))
    return findings


def quarantine_is_on_where_used(decls: Declarations) -> list[Finding]:
    findings = []
    for scope in _scopes(decls):
        for direction in DIRECTIONS:
            enabled = (direction, "quarantine", "enabled")
            if scope.settings[enabled].value:
                continue
            uses = [path for path in ((direction, "spam", "quarantine"), (direction, "virus"))
                    if scope.settings[path].value not in (False, "reject")]
            for path in uses:
                if scope.owns(path):
                    what = "'quarantine'" if path[-1] == "virus" else f"{scope.settings[path].value:g}"
                    findings.append(scope.finding(path, "quarantine-disabled", (
                        f"{_label(path)} is {what}, but the quarantine is off for {direction} mail "
                        f"({_label(enabled)}: false, {scope.where(enabled)}); turn it on or choose another action")))
            if uses and scope.owns(enabled) and not any(scope.owns(path) for path in uses):
                findings.append(scope.finding(enabled, "quarantine-disabled", (
                    f"{_label(enabled)} is false, but {_label(uses[0])} ({scope.where(uses[0])}) "
                    "sends mail to the quarantine")))
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
            findings.append(scope.finding(path, "silent-drop", (
                f"{_label(notify)} is false and the outbound quarantine is off ({scope.where(enabled)}), "
                "so refused outbound mail would vanish; notify the sender or enable the outbound quarantine")))
    return findings


def quarantine_service_declared(decls: Declarations) -> list[Finding]:
    if decls.gateway.quarantine is not None:
        return []
    return [scope.finding((d, "quarantine", "enabled"), "no-quarantine-service",
                          f"{_label((d, 'quarantine', 'enabled'))} is true, but gateway.yaml declares no "
                          "quarantine service to send the messages to (quarantine.url)")
            for scope in _scopes(decls) for d in DIRECTIONS
            if scope.settings[(d, "quarantine", "enabled")].value and scope.owns((d, "quarantine", "enabled"))]


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
                    findings.append(source.doc.finding(
                        ("filters", "inbound", "block", kind, i), "list-conflict",
                        f"'{entry}' is both blocked here and allowed at {source.doc.relpath}:{line}:{col}; "
                        "keep it in one list"))
    return findings


RULES = (thresholds_rise, quarantine_is_on_where_used, outbound_refusals_reach_someone,
         quarantine_service_declared, lists_do_not_contradict)
