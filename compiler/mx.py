"""What the MX does with one recipient: Postfix's lookups replayed over the generated tables.

The order is that of the generated main.cf: postscreen(8)'s access list when
the client connects; at RCPT TO smtpd(8)'s smtpd_relay_restrictions, then
smtpd_recipient_restrictions, then the unlisted-recipient check
(smtpd_reject_unlisted_recipient); once accepted, cleanup(8)'s virtual alias
expansion and trivial-rewrite(8)'s transport lookup. The keys tried follow
access(5), virtual(5), transport(5) and postconf(5) (relay_domains with
parent_domain_matches_subdomains, relay_recipient_maps, recipient_delimiter).
The tables are read from the generated artifacts, so the answer is about the
bytes Puppet deploys. The end-to-end tests hold these answers against a real
Postfix.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass

from compiler import capture
from compiler.fleet import Fleet
from compiler.model import IPNetwork
from compiler.targets import submission
from compiler.targets.postfix import FORWARD_MAP, FORWARD_TRANSPORT, MAPS
from compiler.targets.postfix_config import CIDR_TABLES, MYNETWORKS, RECIPIENT_DELIMITER, UNVERIFIED_REJECT_REASON

REFERENCES = (
    "smtpd(8)",
    "postscreen(8)",
    "cleanup(8)",
    "trivial-rewrite(8)",
    "access(5)",
    "virtual(5)",
    "transport(5)",
    "cidr_table(5)",
    "postconf(5)",
    "canonical(5) (the recipient_bcc_maps search order)",
)

ACCEPTED, REJECTED, SITE_DECIDES = "accepted", "rejected", "decided by the site"
# relay_recipients' value for postmaster@ and abuse@ of a domain that does not declare them (targets/postfix).
RESERVED = "reserved"
NATIONAL = "national"
OK_REPLY = "250 2.1.5 Ok"
# split_addr(3): these local parts are never split at the delimiter.
_NEVER_SPLIT = ("postmaster", "mailer-daemon", "double-bounce")
_MAX_ALIAS_DEPTH = 20


@dataclass(frozen=True)
class Lookup:
    table: str
    key: str
    value: str | None  # None: not found


@dataclass(frozen=True)
class Step:
    title: str
    lookups: tuple[Lookup, ...]
    outcome: str


@dataclass(frozen=True)
class Delivery:
    recipient: str  # the envelope recipient as delivered
    route: str  # the transport and next hops, in words


@dataclass(frozen=True)
class Explanation:
    address: str
    verdict: str  # ACCEPTED, REJECTED or SITE_DECIDES
    stage: str  # when the reply comes: 'connect' or 'RCPT TO'
    reply: str  # what the sender sees (when the site decides: if it accepts)
    reply_if_site_rejects: str | None
    owner: str | None
    deliveries: tuple[Delivery, ...]
    steps: tuple[Step, ...]

    @property
    def accepted(self) -> bool:
        """The MX does not refuse it by itself (a verify domain's site may still say no)."""
        return self.verdict != REJECTED


class Tables:
    """The generated lookup tables as Postfix reads them: map key -> value, cidr tables in order."""

    def __init__(self, artifacts: dict[str, bytes]):
        # forward_alias exists with gateway.yaml's forwarding only.
        names = MAPS + tuple(name for name in (FORWARD_MAP,) if f"postfix/{name}" in artifacts)
        self.maps = {name: _read_map(artifacts[f"postfix/{name}"]) for name in names}
        self.cidr = {name: _read_cidr(artifacts[f"postfix/{name}"]) for name in CIDR_TABLES}

    def find(self, table: str, keys: list[str]) -> tuple[list[Lookup], str | None, str | None]:
        """Try the keys in order until one is found: (lookups made, value, key found)."""
        return self.find_in((table,), keys)

    def find_in(self, tables: tuple[str, ...], keys: list[str]) -> tuple[list[Lookup], str | None, str | None]:
        """A list of tables (virtual_alias_maps = a, b): each key in every table, then the next key."""
        lookups = []
        for key in keys:
            for table in tables:
                value = self.maps.get(table, {}).get(key)
                lookups.append(Lookup(table, key, value))
                if value is not None:
                    return lookups, value, key
        return lookups, None, None

    def match(self, table: str, client: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Lookup:
        """The first network of a cidr table that holds the client (cidr_table(5))."""
        for net, value in self.cidr[table]:
            if client.version == net.version and client in net:
                return Lookup(table, str(net), value)
        return Lookup(table, str(client), None)


def _read_map(data: bytes) -> dict[str, str]:
    entries = {}
    for line in data.decode("ascii").splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("\t")
            entries[key] = value
    return entries


def _read_cidr(data: bytes) -> list[tuple[IPNetwork, str]]:
    return [
        (ipaddress.ip_network(net), value)
        for net, _, value in (
            line.partition("\t") for line in data.decode("ascii").splitlines() if line and not line.startswith("#")
        )
    ]


def split_extension(local: str) -> tuple[str, str | None]:
    """'user+ext' -> ('user', 'ext') at the first delimiter, as split_addr(3) does."""
    if local in _NEVER_SPLIT:
        return local, None
    user, delimiter, extension = local.partition(RECIPIENT_DELIMITER)
    if not delimiter or not user:
        return local, None
    return user, extension


def address_keys(local: str, domain: str) -> list[str]:
    """relay_recipient_maps and virtual_alias_maps: user+ext@domain, user@domain, @domain."""
    user, extension = split_extension(local)
    keys = [f"{local}@{domain}"]
    if extension is not None:
        keys.append(f"{user}@{domain}")
    return keys + [f"@{domain}"]


def parent_keys(domain: str) -> list[str]:
    """domain, then '.parent' forms: parent_domain_matches_subdomains leaves these tables out."""
    labels = domain.split(".")
    return [domain] + ["." + ".".join(labels[i:]) for i in range(1, len(labels))]


def access_keys(local: str, domain: str) -> list[str]:
    """check_recipient_access (access(5)): user+ext@domain, user@domain, domain, parents, user+ext@, user@."""
    user, extension = split_extension(local)
    full = [f"{local}@{domain}"] + ([f"{user}@{domain}"] if extension is not None else [])
    return full + parent_keys(domain) + [f"{local}@"] + ([f"{user}@"] if extension is not None else [])


def transport_keys(local: str, domain: str) -> list[str]:
    """transport(5): user+ext@domain, user@domain, domain, parents, '*'."""
    user, extension = split_extension(local)
    full = [f"{local}@{domain}"] + ([f"{user}@{domain}"] if extension is not None else [])
    return full + parent_keys(domain) + ["*"]


def explain(
    fleet: Fleet, tables: Tables, address: str, client: str | None = None, *, relaying: Step | None = None
) -> Explanation:
    """What the MX does with RCPT TO:<address> from `client` (default: an unknown client on the internet).

    `address` is local@domain with the domain as A-labels; raises ValueError otherwise. `relaying`: the
    step that let a client of a submission service relay (explain_submission), instead of port 25's.
    """
    local_written, at, domain_written = address.rpartition("@")
    if not at or not local_written or not domain_written:
        raise ValueError(f"'{address}' is not an address like 'name@example.org'")
    # Postfix folds the case of every lookup key in these tables.
    local, domain = local_written.lower(), domain_written.lower()
    steps: list[Step] = []

    client_step, trusted, refusal = _client(fleet, tables, client) if relaying is None else (relaying, True, None)
    steps.append(client_step)
    if refusal:
        return _verdict(address, REJECTED, refusal, steps)

    lookups, relayed, _ = tables.find("relay_domains", parent_keys(domain))
    if not (trusted or relayed):
        steps.append(
            Step(
                "relay check (smtpd_relay_restrictions: reject_unauth_destination)",
                tuple(lookups),
                "not a domain of the gateway, and the client may not relay",
            )
        )
        return _verdict(address, REJECTED, ("RCPT TO", f"554 5.7.1 <{address}>: Relay access denied"), steps)
    steps.append(
        Step(
            "relay check (smtpd_relay_restrictions)",
            tuple(lookups),
            "a domain of the gateway" if relayed else "the client may relay to any domain",
        )
    )

    lookups, action, _ = tables.find("recipient_verification", access_keys(local, domain))
    verify = action == "reject_unverified_recipient"
    steps.append(
        Step(
            "recipient check (check_recipient_access recipient_verification)",
            tuple(lookups),
            "the MX asks the site's relay whether the address exists (address verification)"
            if verify
            else "DUNNO: no verification"
            if action == "DUNNO"
            else "no verification",
        )
    )

    owner = None
    if relayed:
        lookups, aliased, _ = tables.find("virtual_alias", address_keys(local, domain))
        kind, listed_key = None, None
        if aliased is None:
            more, kind, listed_key = tables.find("relay_recipients", address_keys(local, domain))
            lookups += more
        title = "unknown recipient check (smtpd_reject_unlisted_recipient)"
        if aliased is None and kind is None:
            steps.append(Step(title, tuple(lookups), "unknown: refused"))
            reply = f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in relay recipient table"
            return _verdict(address, REJECTED, ("RCPT TO", reply), steps)
        steps.append(Step(title, tuple(lookups), _listed(tables, aliased, kind, address_keys(local, domain))))
        owner = _owner(fleet, domain, listed_key or f"{split_extension(local)[0]}@{domain}")
    else:
        steps.append(
            Step("unknown recipient check", (), "not a domain of the gateway: outbound mail, delivered as addressed")
        )

    deliveries, delivery_steps = _deliver(fleet, tables, address)
    steps += delivery_steps
    if relayed:
        copies, capture_steps = _capture(fleet, tables, address)
        deliveries += copies
        steps += capture_steps
    if verify:
        rejected = (
            f"550 5.1.1 <{address}>: Recipient address rejected: undeliverable address: {UNVERIFIED_REJECT_REASON}"
        )
        return Explanation(address, SITE_DECIDES, "RCPT TO", OK_REPLY, rejected, owner, deliveries, tuple(steps))
    return Explanation(address, ACCEPTED, "RCPT TO", OK_REPLY, None, owner, deliveries, tuple(steps))


def _listed(tables: Tables, aliased: str | None, kind: str | None, keys: list[str]) -> str:
    """Why the unknown recipient check lets the address through."""
    if aliased is not None:
        _, listed, _ = tables.find("relay_recipients", keys)
        if listed == RESERVED:
            return "postmaster@ or abuse@, not declared by the domain: the gateway team's (gateway.yaml postmaster)"
        if listed == NATIONAL:
            return "a national alias: it reaches the person's primary address"
        return "an external alias of the gateway"
    if kind == "verify":
        return "a domain whose site decides"
    if kind == RESERVED:
        return "postmaster@ or abuse@, not declared by the domain: relayed to its site like any recipient"
    return f"declared: {kind}"


def _verdict(address: str, verdict: str, refusal: tuple[str, str], steps: list[Step]) -> Explanation:
    stage, reply = refusal
    return Explanation(address, verdict, stage, reply, None, None, (), tuple(steps))


def _client(fleet: Fleet, tables: Tables, client: str | None) -> tuple[Step, bool, tuple[str, str] | None]:
    """(step, may relay, refusal as (stage, reply) or None) for the connecting client."""
    if client is None:
        return (
            Step(
                "client: any client on the internet (neither the MX node nor a site relay)",
                (),
                "may not relay; postscreen's DNSBL score is not evaluated here",
            ),
            False,
            None,
        )
    ip = ipaddress.ip_address(client)
    if any(ip.version == net.version and ip in net for net in _mynetworks()):
        return Step(f"client {ip}: the MX node itself (mynetworks)", (), "trusted: may relay"), True, None
    # postscreen_access_list, then smtpd's check_client_access: both read these two tables.
    listed, relay = tables.match("postscreen_access.cidr", ip), tables.match("site_relays.cidr", ip)
    action = fleet.gateway.postscreen.denylist_action
    if listed.value == "reject" and action != "ignore":
        refusal = (
            ("connect", "521 5.3.2 Service currently unavailable")
            if action == "drop"
            else ("RCPT TO", "550 5.3.2 Service currently unavailable")
        )
        return (
            Step(
                f"client {ip}: postscreen access list", (listed,), f"denylisted (postscreen_denylist_action = {action})"
            ),
            False,
            refusal,
        )
    trusted = relay.value == "permit"
    allowlisted = listed.value == "permit" or (listed.value is None and trusted)
    title = f"client {ip}: " + (f"a relay of site {_relay_site(fleet, ip)}" if trusted else "not a site relay")
    outcome = (
        ("may relay (check_client_access site_relays.cidr)" if trusted else "may not relay")
        + "; "
        + ("allowlisted by postscreen" if allowlisted else "postscreen's DNSBL score is not evaluated here")
    )
    return Step(title, (listed, relay), outcome), trusted, None


def _mynetworks() -> list[IPNetwork]:
    return [ipaddress.ip_network(net.replace("[", "").replace("]", "")) for net in MYNETWORKS]


def _relay_site(fleet: Fleet, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return next((d.site for d in fleet.domains for net in d.relays if ip.version == net.version and ip in net), "?")


def _owner(fleet: Fleet, domain: str, address: str) -> str | None:
    served = fleet.domain(domain)
    if served is None:
        return None
    found = next((a for a in served.addresses if a.address == address), None)
    if found is None:
        return None
    if found.kind == NATIONAL:
        return f"{found.uid} (a national alias, to their primary address {found.targets[0]})"
    if found.uid:
        return f"{found.uid} ({found.kind}, site {served.site})"
    if found.owners:
        return f"{', '.join(found.owners)} ({found.kind} owners, site {served.site})"
    return f"nobody: an external alias of site {served.site}, forwarded by the MX"


def _deliver(
    fleet: Fleet, tables: Tables, address: str, depth: int = 0, forwarded: bool = False
) -> tuple[tuple[Delivery, ...], list[Step]]:
    """Where an accepted recipient goes: virtual alias expansion first, then the transport.

    forwarded: on the forwarding pass (docs/mx.md), whose cleanup expands forward_alias, then virtual_alias.
    """
    local, _, domain = address.lower().rpartition("@")
    alias_tables = (FORWARD_MAP, "virtual_alias") if forwarded else ("virtual_alias",)
    lookups, targets, _ = tables.find_in(alias_tables, address_keys(local, domain))
    if targets and depth < _MAX_ALIAS_DEPTH:
        steps = [
            Step(
                f"delivery of {address}: virtual alias expansion ({'the forwarding pass' if forwarded else 'cleanup'})",
                tuple(lookups),
                f"replaced by {targets} (the +extension is not passed on)",
            )
        ]
        deliveries: tuple[Delivery, ...] = ()
        for target in targets.split(", "):
            found, more = _deliver(fleet, tables, target, depth + 1, forwarded)
            deliveries += found
            steps += more
        return deliveries, steps
    more_lookups, nexthop, _ = tables.find("transport", transport_keys(local, domain))
    lookups += more_lookups
    forwarding = fleet.gateway.forwarding
    if not forwarded and forwarding is not None and nexthop and nexthop.startswith(FORWARD_TRANSPORT + ":"):
        step = Step(
            f"delivery of {address}: transport_maps (trivial-rewrite)",
            tuple(lookups),
            f"the forwarding pass ({forwarding.service}): the envelope sender becomes an SRS address of "
            f"{forwarding.srs_domain} (postsrsd), and the alias is expanded there",
        )
        found, more = _deliver(fleet, tables, address, depth + 1, forwarded=True)
        return found, [step, *more]
    served = fleet.domain(domain)
    if nexthop == f"{capture.NOTICE_TRANSPORT}:":
        route = f"{nexthop} the notifier, which tells {local.replace('=', '@')} (sender, subject, date, message id)"
    elif nexthop:
        route = nexthop + (
            f" (site {served.site}" + (", backup MX: held while the site is down)" if served.role == "backup" else ")")
            if served
            else ""
        )
    else:
        route = f"smtp: the MX hosts of {domain} (DNS), as any outbound mail"
    if forwarded and forwarding is not None:
        route += f", from an SRS sender of {forwarding.srs_domain}" + (", ARC-sealed" if forwarding.arc else "")
    step = Step(
        f"delivery of {address}: no virtual alias (cleanup), then transport_maps (trivial-rewrite)",
        tuple(lookups),
        route,
    )
    return (Delivery(address, route),), [step]


def render(explanation: Explanation) -> str:
    """The explanation in words, then every lookup in order."""
    e = explanation
    lines = [e.address]
    if e.verdict == SITE_DECIDES:
        lines.append(
            f"  verdict: decided by the site at RCPT TO: '{e.reply}' if the site's relay accepts the "
            f"address, '{e.reply_if_site_rejects}' if it says the address does not exist (the status "
            "code is always 5.1.1, whatever the site's), 450 while it cannot be asked"
        )
    else:
        lines.append(f"  verdict: {e.verdict} at {e.stage}: {e.reply}")
    if e.owner:
        lines.append(f"  owner:   {e.owner}")
    for delivery in e.deliveries:
        lines.append(f"  goes to: {delivery.recipient} via {delivery.route}")
    if e.deliveries:
        lines.append("  the envelope recipient keeps its case and +extension unless an alias replaces it")
    lines.append("")
    lines.append("How the MX decides (lookup keys are folded to lower case, tried in order until one is found):")
    for number, step in enumerate(e.steps, 1):
        lines.append(f"  {number}. {step.title}")
        width = max((len(lookup.table) for lookup in step.lookups), default=0)
        for lookup in step.lookups:
            value = "not found" if lookup.value is None else lookup.value
            lines.append(f"       {lookup.table:<{width}}  {lookup.key} -> {value}")
        lines.append(f"     => {step.outcome}")
    return "\n".join(lines) + "\n"


def bcc_keys(local: str, domain: str) -> list[str]:
    """recipient_bcc_maps (canonical(5) order): user+ext@domain, user@domain, user+ext, user, @domain."""
    user, extension = split_extension(local)
    if extension is None:
        return [f"{local}@{domain}", local, f"@{domain}"]
    return [f"{local}@{domain}", f"{user}@{domain}", local, user, f"@{domain}"]


def _capture(fleet: Fleet, tables: Tables, address: str) -> tuple[tuple[Delivery, ...], list[Step]]:
    """The blind copy cleanup adds for a captured address (capture_bcc), and where that copy goes."""
    local, _, domain = address.lower().rpartition("@")
    lookups, group, _ = tables.find("capture_bcc", bcc_keys(local, domain))
    if group is None:
        return (), []
    captured = group.rpartition("@")[0].replace("=", "@")
    step = Step(
        "capture (recipient_bcc_maps)",
        tuple(lookups),
        f"captured as {captured}: a blind copy to {group}, which becomes the capture's copy and one notice "
        "per person told (the notices never carry the body, and are never captured)",
    )
    copies, steps = _deliver(fleet, tables, group)
    return tuple(Delivery(f"{d.recipient} (capture)", d.route) for d in copies), [step] + steps


# --- the submission services and the automation relay (docs/submission.md) ------------------------------------

NOT_LOGGED_IN = "log in with your AAI account first (or use a declared client certificate)"
ACCESS_DENIED = "Access denied"
OUTSIDE = "any address outside the gateway"


def explain_submission(
    fleet: Fleet,
    tables: Tables,
    artifacts: dict[str, bytes],
    sender: str,
    rcpt: str | None,
    *,
    login: str | None = None,
    certificate: str | None = None,
    client: str | None = None,
) -> Explanation:
    """MAIL FROM:<sender> RCPT TO:<rcpt> on a submission service (a login or a certificate) or, with only a
    client address, on the automation relay; the replay of the restrictions templates/postfix write.

    The password itself is not checked here: a login is taken as Dovecot's yes. Without `rcpt`, only what
    decides about the sender (any recipient outside the gateway). `certificate` is a SHA-256 fingerprint.
    """
    label = f"unknown[{client}]" if client else "CLIENT"
    if login is None and certificate is None:
        if client is None:
            raise ValueError("explain a submission by a login, a certificate, or an automation client's address")
        return _automation(fleet, tables, artifacts, sender, rcpt or "", client)
    steps: list[Step] = []
    if login is not None:
        steps.append(
            Step(
                f"client: logged in as {login} (SASL; Dovecot checks the password against the AAI)",
                (),
                "may relay (permit_sasl_authenticated); the sender must be an address its uid owns",
            )
        )
        refusal = _login_sender(tables, sender, login, steps)
    else:
        lookup = Lookup(
            "client_certificates", certificate or "", tables.maps["client_certificates"].get(certificate or "")
        )
        rule = next((r for r in submission.certificates(fleet) if r.restriction_class == lookup.value), None)
        if rule is None:
            steps.append(Step("client: TLS client certificate (check_ccert_access)", (lookup,), "not declared"))
            reply = f"554 5.7.1 <{label}>: Client host rejected: {NOT_LOGGED_IN}"
            return _verdict(rcpt or OUTSIDE, REJECTED, ("RCPT TO", reply), steps)
        steps.append(
            Step(
                f"client: certificate {rule.name} of site {rule.site} (check_ccert_access)",
                (lookup,),
                f"may relay (permit_tls_clientcerts); it sends as {', '.join(rule.sender_domains)}",
            )
        )
        allowed = ("<>", *rule.sender_domains)  # a bounce is nobody's address
        refusal = _listed_sender(sender, allowed, rule.refusal, "certificate's sender domains", steps)
    if refusal:
        return _verdict(rcpt or OUTSIDE, REJECTED, ("RCPT TO", refusal), steps)
    return _recipient(fleet, tables, sender, rcpt, steps)


def _login_sender(tables: Tables, sender: str, login: str, steps: list[Step]) -> str | None:
    """reject_authenticated_sender_login_mismatch: the refusal, or None when the login owns the sender."""
    title = "sender check (reject_authenticated_sender_login_mismatch over sender_logins)"
    if not sender:
        steps.append(Step(title, (), "the null sender (a bounce or an auto-reply) is nobody's: not checked"))
        return None
    local, _, domain = sender.lower().rpartition("@")
    lookups, owners, _ = tables.find("sender_logins", address_keys(local, domain))
    names = owners.split(",") if owners else []
    if login.lower() in names:
        steps.append(Step(title, tuple(lookups), f"owned by {login}: may send as it"))
        return None
    outcome = f"owned by {', '.join(names)}, not by {login}" if names else "nobody's: no login may send as it"
    steps.append(Step(title, tuple(lookups), outcome))
    return f"553 5.7.1 <{sender}>: Sender address rejected: not owned by user {login}"


def _listed_sender(sender: str, domains: tuple[str, ...], refusal: str, what: str, steps: list[Step]) -> str | None:
    """check_sender_access inline:{ domain = ... }, then static:{REJECT ...}: the domain itself, no subdomain."""
    domain = sender.lower().rpartition("@")[2] if sender else "<>"
    found = domain in domains
    lookup = Lookup(what, domain, "OK" if found else None)
    steps.append(Step(f"sender check (check_sender_access: the {what})", (lookup,), "OK" if found else "refused"))
    return None if found else f"554 5.7.1 <{sender}>: Sender address rejected: {refusal}"


def _recipient(fleet: Fleet, tables: Tables, sender: str, rcpt: str | None, steps: list[Step]) -> Explanation:
    """The recipient's checks as for any client that may relay; the message then gets outbound filtering."""
    domain = sender.lower().rpartition("@")[2] if sender else ""
    served = fleet.domain(domain)
    policy = f"the outbound policy of {served.name}" if served else "the gateway's outbound defaults"
    filtering = Step(
        "filtering (Rspamd's milter, milter_macro_daemon_name = mailgw_outbound)",
        (),
        f"outbound mail: {policy}, at the end of DATA",
    )
    if rcpt is None:
        steps.append(filtering)
        return Explanation(OUTSIDE, ACCEPTED, "RCPT TO", OK_REPLY, None, None, (), tuple(steps))
    found = explain(fleet, tables, rcpt, relaying=filtering)
    return dataclasses.replace(found, steps=tuple(steps) + found.steps)


def _automation(
    fleet: Fleet, tables: Tables, artifacts: dict[str, bytes], sender: str, rcpt: str, client: str
) -> Explanation:
    ip = ipaddress.ip_address(client)
    rules = {rule.restriction_class: rule for rule in submission.automation_clients(fleet)}
    lookups, rule = [], None
    for name, data in sorted(artifacts.items()):
        if name.startswith("postfix/automation_") and name.endswith(".cidr"):
            table = name.removeprefix("postfix/")
            match = next(
                (
                    Lookup(table, str(net), value)
                    for net, value in _read_cidr(data)
                    if ip.version == net.version and ip in net
                ),
                Lookup(table, str(ip), None),
            )
            lookups.append(match)
            rule = rule or rules.get(match.value or "")
    if rule is None:
        steps = [Step(f"client {ip} on the automation services (check_client_access)", tuple(lookups), "no client")]
        return _verdict(
            rcpt, REJECTED, ("RCPT TO", f"554 5.7.1 <unknown[{ip}]>: Client host rejected: {ACCESS_DENIED}"), steps
        )
    steps = [
        Step(
            f"client {ip}: automation client {rule.name} of site {rule.site} (check_client_access)",
            tuple(lookups),
            f"served on port {rule.port} only, at most {rule.messages_per_hour} messages an hour from this address "
            "(anvil; then 450 4.7.1 at MAIL FROM)",
        )
    ]
    refusal = _listed_sender(sender, rule.sender_domains, rule.sender_refusal, "site's domains", steps)
    if refusal:
        return _verdict(rcpt, REJECTED, ("RCPT TO", refusal), steps)
    local, _, domain = rcpt.lower().rpartition("@")
    tried, found = [], False
    for key in access_keys(local, domain):
        found = key in rule.destinations
        tried.append(Lookup("destinations", key, "OK" if found else None))
        if found:
            break
    title = "destination check (check_recipient_access: the client's destinations)"
    steps.append(Step(title, tuple(tried), "OK" if found else "refused"))
    if not found:
        reply = f"554 5.7.1 <{rcpt}>: Recipient address rejected: {rule.destination_refusal}"
        return _verdict(rcpt, REJECTED, ("RCPT TO", reply), steps)
    return _recipient(fleet, tables, sender, rcpt, steps)
