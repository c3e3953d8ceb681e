"""The grammar of every value a site may write, narrowed to what is safe.

Each accepted value ends up inside a Postfix map line (postmap(1): key,
whitespace, value; '#' starts a comment), an LDIF line (RFC 2849) or a UCL
string, so nothing accepted may carry whitespace, control characters,
quotes, commas, '#' or any other separator. References: RFC 5321 4.1.2
(Local-part, Domain), RFC 5890/5891 (IDNA 2008, A-labels), RFC 1123 2.1
(host names), RFC 4514 (DN strings).

Case: domains and host names are case-insensitive (RFC 5321 2.4) and are
stored lower case. Local parts are case-sensitive in RFC 5321 but Postfix
folds case in every table lookup, so the gateway treats them as
case-insensitive too and stores them lower case; two spellings that differ
only in case are the same address. AAI uids must already be lower case.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import unicodedata

import idna
from pydantic_core import PydanticCustomError

REFERENCES = (
    "RFC 5321",
    "RFC 5890",
    "RFC 5891",
    "RFC 1123",
    "RFC 4514",
    "RFC 4632",
    "postmap(1)",
    "transport(5)",
    "cidr_table(5)",
    "postconf(5) postscreen_dnsbl_sites",
    "RFC 6376 (DKIM)",
    "RFC 8463 (Ed25519 DKIM keys)",
    "RFC 8461 (MTA-STS)",
    "RFC 8552 ('_' labels)",
)

# Dot-atom narrowed: no quotes, '#', '/', '=', '{', '|', ... that some
# consumer would read as syntax. '+' stays: Postfix tries 'a+b' before 'a'.
LOCAL_PART_PATTERN = r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*"
# Matched against the value as written, not its lower-case form: str.lower() turns some
# non-ASCII letters into ASCII ones (KELVIN SIGN into 'k'), and the value written is the one checked.
_LOCAL_PART = re.compile(LOCAL_PART_PATTERN.replace("a-z", "A-Za-z"))
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# Lower-case ASCII labels of at most 63, no A-label, a TLD that is not all digits: nothing to map or check further.
_PLAIN_DOMAIN = re.compile(
    r"(?=.{1,253}$)(?:(?!-)(?!xn--)[a-z0-9-]{1,63}(?<!-)\.)+(?=[a-z0-9-]{1,63}$)(?!-)(?!xn--)[a-z0-9-]*[a-z][a-z0-9-]*(?<!-)"
)
UID_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
_UID = re.compile(UID_PATTERN)
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_ADMIN = re.compile(r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:/[A-Za-z0-9._-]{1,100})?")
_NEXTHOP = re.compile(r"(?:(?P<transport>[a-z]+):)?\[(?P<host>[^\]\s]+)\](?::(?P<port>[0-9]{1,5}))?")
_DN = re.compile(
    r"[a-zA-Z][a-zA-Z0-9-]*=[A-Za-z0-9][A-Za-z0-9 .-]*(?:,[a-zA-Z][a-zA-Z0-9-]*=[A-Za-z0-9][A-Za-z0-9 .-]*)*"
)
_PATH = re.compile(r"/[A-Za-z0-9._/-]*")

DEFAULT_PORTS = {"smtp": 25, "lmtp": 24}


def _fail(code: str, message: str, **context: object) -> PydanticCustomError:
    return PydanticCustomError(code, message, context)


def _describe_bad_text(value: str) -> str | None:
    """Name the first thing in `value` that no generated line can carry."""
    if value == "":
        return "is empty"
    for char in value:
        if char.isspace():
            return "contains a space" if char == " " else f"contains a whitespace character {char!r}"
        if ord(char) < 32 or ord(char) == 127:
            return f"contains a control character {char!r}"
    for char in "\"'`#,;:<>()[]\\":
        if char in value:
            return f"contains {char!r}"
    return None


def _describe_non_ascii(value: str) -> str | None:
    """Name the first character outside ASCII (a look-alike of an ASCII letter is the usual case)."""
    char = next((c for c in value if not c.isascii()), None)
    return None if char is None else f"contains '{char}' (U+{ord(char):04X}), which is not ASCII"


def local_part(value: str) -> str:
    """A recipient's local part as written (case kept, checked case-insensitively)."""
    if not isinstance(value, str):
        raise _fail("bad-local-part", "a local part must be text")
    if "@" in value:
        raise _fail(
            "bad-local-part",
            "'{value}' contains '@'; write only the part before '@' (the domain is the file's)",
            value=value,
        )
    if len(value) > 64 or not _LOCAL_PART.fullmatch(value):
        why = _describe_bad_text(value) or _describe_non_ascii(value) or "is not a plain local part"
        raise _fail(
            "bad-local-part",
            "local part '{value}' {why}; use letters, digits, '.', '_', '-' or '+', "
            "dots only between characters, at most 64 (like 'mario.rossi')",
            value=value,
            why=why,
        )
    return value


def domain_name(value: str) -> str:
    """A domain or host name, returned as lower-case A-labels (IDNA 2008 with UTS 46 mapping)."""
    if not isinstance(value, str):
        raise _fail("bad-domain", "a domain name must be text")
    if _PLAIN_DOMAIN.fullmatch(value):
        return value.lower()  # the common case, valid as written
    why = _describe_bad_text(value)
    if why:
        raise _fail("bad-domain", "domain '{value}' {why}; write a name like 'tifpa.example.org'", value=value, why=why)
    name = value.lower().rstrip(".")
    try:
        if name.isascii():
            # Plain names skip the IDNA mapping, so the grammar below gives the message.
            alabel = name
            if any(label.startswith("xn--") for label in name.split(".")):
                idna.decode(name)
        else:
            alabel = idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as err:
        raise _fail(
            "bad-domain", "domain '{value}' is not a valid (IDNA 2008) domain name: {why}", value=value, why=str(err)
        ) from None
    labels = alabel.split(".")
    if (
        len(alabel) > 253
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise _fail(
            "bad-domain",
            "domain '{value}' is not a host name: labels of letters, digits and '-', "
            "at least two of them (like 'tifpa.example.org')",
            value=value,
        )
    return alabel


def uid(value: str) -> str:
    """An AAI user id: lower case, no spaces, as the federation issues it."""
    if not isinstance(value, str):
        raise _fail("bad-uid", "an AAI uid must be text (quote it if it looks like a number)")
    if not _UID.fullmatch(value):
        if value != value.lower() and _UID.fullmatch(value.lower()):
            why = "has upper-case letters"
        else:
            why = _describe_bad_text(value) or "is not a valid uid"
        raise _fail(
            "bad-uid",
            "uid '{value}' {why}; AAI uids look like 'mrossi' (lower-case letters, digits, '.', '_', '-', at most 64)",
            value=value,
            why=why,
        )
    return value


def site(value: str) -> str:
    if not isinstance(value, str) or not _SITE.fullmatch(value):
        raise _fail(
            "bad-site",
            "site '{value}' is not a site code; use letters, digits, '_' or '-' (like 'TIFPA'), at most 32",
            value=value,
        )
    return value


def admin(value: str) -> str:
    """A reviewer: a GitHub user '@name' or team '@org/team' (CODEOWNERS syntax)."""
    if not isinstance(value, str) or not _ADMIN.fullmatch(value):
        raise _fail(
            "bad-admin", "admin '{value}' is not a GitHub user or team; write '@user' or '@org/team'", value=value
        )
    return value


def mail_address(value: str) -> str:
    """A full address elsewhere (an external alias target); domain stored as A-labels."""
    if not isinstance(value, str) or value.count("@") != 1:
        raise _fail("bad-address", "'{value}' is not a mail address like 'name@example.net'", value=value)
    local, _, domain = value.partition("@")
    try:
        local_part(local)
        return f"{local}@{domain_name(domain)}"
    except PydanticCustomError as err:
        raise _fail(
            "bad-address", "'{value}' is not a usable mail address: {why}", value=value, why=err.message()
        ) from None


def host(value: str) -> str:
    """A host name or an IPv4 address (a next hop's or an MX host's)."""
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError):
        return domain_name(value)


# Addresses that are the MX node itself, or no single host at all (RFC 6890): a next hop there
# loops into the node or reaches a service behind its filters, and a relay there opens the relay.
NODE_NETWORKS: dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = {
    "loopback": (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
    "unspecified": (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128")),
    "link-local": (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10")),
    "multicast": (ipaddress.ip_network("224.0.0.0/4"), ipaddress.ip_network("ff00::/8")),
    "reserved": (ipaddress.ip_network("240.0.0.0/4"),),
}


def node_network(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | None:
    """'loopback (127.0.0.0/8)' when `net` overlaps one of NODE_NETWORKS, else None."""
    for kind, networks in NODE_NETWORKS.items():
        for node in networks:
            if node.version == net.version and node.overlaps(net):
                return f"{kind} ({node})"
    return None


def _loopback_name(name: str) -> bool:
    """'localhost' names resolve to the node itself (RFC 6761 6.3)."""
    return name == "localhost" or name.endswith(".localhost")


def nexthop(value: str) -> tuple[str, str, int]:
    """'[host]:port' with an optional 'smtp:' or 'lmtp:' in front -> (transport, host, port).

    The brackets are required: they tell Postfix not to look up MX records,
    which for a site relay would find the gateway itself (transport(5)).
    """
    match = _NEXTHOP.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise _fail(
            "bad-nexthop",
            "next hop '{value}' is not '[host]:port', optionally after 'smtp:' or 'lmtp:' "
            "(like 'smtp:[relay.tifpa.example.org]:25' or 'lmtp:[mbox.example.org]:24')",
            value=value,
        )
    transport = match["transport"] or "smtp"
    if transport not in DEFAULT_PORTS:
        raise _fail(
            "bad-nexthop",
            "next hop '{value}': transport '{transport}' is neither 'smtp' nor 'lmtp'",
            value=value,
            transport=transport,
        )
    port = int(match["port"]) if match["port"] else DEFAULT_PORTS[transport]
    if not 1 <= port <= 65535:
        raise _fail("bad-nexthop", "next hop '{value}': port {port} is not between 1 and 65535", value=value, port=port)
    try:
        name = host(match["host"])
    except PydanticCustomError as err:
        raise _fail("bad-nexthop", "next hop '{value}': {why}", value=value, why=err.message()) from None
    if host_is_address(name):
        node = node_network(ipaddress.ip_network(name))
    else:
        node = "loopback (a localhost name, RFC 6761)" if _loopback_name(name) else None
    if node:
        raise _fail(
            "bad-nexthop",
            "next hop '{value}' is {node}: that is the MX node itself or no host at all; "
            "name the site's relay or mailbox server",
            value=value,
            node=node,
        )
    return transport, name, port


def host_is_address(name: str) -> bool:
    """Is this host (as host() returns it) an IPv4 address rather than a name?"""
    try:
        ipaddress.IPv4Address(name)
        return True
    except ValueError:
        return False


def distinguished_name(value: str) -> str:
    """A DN of plain 'attr=value' parts; no escapes, so it is safe in LDIF as written."""
    if not isinstance(value, str) or not _DN.fullmatch(value) or "  " in value or value.endswith(" "):
        raise _fail("bad-dn", "'{value}' is not a plain DN like 'ou=mailgw,dc=example,dc=org'", value=value)
    return value


# The attributes that may name the directory's root entry, each with a standard structural class for it.
BASE_DN_NAMING = ("dc", "o", "ou")


# The longest RDN OpenLDAP's mdb backend stores (a longer one fails slapadd with MDB_BAD_VALSIZE); the
# directory's root entry is stored under its whole DN, so the base DN is bounded by it too.
DIRECTORY_MAX_RDN = 245


def ldap_base_dn(value: str) -> str:
    """The gateway directory's base DN: a plain DN whose first part names a container (ou=, o= or dc=)."""
    dn = distinguished_name(value)
    if len(dn) > DIRECTORY_MAX_RDN:
        raise _fail(
            "bad-dn",
            "base DN '{value}' has {length} characters; the directory stores at most {limit}",
            value=value,
            length=len(dn),
            limit=DIRECTORY_MAX_RDN,
        )
    naming = dn.partition("=")[0].lower()
    if naming not in BASE_DN_NAMING:
        raise _fail(
            "bad-dn",
            "base DN '{value}' starts with '{naming}='; the directory's root entry is an "
            "'ou=', 'o=' or 'dc=' (like 'ou=mailgw,dc=example,dc=org')",
            value=value,
            naming=dn.partition("=")[0],
        )
    return dn


def absolute_path(value: str) -> str:
    if not isinstance(value, str) or not _PATH.fullmatch(value) or "/../" in value + "/":
        raise _fail(
            "bad-path",
            "'{value}' is not an absolute path of letters, digits, '.', '_', '-' and '/' (like '/etc/postfix/mailgw')",
            value=value,
        )
    return value.rstrip("/") or "/"


# A site relay may send anywhere through the MX, so its network stays small:
# a /24 of IPv4 or a /64 of IPv6 (one LAN) at most.
RELAY_MIN_PREFIX = {4: 24, 6: 64}
_OCTET_PATTERN = r"(?:[0-9]{1,3}|\[[0-9]{1,3}(?:\.\.[0-9]{1,3})?(?:;[0-9]{1,3}(?:\.\.[0-9]{1,3})?)*\])"
_DNSBL_FILTER = re.compile(rf"{_OCTET_PATTERN}(?:\.{_OCTET_PATTERN}){{3}}")


def network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """'192.0.2.0/24', '2001:db8::/48', or one address (a /32 or /128); no host bits, never everything."""
    if not isinstance(value, str):
        raise _fail("bad-network", "a network must be text like '192.0.2.0/24'")
    why = _describe_bad_text(value.replace(":", "x"))  # ':' is IPv6 syntax, not a separator here
    if why or "%" in value:
        raise _fail(
            "bad-network",
            "network '{value}' {why}; write it like '192.0.2.0/24' or '2001:db8::/48'",
            value=value,
            why=why or "has a zone index",
        )
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as err:
        hint = ""
        try:
            loose = ipaddress.ip_network(value, strict=False)
            hint = f"; the network is {loose}, or write one address as {value.split('/')[0]}"
        except ValueError:
            pass
        why = "has host bits set" if "host bits" in str(err) else "is not an IP network"
        raise _fail("bad-network", "network '{value}' {why}{hint}", value=value, why=why, hint=hint) from None
    if net.prefixlen == 0:
        raise _fail("bad-network", "network '{value}' is every address; list the networks you mean", value=value)
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped:
        raise _fail(
            "bad-network", "network '{value}' is an IPv4-mapped IPv6 network; write the IPv4 network", value=value
        )
    return net


def relay_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A site relay's network: small, and a real unicast network (never one that opens the relay)."""
    net = network(value)
    smallest = RELAY_MIN_PREFIX[net.version]
    if net.prefixlen < smallest:
        raise _fail(
            "relay-network-too-large",
            "relay network '{value}' has {count} addresses; a site relay network may be at most "
            "a /{smallest} (list the relay hosts themselves)",
            value=value,
            count=f"{net.num_addresses:,}",
            smallest=smallest,
        )
    node = node_network(net)
    if node:
        raise _fail(
            "bad-network",
            "relay network '{value}' is {node}: that is the MX node itself or no host at all, never a site's relay",
            value=value,
            node=node,
        )
    if net.is_multicast or net.is_unspecified or net.is_link_local or net.is_reserved:
        raise _fail(
            "bad-network",
            "relay network '{value}' is not unicast (multicast, link-local, reserved "
            "or unspecified); no relay sends from there",
            value=value,
        )
    return net


def dnsbl_filter(value: str) -> str:
    """A postscreen DNSBL reply filter: d.d.d.d where d is a number, [n..m] or [a;b;...] (postconf(5))."""
    numbers = re.findall(r"[0-9]+", value) if isinstance(value, str) else []
    ranges = re.findall(r"([0-9]+)\.\.([0-9]+)", value) if isinstance(value, str) else []
    if (
        not isinstance(value, str)
        or not _DNSBL_FILTER.fullmatch(value)
        or any(int(n) > 255 for n in numbers)
        or any(int(lo) > int(hi) for lo, hi in ranges)
    ):
        raise _fail(
            "bad-dnsbl-site",
            "DNSBL filter '{value}' is not an address pattern like '127.0.0.2' or "
            "'127.0.0.[2..11]' (numbers up to 255, ranges low..high, ';' between "
            "choices)",
            value=value,
        )
    return value


def dnsbl_weight(value: int) -> int:
    if not -100 <= value <= 100 or value == 0:
        raise _fail(
            "bad-dnsbl-site",
            "DNSBL weight {value} must be from -100 to 100 and not 0; a positive "
            "weight counts towards blocking, a negative one towards allowing",
            value=value,
        )
    return value


def dnsbl_threshold(value: int) -> int:
    if value < 1:
        raise _fail("bad-dnsbl-threshold", "dnsbl_threshold {value} must be at least 1", value=value)
    return value


# --- filter policy values (docs/filtering.md) --------------------------------------

# A spam score threshold: what Rspamd compares a message's score with.
MAX_THRESHOLD = 100
# A subject tag: printable ASCII; no '"', '\' or '$' (UCL string syntax and variables), no '{' or '}'
# (Rspamd's template markers '{=', '{%', '{#') and no '%' but the one '%s' Rspamd replaces with the subject.
_SUBJECT_CHARS = re.compile(r"[ !#&'()*+,\-./0-9:;<=>?@A-Z\[\]^_`a-z|~]*")
_URL = re.compile(r"https://(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?(?P<path>/[A-Za-z0-9._~/-]*)?")
# Shorter prefixes than these would let one list entry cover a large part of the Internet.
MIN_PREFIX = {4: 8, 6: 16}


def threshold(value: float | bool) -> float | bool:
    """A spam score in (0, 100] with at most two decimals, or false for 'this action is off'."""
    if value is False:
        return False
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value <= MAX_THRESHOLD
        or round(value, 2) != value
    ):
        got = "true" if value is True else f"'{value}' (text)" if isinstance(value, str) else str(value)
        raise _fail(
            "bad-threshold",
            "{got} is not a spam score: write a number above 0 and at most "
            f"{MAX_THRESHOLD} with at most two decimals (like 6 or 7.5), or false "
            "to turn the action off",
            got=got,
        )
    return float(value)


def subject_template(value: str) -> str:
    """The subject of a tagged message: '%s' is the original subject (like '[SPAM] %s')."""
    if not isinstance(value, str):
        raise _fail("bad-subject", "a subject template is text like '[SPAM] %s'")
    if len(value) > 64:
        why = "is longer than 64 characters"
    elif value.count("%s") != 1:
        why = "must contain '%s' (the original subject) exactly once"
    elif "%" in value.replace("%s", "", 1):
        why = "may contain '%' only in the one '%s'"
    elif not _SUBJECT_CHARS.fullmatch(value.replace("%s", "", 1)):
        bad = next(c for c in value.replace("%s", "", 1) if not _SUBJECT_CHARS.fullmatch(c))
        why = f"contains '{bad}'; use printable ASCII without '\"', '\\', '$', '{{' and '}}'"
    elif not value.replace("%s", "").strip():
        why = "adds nothing to the subject"
    else:
        return value
    raise _fail("bad-subject", "subject template '{value}' {why} (like '[SPAM] %s')", value=value, why=why)


def sender_pattern(value: str) -> str:
    """A sender in an allow or block list: 'name@example.net' or '@example.net' (the whole domain)."""
    if not isinstance(value, str):
        raise _fail("bad-sender", "a sender is text like 'name@example.net' or '@example.net'")
    try:
        if value.startswith("@"):
            return "@" + domain_name(value[1:])
        return mail_address(value).lower()
    except PydanticCustomError as err:
        raise _fail(
            "bad-sender",
            "sender '{value}' is neither an address like 'name@example.net' nor a domain like '@example.net': {why}",
            value=value,
            why=err.message(),
        ) from None


def client_network(value: str) -> str:
    """A client address or network of an allow or block list, normalised ('192.0.2.7' -> '192.0.2.7/32')."""
    net = network(value)
    if net.prefixlen < MIN_PREFIX[net.version]:
        raise _fail(
            "bad-network",
            "'{value}' covers too much of the Internet; the shortest prefix is /{limit} for IPv{version}",
            value=value,
            limit=MIN_PREFIX[net.version],
            version=net.version,
        )
    return str(net)


def https_url(value: str) -> str:
    """An https:// URL with a host, an optional port and a plain path; no query, user or fragment."""
    match = _URL.fullmatch(value) if isinstance(value, str) else None
    if match:
        try:
            host(match["host"])
            if match["port"] is None or 1 <= int(match["port"]) <= 65535:
                return value
        except PydanticCustomError:
            pass
    raise _fail(
        "bad-url",
        "'{value}' is not an https URL like 'https://quarantine.example.org/api/messages' "
        "(no spaces, quotes, query, user or fragment)",
        value=value,
    )


def retention_days(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3650:
        raise _fail("bad-retention", "{value} is not a whole number of days from 1 to 3650", value=value)
    return value


# --- the quarantine portal (gateway.yaml `portal:`) ------------------------------------

_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_LDAP_URI = re.compile(
    r"(?:ldaps?://(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?|ldapi://[A-Za-z0-9%._-]*)/?"
)


def listen_address(value: str) -> str:
    """'IP:port' or '[IPv6]:port': where a Postfix service listens (master(5) service name)."""
    if isinstance(value, str):
        address, _, port = value.rpartition(":")
        try:
            if address.startswith("[") and address.endswith("]"):
                parsed: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(address[1:-1])
            else:
                parsed = ipaddress.IPv4Address(address)
            if port.isdigit() and 1 <= int(port) <= 65535:
                return f"[{parsed}]:{int(port)}" if parsed.version == 6 else f"{parsed}:{int(port)}"
        except ValueError:
            pass
    raise _fail(
        "bad-listen",
        "'{value}' is not a listening address like '127.0.0.1:10026' or '[::1]:10026' (an IP address and a port)",
        value=value,
    )


def client_id(value: str) -> str:
    """An OpenID Connect client id (or claim name): letters, digits, '.', '_', ':', '-'."""
    if not isinstance(value, str) or not _CLIENT_ID.fullmatch(value):
        raise _fail(
            "bad-client-id",
            "'{value}' is not a client id or claim name (letters, digits, '.', '_', ':', '-'; at most 128)",
            value=value,
        )
    return value


def oidc_scope(value: str) -> str:
    """An OpenID Connect scope (RFC 6749's scope-token, narrowed to the client id's characters)."""
    if not isinstance(value, str) or not _CLIENT_ID.fullmatch(value):
        raise _fail(
            "bad-oidc-scope",
            "'{value}' is not an OpenID Connect scope (letters, digits, '.', '_', ':', '-'; at most 128)",
            value=value,
        )
    return value


def ldap_uri(value: str) -> str:
    """ldap://host[:port], ldaps://host[:port] or ldapi://ENCODED-SOCKET-PATH (RFC 4516, without a DN)."""
    match = _LDAP_URI.fullmatch(value) if isinstance(value, str) else None
    if match and (match["port"] is None or 1 <= int(match["port"]) <= 65535):
        return value
    raise _fail(
        "bad-ldap-uri",
        "'{value}' is not an LDAP server URI like 'ldap://127.0.0.1', 'ldaps://ldap.example.org:636' "
        "or 'ldapi://%2Frun%2Fslapd%2Fldapi'",
        value=value,
    )


# --- mailgw sync: where a site's address list comes from (docs/sync-format.md) ---------------

_SOURCE_URL = re.compile(
    r"https://(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?(?P<path>/[A-Za-z0-9._~/%-]*)?"
)
_CREDENTIAL_PATH = re.compile(r"[A-Za-z0-9._/-]+")


def source_url(value: str) -> str:
    """The https:// URL of a site's address list: a host name or an IP address, a port, a plain path."""
    match = _SOURCE_URL.fullmatch(value) if isinstance(value, str) else None
    if match:
        try:
            name = match["host"]
            if name.startswith("["):
                ipaddress.IPv6Address(name[1:-1])
            elif not _is_ipv4(name):
                host(name)
            if match["port"] is None or 1 <= int(match["port"]) <= 65535:
                return value
        except (PydanticCustomError, ValueError):
            pass
    raise _fail(
        "bad-url",
        "'{value}' is not an https URL like 'https://ldap.tifpa.example.org/mailgw/addresses.csv' "
        "(no spaces, quotes, query, user or fragment)",
        value=value,
    )


def _is_ipv4(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def credential_path(value: str) -> str:
    """A file on the machine that runs the sync: absolute, or relative to its credentials directory."""
    if (
        not isinstance(value, str)
        or not _CREDENTIAL_PATH.fullmatch(value)
        or ".." in value.split("/")
        or value.endswith("/")
    ):
        raise _fail(
            "bad-path",
            "'{value}' is not a file path of letters, digits, '.', '_', '-' and '/' "
            "(like '/etc/mailgw-sync/tifpa.token', or 'tifpa.token' in the credentials directory)",
            value=value,
        )
    return value


# --- the gateway's own LDAP server (docs/ldap.md) ------------------------------------


def ldap_listen_address(value: str) -> str:
    """An MX node's own address that its LDAP server listens on: one unicast IP address, never loopback (always on)."""
    address = _ip_address(value) if isinstance(value, str) and "%" not in value else None
    if (
        address is None
        or address.is_multicast
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or (isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None)
    ):
        raise _fail(
            "bad-listen-address",
            "listen address '{value}' is not one unicast IP address of the node (like '192.0.2.11' or "
            "'2001:db8::11'); 127.0.0.1 and the local socket are always listened on",
            value=value,
        )
    return str(address)


def _ip_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def tcp_port(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _fail("bad-ldap-setting", "port {value} is not a TCP port from 1 to 65535", value=value)
    return value


def ldap_size_limit(value: int) -> int:
    """How many entries one search may return (slapd-config(5) olcSizeLimit); the deployment itself has none."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise _fail("bad-ldap-setting", "size limit {value} is not a number of entries from 1 to 1000000", value=value)
    return value


def ldap_time_limit(value: int) -> int:
    """How many seconds slapd spends on one search (slapd-config(5) olcTimeLimit)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3600:
        raise _fail("bad-ldap-setting", "time limit {value} is not a number of seconds from 1 to 3600", value=value)
    return value


# --- the national alias domain and capture-and-notify (docs/national-aliases.md) ----------------

# A person's name as the site writes it: letters (any script, with their accents), spaces between words,
# apostrophes, hyphens and dots inside words, and at most one comma for 'Surname, Given names'.
_NAME_PUNCTUATION = frozenset("'\u2019-.")
MAX_NAME = 128


def person_name(value: str) -> str:
    """A display name like 'Mario Rossi', 'Maria Chiara De Luca' or 'Rossi Bianchi, Anna'."""
    if not isinstance(value, str):
        raise _fail("bad-name", "a name must be text like 'Mario Rossi'")
    why = None
    if not value or len(value) > MAX_NAME:
        why = f"must have from 1 to {MAX_NAME} characters"
    elif value != value.strip() or "  " in value or " ," in value or value.count(",") > 1:
        why = "has a space at an end, two spaces in a row, or more than one comma"
    else:
        bad = next(
            (
                c
                for i, c in enumerate(value)
                if not (c.isalpha() or c in _NAME_PUNCTUATION or c in " ," or (i and _combining(c, value[i - 1])))
            ),
            None,
        )
        if bad is not None:
            shown = bad if bad.isprintable() else f"U+{ord(bad):04X}"
            why = f"contains '{shown}' (U+{ord(bad):04X}); write letters, spaces, apostrophes, '-' and '.'"
        elif len(name_parts(value)[0]) == 0 or len(name_parts(value)[1]) == 0:
            why = "needs a given name and a surname ('Mario Rossi', or 'Rossi Bianchi, Anna' for 'Surname, Given')"
    if why:
        raise _fail("bad-name", "name '{value}' {why}", value=value, why=why)
    return value


def _combining(char: str, before: str) -> bool:
    """A combining mark on a letter: a name written decomposed ('e' and U+0301 for 'é')."""
    return unicodedata.category(char).startswith("M") and (before.isalpha() or unicodedata.combining(before) > 0)


# Words that belong to the surname that follows them ('Maria De Luca' is Maria, De Luca).
SURNAME_PARTICLES = frozenset((
    "d'", "da", "dai", "dal", "dalla", "dalle", "das", "de", "dei", "degli", "del", "della", "delle", "dello",
    "der", "des", "di", "do", "dos", "du", "la", "le", "lo", "ten", "ter", "van", "von",
))  # fmt: skip


def name_parts(name: str) -> tuple[list[str], list[str]]:
    """(given names, surnames) of a name: 'Surname, Given' as written, else the last word and its particles."""
    if "," in name:
        surname, _, given = name.partition(",")
        return given.split(), surname.split()
    words = name.split()
    start = len(words) - 1
    while start > 1 and words[start - 1].lower() in SURNAME_PARTICLES:
        start -= 1
    return words[:start], words[start:]


# --- the plan's guards (gateway.yaml `plan:`, docs/site-admins.md) ---------------------


def guard_percent(value: int) -> int:
    """A share of a domain's addresses past which a change is unsafe (0: any at all)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise _fail("bad-plan-setting", "{value} is not a whole percentage from 0 to 100", value=value)
    return value


def guard_min_addresses(value: int) -> int:
    """How many addresses a domain needs before the shares are judged (a small domain may change wholly)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise _fail("bad-plan-setting", "{value} is not a number of addresses from 0 to 1000000", value=value)
    return value


# --- authenticated submission and the automation relay (docs/submission.md) -------------------

# A SHA-256 digest is 32 bytes: 64 hex digits, written in pairs with ':' as `openssl x509 -fingerprint` prints them.
FINGERPRINT_BYTES = 32
_HEX_PAIRS = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*")
_HEX_RUN = re.compile(r"[0-9A-Fa-f]+")
_CLIENT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
# A Dovecot LDAP filter (dovecot-ldap.conf.ext pass_filter): the one variable %u, which Dovecot escapes (RFC 4515).
_LDAP_FILTER = re.compile(r"\((?:[A-Za-z0-9=&|!()*._:-]|%u)+\)")
_BIND_TEMPLATE_RDN = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*=%u")
# The largest message the MX itself takes (Postfix's message_size_limit, not changed in main.cf): cleanup(8)
# enforces it for every service, so a submission limit above it would never apply.
MX_MESSAGE_SIZE_LIMIT = 10240000
MIN_MESSAGE_SIZE_LIMIT = 1048576
MAX_RECIPIENT_LIMIT = 1000
MAX_RATE = 100000


def certificate_fingerprint(value: str) -> str:
    """A client certificate's SHA-256 fingerprint, as 'AB:CD:...' (32 pairs) or 64 hex digits -> 'AB:CD:...'."""
    if not isinstance(value, str):
        raise _fail("bad-fingerprint", "a fingerprint is text like 'AB:CD:...' (quote it in YAML)")
    if _HEX_PAIRS.fullmatch(value):
        digits = value.replace(":", "")
    elif _HEX_RUN.fullmatch(value) and len(value) % 2 == 0:
        digits = value
    else:
        why = _describe_bad_text(value.replace(":", "x")) or _describe_non_ascii(value) or "is not hexadecimal"
        raise _fail(
            "bad-fingerprint",
            "fingerprint '{value}' {why}; write the SHA-256 fingerprint as 'openssl x509 -noout -fingerprint "
            "-sha256' prints it: 32 pairs of hex digits separated by ':'",
            value=value,
            why=why,
        )
    if len(digits) != 2 * FINGERPRINT_BYTES:
        hint = {20: " (that is SHA-1)", 16: " (that is MD5)"}.get(len(digits) // 2, "")
        raise _fail(
            "bad-fingerprint",
            "fingerprint '{value}' has {count} bytes{hint}; a SHA-256 fingerprint has 32",
            value=value,
            count=len(digits) // 2,
            hint=hint,
        )
    upper = digits.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def client_name(value: str) -> str:
    """The name of a client certificate or an automation client: what plans and logs call it."""
    if not isinstance(value, str) or not _CLIENT_NAME.fullmatch(value):
        raise _fail(
            "bad-client-name",
            "'{value}' is not a client name; use lower-case letters, digits and '-', at most 32 "
            "(like 'backup-server' or 'lab-alarms')",
            value=value,
        )
    return value


# --- DKIM, DMARC and the DNS records a domain publishes (docs/dns.md) ------------------------------

# A DKIM selector is one DNS label here (RFC 6376 3.1 allows dotted ones): it names a key file on the node too.
_SELECTOR = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
# RSA keys: RFC 8301 asks for 2048 bits; beyond 4096 the record outgrows what resolvers commonly carry over UDP.
DKIM_RSA_BITS = (2048, 4096)
DKIM_ALGORITHMS = ("rsa", "ed25519")


def dkim_selector(value: str) -> str:
    """A selector: one lower-case DNS label, the name of <selector>._domainkey.<domain> and of its key file."""
    if not isinstance(value, str) or not _SELECTOR.fullmatch(value):
        why = (_describe_bad_text(value) or "is not one lower-case DNS label") if isinstance(value, str) else ""
        raise _fail(
            "bad-dkim-selector",
            "selector '{value}' {why}; use lower-case letters, digits and '-', at most 63 (like 'mailgw2025a')",
            value=value,
            why=why,
        )
    return value


def destination(value: str) -> str:
    """Where an automation client may send: an address ('alarms@example.org') or a whole domain ('example.org')."""
    if not isinstance(value, str):
        raise _fail("bad-destination", "a destination is text like 'oncall@example.org' or 'example.org'")
    try:
        return mail_address(value).lower() if "@" in value else domain_name(value)
    except PydanticCustomError as err:
        raise _fail(
            "bad-destination",
            "destination '{value}' is neither an address like 'oncall@example.org' nor a domain like "
            "'example.org': {why}",
            value=value,
            why=err.message(),
        ) from None


def messages_per_hour(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE:
        raise _fail(
            "bad-rate", "{value} is not a number of messages per hour from 1 to {limit}", value=value, limit=MAX_RATE
        )
    return value


def service_port(value: int) -> int:
    """A port of the MX's own services: not 25, which postscreen owns."""
    if value == 25 and not isinstance(value, bool):
        raise _fail("bad-port", "port 25 is postscreen's, the MX's own; give this service another port")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _fail("bad-port", "port {value} is not a TCP port from 1 to 65535", value=value)
    return value


def automation_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An automation client's network: the size and kind rules of a site relay's (relay_network)."""
    try:
        return relay_network(value)
    except PydanticCustomError as err:
        if err.type != "relay-network-too-large":
            raise
        net = network(value)
        raise _fail(
            "automation-network-too-large",
            "automation network '{value}' has {count} addresses; an automation client's network may be at most "
            "a /{smallest}, as a site relay's (list the devices themselves)",
            value=value,
            count=f"{net.num_addresses:,}",
            smallest=RELAY_MIN_PREFIX[net.version],
        ) from None


def message_size_limit(value: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_MESSAGE_SIZE_LIMIT <= value <= MX_MESSAGE_SIZE_LIMIT
    ):
        raise _fail(
            "bad-submission-setting",
            "message size limit {value} is not a number of bytes from {low} to {high} (the MX's own limit)",
            value=value,
            low=MIN_MESSAGE_SIZE_LIMIT,
            high=MX_MESSAGE_SIZE_LIMIT,
        )
    return value


def recipient_limit(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RECIPIENT_LIMIT:
        raise _fail(
            "bad-submission-setting",
            "recipient limit {value} is not a number of recipients per message from 1 to {limit}",
            value=value,
            limit=MAX_RECIPIENT_LIMIT,
        )
    return value


def auth_rate_limit(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE:
        raise _fail(
            "bad-submission-setting",
            "auth rate limit {value} is not a number of AUTH commands per client address and hour from 1 to {limit}",
            value=value,
            limit=MAX_RATE,
        )
    return value


def dkim_public_key(value: str, algorithm: str) -> str:
    """The p= of a DKIM key record: base64 of an RSA SubjectPublicKeyInfo (RFC 6376 3.6.1) or of the 32 bytes
    of an Ed25519 key (RFC 8463); a key that does not parse is refused, it would publish a record nobody can use."""
    # Imported here: cryptography's backend costs a build that declares no key nothing.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    if not isinstance(value, str) or not value or not _BASE64.fullmatch(value):
        why = (_describe_bad_text(value) or "is not base64") if isinstance(value, str) else "is not text"
        raise _fail(
            "bad-dkim-key",
            "public key {why}; write the p= value of the record as 'mailgw dkim' wrote it (base64, one line)",
            why=why,
        )
    key = base64.b64decode(value, validate=True)
    if algorithm == "ed25519":
        if len(key) != 32:
            raise _fail(
                "bad-dkim-key",
                "public key is {length} bytes long; an Ed25519 key (RFC 8463) is 32",
                length=len(key),
            )
        ed25519.Ed25519PublicKey.from_public_bytes(key)
        return value
    try:
        parsed = load_der_public_key(key)
    except (ValueError, UnsupportedAlgorithm):
        raise _fail(
            "bad-dkim-key", "public key does not parse as an RSA public key (a DER SubjectPublicKeyInfo)"
        ) from None
    if not isinstance(parsed, rsa.RSAPublicKey):
        raise _fail("bad-dkim-key", "public key is not an RSA key; with algorithm 'rsa' the key must be RSA")
    low, high = DKIM_RSA_BITS
    if not low <= parsed.key_size <= high:
        raise _fail(
            "bad-dkim-key",
            "public key has {bits} bits; an RSA DKIM key has {low} to {high}",
            bits=parsed.key_size,
            low=low,
            high=high,
        )
    return value


def node_address(value: str) -> str:
    """An MX node's public address (its A or AAAA record, an ip4:/ip6: of the gateway's SPF record)."""
    address = _ip_address(value) if isinstance(value, str) and "%" not in value else None
    if (
        address is None
        or address.is_multicast
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or (isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None)
    ):
        raise _fail(
            "bad-node-address",
            "'{value}' is not one unicast IP address of an MX node (like '192.0.2.11' or '2001:db8::11')",
            value=value,
        )
    return str(address)


def dns_ttl(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 60 <= value <= 86400:
        raise _fail("bad-dns-setting", "TTL {value} is not a number of seconds from 60 to 86400", value=value)
    return value


# RFC 8461 3.2: max_age at most 31557600 (a year); a day at least, or senders re-fetch the policy all the time.
MTA_STS_MAX_AGE = (86400, 31557600)


def mta_sts_max_age(value: int) -> int:
    low, high = MTA_STS_MAX_AGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(
            "bad-dns-setting",
            "max_age {value} is not a number of seconds from {low} (a day) to {high} (a year)",
            value=value,
            low=low,
            high=high,
        )
    return value


def ldap_filter(value: str) -> str:
    """The AAI search filter: parenthesised, balanced, '%u' (the login name) and no other variable or space."""
    depth, balanced = 0, isinstance(value, str)
    for char in value if isinstance(value, str) else "":
        depth += {"(": 1, ")": -1}.get(char, 0)
        balanced = balanced and depth >= 0
    if not (balanced and depth == 0 and _LDAP_FILTER.fullmatch(value) and "%u" in value):
        raise _fail(
            "bad-ldap-filter",
            "'{value}' is not an LDAP filter like '(&(objectClass=inetOrgPerson)(uid=%u))': balanced "
            "parentheses around letters, digits and '=&|!*._:-', with '%u' (the login name) and no spaces",
            value=value,
        )
    return value


def bind_template(value: str) -> str:
    """A DN whose first part is 'ATTRIBUTE=%u' (Dovecot auth_bind_userdn): the user's own entry, bound directly."""
    first, comma, rest = value.partition(",") if isinstance(value, str) else ("", "", "")
    try:
        if not (_BIND_TEMPLATE_RDN.fullmatch(first) and comma and distinguished_name(rest)):
            raise _fail("bad-dn", "")
    except PydanticCustomError:
        raise _fail(
            "bad-dn",
            "'{value}' is not a bind DN template like 'uid=%u,ou=people,dc=example,dc=org' (the login name as "
            "the value of its first part, then a plain DN)",
            value=value,
        ) from None
    return value


def loopback_service(value: str) -> str:
    """'127.0.0.1:port' or '[::1]:port': a service only the node itself reaches (postsrsd, the forwarding pass)."""
    service = listen_address(value)
    if not ipaddress.ip_address(service.rpartition(":")[0].strip("[]")).is_loopback:
        raise _fail(
            "bad-listen",
            "'{value}' is not on loopback; the node's own services listen on 127.0.0.1 or ::1 only",
            value=value,
        )
    return service


# A record's owner name: host-name labels, and '_' labels such as '_spf' or '_dmarc' (RFC 8552).
_RECORD_LABEL = re.compile(r"_[a-z0-9-]{1,62}|(?!-)[a-z0-9-]{1,63}(?<!-)")


def dns_record_name(value: str) -> str:
    """The owner name of a record the gateway publishes itself (like '_spf.gw.example.org'), lower case."""
    labels = value.split(".") if isinstance(value, str) else []
    if (
        not isinstance(value, str)
        or len(value) > 253
        or len(labels) < 2
        or not all(_RECORD_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
        or labels[-1].startswith("_")
    ):
        raise _fail(
            "bad-domain",
            "'{value}' is not a DNS name of lower-case labels of letters, digits and '-', "
            "a label may start with '_' (like '_spf.gw.example.org')",
            value=value,
        )
    return value
