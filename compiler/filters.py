"""The filter policy: what the gateway does with spam and viruses, per domain and direction.

gateway.yaml `filters:` sets the fleet's defaults over the built-in ones below;
a domain's `filters:` overrides them field by field. The result, one
`FilterPolicy` per domain, is what the targets read (docs/filtering.md).

Direction: inbound is mail the MX receives for a served domain; outbound is
mail a site's relay (or, later, an authenticated user) sends through the MX.
Allow and block lists are per domain and inbound only.

The rules that need more than one value (threshold order, quarantine use,
contradictory lists) are check rules in compiler.check.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainValidator, StrictBool

from compiler import values

REFERENCES = ("docs/filtering.md",)

DIRECTIONS = ("inbound", "outbound")
# The spam actions in the order their thresholds must rise.
SPAM_ACTIONS = ("add_header", "rewrite_subject", "quarantine", "reject")


# --- declarations -------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


Threshold = Annotated[
    float | bool | None,
    PlainValidator(
        lambda v: None if v is None else values.threshold(v), json_schema_input_type=float | Literal[False] | None
    ),
]
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


MODELS = (
    SpamActions,
    QuarantineSettings,
    SenderList,
    DirectionFilters,
    OutboundFilters,
    DomainInboundFilters,
    FilterDefaults,
    DomainFilters,
    QuarantineService,
    ClamavSettings,
)


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
    virus: str  # reject | quarantine
    quarantine: bool
    retention_days: int
    notify_sender: bool  # outbound: tell the local sender (reject) or not (quarantine silently)

    @property
    def name(self) -> str:
        """A stable name of this policy class: the same policy always gets the same name."""
        canonical = json.dumps(
            [self.direction, vars(self.spam), self.virus, self.quarantine, self.retention_days, self.notify_sender],
            sort_keys=True,
        )
        return f"mailgw_{self.direction}_{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"

    @property
    def refuse_at(self) -> float | None:
        """The lowest score at which the message is not delivered (quarantined or rejected)."""
        limits = [t for t in (self.spam.quarantine, self.spam.reject) if t is not None]
        return min(limits) if limits else None


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


def strictness(policy: DirectionPolicy) -> tuple[float, float, float, float, bool, str]:
    """Sort key, strictest first: when one message reaches domains of several classes, the first wins.

    Stricter means: mail is kept from the recipient (quarantine or reject) at a
    lower score; then a lower reject, subject and header threshold; then
    viruses rejected rather than quarantined; then the class name, so the order
    is total.
    """

    def limit(value: float | None) -> float:
        return float("inf") if value is None else value

    return (
        limit(policy.refuse_at),
        limit(policy.spam.reject),
        limit(policy.spam.rewrite_subject),
        limit(policy.spam.add_header),
        policy.virus != "reject",
        policy.name,
    )


# --- resolution ---------------------------------------------------------------------

# What a gateway gets when gateway.yaml says nothing about filters.
BUILTIN: dict[tuple[str, ...], Any] = {
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
    origin: str  # default | gateway | domain


def explicit(model: BaseModel, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """The policy fields a declaration sets, by path; lists are not policy fields."""
    found: dict[tuple[str, ...], Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name in ("allow", "block"):
            continue
        if isinstance(value, BaseModel):
            found.update(explicit(value, prefix + (name,)))
        elif value is not None:
            found[prefix + (name,)] = value
    return found


def merged(gateway: FilterDefaults, domain: DomainFilters | None = None) -> dict[tuple[str, ...], Setting]:
    """Every policy field with its value and where that value comes from."""
    settings = {path: Setting(value, "default") for path, value in BUILTIN.items()}
    settings.update((path, Setting(value, "gateway")) for path, value in explicit(gateway).items())
    if domain is not None:
        settings.update((path, Setting(value, "domain")) for path, value in explicit(domain).items())
    return settings


def _direction_policy(settings: dict[tuple[str, ...], Setting], direction: str) -> DirectionPolicy:
    def get(*path: str) -> Any:
        value = settings[(direction,) + path].value
        return None if value is False and path[0] == "spam" else value

    spam = SpamPolicy(
        add_header=get("spam", "add_header"),
        rewrite_subject=get("spam", "rewrite_subject"),
        quarantine=get("spam", "quarantine"),
        reject=get("spam", "reject"),
        subject=get("spam", "subject"),
    )
    notify = get("notify_sender") if direction == "outbound" else True
    return DirectionPolicy(
        direction, spam, get("virus"), get("quarantine", "enabled"), get("quarantine", "retention_days"), notify
    )


def _sender_lists(lists: SenderList) -> SenderLists:
    return SenderLists(tuple(sorted(set(lists.senders))), tuple(sorted(set(lists.networks))))


def resolve(gateway: FilterDefaults, domain: DomainFilters | None = None) -> FilterPolicy:
    """The policy of a domain (or, without one, the gateway's defaults)."""
    settings = merged(gateway, domain)
    lists = domain.inbound if domain is not None else DomainInboundFilters()
    return FilterPolicy(
        _direction_policy(settings, "inbound"),
        _direction_policy(settings, "outbound"),
        _sender_lists(lists.allow),
        _sender_lists(lists.block),
    )
