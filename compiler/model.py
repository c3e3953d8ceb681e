"""Stage 2, model: what gateway.yaml and domains/<domain>.yaml may say.

Unknown fields are errors everywhere: a misspelt 'recipent_check' must not
silently fall back to a default. Every value goes through compiler.values.
"""

from __future__ import annotations

import difflib
import ipaddress
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from compiler import values
from compiler.filters import MODELS as FILTER_MODELS
from compiler.filters import ClamavSettings, DomainFilters, FilterDefaults, QuarantineService
from compiler.findings import Finding
from compiler.load import Document


@dataclass(frozen=True, order=True)
class NextHop:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}"


def _nexthop(value: Any) -> NextHop:
    return NextHop(*values.nexthop(value))


Uid = Annotated[str, AfterValidator(values.uid)]
LocalPart = Annotated[str, AfterValidator(values.local_part)]
DomainName = Annotated[str, AfterValidator(values.domain_name)]
HostName = Annotated[str, AfterValidator(values.host)]
MailAddress = Annotated[str, AfterValidator(values.mail_address)]
NextHopSpec = Annotated[
    NextHop,
    PlainValidator(_nexthop, json_schema_input_type=str),
    PlainSerializer(lambda hop: f"{hop.transport}:{hop}", return_type=str),
]
Owners = Annotated[list[Uid], Field(min_length=1)]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Network = Annotated[IPNetwork, PlainValidator(values.network, json_schema_input_type=str)]
RelayNetwork = Annotated[IPNetwork, PlainValidator(values.relay_network, json_schema_input_type=str)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


PersonName = Annotated[str, AfterValidator(values.person_name)]


class Person(_Strict):
    """A person's own address; the name gives the national domain's name.surname alias (docs/national-aliases.md)."""

    kind: Literal["person"] = "person"
    uid: Uid
    name: PersonName | None = None


class Alias(_Strict):
    """Another address of a person (delivered by the site like the person's own)."""

    kind: Literal["alias"]
    uid: Uid


class Role(_Strict):
    """An impersonal address (info@, secretariat@) managed by its owners."""

    kind: Literal["role"]
    owners: Owners


class MailingList(_Strict):
    """A mailing list address; its owners manage the list's quarantine."""

    kind: Literal["list"]
    owners: Owners


def _recipient_shorthand(value: Any) -> Any:
    # 'mario.rossi: mrossi' is the common case: a person and its uid.
    if isinstance(value, str):
        return {"kind": "person", "uid": value}
    # 'mario.rossi: {uid: mrossi, name: "Mario Rossi"}': a person with a name.
    if isinstance(value, dict) and "kind" not in value and "uid" in value:
        return {"kind": "person", **value}
    if not isinstance(value, dict) or "kind" not in value:
        raise PydanticCustomError(
            "bad-recipient",
            "a recipient is a uid (like 'mrossi') or a mapping with 'kind: person', "
            "'alias', 'role' or 'list'; got {got}",
            {"got": _describe(value)},
        )
    return value


Recipient = Annotated[
    Person | Alias | Role | MailingList,
    Field(discriminator="kind"),
    BeforeValidator(_recipient_shorthand),
]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


ExternalTargets = Annotated[list[MailAddress], Field(min_length=1), BeforeValidator(_one_or_many)]


def _same_transport(hops: list[NextHop]) -> list[NextHop]:
    if len({hop.transport for hop in hops}) > 1:
        raise PydanticCustomError(
            "mixed-transports", "all next hops of a domain must use the same transport (smtp or lmtp)"
        )
    if len(set(hops)) != len(hops):
        raise PydanticCustomError("duplicate-nexthop", "a next hop is listed twice")
    return hops


class Delivery(_Strict):
    """Where the MX relays the domain's accepted mail: tried in order (transport(5))."""

    nexthop: Annotated[
        list[NextHopSpec], Field(min_length=1), BeforeValidator(_one_or_many), AfterValidator(_same_transport)
    ]


CredentialPath = Annotated[str, AfterValidator(values.credential_path)]


class Source(_Strict):
    """Where mailgw sync fetches the domain's addresses (docs/sync-format.md); credentials are file paths."""

    url: Annotated[str, AfterValidator(values.source_url)]
    format: Literal["csv", "json"]
    # A TLS client certificate and its key, a bearer token, or both: a site's address list is never public.
    client_certificate: CredentialPath | None = None
    client_key: CredentialPath | None = None
    token_file: CredentialPath | None = None
    ca_file: CredentialPath | None = None  # the CA that signs the site's server; default: the system's

    @model_validator(mode="after")
    def _authenticated(self) -> Source:
        if (self.client_certificate is None) != (self.client_key is None):
            raise PydanticCustomError(
                "bad-source", "a source names client_certificate and client_key together, or neither"
            )
        if self.client_certificate is None and self.token_file is None:
            raise PydanticCustomError(
                "bad-source",
                "a source must authenticate: name client_certificate and client_key, or token_file, or both",
            )
        return self


class SyncedAddresses(_Strict):
    """sources/<domain>.yaml, written by mailgw sync: the address sections of a domain file."""

    recipients: dict[LocalPart, Recipient] = {}
    external_aliases: dict[LocalPart, ExternalTargets] = {}


# --- capture and notify (docs/site-admins.md) ------------------------------------------------------


class Capture(_Strict):
    """Addresses of the domain whose every message is copied to `destination`, with a short notice to `notify`."""

    addresses: Annotated[list[LocalPart], Field(min_length=1)]
    destination: MailAddress
    notify: Annotated[list[MailAddress], Field(min_length=1)]


# --- authenticated submission and the automation relay (docs/submission.md) -----------------------

LdapUri = Annotated[str, PlainValidator(values.ldap_uri, json_schema_input_type=str)]
ServicePort = Annotated[int, PlainValidator(values.service_port, json_schema_input_type=int)]
MessagesPerHour = Annotated[int, PlainValidator(values.messages_per_hour, json_schema_input_type=int)]
ClientName = Annotated[str, AfterValidator(values.client_name)]
FilePath = Annotated[str, AfterValidator(values.absolute_path)]  # a file on the MX node
MAX_SOCKET_PATH_BYTES = 107  # sockaddr_un's sun_path on Linux, with the final NUL


class AaiDirectory(_Strict):
    """The AAI's LDAP directory: Dovecot checks a login by binding to it as the user, with the password given."""

    # Tried in order; ldaps:// (TLS), ldap:// (StartTLS, required) or ldapi:// (a local socket), not mixed.
    uris: Annotated[list[LdapUri], Field(min_length=1), BeforeValidator(_one_or_many)]
    # Where the users' entries are; the search for a login's entry starts here.
    base: Annotated[str, AfterValidator(values.distinguished_name)]
    user_filter: Annotated[str, AfterValidator(values.ldap_filter)] = "(&(objectClass=inetOrgPerson)(uid=%u))"
    # 'uid=%u,ou=people,...': bind as this DN directly, without searching first.
    bind_template: Annotated[str, AfterValidator(values.bind_template)] | None = None
    # Who searches (anonymous without one); its password is a Dovecot include on the node ('dnpass = ...').
    search_dn: Annotated[str, AfterValidator(values.distinguished_name)] | None = None
    search_password_file: FilePath | None = None
    ca_file: FilePath | None = None  # the CA of the directory's certificate; default: the system's

    @model_validator(mode="after")
    def _consistent(self) -> AaiDirectory:
        if (self.search_dn is None) != (self.search_password_file is None):
            raise PydanticCustomError(
                "bad-aai-directory", "name search_dn and search_password_file together, or neither (anonymous search)"
            )
        schemes = {uri.partition("://")[0] for uri in self.uris}
        if len(schemes) > 1:
            raise PydanticCustomError(
                "bad-aai-directory",
                "the uris mix {schemes}; list servers of one kind (Dovecot uses StartTLS for all of them or none)",
                {"schemes": ", ".join(f"{s}://" for s in sorted(schemes))},
            )
        return self


class AutomationService(_Strict):
    """One smtpd for automation clients of one rate: each client address may send this many messages per hour."""

    port: ServicePort
    messages_per_hour: MessagesPerHour


class SubmissionSettings(_Strict):
    """gateway.yaml `submission:`: the MX's authenticated submission services and its automation relay."""

    aai_directory: AaiDirectory
    starttls_port: ServicePort = 587  # STARTTLS required before AUTH (RFC 6409)
    implicit_tls_port: ServicePort = 465  # TLS from the first byte (RFC 8314)
    # The key and certificate chain users' clients see (one PEM file, key first); Puppet installs it.
    tls_chain_file: FilePath = "/etc/postfix/tls/submission.pem"
    message_size_limit: Annotated[int, PlainValidator(values.message_size_limit, json_schema_input_type=int)] = (
        values.MX_MESSAGE_SIZE_LIMIT
    )
    recipient_limit: Annotated[int, PlainValidator(values.recipient_limit, json_schema_input_type=int)] = 100
    # AUTH commands (right or wrong) one client address may send per hour to each submission service.
    auth_rate_limit: Annotated[int, PlainValidator(values.auth_rate_limit, json_schema_input_type=int)] = 100
    # One service per rate: an automation client uses the port of its rate.
    automation_services: list[AutomationService] = []
    # Dovecot's auth socket for Postfix (out/dovecot/dovecot.conf and main.cf's smtpd_sasl_path name it).
    auth_socket: FilePath = "/var/spool/postfix/private/auth"

    @model_validator(mode="after")
    def _distinct_services(self) -> SubmissionSettings:
        if len(self.auth_socket.encode()) > MAX_SOCKET_PATH_BYTES:
            raise PydanticCustomError(
                "bad-path",
                "auth_socket '{path}' is too long: a socket's path must fit in {limit} bytes",
                {"path": self.auth_socket, "limit": MAX_SOCKET_PATH_BYTES},
            )
        ports = [self.starttls_port, self.implicit_tls_port] + [s.port for s in self.automation_services]
        again = next((port for i, port in enumerate(ports) if port in ports[:i]), None)
        if again is not None:
            raise PydanticCustomError(
                "duplicate-port", "port {port} is given to two services; each service has its own", {"port": again}
            )
        rates = [s.messages_per_hour for s in self.automation_services]
        same = next((rate for i, rate in enumerate(rates) if rate in rates[:i]), None)
        if same is not None:
            raise PydanticCustomError(
                "duplicate-rate",
                "two automation services have the rate {rate} messages per hour; one service per rate",
                {"rate": same},
            )
        return self

    def automation_port(self, rate: int) -> int | None:
        return next((s.port for s in self.automation_services if s.messages_per_hour == rate), None)


class ClientCertificate(_Strict):
    """A server's or device's TLS client certificate, which may submit without a password as these domains
    (left out: the domain of its file; written, at least one)."""

    fingerprint: Annotated[str, PlainValidator(values.certificate_fingerprint, json_schema_input_type=str)]
    sender_domains: Annotated[list[DomainName], Field(min_length=1), BeforeValidator(_one_or_many)] = []


class AutomationClient(_Strict):
    """Devices that cannot authenticate (alarms, sensors): from these networks, only to these destinations."""

    networks: Annotated[
        list[Annotated[IPNetwork, PlainValidator(values.automation_network, json_schema_input_type=str)]],
        Field(min_length=1),
        BeforeValidator(_one_or_many),
    ]
    destinations: Annotated[
        list[Annotated[str, PlainValidator(values.destination, json_schema_input_type=str)]],
        Field(min_length=1),
        BeforeValidator(_one_or_many),
    ]
    messages_per_hour: MessagesPerHour


class DomainSubmission(_Strict):
    """A domain's `submission:`: its client certificates and automation clients (docs/site-admins.md)."""

    client_certificates: dict[ClientName, ClientCertificate] = {}
    automation_clients: dict[ClientName, AutomationClient] = {}


# --- DKIM, DMARC, the DNS records and forwarded mail (docs/dns.md) -------------------------------

DkimSelectorName = Annotated[str, AfterValidator(values.dkim_selector)]


class DkimKey(_Strict):
    """One DKIM key of a domain, published under <name>._domainkey.<domain>; its private half is a file on the node."""

    name: DkimSelectorName
    algorithm: Literal["rsa", "ed25519"] = "rsa"
    # The p= of the record (base64), as 'mailgw dkim' wrote it: the record is published from here.
    public_key: str
    # false: published only (a new key whose record is still spreading, or an old one kept for mail in flight).
    signing: bool = True

    @field_validator("public_key")
    @classmethod
    def _parses(cls, public_key: str, info: ValidationInfo) -> str:
        algorithm: str | None = info.data.get("algorithm")  # None: the algorithm itself is wrong, and reported
        return public_key if algorithm is None else values.dkim_public_key(public_key, algorithm)

    def __str__(self) -> str:
        return f"{self.name}: {self.algorithm}, {'signing' if self.signing else 'published only'}"


class Dkim(_Strict):
    """A domain's DKIM keys: mail its site sends out through the gateway is signed with each signing key."""

    selectors: Annotated[list[DkimKey], Field(min_length=1, max_length=4)]


DmarcPolicy = Literal["none", "quarantine", "reject"]


class Dmarc(_Strict):
    """The domain's DMARC record (RFC 7489): what receivers do with mail that fails, and where reports go."""

    policy: DmarcPolicy
    subdomain_policy: DmarcPolicy | None = None
    reports: list[MailAddress] = []  # rua: daily aggregate reports
    failure_reports: list[MailAddress] = []  # ruf: a report per failing message


class DomainDeclaration(_Strict):
    """domains/<domain>.yaml: one domain, owned by one site."""

    domain: DomainName
    site: Annotated[str, AfterValidator(values.site)]
    admins: Annotated[list[Annotated[str, AfterValidator(values.admin)]], Field(min_length=1)]
    role: Literal["primary", "backup"] = "primary"
    delivery: Delivery
    recipient_check: Literal["list", "verify"] = "list"
    recipients: dict[LocalPart, Recipient] = {}
    external_aliases: dict[LocalPart, ExternalTargets] = {}
    # The site's relays that may send outbound mail through the MX (to anywhere).
    outbound_relays: Annotated[list[RelayNetwork], BeforeValidator(_one_or_many)] = []
    filters: DomainFilters = DomainFilters()
    # The site's own list, fetched by mailgw sync into sources/<domain>.yaml instead of recipients here.
    source: Source | None = None
    capture: Capture | None = None
    # Client certificates and automation clients of the site's servers and devices (docs/submission.md).
    submission: DomainSubmission = DomainSubmission()
    # DKIM keys and the DMARC record the domain publishes (docs/dns.md).
    dkim: Dkim | None = None
    dmarc: Dmarc | None = None


LdapListenAddress = Annotated[str, AfterValidator(values.ldap_listen_address)]
NodePath = Annotated[str, AfterValidator(values.absolute_path)]
# A unix socket's path must fit in sockaddr_un's sun_path (108 bytes on Linux, with the final NUL).
MAX_SOCKET_PATH = 107
LDAP_SOCKET = "ldapi"


class LdapSettings(_Strict):
    """The gateway's own LDAP server on every MX node (docs/ldap.md): its directory, where it listens, its limits,
    and the files the configuration names on the node (Puppet installs the secrets among them)."""

    base_dn: Annotated[str, AfterValidator(values.ldap_base_dn)]
    # Each MX node's own addresses, besides 127.0.0.1 and the local socket; TLS is required on all of them.
    listen: dict[HostName, list[LdapListenAddress]] = {}
    port: Annotated[int, AfterValidator(values.tcp_port)] = 389
    size_limit: Annotated[int, AfterValidator(values.ldap_size_limit)] = 1000
    time_limit: Annotated[int, AfterValidator(values.ldap_time_limit)] = 10
    config_directory: NodePath = "/etc/ldap/mailgw.d"
    database_directory: NodePath = "/var/lib/ldap/mailgw"
    # The local socket (RUN/ldapi: the default ldapi:/// of the Debian clients), the pid and args files.
    run_directory: NodePath = "/run/slapd"
    tls_certificate: NodePath = "/etc/mailgw/tls/ldap.crt"
    tls_key: NodePath = "/etc/mailgw/secrets/ldap-tls.key"

    @property
    def socket(self) -> str:
        return f"{self.run_directory.rstrip('/')}/{LDAP_SOCKET}"

    @model_validator(mode="after")
    def _socket_fits(self) -> LdapSettings:
        if len(self.socket.encode()) > MAX_SOCKET_PATH:
            raise PydanticCustomError(
                "bad-path",
                "run_directory '{path}' is too long: the socket '{socket}' must fit in {limit} bytes",
                {"path": self.run_directory, "socket": self.socket, "limit": MAX_SOCKET_PATH},
            )
        return self


class PostfixSettings(_Strict):
    map_directory: Annotated[str, AfterValidator(values.absolute_path)] = "/etc/postfix/mailgw"


class DnsblSite(_Strict):
    """A DNS blocklist postscreen asks; a listing adds its weight to the client's score."""

    domain: DomainName
    filter: Annotated[str, AfterValidator(values.dnsbl_filter)] | None = None
    weight: Annotated[int, AfterValidator(values.dnsbl_weight)] = 1


def _one_spelling_per_network(value: Any) -> Any:
    # Two spellings of one network would silently merge into one key.
    if isinstance(value, dict):
        seen: dict[str, str] = {}
        for key in value:
            try:
                net = str(values.network(key))
            except PydanticCustomError:
                continue  # the key's own validator reports it
            if net in seen:
                raise PydanticCustomError(
                    "duplicate-network",
                    "'{first}' and '{again}' are the same network {net}; list it once",
                    {"first": seen[net], "again": key, "net": net},
                )
            seen[net] = key
    return value


class PostscreenSettings(_Strict):
    """postscreen(8) in front of smtpd: DNSBL scoring and a permanent access list of client networks."""

    dnsbl_sites: list[DnsblSite] = []
    dnsbl_threshold: Annotated[int, AfterValidator(values.dnsbl_threshold)] = 1
    dnsbl_action: Literal["ignore", "enforce", "drop"] = "enforce"
    denylist_action: Literal["ignore", "enforce", "drop"] = "drop"
    access: Annotated[dict[Network, Literal["permit", "reject"]], BeforeValidator(_one_spelling_per_network)] = {}

    @model_validator(mode="after")
    def _threshold_is_reachable(self) -> PostscreenSettings:
        reachable = sum(site.weight for site in self.dnsbl_sites if site.weight > 0)
        if self.dnsbl_sites and self.dnsbl_threshold > reachable:
            raise PydanticCustomError(
                "bad-dnsbl-threshold",
                "dnsbl_threshold {threshold} can never be reached: the positive DNSBL weights add up to {reachable}",
                {"threshold": self.dnsbl_threshold, "reachable": reachable},
            )
        return self


class PortalSettings(_Strict):
    """The quarantine portal (docs/portal-operators.md): everything but secrets, which stay files on the node."""

    # Where people reach the portal; digest links point here, and the OIDC redirect is PUBLIC_URL/auth/callback.
    public_url: Annotated[str, PlainValidator(values.https_url, json_schema_input_type=str)]
    oidc_issuer: Annotated[str, PlainValidator(values.https_url, json_schema_input_type=str)]
    oidc_client_id: Annotated[str, PlainValidator(values.client_id, json_schema_input_type=str)]
    oidc_client_secret_file: Annotated[str, AfterValidator(values.absolute_path)] = (
        "/etc/mailgw/secrets/oidc-client.secret"
    )
    # The claim of the ID token (or userinfo) that carries the AAI uid of the directory.
    uid_claim: Annotated[str, PlainValidator(values.client_id, json_schema_input_type=str)] = "uid"
    # The scopes the sign-in asks for: many AAI providers release the uid's claim only for a scope of their own.
    oidc_scopes: list[Annotated[str, PlainValidator(values.oidc_scope, json_schema_input_type=str)]] = ["openid"]
    # AAI uids that see and act on every held message.
    operators: list[Uid] = []
    ldap_uri: Annotated[str, PlainValidator(values.ldap_uri, json_schema_input_type=str)] = (
        "ldapi://%2Frun%2Fslapd%2Fldapi"
    )
    ldap_reader_password_file: Annotated[str, AfterValidator(values.absolute_path)] = (
        "/etc/mailgw/secrets/ldap-reader.password"
    )
    # The MX service released mail is re-injected into: no milter, only release_clients may use it.
    release_service: Annotated[str, PlainValidator(values.listen_address, json_schema_input_type=str)] = (
        "127.0.0.1:10026"
    )
    release_clients: Annotated[list[Network], Field(min_length=1)] = [
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    ]
    # Rspamd authenticates its POSTs with HTTP basic auth: this user, the password from files on the node.
    ingest_user: Uid = "rspamd"
    ingest_password_file: Annotated[str, AfterValidator(values.absolute_path)] = (
        "/etc/mailgw/secrets/quarantine-ingest.password"
    )
    ingest_rspamd_include: Annotated[str, AfterValidator(values.absolute_path)] = (
        "/etc/mailgw/secrets/quarantine-ingest.ucl"
    )
    digest_sender: MailAddress
    max_message_bytes: Annotated[int, Field(ge=65536, le=268435456)] = 33554432
    store_directory: Annotated[str, AfterValidator(values.absolute_path)] = "/var/lib/mailgw-portal"
    database_url_file: Annotated[str, AfterValidator(values.absolute_path)] = "/etc/mailgw/secrets/portal-database.url"
    session_secret_file: Annotated[str, AfterValidator(values.absolute_path)] = "/etc/mailgw/secrets/portal-session.key"
    # A clone of this repository: people's national alias choices are committed there (docs/national-aliases.md).
    repository: Annotated[str, AfterValidator(values.absolute_path)] = "/var/lib/mailgw-portal/repository"

    @model_validator(mode="after")
    def _sign_in_is_openid(self) -> PortalSettings:
        # Without 'openid' the provider answers with plain OAuth 2.0: no ID token, no uid claim.
        if "openid" not in self.oidc_scopes or len(set(self.oidc_scopes)) != len(self.oidc_scopes):
            raise PydanticCustomError(
                "bad-oidc-scopes",
                "oidc_scopes {scopes} must name 'openid', and each scope once",
                {"scopes": "[" + ", ".join(self.oidc_scopes) + "]"},
            )
        return self


# --- the national alias domain and capture-and-notify (docs/national-aliases.md, docs/site-admins.md) ---


class NationalSettings(_Strict):
    """The national alias domain: name.surname@ and uid@ it route to each person's primary address."""

    # Its own file (domains/<domain>.yaml) gives its site, next hop and its own roles and lists.
    domain: DomainName


class CaptureService(_Strict):
    """Where the capture notices enter the MX: a loopback smtpd whose cleanup never captures."""

    notice_service: Annotated[str, PlainValidator(values.listen_address, json_schema_input_type=str)] = (
        "127.0.0.1:10028"
    )


class NationalAliases(_Strict):
    """national/aliases.yaml: every alias of the national domain ever given, under the uid it belongs to."""

    aliases: dict[Uid, list[LocalPart]] = {}


class NationalChoice(_Strict):
    """One person's choices: their extended alias and their primary address."""

    alias: LocalPart | None = None
    primary: MailAddress | None = None


class NationalChoices(_Strict):
    """national/choices.yaml: each person's choices (docs/national-aliases.md)."""

    choices: dict[Uid, NationalChoice] = {}


class PlanSettings(_Strict):
    """The plan's guards (octoDNS's update and delete thresholds): past these a domain's change is unsafe."""

    max_removed_percent: Annotated[int, AfterValidator(values.guard_percent)] = 30
    max_changed_percent: Annotated[int, AfterValidator(values.guard_percent)] = 30
    # A domain with fewer addresses may lose or change any share of them.
    min_addresses: Annotated[int, AfterValidator(values.guard_min_addresses)] = 10


class MtaSts(_Strict):
    """MTA-STS (RFC 8461): senders require TLS to the gateway's MX hosts; the policy is out/mta-sts/mta-sts.txt."""

    mode: Literal["enforce", "testing", "none"]
    max_age: Annotated[int, AfterValidator(values.mta_sts_max_age)] = 604800
    # The web server that answers https://mta-sts.<domain>/.well-known/mta-sts.txt for every domain (a CNAME).
    policy_host: HostName


class DnsSettings(_Strict):
    """What the domains publish for the gateway (out/dns): its nodes' addresses, its SPF record, MTA-STS, TLS-RPT."""

    # The record every domain's SPF includes; it lists the nodes' addresses.
    spf_record: Annotated[str, AfterValidator(values.dns_record_name)]
    # Each MX host's public addresses: its A and AAAA records, and the SPF record's ip4: and ip6:.
    mx_addresses: dict[
        HostName, Annotated[list[Annotated[str, AfterValidator(values.node_address)]], Field(min_length=1)]
    ]
    ttl: Annotated[int, AfterValidator(values.dns_ttl)] = 3600
    mta_sts: MtaSts | None = None
    # Where senders report TLS failures (RFC 8460 TLS-RPT, rua=mailto:).
    tls_reports: list[MailAddress] = []


class DkimSettings(_Strict):
    """Where the DKIM and ARC private keys are on every node: KEY_DIRECTORY/<domain>.<selector>.key (Puppet's)."""

    key_directory: NodePath = "/var/lib/rspamd/dkim"


class ArcKey(_Strict):
    """The gateway's ARC key (RFC 8617): forwarded mail is sealed as srs_domain with it (Rspamd signs ARC with RSA)."""

    name: DkimSelectorName
    public_key: str

    @field_validator("public_key")
    @classmethod
    def _parses(cls, public_key: str) -> str:
        return values.dkim_public_key(public_key, "rsa")


LoopbackService = Annotated[str, PlainValidator(values.loopback_service, json_schema_input_type=str)]


class Forwarding(_Strict):
    """External aliases forwarded with SRS and an ARC seal (docs/mx.md): a second pass through the node.

    postsrsd rewrites the envelope sender of forwarded mail to SRS0=...@srs_domain and reverses it for bounces;
    its secret is a file on the node, installed by Puppet."""

    srs_domain: DomainName
    srs_secret_file: NodePath = "/etc/postsrsd.secret"
    srs_forward_lookup: LoopbackService = "127.0.0.1:10001"
    srs_reverse_lookup: LoopbackService = "127.0.0.1:10002"
    # The node's own smtpd that forwarded mail passes through: SRS for the sender, the alias's targets, ARC.
    service: LoopbackService = "127.0.0.1:10027"
    arc: ArcKey | None = None

    @model_validator(mode="after")
    def _postsrsd_listens_on_one_address(self) -> Forwarding:
        forward, reverse = (
            address.rpartition(":")[0] for address in (self.srs_forward_lookup, self.srs_reverse_lookup)
        )
        if forward != reverse:
            raise PydanticCustomError(
                "bad-listen",
                "srs_forward_lookup ({forward}) and srs_reverse_lookup ({reverse}) are two ports of one postsrsd, "
                "on one address",
                {"forward": self.srs_forward_lookup, "reverse": self.srs_reverse_lookup},
            )
        return self


class GatewayDeclaration(_Strict):
    """gateway.yaml: settings shared by the whole fleet."""

    mx_hosts: Annotated[list[HostName], Field(min_length=1)]
    # The gateway team's mailbox: the MX nodes' own postmaster (RFC 5321 4.5.1) and the postmaster@ and
    # abuse@ of domains delivered over LMTP that declare none. Default: postmaster@ the first MX host's domain.
    postmaster: MailAddress | None = None
    # The gateway team: default reviewers of everything but the domain files (.github/CODEOWNERS).
    admins: list[Annotated[str, AfterValidator(values.admin)]] = []
    ldap: LdapSettings
    postfix: PostfixSettings = PostfixSettings()
    postscreen: PostscreenSettings = PostscreenSettings()
    filters: FilterDefaults = FilterDefaults()
    quarantine: QuarantineService | None = None
    clamav: ClamavSettings = ClamavSettings()
    portal: PortalSettings | None = None
    national: NationalSettings | None = None
    capture: CaptureService = CaptureService()
    plan: PlanSettings = PlanSettings()
    # Authenticated submission (587, 465) and the automation relay (docs/submission.md); none without it.
    submission: SubmissionSettings | None = None
    # DKIM keys on the nodes, the records the domains publish, forwarded mail (docs/dns.md).
    dkim: DkimSettings = DkimSettings()
    dns: DnsSettings | None = None
    forwarding: Forwarding | None = None

    @field_validator("ldap")
    @classmethod
    def _listen_on_mx_hosts(cls, ldap: LdapSettings, info: ValidationInfo) -> LdapSettings:
        # Each node picks its own addresses by its name: one that is no MX host would never be listened on.
        mx_hosts: list[str] | None = info.data.get("mx_hosts")  # None: mx_hosts itself is wrong, and reported
        unknown = sorted(set(ldap.listen) - set(mx_hosts)) if mx_hosts is not None else []
        if mx_hosts is not None and unknown:
            raise PydanticCustomError(
                "unknown-mx-host",
                "listen names '{host}', which is not one of mx_hosts ({mx_hosts})",
                {"host": unknown[0], "mx_hosts": ", ".join(mx_hosts)},
            )
        return ldap


_MODELS = (
    Person,
    Alias,
    Role,
    MailingList,
    Delivery,
    Source,
    SyncedAddresses,
    DomainDeclaration,
    LdapSettings,
    PostfixSettings,
    DnsblSite,
    PostscreenSettings,
    PortalSettings,
    PlanSettings,
    GatewayDeclaration,
    Capture,
    NationalSettings,
    CaptureService,
    NationalAliases,
    NationalChoice,
    NationalChoices,
    AaiDirectory,
    AutomationService,
    SubmissionSettings,
    ClientCertificate,
    AutomationClient,
    DomainSubmission,
    DkimKey,
    Dkim,
    Dmarc,
    MtaSts,
    DnsSettings,
    DkimSettings,
    ArcKey,
    Forwarding,
)
_FIELD_NAMES = sorted({name for model in _MODELS for name in model.model_fields})
_FIELD_NAMES = sorted(set(_FIELD_NAMES) | {name for model in FILTER_MODELS for name in model.model_fields})
_TYPE_NAMES = {
    "string": "text",
    "int": "a whole number",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "bool": "true or false",
}

M = TypeVar("M", bound=BaseModel)


def parse(doc: Document, model: type[M]) -> tuple[M | None, list[Finding]]:
    """Validate one document against its model; every problem becomes a located finding."""
    if doc.data is None:
        return None, [doc.finding((), "empty-file", "the file is empty; it must be a YAML mapping")]
    if not isinstance(doc.data, dict):
        return None, [
            doc.finding(
                (), "not-a-mapping", f"the top level must be a mapping of fields, not {type(doc.data).__name__}"
            )
        ]
    try:
        return model.model_validate(doc.data), []
    except ValidationError as err:
        return None, [_finding(doc, error) for error in err.errors(include_url=False)]


def _finding(doc: Document, error: ErrorDetails) -> Finding:
    kind, loc = error["type"], error["loc"]
    at_key = kind == "extra_forbidden" or (bool(loc) and loc[-1] == "[key]")
    _, _, found = doc.walk(loc)
    field = _label(found) or "top level"
    if kind == "extra_forbidden":
        name = str(loc[-1])
        close = difflib.get_close_matches(name, _FIELD_NAMES, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return doc.finding(loc, "unknown-field", f"unknown field '{name}'{hint}", at_key=True)
    if kind == "missing":
        parent = _label(found[:-1]) if found == loc else _label(found)
        return doc.finding(loc, "missing-field", f"{parent or 'top level'}: missing required field '{loc[-1]}'")
    if kind == "literal_error":
        expected = error["ctx"]["expected"]
        return doc.finding(loc, "invalid-choice", f"{field}: {error['input']!r} is not one of {expected}")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return doc.finding(
            loc,
            "invalid-choice",
            f"{field}: kind {error['input'].get('kind')!r} is not 'person', 'alias', 'role' or 'list'"
            if isinstance(error["input"], dict)
            else f"{field}: bad kind",
        )
    if kind.endswith("_type") and kind[:-5] in _TYPE_NAMES:
        expected, got = _TYPE_NAMES[kind[:-5]], error["input"]
        hint = f"; quote it if you mean the text '{got}'" if expected == "text" and got is not None else ""
        return doc.finding(
            loc, "wrong-type", f"{field}: expected {expected}, got {_describe(got)}{hint}", at_key=at_key
        )
    if kind == "too_short":
        return doc.finding(loc, "empty-list", f"{field}: must list at least one entry")
    if kind in ("int_parsing", "int_from_float"):
        return doc.finding(loc, "wrong-type", f"{field}: expected a whole number, got {_describe(error['input'])}")
    code = kind if kind.count("-") else "invalid-value"
    return doc.finding(loc, code, f"{field}: {error['msg']}", at_key=at_key)


def _label(path: tuple[str | int, ...]) -> str:
    """A path as 'delivery.nexthop[0]' or "recipients['mario.rossi']"."""
    label = ""
    for part in path:
        if isinstance(part, int) or not str(part).isidentifier():
            label += f"[{part}]" if isinstance(part, int) else f"[{str(part)!r}]"
        else:
            label += f".{part}" if label else str(part)
    return label


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r}"
