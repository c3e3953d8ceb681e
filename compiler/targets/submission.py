"""Who may send through the MX's submission services and its automation relay, as Postfix reads it.

Authenticated submission (587 with STARTTLS, 465 with TLS; RFC 6409, RFC 8314):
- a login (SASL, checked by Dovecot against the AAI) may send as the addresses
  its uid owns: smtpd_sender_login_maps (postconf(5)) is the map
  `sender_logins`, address -> the uids that may send as it: a person's
  addresses and aliases -> the person's uid, a role or list address -> its
  owners. External aliases and undeclared addresses are not in it, and
  reject_authenticated_sender_login_mismatch refuses a sender no login owns;
- a client certificate (check_ccert_access, fingerprints as SHA-256) may send
  as the domains its declaration binds it to: `client_certificates` is
  fingerprint -> the certificate's restriction class in main.cf.

The automation relay: one smtpd per rate (gateway.yaml automation_services),
each with its own cidr table `automation_<port>.cidr`, client network -> the
client's restriction class: it may send as its site's domains, only to its
destinations. anvil(8) counts messages per client address and hour.

Every value written here went through compiler.values (addresses, uids,
domains, fingerprints, networks, client names); a restriction class is named
after its client and the client's domain, so no declaration can name another
site's class.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from compiler.fleet import Fleet, network_order
from compiler.model import ClientCertificate, IPNetwork, SubmissionSettings

REFERENCES = (
    "postconf(5) smtpd_sender_login_maps",
    "postconf(5) reject_authenticated_sender_login_mismatch",
    "postconf(5) check_ccert_access",
    "postconf(5) relay_clientcerts",
    "postconf(5) smtpd_client_message_rate_limit",
    "anvil(8)",
    "access(5)",
    "cidr_table(5)",
    "RESTRICTION_CLASS_README",
    "SASL_README",
    "TLS_README",
    "RFC 6409",
    "RFC 8314",
)

MAPS = ("sender_logins", "client_certificates")


def sender_logins(fleet: Fleet) -> Iterable[tuple[str, str]]:
    """Every address a login may send as -> the uids that may (Postfix compares them without case).

    Empty without a submission service: nobody logs in.
    """
    if fleet.gateway.submission is None:
        return
    for domain in fleet.domains:
        for address in domain.addresses:
            owners = sender_owners(address.kind, address.uid, address.owners)
            if owners:
                yield address.address, ",".join(owners)


def sender_owners(kind: str, uid: str | None, owners: tuple[str, ...]) -> tuple[str, ...]:
    """The uids that may send as an address of this kind; none for an external alias (it is nobody's mailbox).

    A national alias is its person's own address (docs/national-aliases.md): they may send as it.
    """
    if kind in ("person", "alias", "national") and uid:
        return (uid,)
    if kind in ("role", "list"):
        return owners
    return ()


def class_name(kind: str, name: str, domain: str) -> str:
    """'mailgw_certificate_web-portal_tifpa.example.org': a client is its name in its domain's file, so the
    class is unique in the fleet; neither part holds '_', so no two clients' classes can read the same."""
    return f"mailgw_{kind}_{name}_{domain}"


@dataclass(frozen=True)
class CertificateRule:
    """A declared client certificate: the sender domains it may use, and its restriction class in main.cf."""

    name: str
    domain: str  # the domain whose file declares it
    site: str
    fingerprint: str  # 'AB:CD:...', SHA-256
    sender_domains: tuple[str, ...]

    @property
    def restriction_class(self) -> str:
        return class_name("certificate", self.name, self.domain)

    @property
    def refusal(self) -> str:
        return f"certificate {self.name} of site {self.site} sends only as {', '.join(self.sender_domains)}"


def certificates(fleet: Fleet) -> list[CertificateRule]:
    """Every client certificate of the fleet, by fingerprint (one declaration each: check.py)."""
    if fleet.gateway.submission is None:
        return []
    rules = [
        CertificateRule(name, domain.name, domain.site, cert.fingerprint, certificate_domains(domain.name, cert))
        for domain in fleet.domains
        for name, cert in domain.submission.client_certificates.items()
    ]
    return sorted(rules, key=lambda rule: rule.fingerprint)


def certificate_domains(domain: str, cert: ClientCertificate) -> tuple[str, ...]:
    """The domains a certificate may send as: those declared, or the domain of its file when it declares none."""
    return tuple(sorted(set(cert.sender_domains))) or (domain,)


def client_certificates(fleet: Fleet) -> Iterable[tuple[str, str]]:
    """The map check_ccert_access and relay_clientcerts read: fingerprint -> the certificate's restriction class."""
    return ((rule.fingerprint, rule.restriction_class) for rule in certificates(fleet))


@dataclass(frozen=True)
class AutomationRule:
    """A declared automation client: its networks, the service of its rate, what it may send as and to."""

    name: str
    domain: str  # the domain whose file declares it
    site: str
    networks: tuple[IPNetwork, ...]
    destinations: tuple[str, ...]
    messages_per_hour: int
    port: int  # the automation service of its rate
    sender_domains: tuple[str, ...]  # its site's domains

    @property
    def restriction_class(self) -> str:
        return class_name("automation", self.name, self.domain)

    @property
    def destination_class(self) -> str:
        return self.restriction_class + "_destinations"

    @property
    def sender_refusal(self) -> str:
        return f"automation client {self.name} of site {self.site} sends only as a domain of its site"

    @property
    def destination_refusal(self) -> str:
        return f"not a destination of automation client {self.name} of site {self.site}"


def automation_clients(fleet: Fleet) -> list[AutomationRule]:
    """Every automation client whose rate has a service (check.py refuses the others), by domain and name."""
    settings = fleet.gateway.submission
    if settings is None:
        return []
    rules = []
    for domain in fleet.domains:
        site_domains = tuple(d.name for d in fleet.domains if d.site == domain.site)
        for name, client in sorted(domain.submission.automation_clients.items()):
            port = settings.automation_port(client.messages_per_hour)
            if port is None:
                continue
            rules.append(
                AutomationRule(
                    name,
                    domain.name,
                    domain.site,
                    tuple(sorted(set(client.networks), key=network_order)),
                    tuple(sorted(set(client.destinations))),
                    client.messages_per_hour,
                    port,
                    site_domains,
                )
            )
    return rules


def automation_tables(fleet: Fleet) -> dict[int, list[tuple[IPNetwork, AutomationRule]]]:
    """Port of each automation service -> its cidr table's entries: client network -> client, in network order."""
    settings = fleet.gateway.submission
    if settings is None:
        return {}
    tables: dict[int, list[tuple[IPNetwork, AutomationRule]]] = {s.port: [] for s in settings.automation_services}
    for rule in automation_clients(fleet):
        tables[rule.port] += [(net, rule) for net in rule.networks]
    return {port: sorted(entries, key=lambda e: network_order(e[0])) for port, entries in sorted(tables.items())}


def automation_table_name(port: int) -> str:
    return f"automation_{port}.cidr"


@dataclass(frozen=True)
class Services:
    """What main.cf and master.cf need of gateway.yaml's submission section."""

    settings: SubmissionSettings
    certificates: tuple[CertificateRule, ...]
    automation: tuple[AutomationRule, ...]

    @property
    def restriction_classes(self) -> list[str]:
        names = [rule.restriction_class for rule in self.certificates]
        for rule in self.automation:
            names += [rule.restriction_class, rule.destination_class]
        return names


def services(fleet: Fleet) -> Services | None:
    settings = fleet.gateway.submission
    if settings is None:
        return None
    return Services(settings, tuple(certificates(fleet)), tuple(automation_clients(fleet)))
