"""Every error code with one input that triggers it and the exact finding it prints.

tests/test_errors.py runs each case through the CLI; docs/errors.md is
generated from this table (`python -m tests.error_cases`), and a test fails
when the two drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DOMAIN = "domains/tifpa.example.org.yaml"

HEAD = """\
domain: tifpa.example.org
site: TIFPA
admins: ["@example/tifpa-mail"]
"""
DELIVERY = "delivery:\n  nexthop: smtp:[smtp.tifpa.example.org]:25\n"
RECIPIENTS = "recipients:\n  mario.rossi: mrossi\n"
VALID = HEAD + DELIVERY + RECIPIENTS
GATEWAY_HEAD = "mx_hosts: [mx1.gw.example.org]\nldap: {base_dn: 'dc=org'}\n"
# Valid host names too long for the LDAP directory's entry names (the domain's own, a role address's).
LONG_DOMAIN = ".".join(["d" * 56] * 4) + ".example.org"
LONGISH_DOMAIN = ".".join(["d" * 50] * 4) + ".org"
# The fields a portal: section must have, after the one a case gets wrong.
_PORTAL_REQUIRED = (
    "  public_url: https://quarantine.example.org\n  oidc_issuer: https://aai.example.org\n"
    "  oidc_client_id: mailgw-quarantine\n  digest_sender: quarantine@example.org\n"
)
SYNCED = "sources/tifpa.example.org.yaml"
SOURCE_URL = "https://directory.tifpa.example.org/mailgw/addresses.csv"
TOKEN = "  token_file: /etc/mailgw-sync/tifpa.token\n"
SOURCE = f"source:\n  url: {SOURCE_URL}\n  format: csv\n" + TOKEN
CSV_HEADER = "address,kind,uid,owners\n"
# A gateway with the submission services and one automation service (docs/submission.md).
AAI = "  aai_directory: {uris: ['ldaps://ldap.aai.example.org'], base: 'ou=people,dc=aai,dc=org'}\n"
SUBMISSION_GATEWAY = (
    GATEWAY_HEAD + "submission:\n" + AAI + "  automation_services: [{port: 2525, messages_per_hour: 60}]\n"
)
FINGERPRINT = ":".join(["AB"] * 32)
CERTIFICATES = "submission:\n  client_certificates:\n"
AUTOMATION = "submission:\n  automation_clients:\n"
# Public keys as a DKIM record publishes them (p=): RSA 2048, RSA 1024, an EC key, Ed25519.
DKIM_RSA = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvEWDwo8mdQHrRNxBWgyNqdGEDEs6vN8l8q9e93fjcwjIBM/G4faFzJVb"
    "pedSDDsfPBBXfJ1n+4vHaZWFpyHmxRYxvGtVLJGB1PJrv3j3wmeh6Osz1p0X+wmkwImsnMQ1jTAu/JoNANsWuEYqg8zURalHIZXI"
    "BbXg5kriD07AxYoB6gQ8PYGEbPHKEKB4ISgBv79DTwhihXq0uJ0cJtICgmJE/QIg2kpGuuzE6ev9gH7fqa0qG14Yaj4PJt61k7lh"
    "rhfzu0THPV0jARXOqHxEH79TI7rS7O9chxAHyL1DGoROdkRoIBDLyW4PWVv4/t0cel6ingUH2zzaS0h8y4L3TwIDAQAB"
)
DKIM_RSA_1024 = (
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDdP8h8U4rlRs7F3XMTJNbPCBE/LIh0Gy/3EoSLjY1WYJ6tkUSuqrsKYdmfMFwI"
    "7+5UofOrO2vmFs67krh5pTWk8fK3UNEctf26KVK962syniYX3qbVJGcRGGMHV4+HIOXZZrLvq0FV3lDfsUWc1NVZtY1z5QWqCNlF"
    "44TcGma0kQIDAQAB"
)
DKIM_EC = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEeCbbsNOfa/VHz1a7hIkTW7FjWmDf6+SZyW13pK33IJ6IggC6w6QAyY2EFtR16CPB"
    "8HGicdtTILMh/CoDfl92Ug=="
)
DKIM_ED25519 = "gjcFGsLDqweJe88+hLUnholMeciqKSQ356A96O9Jy5c="
DNS = "dns: {spf_record: _spf.gw.example.org, mx_addresses: {mx1.gw.example.org: [192.0.2.11]}}\n"


def _dkim(*selectors: str) -> str:
    return "dkim:\n  selectors:\n" + "".join(f"    - {{{s}}}\n" for s in selectors)


def _synced() -> str:
    """sources/tifpa.example.org.yaml as mailgw sync writes it for a list of one person."""
    from compiler.declarations import Address
    from compiler.sync.synced import Validators, render

    person = Address("mario.rossi@tifpa.example.org", "person", "mrossi", (), (), "mario.rossi")
    return render(SOURCE_URL, [person], Validators())[0]


@dataclass(frozen=True)
class Case:
    code: str
    stage: str
    summary: str
    files: dict[str, str | bytes]
    expected: list[str]
    gateway: str | None = None  # None: the default gateway.yaml of the tests
    symlinks: dict[str, str] = field(default_factory=dict)


def _domain(body: str) -> dict[str, str]:
    return {DOMAIN: body}


CASES = [
    # --- load: the bytes and the YAML -------------------------------------------------
    Case(
        "yaml-syntax",
        "load",
        "the file is not valid YAML",
        _domain(HEAD + "delivery:\n  nexthop: [smtp:[smtp.tifpa.example.org]:25]\n" + RECIPIENTS),
        [f"{DOMAIN}:5:17: error[yaml-syntax]: invalid YAML: while scanning a plain scalar: found unexpected ':'"],
    ),
    Case(
        "yaml-syntax",
        "load",
        "a tab where YAML wants spaces",
        _domain(HEAD + DELIVERY + "recipients:\n\tmario.rossi: mrossi\n"),
        [f"{DOMAIN}:7:1: error[yaml-syntax]: tab character: YAML is indented with spaces only"],
    ),
    Case(
        "duplicate-key",
        "load",
        "the same key twice in one mapping",
        _domain(VALID + "  mario.rossi: lbianchi\n"),
        [
            f"{DOMAIN}:8:3: error[duplicate-key]: key 'mario.rossi' is already defined at line 7 column 3; "
            "a key may appear only once in a mapping"
        ],
    ),
    Case(
        "yaml-alias",
        "load",
        "anchors and aliases (also expansion bombs)",
        _domain(HEAD + DELIVERY + "recipients:\n  mario.rossi: &u mrossi\n  m.rossi: *u\n"),
        [
            f"{DOMAIN}:8:3: error[yaml-alias]: the value of 'm.rossi' is an alias (*name); anchors and aliases "
            "are not allowed, write the value out"
        ],
    ),
    Case(
        "control-character",
        "load",
        "a control character (here BEL) in the text",
        _domain(VALID.replace("site: TIFPA", "site: TIF\x07PA")),
        [f"{DOMAIN}:2:10: error[control-character]: control character U+0007 is not allowed in YAML; remove it"],
    ),
    Case(
        "byte-order-mark",
        "load",
        "a UTF-8 byte-order mark",
        _domain(b"\xef\xbb\xbf" + VALID.encode()),
        [f"{DOMAIN}:1:1: error[byte-order-mark]: file starts with a byte-order mark; save it as UTF-8 without BOM"],
    ),
    Case(
        "not-utf8",
        "load",
        "bytes that are not UTF-8",
        _domain(VALID.encode() + b"  caf\xe9: mrossi\n"),
        [f"{DOMAIN}:8:6: error[not-utf8]: byte 0xe9 is not valid UTF-8; save the file as UTF-8"],
    ),
    Case(
        "file-too-large",
        "load",
        "a file over 16 MiB",
        _domain(VALID + "#" * (16 * 1024 * 1024) + "\n"),
        [
            f"{DOMAIN}:1:1: error[file-too-large]: file is 16777375 bytes; the limit is 16777216 bytes "
            "(split the recipients or ask the gateway team)"
        ],
    ),
    Case(
        "yaml-too-deep",
        "load",
        "nesting deep enough to exhaust the parser",
        _domain("recipients: " + "[" * 5000 + "]" * 5000 + "\n"),
        [f"{DOMAIN}:1:1012: error[yaml-too-deep]: the YAML nests too deeply"],
    ),
    Case(
        "unreadable-file",
        "load",
        "a domain file that cannot be read (here: a directory)",
        {f"{DOMAIN}/.keep": ""},
        [f"{DOMAIN}:1:1: error[unreadable-file]: cannot read the file: Is a directory"],
    ),
    Case(
        "missing-file",
        "load",
        "no gateway.yaml",
        _domain(VALID),
        ["gateway.yaml:1:1: error[missing-file]: gateway.yaml is missing; every gateway repository has one"],
        gateway="",
    ),
    Case(
        "wrong-extension",
        "load",
        "a domain file ending in .yml",
        {"domains/tifpa.example.org.yml": VALID},
        ["domains/tifpa.example.org.yml:1:1: error[wrong-extension]: domain files end in '.yaml'; rename this one"],
    ),
    Case(
        "hidden-file",
        "load",
        "a domain file whose name starts with a dot",
        {"domains/..yaml": VALID.replace("tifpa.example.org\n", ".\n", 1)},
        ["domains/..yaml:1:1: error[hidden-file]: a hidden domain file is never read; name it after its domain"],
    ),
    Case(
        "symlink-outside",
        "load",
        "a domain file that links outside the repository",
        {},
        [
            "domains/tifpa.example.org.yaml:1:1: error[symlink-outside]: symbolic link to a file outside "
            "the repository; declarations live in the repository"
        ],
        symlinks={DOMAIN: "/etc/hostname"},
    ),
    # --- model: one file against its schema ------------------------------------------
    Case(
        "empty-file",
        "model",
        "an empty file",
        _domain(""),
        [f"{DOMAIN}:1:1: error[empty-file]: the file is empty; it must be a YAML mapping"],
    ),
    Case(
        "not-a-mapping",
        "model",
        "a top-level list",
        _domain("- domain: tifpa.example.org\n"),
        [f"{DOMAIN}:1:1: error[not-a-mapping]: the top level must be a mapping of fields, not list"],
    ),
    Case(
        "unknown-field",
        "model",
        "a misspelt field, with the nearest valid name",
        _domain(VALID + "recipent_check: list\n"),
        [f"{DOMAIN}:8:1: error[unknown-field]: unknown field 'recipent_check'; did you mean 'recipient_check'?"],
    ),
    Case(
        "missing-field",
        "model",
        "a required field left out",
        _domain(HEAD + RECIPIENTS),
        [f"{DOMAIN}:1:1: error[missing-field]: top level: missing required field 'delivery'"],
    ),
    Case(
        "invalid-choice",
        "model",
        "a value outside its fixed set",
        _domain(VALID + "role: primry\n"),
        [f"{DOMAIN}:8:7: error[invalid-choice]: role: 'primry' is not one of 'primary' or 'backup'"],
    ),
    Case(
        "wrong-type",
        "model",
        "a number where text is expected",
        _domain(VALID.replace("site: TIFPA", "site: 1234")),
        [
            f"{DOMAIN}:2:7: error[wrong-type]: site: expected text, got the number 1234; quote it if you mean "
            "the text '1234'"
        ],
    ),
    Case(
        "empty-list",
        "model",
        "a list that must not be empty",
        _domain(VALID.replace('admins: ["@example/tifpa-mail"]', "admins: []")),
        [f"{DOMAIN}:3:9: error[empty-list]: admins: must list at least one entry"],
    ),
    Case(
        "bad-recipient",
        "model",
        "a recipient that is neither a uid nor a mapping with a kind",
        _domain(VALID + "  info: {owners: [mrossi]}\n"),
        [
            f"{DOMAIN}:8:9: error[bad-recipient]: recipients.info: a recipient is a uid (like 'mrossi') or a "
            "mapping with 'kind: person', 'alias', 'role' or 'list'; got a mapping"
        ],
    ),
    Case(
        "bad-local-part",
        "model",
        "a local part with a space",
        _domain(VALID + "  mario rossi: mrossi\n"),
        [
            f"{DOMAIN}:8:3: error[bad-local-part]: recipients['mario rossi']: local part 'mario rossi' contains "
            "a space; use letters, digits, '.', '_', '-' or '+', dots only between characters, at most 64 "
            "(like 'mario.rossi')"
        ],
    ),
    Case(
        "bad-address",
        "model",
        "a target whose local part only lower-cases to ASCII (KELVIN SIGN, U+212A)",
        _domain(VALID + "external_aliases:\n  g.verdi: [\u212aelvin@example.net]\n"),
        [
            f"{DOMAIN}:9:13: error[bad-address]: external_aliases['g.verdi'][0]: '\u212aelvin@example.net' is "
            "not a usable mail address: local part '\u212aelvin' contains '\u212a' (U+212A), which is not ASCII; "
            "use letters, digits, '.', '_', '-' or '+', dots only between characters, at most 64 (like 'mario.rossi')"
        ],
    ),
    Case(
        "bad-uid",
        "model",
        "a uid with a space",
        _domain(VALID + "  m.rossi: {kind: alias, uid: M Rossi}\n"),
        [
            f"{DOMAIN}:8:31: error[bad-uid]: recipients['m.rossi'].uid: uid 'M Rossi' contains a space; AAI "
            "uids look like 'mrossi' (lower-case letters, digits, '.', '_', '-', at most 64)"
        ],
    ),
    Case(
        "bad-domain",
        "model",
        "a domain that is not a host name",
        {"domains/tifpa_example.org.yaml": VALID.replace("tifpa.example.org\n", "tifpa_example.org\n", 1)},
        [
            "domains/tifpa_example.org.yaml:1:9: error[bad-domain]: domain: domain 'tifpa_example.org' is not a "
            "host name: labels of letters, digits and '-', at least two of them (like 'tifpa.example.org')"
        ],
    ),
    Case(
        "bad-site",
        "model",
        "a site code with a space",
        _domain(VALID.replace("site: TIFPA", "site: TIFPA Trento")),
        [
            f"{DOMAIN}:2:7: error[bad-site]: site: site 'TIFPA Trento' is not a site code; use letters, digits, "
            "'_' or '-' (like 'TIFPA'), at most 32"
        ],
    ),
    Case(
        "bad-admin",
        "model",
        "an admin that is not a GitHub user or team",
        _domain(VALID.replace('"@example/tifpa-mail"', '"tifpa-mail"')),
        [
            f"{DOMAIN}:3:10: error[bad-admin]: admins[0]: admin 'tifpa-mail' is not a GitHub user or team; "
            "write '@user' or '@org/team'"
        ],
    ),
    Case(
        "bad-address",
        "model",
        "an external alias target that is not an address",
        _domain(VALID + "external_aliases:\n  g.verdi: [giuseppe.verdi]\n"),
        [
            f"{DOMAIN}:9:13: error[bad-address]: external_aliases['g.verdi'][0]: 'giuseppe.verdi' is not a mail "
            "address like 'name@example.net'"
        ],
    ),
    Case(
        "bad-nexthop",
        "model",
        "a next hop without brackets",
        _domain(HEAD + "delivery:\n  nexthop: smtp.tifpa.example.org\n" + RECIPIENTS),
        [
            f"{DOMAIN}:5:12: error[bad-nexthop]: delivery.nexthop: next hop 'smtp.tifpa.example.org' is not "
            "'[host]:port', optionally after 'smtp:' or 'lmtp:' (like 'smtp:[relay.tifpa.example.org]:25' or "
            "'lmtp:[mbox.example.org]:24')"
        ],
    ),
    Case(
        "bad-nexthop",
        "model",
        "a next hop into the node itself (loopback, unspecified, link-local, multicast)",
        _domain(HEAD + "delivery:\n  nexthop: '[127.0.0.2]:10025'\n" + RECIPIENTS),
        [
            f"{DOMAIN}:5:12: error[bad-nexthop]: delivery.nexthop: next hop '[127.0.0.2]:10025' is loopback "
            "(127.0.0.0/8): that is the MX node itself or no host at all; name the site's relay or mailbox server"
        ],
    ),
    Case(
        "mixed-transports",
        "model",
        "next hops of different transports",
        _domain(HEAD + "delivery:\n  nexthop: ['smtp:[a.example.org]', 'lmtp:[b.example.org]']\n" + RECIPIENTS),
        [
            f"{DOMAIN}:5:12: error[mixed-transports]: delivery.nexthop: all next hops of a domain must use the "
            "same transport (smtp or lmtp)"
        ],
    ),
    Case(
        "duplicate-nexthop",
        "model",
        "the same next hop twice",
        _domain(HEAD + "delivery:\n  nexthop: ['[a.example.org]:25', 'smtp:[a.example.org]']\n" + RECIPIENTS),
        [f"{DOMAIN}:5:12: error[duplicate-nexthop]: delivery.nexthop: a next hop is listed twice"],
    ),
    Case(
        "bad-network",
        "model",
        "a relay network with host bits set",
        _domain(VALID + "outbound_relays: [192.0.2.10/24]\n"),
        [
            f"{DOMAIN}:8:19: error[bad-network]: outbound_relays[0]: network '192.0.2.10/24' has host bits set; "
            "the network is 192.0.2.0/24, or write one address as 192.0.2.10"
        ],
    ),
    Case(
        "bad-network",
        "model",
        "every address (::/0) as a relay network",
        _domain(VALID + "outbound_relays: ['::/0']\n"),
        [
            f"{DOMAIN}:8:19: error[bad-network]: outbound_relays[0]: network '::/0' is every address; list the "
            "networks you mean"
        ],
    ),
    Case(
        "bad-network",
        "model",
        "a loopback address as a site relay (also unspecified, link-local, multicast)",
        _domain(VALID + "outbound_relays: [127.0.0.3]\n"),
        [
            f"{DOMAIN}:8:19: error[bad-network]: outbound_relays[0]: relay network '127.0.0.3' is loopback "
            "(127.0.0.0/8): that is the MX node itself or no host at all, never a site's relay"
        ],
    ),
    Case(
        "relay-network-too-large",
        "model",
        "a site relay network wider than a /24 (IPv4) or /64 (IPv6)",
        _domain(VALID + "outbound_relays: [10.0.0.0/8]\n"),
        [
            f"{DOMAIN}:8:19: error[relay-network-too-large]: outbound_relays[0]: relay network '10.0.0.0/8' has "
            "16,777,216 addresses; a site relay network may be at most a /24 (list the relay hosts themselves)"
        ],
    ),
    Case(
        "bad-dnsbl-site",
        "model",
        "a DNSBL reply filter with a backwards range",
        _domain(VALID),
        [
            "gateway.yaml:5:42: error[bad-dnsbl-site]: postscreen.dnsbl_sites[0].filter: DNSBL filter "
            "'127.0.0.[11..2]' is not an address pattern like '127.0.0.2' or '127.0.0.[2..11]' (numbers up to 255, "
            "ranges low..high, ';' between choices)"
        ],
        gateway=GATEWAY_HEAD + "postscreen:\n  dnsbl_sites:\n"
        "    - {domain: zen.spamhaus.org, filter: '127.0.0.[11..2]', weight: 2}\n",
    ),
    Case(
        "bad-dnsbl-threshold",
        "model",
        "a DNSBL threshold the weights can never reach",
        _domain(VALID),
        [
            "gateway.yaml:4:3: error[bad-dnsbl-threshold]: postscreen: dnsbl_threshold 5 can never be reached: "
            "the positive DNSBL weights add up to 3"
        ],
        gateway=GATEWAY_HEAD + "postscreen:\n  dnsbl_sites:\n    - {domain: zen.spamhaus.org, weight: 3}\n"
        "    - {domain: list.dnswl.org, weight: -2}\n  dnsbl_threshold: 5\n",
    ),
    Case(
        "duplicate-network",
        "model",
        "one network spelt twice in the postscreen access list",
        _domain(VALID),
        [
            "gateway.yaml:5:5: error[duplicate-network]: postscreen.access: '192.0.2.0/24' and "
            "'192.0.2.0/255.255.255.0' are the same network 192.0.2.0/24; list it once"
        ],
        gateway=GATEWAY_HEAD + "postscreen:\n  access:\n    192.0.2.0/24: reject\n"
        "    192.0.2.0/255.255.255.0: permit\n",
    ),
    Case(
        "bad-dn",
        "model",
        "an LDAP base DN that is not a plain DN",
        _domain(VALID),
        [
            "gateway.yaml:2:17: error[bad-dn]: ldap.base_dn: 'ou=mailgw;dc=org' is not a plain DN like "
            "'ou=mailgw,dc=example,dc=org'"
        ],
        gateway="mx_hosts: [mx1.gw.example.org]\nldap: {base_dn: 'ou=mailgw;dc=org'}\n",
    ),
    Case(
        "bad-dn",
        "model",
        "an LDAP base DN whose root entry is not a container",
        _domain(VALID),
        [
            "gateway.yaml:2:17: error[bad-dn]: ldap.base_dn: base DN 'CN=mailgw,dc=org' starts with 'CN='; the "
            "directory's root entry is an 'ou=', 'o=' or 'dc=' (like 'ou=mailgw,dc=example,dc=org')"
        ],
        gateway="mx_hosts: [mx1.gw.example.org]\nldap: {base_dn: 'CN=mailgw,dc=org'}\n",
    ),
    Case(
        "bad-dn",
        "model",
        "an LDAP base DN longer than the directory stores",
        _domain(VALID),
        [
            "gateway.yaml:2:17: error[bad-dn]: ldap.base_dn: base DN "
            "'ou=mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"
            "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"
            "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm,dc=org' has 250 characters; the directory stores at "
            "most 245"
        ],
        gateway="mx_hosts: [mx1.gw.example.org]\nldap: {base_dn: 'ou=" + "m" * 240 + ",dc=org'}\n",
    ),
    Case(
        "bad-path",
        "model",
        "a map directory that is not an absolute path",
        _domain(VALID),
        [
            "gateway.yaml:3:26: error[bad-path]: postfix.map_directory: 'etc/postfix' is not an absolute path of "
            "letters, digits, '.', '_', '-' and '/' (like '/etc/postfix/mailgw')"
        ],
        gateway="mx_hosts: [mx1.gw.example.org]\nldap: {base_dn: 'dc=org'}\npostfix: {map_directory: etc/postfix}\n",
    ),
    # --- the gateway's own LDAP server (docs/ldap.md) -----------------------------------
    Case(
        "bad-listen-address",
        "model",
        "an LDAP listen address that is every address of the node",
        _domain(VALID),
        [
            "gateway.yaml:2:57: error[bad-listen-address]: ldap.listen['mx1.gw.example.org'][0]: listen address "
            "'0.0.0.0' is not one unicast IP address of the node (like '192.0.2.11' or '2001:db8::11'); 127.0.0.1 "
            "and the local socket are always listened on"
        ],
        gateway="mx_hosts: [mx1.gw.example.org]\n"
        "ldap: {base_dn: 'dc=org', listen: {mx1.gw.example.org: ['0.0.0.0']}}\n",
    ),
    Case(
        "bad-ldap-setting",
        "model",
        "an LDAP size limit of no entries",
        _domain(VALID),
        [
            "gateway.yaml:2:39: error[bad-ldap-setting]: ldap.size_limit: size limit 0 is not a number of entries "
            "from 1 to 1000000"
        ],
        gateway="mx_hosts: [mx1.gw.example.org]\nldap: {base_dn: 'dc=org', size_limit: 0}\n",
    ),
    Case(
        "unknown-mx-host",
        "model",
        "LDAP listen addresses for a host that is not an MX host",
        _domain(VALID),
        [
            "gateway.yaml:2:7: error[unknown-mx-host]: ldap: listen names 'mx2.gw.example.org', which is not one "
            "of mx_hosts (mx1.gw.example.org)"
        ],
        gateway="mx_hosts: [mx1.gw.example.org]\n"
        "ldap: {base_dn: 'dc=org', listen: {mx2.gw.example.org: [192.0.2.12]}}\n",
    ),
    Case(
        "bad-plan-setting",
        "model",
        "a guard of the plan that is not a percentage",
        _domain(VALID),
        [
            "gateway.yaml:3:29: error[bad-plan-setting]: plan.max_removed_percent: 130 is not a whole percentage "
            "from 0 to 100"
        ],
        gateway=GATEWAY_HEAD + "plan: {max_removed_percent: 130}\n",
    ),
    # --- check: rules across values, files and domains -------------------------------
    # --- the filter policy (docs/filtering.md) ---------------------------------------
    Case(
        "bad-threshold",
        "model",
        "a spam threshold that is not a score",
        _domain(VALID + "filters:\n  inbound:\n    spam: {reject: high}\n"),
        [
            f"{DOMAIN}:10:20: error[bad-threshold]: filters.inbound.spam.reject: 'high' (text) is not a spam "
            "score: write a number above 0 and at most 100 with at most two decimals (like 6 or 7.5), or "
            "false to turn the action off"
        ],
    ),
    Case(
        "bad-subject",
        "model",
        "a subject template without '%s', or with what a UCL string or header cannot carry",
        _domain(VALID + "filters:\n  inbound:\n    spam: {subject: '[SPAM]'}\n"),
        [
            f"{DOMAIN}:10:21: error[bad-subject]: filters.inbound.spam.subject: subject template '[SPAM]' "
            "must contain '%s' (the original subject) exactly once (like '[SPAM] %s')"
        ],
    ),
    Case(
        "bad-subject",
        "model",
        "a subject template with Rspamd's template markers ('{=', '{%', '{#')",
        _domain(VALID + "filters:\n  inbound:\n    spam: {subject: '[{= 7*7 =}] %s'}\n"),
        [
            f"{DOMAIN}:10:21: error[bad-subject]: filters.inbound.spam.subject: subject template '[{{= 7*7 =}}] "
            f"%s' contains '{{'; use printable ASCII without '\"', '\\', '$', '{{' and '}}' (like '[SPAM] %s')"
        ],
    ),
    Case(
        "bad-retention",
        "model",
        "a quarantine retention that is not 1 to 3650 days",
        _domain(VALID + "filters:\n  inbound:\n    quarantine: {retention_days: 0}\n"),
        [
            f"{DOMAIN}:10:34: error[bad-retention]: filters.inbound.quarantine.retention_days: 0 is not a "
            "whole number of days from 1 to 3650"
        ],
    ),
    Case(
        "bad-sender",
        "model",
        "an allow or block list sender that is neither an address nor '@domain'",
        _domain(VALID + "filters:\n  inbound:\n    block: {senders: [spammer]}\n"),
        [
            f"{DOMAIN}:10:23: error[bad-sender]: filters.inbound.block.senders[0]: sender 'spammer' is "
            "neither an address like 'name@example.net' nor a domain like '@example.net': 'spammer' is not "
            "a mail address like 'name@example.net'"
        ],
    ),
    Case(
        "bad-network",
        "model",
        "an allow or block list network that covers too much",
        _domain(VALID + "filters:\n  inbound:\n    block: {networks: ['10.0.0.0/7']}\n"),
        [
            f"{DOMAIN}:10:24: error[bad-network]: filters.inbound.block.networks[0]: '10.0.0.0/7' covers too much "
            "of the Internet; the shortest prefix is /8 for IPv4"
        ],
    ),
    Case(
        "bad-url",
        "model",
        "a quarantine service URL that is not a plain https URL",
        _domain(VALID),
        [
            "gateway.yaml:3:19: error[bad-url]: quarantine.url: 'http://quarantine.example.org/api?user=x' "
            "is not an https URL like 'https://quarantine.example.org/api/messages' (no spaces, quotes, "
            "query, user or fragment)"
        ],
        gateway="mx_hosts: [mx1.gw.example.org]\nldap: {base_dn: 'dc=org'}\n"
        "quarantine: {url: 'http://quarantine.example.org/api?user=x'}\n",
    ),
    Case(
        "bad-listen",
        "model",
        "a portal release service that is not an IP address and port",
        _domain(VALID),
        [
            "gateway.yaml:4:20: error[bad-listen]: portal.release_service: 'localhost:10026' is not a listening "
            "address like '127.0.0.1:10026' or '[::1]:10026' (an IP address and a port)"
        ],
        gateway=GATEWAY_HEAD + "portal:\n  release_service: localhost:10026\n" + _PORTAL_REQUIRED,
    ),
    Case(
        "bad-client-id",
        "model",
        "an OIDC client id with a character outside the grammar",
        _domain(VALID),
        [
            "gateway.yaml:4:19: error[bad-client-id]: portal.oidc_client_id: 'mailgw quarantine' is not a client "
            "id or claim name (letters, digits, '.', '_', ':', '-'; at most 128)"
        ],
        gateway=GATEWAY_HEAD
        + "portal:\n  oidc_client_id: mailgw quarantine\n"
        + _PORTAL_REQUIRED.replace("  oidc_client_id: mailgw-quarantine\n", ""),
    ),
    Case(
        "bad-oidc-scope",
        "model",
        "an OIDC scope with a character outside the grammar",
        _domain(VALID),
        [
            "gateway.yaml:4:25: error[bad-oidc-scope]: portal.oidc_scopes[1]: 'eduperson entitlement' is not an "
            "OpenID Connect scope (letters, digits, '.', '_', ':', '-'; at most 128)"
        ],
        gateway=GATEWAY_HEAD + "portal:\n  oidc_scopes: [openid, eduperson entitlement]\n" + _PORTAL_REQUIRED,
    ),
    Case(
        "bad-oidc-scopes",
        "model",
        "OIDC scopes without 'openid' (plain OAuth 2.0: no ID token, no uid claim)",
        _domain(VALID),
        [
            "gateway.yaml:4:3: error[bad-oidc-scopes]: portal: oidc_scopes [profile, uid] must name 'openid', and "
            "each scope once"
        ],
        gateway=GATEWAY_HEAD + "portal:\n  oidc_scopes: [profile, uid]\n" + _PORTAL_REQUIRED,
    ),
    Case(
        "bad-ldap-uri",
        "model",
        "a portal LDAP URI that is not ldap://, ldaps:// or ldapi://",
        _domain(VALID),
        [
            "gateway.yaml:4:13: error[bad-ldap-uri]: portal.ldap_uri: 'http://ldap.example.org' is not an LDAP "
            "server URI like 'ldap://127.0.0.1', 'ldaps://ldap.example.org:636' or 'ldapi://%2Frun%2Fslapd%2Fldapi'"
        ],
        gateway=GATEWAY_HEAD + "portal:\n  ldap_uri: http://ldap.example.org\n" + _PORTAL_REQUIRED,
    ),
    Case(
        "file-name-mismatch",
        "check",
        "the file name is not the domain",
        {"domains/tifpa.yaml": VALID},
        [
            "domains/tifpa.yaml:1:9: error[file-name-mismatch]: domain 'tifpa.example.org' is declared in "
            "'domains/tifpa.yaml'; the file must be named domains/tifpa.example.org.yaml"
        ],
    ),
    Case(
        "duplicate-domain",
        "check",
        "one domain in two files (A-label and Unicode spelling)",
        {
            "domains/città.example.org.yaml": VALID.replace("tifpa.example.org\n", "città.example.org\n", 1),
            "domains/xn--citt-3na.example.org.yaml": VALID.replace(
                "tifpa.example.org\n", "xn--citt-3na.example.org\n", 1
            ),
        },
        [
            "domains/xn--citt-3na.example.org.yaml:1:9: error[duplicate-domain]: domain 'xn--citt-3na.example.org' "
            "is already declared at domains/città.example.org.yaml:1:9"
        ],
    ),
    Case(
        "duplicate-address",
        "check",
        "one address twice, in another case and as an external alias",
        _domain(VALID + "  Mario.Rossi: mrossi\nexternal_aliases:\n  MARIO.ROSSI: [m@example.net]\n"),
        [
            f"{DOMAIN}:8:3: error[duplicate-address]: address 'mario.rossi@tifpa.example.org' is already declared "
            f"at {DOMAIN}:7:3",
            f"{DOMAIN}:10:3: error[duplicate-address]: address 'mario.rossi@tifpa.example.org' is already "
            f"declared at {DOMAIN}:7:3",
        ],
    ),
    Case(
        "empty-recipient-list",
        "check",
        "an exhaustive list with nobody on it",
        _domain(HEAD + DELIVERY + "recipient_check: list\n"),
        [
            f"{DOMAIN}:6:18: error[empty-recipient-list]: recipient_check is 'list' but no recipients or external "
            "aliases are declared, so the MX would reject all mail for the domain"
        ],
    ),
    Case(
        "nexthop-loop",
        "check",
        "a next hop that is one of the gateway's own MX hosts",
        _domain(HEAD + "delivery:\n  nexthop: '[MX1.gw.example.org]:25'\n" + RECIPIENTS),
        [
            f"{DOMAIN}:5:12: error[nexthop-loop]: next hop 'mx1.gw.example.org' is one of the gateway's own MX "
            "hosts; mail would loop"
        ],
    ),
    Case(
        "missing-postmaster",
        "check",
        "no postmaster in gateway.yaml, and no MX host name to take the default from",
        _domain(VALID),
        [
            "gateway.yaml:1:1: error[missing-postmaster]: no MX host is a host name to take the default "
            "postmaster from; declare postmaster: the gateway team's mailbox (like 'mail-gateway@example.org')"
        ],
        gateway="mx_hosts: [192.0.2.25]\nldap: {base_dn: 'dc=org'}\n",
    ),
    Case(
        "unknown-owner",
        "check",
        "a list owner that is nobody's uid",
        _domain(VALID + "  staff: {kind: list, owners: [mrossi, lbianchi]}\n"),
        [
            f"{DOMAIN}:8:40: error[unknown-owner]: owner 'lbianchi' of 'staff' is not the uid of any person or "
            "alias in the fleet"
        ],
    ),
    Case(
        "undeclared-alias-target",
        "check",
        "an alias into a served domain, to an address not declared there",
        _domain(VALID + "external_aliases:\n  g.verdi: [giuseppe.verdi@tifpa.example.org]\n"),
        [
            f"{DOMAIN}:9:13: error[undeclared-alias-target]: target 'giuseppe.verdi@tifpa.example.org' is in "
            "'tifpa.example.org', which this gateway serves, but is not declared there"
        ],
    ),
    Case(
        "undeclared-alias-target",
        "check",
        "the gateway's postmaster in a served domain, not declared there",
        _domain(VALID),
        [
            "gateway.yaml:3:13: error[undeclared-alias-target]: postmaster 'mail-team@tifpa.example.org' is in "
            "'tifpa.example.org', which this gateway serves, but is not declared there"
        ],
        gateway=GATEWAY_HEAD + "postmaster: mail-team@tifpa.example.org\n",
    ),
    Case(
        "alias-to-mx-host",
        "check",
        "an alias target at one of the gateway's own MX hosts, which receive no mail",
        _domain(VALID + "external_aliases:\n  g.verdi: [root@mx1.gw.example.org]\n"),
        [
            f"{DOMAIN}:9:13: error[alias-to-mx-host]: target 'root@mx1.gw.example.org' is at "
            "'mx1.gw.example.org', one of the gateway's own MX hosts, which receive no mail; name a mailbox "
            "elsewhere"
        ],
    ),
    Case(
        "alias-loop",
        "check",
        "external aliases that lead back to themselves",
        _domain(
            VALID + "external_aliases:\n  a: [b@tifpa.example.org]\n  b: [c@tifpa.example.org]\n"
            "  c: [a@tifpa.example.org]\n"
        ),
        [
            f"{DOMAIN}:9:3: error[alias-loop]: external aliases loop: a@tifpa.example.org -> b@tifpa.example.org "
            "-> c@tifpa.example.org -> a@tifpa.example.org"
        ],
    ),
    Case(
        "alias-loop",
        "check",
        "the gateway's postmaster is the postmaster@ an LMTP domain sends to the gateway's postmaster",
        _domain(HEAD + "delivery:\n  nexthop: 'lmtp:[mbox.tifpa.example.org]'\n" + RECIPIENTS),
        [
            "gateway.yaml:3:13: error[alias-loop]: external aliases loop: postmaster@tifpa.example.org -> "
            "postmaster@tifpa.example.org"
        ],
        gateway=GATEWAY_HEAD + "postmaster: postmaster@tifpa.example.org\n",
    ),
    Case(
        "threshold-order",
        "check",
        "spam thresholds that do not rise from header to subject to quarantine to reject",
        _domain(VALID + "filters:\n  inbound:\n    spam: {add_header: 8, rewrite_subject: 6}\n"),
        [
            f"{DOMAIN}:10:44: error[threshold-order]: filters.inbound.spam.rewrite_subject is 6, but it must "
            "be above add_header (8, set at domains/tifpa.example.org.yaml:10:24)"
        ],
    ),
    Case(
        "quarantine-disabled",
        "check",
        "an action that quarantines while the quarantine is off",
        _domain(VALID + "filters:\n  inbound:\n    virus: quarantine\n"),
        [
            f"{DOMAIN}:10:12: error[quarantine-disabled]: filters.inbound.virus is 'quarantine', but the "
            "quarantine is off for inbound mail (filters.inbound.quarantine.enabled: false, the built-in "
            "default); turn it on or choose another action"
        ],
    ),
    Case(
        "silent-drop",
        "check",
        "outbound spam refused without telling the sender or keeping it",
        _domain(VALID + "filters:\n  outbound:\n    notify_sender: false\n"),
        [
            f"{DOMAIN}:10:20: error[silent-drop]: filters.outbound.notify_sender is false and the outbound "
            "quarantine is off (the built-in default), so refused outbound mail would vanish; notify the "
            "sender or enable the outbound quarantine"
        ],
    ),
    Case(
        "no-quarantine-service",
        "check",
        "the quarantine is on but gateway.yaml names no quarantine service",
        _domain(VALID + "filters:\n  inbound:\n    quarantine: {enabled: true}\n"),
        [
            f"{DOMAIN}:10:27: error[no-quarantine-service]: filters.inbound.quarantine.enabled is true, but "
            "gateway.yaml declares no quarantine service to send the messages to (quarantine.url)"
        ],
    ),
    Case(
        "list-conflict",
        "check",
        "the same sender or network both allowed and blocked",
        _domain(
            VALID + "filters:\n  inbound:\n    allow: {senders: ['@example.net']}\n"
            "    block: {senders: ['@Example.NET']}\n"
        ),
        [
            f"{DOMAIN}:11:23: error[list-conflict]: '@example.net' is both blocked here and allowed at "
            "domains/tifpa.example.org.yaml:10:23; keep it in one list"
        ],
    ),
    Case(
        "subdomain-overlap",
        "check",
        "a subdomain declared by another site",
        {
            DOMAIN: VALID,
            "domains/lab.tifpa.example.org.yaml": VALID.replace(
                "tifpa.example.org\n", "lab.tifpa.example.org\n", 1
            ).replace("site: TIFPA", "site: LNF"),
        },
        [
            "domains/lab.tifpa.example.org.yaml:1:9: error[subdomain-overlap]: 'lab.tifpa.example.org' (site LNF) "
            "lies under 'tifpa.example.org' of site TIFPA, declared at domains/tifpa.example.org.yaml:1:9; "
            "a subdomain belongs to its parent's site"
        ],
    ),
    Case(
        "relay-network-claimed",
        "check",
        "one relay network claimed by two sites",
        {
            DOMAIN: VALID + "outbound_relays: [198.51.100.0/28]\n",
            "domains/lnf.example.org.yaml": VALID.replace("tifpa.example.org\n", "lnf.example.org\n", 1).replace(
                "site: TIFPA", "site: LNF"
            )
            + "outbound_relays: [198.51.100.10]\n",
        },
        [
            "domains/tifpa.example.org.yaml:8:19: error[relay-network-claimed]: relay network 198.51.100.0/28 of "
            "site TIFPA overlaps 198.51.100.10/32, claimed by site LNF at domains/lnf.example.org.yaml:8:19; a "
            "relay belongs to one site"
        ],
    ),
    Case(
        "relay-network-is-gateway",
        "check",
        "a relay network holding one of the gateway's own MX hosts",
        _domain(VALID + "outbound_relays: [192.0.2.0/28]\n"),
        [
            f"{DOMAIN}:8:19: error[relay-network-is-gateway]: relay network 192.0.2.0/28 holds 192.0.2.2, one of "
            "the gateway's own MX hosts; a site relay is a host of its site"
        ],
        gateway="mx_hosts: [mx1.gw.example.org, 192.0.2.2]\nldap: {base_dn: 'dc=org'}\n",
    ),
    Case(
        "directory-limit",
        "check",
        "a domain longer than the LDAP directory can name an entry by",
        {f"domains/{LONG_DOMAIN}.yaml": VALID.replace("tifpa.example.org\n", f"{LONG_DOMAIN}\n", 1)},
        [
            "domains/dddddddddddddddddddddddddddddddddddddddddddddddddddddddd.ddddddddddddddddddddddddddddddddddd"
            "ddddddddddddddddddddd.dddddddddddddddddddddddddddddddddddddddddddddddddddddddd.ddddddddddddddddddddd"
            "ddddddddddddddddddddddddddddddddddd.example.org.yaml:1:9: error[directory-limit]: domain "
            "'dddddddddddddddddddddddddddddddddddddddddddddddddddddddd.dddddddddddddddddddddddddddddddddddddddddd"
            "dddddddddddddd.dddddddddddddddddddddddddddddddddddddddddddddddddddddddd.dddddddddddddddddddddddddddd"
            "dddddddddddddddddddddddddddd.example.org' has 239 characters; the LDAP directory names a domain's "
            "entry 'associatedDomain=DOMAIN', at most 245 characters, so the domain may have at most 228"
        ],
    ),
    Case(
        "directory-limit",
        "check",
        "a list, role or external alias address longer than the LDAP directory can name an entry by",
        {
            f"domains/{LONGISH_DOMAIN}.yaml": VALID.replace("tifpa.example.org\n", f"{LONGISH_DOMAIN}\n", 1)
            + "  "
            + "r" * 40
            + ": {kind: role, owners: [mrossi]}\n"
        },
        [
            "domains/dddddddddddddddddddddddddddddddddddddddddddddddddd.ddddddddddddddddddddddddddddddddddddddddd"
            "ddddddddd.dddddddddddddddddddddddddddddddddddddddddddddddddd.ddddddddddddddddddddddddddddddddddddddd"
            "ddddddddddd.org.yaml:8:3: error[directory-limit]: address "
            "'rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr@dddddddddddddddddddddddddddddddddddddddddddddddddd.ddddddd"
            "ddddddddddddddddddddddddddddddddddddddddddd.dddddddddddddddddddddddddddddddddddddddddddddddddd.ddddd"
            "ddddddddddddddddddddddddddddddddddddddddddddd.org' is too long for the LDAP directory, which names "
            "a role address's entry 'cn=ADDRESS' in at most 245 characters"
        ],
    ),
    # --- domains whose addresses mailgw sync writes -----------------------------------------
    Case(
        "bad-source",
        "model",
        "a source that names no credentials",
        _domain(HEAD + DELIVERY + SOURCE.replace(TOKEN, "")),
        [
            f"{DOMAIN}:7:3: error[bad-source]: source: a source must authenticate: name client_certificate "
            "and client_key, or token_file, or both"
        ],
    ),
    Case(
        "source-owns-recipients",
        "load",
        "a domain with a source that also lists recipients",
        _domain(VALID + SOURCE),
        [
            f"{DOMAIN}:6:1: error[source-owns-recipients]: tifpa.example.org has a source: its recipients are "
            "written by 'mailgw sync' into sources/tifpa.example.org.yaml; remove this section, or remove 'source'"
        ],
    ),
    Case(
        "not-synced",
        "check",
        "a domain with a source that was never synced",
        _domain(HEAD + DELIVERY + "recipient_check: verify\n" + SOURCE),
        [
            f"{DOMAIN}:7:1: error[not-synced]: tifpa.example.org has a source but "
            "sources/tifpa.example.org.yaml does not exist yet; run 'mailgw sync tifpa.example.org' and commit "
            "the file with this change"
        ],
    ),
    Case(
        "synced-file-edited",
        "load",
        "a synced list edited by hand",
        {DOMAIN: HEAD + DELIVERY + SOURCE, SYNCED: _synced().replace("mario.rossi: mrossi", "mario.rossi: mrossi2")},
        [
            f"{SYNCED}:1:1: error[synced-file-edited]: {SYNCED} is not as 'mailgw sync' wrote it (its sha256 does "
            f"not match its content): change the list at its source ({SOURCE_URL}) and run 'mailgw sync "
            "tifpa.example.org'; a hand edit would be lost at the next sync"
        ],
    ),
    Case(
        "unclaimed-synced-file",
        "load",
        "a synced list whose domain has no source",
        {DOMAIN: VALID, SYNCED: _synced()},
        [
            f"{SYNCED}:1:1: error[unclaimed-synced-file]: no domain declares a source that 'mailgw sync' writes "
            f"into {SYNCED}; delete the file, or add the source back to its domain"
        ],
    ),
    # --- authenticated submission and the automation relay (docs/submission.md) -----------------------
    Case(
        "bad-fingerprint",
        "model",
        "a client certificate's fingerprint of the wrong length (SHA-256 has 32 bytes)",
        _domain(
            VALID
            + CERTIFICATES
            + f"    web-portal: {{fingerprint: '{':'.join(['AB'] * 20)}', sender_domains: [tifpa.example.org]}}\n"
        ),
        [
            f"{DOMAIN}:10:31: error[bad-fingerprint]: submission.client_certificates['web-portal'].fingerprint: "
            f"fingerprint '{':'.join(['AB'] * 20)}' has 20 bytes (that is SHA-1); a SHA-256 fingerprint has 32"
        ],
        gateway=SUBMISSION_GATEWAY,
    ),
    Case(
        "bad-client-name",
        "model",
        "a client certificate or automation client named with characters a name may not have",
        _domain(
            VALID
            + CERTIFICATES
            + f"    Web_Portal: {{fingerprint: '{FINGERPRINT}', sender_domains: [tifpa.example.org]}}\n"
        ),
        [
            f"{DOMAIN}:10:5: error[bad-client-name]: submission.client_certificates.Web_Portal: 'Web_Portal' is not a "
            "client name; use lower-case letters, digits and '-', at most 32 (like 'backup-server' or 'lab-alarms')"
        ],
        gateway=SUBMISSION_GATEWAY,
    ),
    Case(
        "automation-network-too-large",
        "model",
        "an automation client's network wider than a site relay's may be",
        _domain(
            VALID
            + AUTOMATION
            + "    lab-alarms: {networks: [198.51.0.0/16], destinations: [example.net], messages_per_hour: 60}\n"
        ),
        [
            f"{DOMAIN}:10:29: error[automation-network-too-large]: submission.automation_clients['lab-alarms']."
            "networks[0]: automation network '198.51.0.0/16' has 65,536 addresses; an automation client's network "
            "may be at most a /24, as a site relay's (list the devices themselves)"
        ],
        gateway=SUBMISSION_GATEWAY,
    ),
    Case(
        "bad-destination",
        "model",
        "an automation client's destination that is neither an address nor a domain",
        _domain(
            VALID + AUTOMATION + "    lab-alarms: {networks: [198.51.100.20], destinations: ['oncall at example.net'], "
            "messages_per_hour: 60}\n"
        ),
        [
            f"{DOMAIN}:10:60: error[bad-destination]: submission.automation_clients['lab-alarms'].destinations[0]: "
            "destination 'oncall at example.net' is neither an address like 'oncall@example.org' nor a domain like "
            "'example.org': domain 'oncall at example.net' contains a space; write a name like 'tifpa.example.org'"
        ],
        gateway=SUBMISSION_GATEWAY,
    ),
    Case(
        "bad-rate",
        "model",
        "a rate that is not a number of messages per hour",
        _domain(
            VALID
            + AUTOMATION
            + "    lab-alarms: {networks: [198.51.100.20], destinations: [example.net], messages_per_hour: 0}\n"
        ),
        [
            f"{DOMAIN}:10:93: error[bad-rate]: submission.automation_clients['lab-alarms'].messages_per_hour: 0 is not "
            "a number of messages per hour from 1 to 100000"
        ],
        gateway=SUBMISSION_GATEWAY,
    ),
    Case(
        "bad-port",
        "model",
        "a submission or automation service on port 25",
        _domain(VALID),
        [
            "gateway.yaml:5:18: error[bad-port]: submission.starttls_port: port 25 is postscreen's, the MX's own; "
            "give this service another port"
        ],
        gateway=GATEWAY_HEAD + "submission:\n" + AAI + "  starttls_port: 25\n",
    ),
    Case(
        "bad-submission-setting",
        "model",
        "a submission message size limit above the MX's own",
        _domain(VALID),
        [
            "gateway.yaml:5:23: error[bad-submission-setting]: submission.message_size_limit: message size limit "
            "52428800 is not a number of bytes from 1048576 to 10240000 (the MX's own limit)"
        ],
        gateway=GATEWAY_HEAD + "submission:\n" + AAI + "  message_size_limit: 52428800\n",
    ),
    Case(
        "bad-ldap-filter",
        "model",
        "an AAI search filter without the login name",
        _domain(VALID),
        [
            "gateway.yaml:4:105: error[bad-ldap-filter]: submission.aai_directory.user_filter: '(uid=*)' is not an "
            "LDAP filter like '(&(objectClass=inetOrgPerson)(uid=%u))': balanced parentheses around letters, digits "
            "and '=&|!*._:-', with '%u' (the login name) and no spaces"
        ],
        gateway=GATEWAY_HEAD + "submission:\n" + AAI.replace("}", ", user_filter: '(uid=*)'}"),
    ),
    Case(
        "bad-dn",
        "model",
        "an AAI bind template that does not name the login",
        _domain(VALID),
        [
            "gateway.yaml:4:107: error[bad-dn]: submission.aai_directory.bind_template: 'uid=mrossi,ou=people,dc=aai,"
            "dc=org' is not a bind DN template like 'uid=%u,ou=people,dc=example,dc=org' (the login name as the "
            "value of its first part, then a plain DN)"
        ],
        gateway=GATEWAY_HEAD
        + "submission:\n"
        + AAI.replace("}", ", bind_template: 'uid=mrossi,ou=people,dc=aai,dc=org'}"),
    ),
    Case(
        "bad-aai-directory",
        "model",
        "AAI directory servers of two kinds",
        _domain(VALID),
        [
            "gateway.yaml:4:18: error[bad-aai-directory]: submission.aai_directory: the uris mix ldap://, ldaps://; "
            "list servers of one kind (Dovecot uses StartTLS for all of them or none)"
        ],
        gateway=GATEWAY_HEAD
        + "submission:\n"
        + AAI.replace("'ldaps://ldap.aai.example.org'", "'ldaps://a.aai.example.org', 'ldap://b.aai.example.org'"),
    ),
    Case(
        "duplicate-port",
        "model",
        "two submission or automation services on one port",
        _domain(VALID),
        [
            "gateway.yaml:4:3: error[duplicate-port]: submission: port 587 is given to two services; each service "
            "has its own"
        ],
        gateway=GATEWAY_HEAD + "submission:\n" + AAI + "  automation_services: [{port: 587, messages_per_hour: 60}]\n",
    ),
    Case(
        "duplicate-rate",
        "model",
        "two automation services with the same rate",
        _domain(VALID),
        [
            "gateway.yaml:4:3: error[duplicate-rate]: submission: two automation services have the rate 60 messages "
            "per hour; one service per rate"
        ],
        gateway=GATEWAY_HEAD
        + "submission:\n"
        + AAI
        + "  automation_services: [{port: 2525, messages_per_hour: 60}, {port: 2526, messages_per_hour: 60}]\n",
    ),
    Case(
        "no-submission-service",
        "check",
        "client certificates or automation clients without the gateway's submission service",
        _domain(
            VALID
            + AUTOMATION
            + "    lab-alarms: {networks: [198.51.100.20], destinations: [example.net], messages_per_hour: 60}\n"
        ),
        [
            f"{DOMAIN}:8:1: error[no-submission-service]: this domain declares client certificates or automation "
            "clients, but gateway.yaml declares no submission service (submission:) for them to use"
        ],
    ),
    Case(
        "unknown-automation-rate",
        "check",
        "an automation client's rate that no automation service has",
        _domain(
            VALID
            + AUTOMATION
            + "    lab-alarms: {networks: [198.51.100.20], destinations: [example.net], messages_per_hour: 100}\n"
        ),
        [
            f"{DOMAIN}:10:93: error[unknown-automation-rate]: automation client 'lab-alarms': no automation service "
            "of gateway.yaml has the rate 100 messages per hour (the rates offered: 60)"
        ],
        gateway=SUBMISSION_GATEWAY,
    ),
    Case(
        "certificate-domain",
        "check",
        "a client certificate bound to a domain of another site",
        {
            DOMAIN: VALID + CERTIFICATES + f"    web-portal: {{fingerprint: '{FINGERPRINT}', sender_domains: "
            "[tifpa.example.org, lnf.example.org]}\n",
            "domains/lnf.example.org.yaml": VALID.replace("tifpa.example.org\n", "lnf.example.org\n", 1).replace(
                "site: TIFPA", "site: LNF"
            ),
        },
        [
            f"{DOMAIN}:10:166: error[certificate-domain]: client certificate 'web-portal' may not send as "
            "'lnf.example.org': it is a domain of site LNF, not of site TIFPA"
        ],
        gateway=SUBMISSION_GATEWAY,
    ),
    Case(
        "duplicate-certificate",
        "check",
        "one certificate declared twice (in any spelling of its fingerprint)",
        _domain(
            VALID
            + CERTIFICATES
            + f"    web-portal: {{fingerprint: '{FINGERPRINT}', sender_domains: [tifpa.example.org]}}\n"
            f"    backup: {{fingerprint: '{'ab' * 32}', sender_domains: [tifpa.example.org]}}\n"
        ),
        [
            f"{DOMAIN}:11:27: error[duplicate-certificate]: client certificate 'backup' has the fingerprint of "
            "'web-portal', declared at domains/tifpa.example.org.yaml:10:31; one certificate, one declaration"
        ],
        gateway=SUBMISSION_GATEWAY,
    ),
    Case(
        "automation-network-claimed",
        "check",
        "networks of two automation clients that overlap",
        _domain(
            VALID + AUTOMATION + "    lab-alarms: {networks: [198.51.100.16/28], destinations: [example.net], "
            "messages_per_hour: 60}\n    ups: {networks: [198.51.100.20], destinations: [example.net], "
            "messages_per_hour: 60}\n"
        ),
        [
            f"{DOMAIN}:11:22: error[automation-network-claimed]: network 198.51.100.20/32 of automation client 'ups' "
            "overlaps 198.51.100.16/28 of automation client 'lab-alarms' at domains/tifpa.example.org.yaml:10:29; an "
            "address belongs to one client"
        ],
        gateway=SUBMISSION_GATEWAY,
    ),
    Case(
        "automation-network-is-gateway",
        "check",
        "an automation network holding one of the gateway's own MX hosts",
        _domain(
            VALID
            + AUTOMATION
            + "    lab-alarms: {networks: [192.0.2.0/28], destinations: [example.net], messages_per_hour: 60}\n"
        ),
        [
            f"{DOMAIN}:10:29: error[automation-network-is-gateway]: network 192.0.2.0/28 of automation client "
            "'lab-alarms' holds 192.0.2.2, one of the gateway's own MX hosts"
        ],
        gateway=SUBMISSION_GATEWAY.replace("[mx1.gw.example.org]", "[mx1.gw.example.org, 192.0.2.2]"),
    ),
    Case(
        "undeclared-destination",
        "check",
        "an automation destination in a served domain that is not declared there",
        _domain(
            VALID
            + AUTOMATION
            + "    lab-alarms: {networks: [198.51.100.20], destinations: [alarms@tifpa.example.org], "
            "messages_per_hour: 60}\n"
        ),
        [
            f"{DOMAIN}:10:60: error[undeclared-destination]: destination 'alarms@tifpa.example.org' of automation "
            "client 'lab-alarms' is in 'tifpa.example.org', which this gateway serves, but is not declared there"
        ],
        gateway=SUBMISSION_GATEWAY,
    ),
    Case(
        "port-taken",
        "check",
        "a submission or automation service on the port of another service of the node",
        _domain(VALID),
        ["gateway.yaml:5:32: error[port-taken]: port 389 is already the port of the LDAP server (ldap.port)"],
        gateway=GATEWAY_HEAD + "submission:\n" + AAI + "  automation_services: [{port: 389, messages_per_hour: 60}]\n",
    ),
    # --- DKIM keys, the DNS records, forwarded mail (docs/dns.md) ---------------------
    Case(
        "bad-dkim-selector",
        "model",
        "a selector that is not one lower-case DNS label",
        _domain(VALID + _dkim(f"name: Gw2025, public_key: {DKIM_RSA}")),
        [
            f"{DOMAIN}:10:14: error[bad-dkim-selector]: dkim.selectors[0].name: selector 'Gw2025' is not one "
            "lower-case DNS label; use lower-case letters, digits and '-', at most 63 (like 'mailgw2025a')"
        ],
    ),
    Case(
        "bad-dkim-key",
        "model",
        "a public key that is not base64",
        _domain(VALID + _dkim("name: gw2025, public_key: 'p=MIIBIjANBgkq'")),
        [
            f"{DOMAIN}:10:34: error[bad-dkim-key]: dkim.selectors[0].public_key: public key is not base64; "
            "write the p= value of the record as 'mailgw dkim' wrote it (base64, one line)"
        ],
    ),
    Case(
        "bad-dkim-key",
        "model",
        "an RSA key shorter than 2048 bits",
        _domain(VALID + _dkim(f"name: gw2025, public_key: {DKIM_RSA_1024}")),
        [
            f"{DOMAIN}:10:34: error[bad-dkim-key]: dkim.selectors[0].public_key: public key has 1024 bits; an "
            "RSA DKIM key has 2048 to 4096"
        ],
    ),
    Case(
        "bad-dkim-key",
        "model",
        "a key of another kind than its algorithm says",
        _domain(VALID + _dkim(f"name: gw2025, algorithm: rsa, public_key: {DKIM_EC}")),
        [
            f"{DOMAIN}:10:50: error[bad-dkim-key]: dkim.selectors[0].public_key: public key is not an RSA "
            "key; with algorithm 'rsa' the key must be RSA"
        ],
    ),
    Case(
        "bad-dkim-key",
        "model",
        "an Ed25519 key that is not 32 bytes",
        _domain(VALID + _dkim(f"name: gw2025, algorithm: ed25519, public_key: {DKIM_RSA_1024}")),
        [
            f"{DOMAIN}:10:54: error[bad-dkim-key]: dkim.selectors[0].public_key: public key is 162 bytes "
            "long; an Ed25519 key (RFC 8463) is 32"
        ],
    ),
    Case(
        "bad-address",
        "model",
        "a DMARC report address written as a URI",
        _domain(VALID + "dmarc: {policy: reject, reports: ['mailto:dmarc@tifpa.example.org']}\n"),
        [
            f"{DOMAIN}:8:35: error[bad-address]: dmarc.reports[0]: 'mailto:dmarc@tifpa.example.org' is not a "
            "usable mail address: local part 'mailto:dmarc' contains ':'; use letters, digits, '.', '_', '-' "
            "or '+', dots only between characters, at most 64 (like 'mario.rossi')"
        ],
    ),
    Case(
        "invalid-choice",
        "model",
        "a DMARC policy RFC 7489 does not have",
        _domain(VALID + "dmarc: {policy: block}\n"),
        [f"{DOMAIN}:8:17: error[invalid-choice]: dmarc.policy: 'block' is not one of 'none', 'quarantine' or 'reject'"],
    ),
    Case(
        "duplicate-selector",
        "check",
        "two keys of one domain with the same selector",
        _domain(
            VALID
            + _dkim(f"name: gw2025, public_key: {DKIM_RSA}", f"name: gw2025, public_key: {DKIM_RSA}, signing: false")
        ),
        [
            f"{DOMAIN}:11:14: error[duplicate-selector]: selector 'gw2025' is already declared at "
            "domains/tifpa.example.org.yaml:10:14"
        ],
    ),
    Case(
        "two-signing-keys",
        "check",
        "two keys of one algorithm that both sign (a rotation needs signing: false on one)",
        _domain(VALID + _dkim(f"name: old, public_key: {DKIM_RSA}", f"name: new, public_key: {DKIM_RSA}")),
        [
            f"{DOMAIN}:11:7: error[two-signing-keys]: selectors 'old' and 'new' both sign with rsa; during a "
            "rotation give the key that does not sign yet (or any more) 'signing: false'"
        ],
    ),
    Case(
        "bad-node-address",
        "model",
        "an MX node address that is loopback",
        _domain(VALID),
        [
            "gateway.yaml:3:76: error[bad-node-address]: dns.mx_addresses['mx1.gw.example.org'][0]: "
            "'127.0.0.1' is not one unicast IP address of an MX node (like '192.0.2.11' or '2001:db8::11')"
        ],
        gateway=GATEWAY_HEAD + DNS.replace("192.0.2.11", "127.0.0.1"),
    ),
    Case(
        "bad-dns-setting",
        "model",
        "an MTA-STS max_age shorter than a day",
        _domain(VALID),
        [
            "gateway.yaml:3:124: error[bad-dns-setting]: dns.mta_sts.max_age: max_age 3600 is not a number "
            "of seconds from 86400 (a day) to 31557600 (a year)"
        ],
        gateway=GATEWAY_HEAD
        + DNS.replace("}}\n", "}, mta_sts: {mode: enforce, max_age: 3600, policy_host: mta-sts.gw.example.org}}\n"),
    ),
    Case(
        "unknown-mx-host",
        "check",
        "node addresses for a host that is not an MX host",
        _domain(VALID),
        [
            "gateway.yaml:3:89: error[unknown-mx-host]: mx_addresses names 'mx9.gw.example.org', which is "
            "not one of mx_hosts (mx1.gw.example.org)"
        ],
        gateway=GATEWAY_HEAD + DNS.replace("}}", ", mx9.gw.example.org: [192.0.2.19]}}"),
    ),
    Case(
        "mx-host-is-an-address",
        "check",
        "with a dns section, an MX host given as an address (an MX record names a host)",
        _domain(VALID),
        [
            "gateway.yaml:1:32: error[mx-host-is-an-address]: MX host '192.0.2.12' is an address, and an MX "
            "record names a host (RFC 5321 5.1); with a dns section every MX host is a host name"
        ],
        gateway=GATEWAY_HEAD.replace("[mx1.gw.example.org]", "[mx1.gw.example.org, 192.0.2.12]") + DNS,
    ),
    Case(
        "mx-host-without-address",
        "check",
        "an MX host without addresses for the gateway's SPF record",
        _domain(VALID),
        [
            "gateway.yaml:3:40: error[mx-host-without-address]: MX host 'mx2.gw.example.org' has no "
            "addresses in mx_addresses; the gateway's SPF record lists them all"
        ],
        gateway=GATEWAY_HEAD.replace("[mx1.gw.example.org]", "[mx1.gw.example.org, mx2.gw.example.org]") + DNS,
    ),
    Case(
        "srs-domain-served",
        "check",
        "an SRS domain that a site serves",
        _domain(VALID),
        [
            "gateway.yaml:3:26: error[srs-domain-served]: srs_domain 'tifpa.example.org' is a domain of site "
            "TIFPA (domains/tifpa.example.org.yaml:1:9); SRS addresses need a domain of the gateway's own"
        ],
        gateway=GATEWAY_HEAD + "forwarding: {srs_domain: tifpa.example.org}\n",
    ),
    Case(
        "duplicate-service",
        "check",
        "two of the node's own services on one port",
        _domain(VALID),
        [
            "gateway.yaml:3:51: error[duplicate-service]: forwarding.service 127.0.0.1:10001 is also "
            "forwarding.srs_forward_lookup; each service needs a port of its own"
        ],
        gateway=GATEWAY_HEAD + "forwarding: {srs_domain: gw.example.org, service: '127.0.0.1:10001'}\n",
    ),
    Case(
        "bad-listen",
        "model",
        "a forwarding service that is not on loopback",
        _domain(VALID),
        [
            "gateway.yaml:3:51: error[bad-listen]: forwarding.service: '192.0.2.11:10027' is not on "
            "loopback; the node's own services listen on 127.0.0.1 or ::1 only"
        ],
        gateway=GATEWAY_HEAD + "forwarding: {srs_domain: gw.example.org, service: '192.0.2.11:10027'}\n",
    ),
]


# --- the national alias domain and capture-and-notify (docs/national-aliases.md, docs/site-admins.md) ---

NATIONAL_GATEWAY = GATEWAY_HEAD + "national: {domain: example.it}\n"
NATIONAL = "domains/example.it.yaml"
NATIONAL_HEAD = 'domain: example.it\nsite: AC\nadmins: ["@example/mail-gateway"]\n'
NATIONAL_HEAD += 'delivery: {nexthop: "smtp:[smtp.ac.example.it]:25"}\n'
NATIONAL_VALID = NATIONAL_HEAD + "recipients:\n  presidenza: {kind: role, owners: [mrossi]}\n"
LEDGER = "national/aliases.yaml"
CHOICES = "national/choices.yaml"
NAMED = HEAD + DELIVERY + 'recipients:\n  mario.rossi: {uid: mrossi, name: "Mario Rossi"}\n'
CAPTURE = (
    "capture:\n  addresses: [mario.rossi]\n  destination: archivio@example.net\n  notify: [segreteria@example.net]\n"
)
CASES += [
    Case(
        "bad-name",
        "model",
        "a name without a surname",
        _domain(HEAD + DELIVERY + 'recipients:\n  mario.rossi: {uid: mrossi, name: "Mario"}\n'),
        [
            "domains/tifpa.example.org.yaml:7:36: error[bad-name]: recipients['mario.rossi'].name: name "
            "'Mario' needs a given name and a surname ('Mario Rossi', or 'Rossi Bianchi, Anna' for "
            "'Surname, Given')",
        ],
    ),
    Case(
        "bad-name",
        "model",
        "a name with a digit",
        _domain(HEAD + DELIVERY + 'recipients:\n  mario.rossi: {uid: mrossi, name: "Mario Rossi 2"}\n'),
        [
            "domains/tifpa.example.org.yaml:7:36: error[bad-name]: recipients['mario.rossi'].name: name "
            "'Mario Rossi 2' contains '2' (U+0032); write letters, spaces, apostrophes, '-' and '.'",
        ],
    ),
    Case(
        "name-conflict",
        "check",
        "one person, two names",
        _domain(NAMED + '  m.rossi: {kind: person, uid: mrossi, name: "Marco Rossi"}\n'),
        [
            "domains/tifpa.example.org.yaml:8:46: error[name-conflict]: mrossi is named 'Mario Rossi' at "
            "domains/tifpa.example.org.yaml:7:36; a person has one name (write it once, or the same "
            "everywhere)",
        ],
    ),
    Case(
        "national-domain-undeclared",
        "check",
        "gateway.yaml names a national domain without a file",
        _domain(VALID),
        [
            "gateway.yaml:3:20: error[national-domain-undeclared]: the national domain 'example.it' has no "
            "file: add domains/example.it.yaml with its site, its next hop (where its own roles, lists, "
            "postmaster@ and abuse@ go) and recipient_check: list",
        ],
        gateway=NATIONAL_GATEWAY,
    ),
    Case(
        "national-own-address",
        "check",
        "a person's address in the national domain's own file",
        {DOMAIN: VALID, NATIONAL: NATIONAL_VALID + "  mario.rossi: mrossi\n"},
        [
            "domains/example.it.yaml:7:3: error[national-own-address]: 'mario.rossi' is a person address in "
            "the national domain, whose people's addresses are generated (docs/national-aliases.md); "
            "declare roles, lists and external aliases here",
        ],
        gateway=NATIONAL_GATEWAY,
    ),
    Case(
        "national-verify",
        "check",
        "a national domain whose site would be asked",
        {DOMAIN: VALID, NATIONAL: NATIONAL_VALID + "recipient_check: verify\n"},
        [
            "domains/example.it.yaml:7:18: error[national-verify]: the national domain knows every address "
            "it has (its own and the generated aliases): recipient_check must be 'list'",
        ],
        gateway=NATIONAL_GATEWAY,
    ),
    Case(
        "national-source",
        "check",
        "a national domain with a site's list",
        {DOMAIN: VALID, NATIONAL: NATIONAL_HEAD + SOURCE},
        [
            "domains/example.it.yaml:5:1: error[national-source]: the national domain's addresses are its "
            "own roles and lists and the generated aliases; it cannot have a source",
            "domains/example.it.yaml:5:1: error[not-synced]: example.it has a source but "
            "sources/example.it.yaml does not exist yet; run 'mailgw sync example.it' and commit the file "
            "with this change",
        ],
        gateway=NATIONAL_GATEWAY,
    ),
    Case(
        "national-not-declared",
        "load",
        "the national domain's files, but no national domain",
        {DOMAIN: VALID, LEDGER: "aliases:\n  mrossi: [mrossi]\n"},
        [
            "national/aliases.yaml:1:1: error[national-not-declared]: national/aliases.yaml is for the national "
            "alias domain, but gateway.yaml names none (national: {domain: ...})",
        ],
    ),
    Case(
        "national-alias-twice",
        "check",
        "one alias given to two uids",
        {
            DOMAIN: VALID,
            NATIONAL: NATIONAL_VALID,
            LEDGER: "aliases:\n  mrossi: [mrossi, m.rossi]\n  mrossi2: [m.rossi]\n",
        },
        [
            "national/aliases.yaml:3:13: error[national-alias-twice]: alias 'm.rossi' is already given to "
            "mrossi; an alias belongs to one uid for good",
        ],
        gateway=NATIONAL_GATEWAY,
    ),
    Case(
        "national-alias-reserved",
        "check",
        "an RFC 2142 name given as an alias",
        {DOMAIN: VALID, NATIONAL: NATIONAL_VALID, LEDGER: "aliases:\n  mrossi: [mrossi, info]\n"},
        [
            "national/aliases.yaml:2:20: error[national-alias-reserved]: 'info' is an RFC 2142 or system "
            "mailbox name; it is never anybody's alias",
        ],
        gateway=NATIONAL_GATEWAY,
    ),
    Case(
        "national-alias-reserved",
        "check",
        "the national domain declares an address that is somebody's alias",
        {
            DOMAIN: VALID,
            NATIONAL: NATIONAL_VALID + "  mrossi: {kind: list, owners: [mrossi]}\n",
            LEDGER: "aliases:\n  mrossi: [mrossi]\n",
        },
        [
            "domains/example.it.yaml:7:3: error[national-alias-reserved]: 'mrossi' is the national alias of "
            "mrossi (national/aliases.yaml); an alias is never taken back: choose another name for this "
            "address",
        ],
        gateway=NATIONAL_GATEWAY,
    ),
    Case(
        "national-choice",
        "check",
        "a chosen alias the ledger does not give the person",
        {
            DOMAIN: NAMED,
            NATIONAL: NATIONAL_VALID,
            LEDGER: "aliases:\n  mrossi: [mrossi, mario.rossi]\n",
            CHOICES: "choices:\n  mrossi: {alias: m.rossi}\n",
        },
        [
            "national/choices.yaml:2:19: error[national-choice]: mrossi's chosen alias 'm.rossi' is not "
            "given to mrossi in national/aliases.yaml; choose with 'mailgw national choose mrossi --alias "
            "FORM' (or the portal), which checks the form is free",
        ],
        gateway=NATIONAL_GATEWAY,
    ),
    Case(
        "capture-undeclared",
        "check",
        "a captured address the domain does not have",
        _domain(VALID + CAPTURE.replace("[mario.rossi]", "[direttore]")),
        [
            "domains/tifpa.example.org.yaml:9:15: error[capture-undeclared]: 'direttore' is not an address "
            "of tifpa.example.org: capture declared addresses only",
        ],
    ),
    Case(
        "capture-twice",
        "check",
        "an address captured twice",
        _domain(VALID + CAPTURE.replace("[mario.rossi]", "[mario.rossi, Mario.Rossi]")),
        [
            "domains/tifpa.example.org.yaml:9:28: error[capture-twice]: 'Mario.Rossi' is listed twice",
        ],
    ),
    Case(
        "capture-loop",
        "check",
        "the capture's copy would be captured again",
        _domain(VALID + CAPTURE.replace("archivio@example.net", "mario.rossi@tifpa.example.org")),
        [
            "domains/tifpa.example.org.yaml:10:16: error[capture-loop]: the destination "
            "'mario.rossi@tifpa.example.org' is captured itself (its mail reaches "
            "mario.rossi@tifpa.example.org): the capture's own mail would be captured again",
        ],
    ),
    Case(
        "capture-to-mx-host",
        "check",
        "a person told at an MX host",
        _domain(VALID + CAPTURE.replace("segreteria@example.net", "segreteria@mx1.gw.example.org")),
        [
            "domains/tifpa.example.org.yaml:11:12: error[capture-to-mx-host]: the person told "
            "'segreteria@mx1.gw.example.org' is at one of the gateway's own MX hosts",
        ],
    ),
    Case(
        "undeclared-capture-target",
        "check",
        "a capture's destination not declared in its served domain",
        _domain(VALID + CAPTURE.replace("archivio@example.net", "archivio@tifpa.example.org")),
        [
            "domains/tifpa.example.org.yaml:10:16: error[undeclared-capture-target]: the destination "
            "'archivio@tifpa.example.org' is in 'tifpa.example.org', which this gateway serves, but is not "
            "declared there",
        ],
    ),
]


# Notes: what a declaration should add, which does not stop a build (mailgw validate and plan print them).
_NATIONAL_FILES = {NATIONAL: NATIONAL_VALID}
NOTE_CASES = [
    Case(
        "national-no-name",
        "note",
        "people without a name get no name.surname alias",
        {**_NATIONAL_FILES, DOMAIN: VALID, LEDGER: "aliases:\n  mrossi: [mrossi]\n"},
        [
            "domains/tifpa.example.org.yaml:7:3: note[national-no-name]: 1 person(s) of tifpa.example.org "
            "have no name (mrossi), so no name.surname alias in the national domain: add it where the "
            "person is declared, like 'mario.rossi: {uid: mrossi, name: \"Mario Rossi\"}'",
        ],
        gateway=NATIONAL_GATEWAY,
    ),
    Case(
        "national-unassigned",
        "note",
        "people whose aliases 'mailgw national assign' has not given yet",
        {**_NATIONAL_FILES, DOMAIN: NAMED},
        [
            "national/aliases.yaml:1:1: note[national-unassigned]: 1 person(s) have national aliases still "
            "to be given (mrossi): run 'mailgw national assign' and commit national/aliases.yaml; until "
            "then they have none",
        ],
        gateway=NATIONAL_GATEWAY,
    ),
    Case(
        "national-name-unspellable",
        "note",
        "a name with no letter an address can spell",
        {
            **_NATIONAL_FILES,
            DOMAIN: NAMED.replace("Mario Rossi", "Σωκράτης Παππάς"),
            LEDGER: "aliases:\n  mrossi: [mrossi]\n",
        },
        [
            "national/aliases.yaml:1:1: note[national-name-unspellable]: the names of mrossi have no letter "
            "an address can spell (a-z once accents are taken off), so no name.surname alias; the gateway "
            "team can give one by hand in national/aliases.yaml and national/choices.yaml",
        ],
        gateway=NATIONAL_GATEWAY,
    ),
    Case(
        "national-choice-set-aside",
        "note",
        "a chosen primary address that is no longer the person's",
        {
            **_NATIONAL_FILES,
            DOMAIN: NAMED,
            LEDGER: "aliases:\n  mrossi: [mrossi, mario.rossi]\n",
            CHOICES: "choices:\n  mrossi: {primary: m.rossi@tifpa.example.org}\n",
        },
        [
            "national/choices.yaml:2:21: note[national-choice-set-aside]: mrossi's chosen primary address "
            "'m.rossi@tifpa.example.org' is not one of theirs any more; their national aliases go to "
            "mario.rossi@tifpa.example.org until they choose again",
        ],
        gateway=NATIONAL_GATEWAY,
    ),
]


@dataclass(frozen=True)
class SyncCase:
    """A site's list that mailgw sync refuses, and the finding it prints for the row."""

    code: str
    summary: str
    format: str
    body: str
    expected: str  # '{url}' stands for the list's URL


SYNC_CASES = [
    SyncCase(
        "wrong-domain",
        "a row for an address of another domain",
        "csv",
        CSV_HEADER + "mario.rossi@tifpa.example.org,person,mrossi,\ng.neri@lnf.example.org,person,gneri,\n",
        "{url}:3: error[wrong-domain]: address 'g.neri@lnf.example.org' is not in tifpa.example.org; this list is "
        "the source of tifpa.example.org only",
    ),
    SyncCase(
        "bad-row",
        "a row with a column too many",
        "csv",
        CSV_HEADER + "mario.rossi@tifpa.example.org,person,mrossi,,extra\n",
        "{url}:2: error[bad-row]: 5 column(s); the table 'address,kind,uid,owners' has 4",
    ),
    SyncCase(
        "bad-row",
        "a JSON entry with a field of another kind",
        "json",
        '{"recipients": [\n  {"address": "info@tifpa.example.org", "kind": "role", "uid": "mrossi"}\n]}\n',
        "{url}:2: error[bad-row]: unknown field 'uid'; an entry of this kind has address, kind, owners",
    ),
    SyncCase(
        "bad-list-format",
        "a CSV list without its header",
        "csv",
        "mario.rossi@tifpa.example.org,person,mrossi,\n",
        "{url}:1: error[bad-list-format]: expected the header 'address,kind,uid,owners' of a table, got "
        "'mario.rossi@tifpa.example.org,person,mrossi,'; tables are separated by one empty line "
        "(docs/sync-format.md)",
    ),
    SyncCase(
        "bad-list-format",
        "JSON that is cut short",
        "json",
        '{"recipients": [\n  {"address": "mario.rossi@tifpa.example.org", "kind": "person", "uid": "mrossi"},\n',
        "{url}:3: error[bad-list-format]: not JSON: Expecting value",
    ),
    SyncCase(
        "duplicate-address",
        "one address in two rows (case does not matter)",
        "csv",
        CSV_HEADER + "mario.rossi@tifpa.example.org,person,mrossi,\nMario.Rossi@tifpa.example.org,alias,mrossi,\n",
        "{url}:3: error[duplicate-address]: address 'mario.rossi@tifpa.example.org' is already listed at {url}:2",
    ),
]


def example_input(case: Case) -> str:
    """The input line the case's first finding points at, as it appears in the file."""
    path, line = case.expected[0].split(":")[:2]
    content = case.files.get(path)
    if content is None or case.code in ("file-too-large", "byte-order-mark", "unreadable-file", "missing-file"):
        return ""
    text = content.decode("utf-8", "backslashreplace") if isinstance(content, bytes) else content
    shown = text.splitlines()[int(line) - 1] if text.strip() else "(empty file)"
    shown = shown.encode("unicode_escape").decode("ascii").replace("\\\\", "\\")
    return shown if len(shown) <= 70 else shown[:67] + "..."


def markdown() -> str:
    """docs/errors.md: the table of every error code."""
    lines = [
        "# Error codes",
        "",
        "Generated from `tests/error_cases.py` by `python -m tests.error_cases > docs/errors.md`;",
        "each row is a test that feeds the input to `mailgw validate` and expects exactly this output.",
        "Every finding reads `path:line:col: error[code]: message`; `mailgw` exits 1 when there is any.",
        "",
        "| code | stage | what is wrong | example input line | the finding printed |",
        "|---|---|---|---|---|",
    ]
    for case in CASES:
        example = case.expected[0].replace("|", "\\|")
        shown = example_input(case).replace("|", "\\|")
        lines.append(
            f"| `{case.code}` | {case.stage} | {case.summary} | {f'`{shown}`' if shown else ''} | `{example}` |"
        )
    lines += [
        "",
        "## Notes",
        "",
        "A note says what a declaration should add; it never fails a command. `mailgw validate` and `mailgw plan`",
        "print them (under GitHub Actions also as notice annotations) as `path:line:col: note[code]: message`.",
        "",
        "| code | what to add | the note printed |",
        "|---|---|---|",
    ]
    for note in NOTE_CASES:
        lines.append(f"| `{note.code}` | {note.summary} | `{note.expected[0].replace('|', chr(92) + '|')}` |")
    lines += [
        "",
        "## mailgw sync: a site's list",
        "",
        "`mailgw sync` reads a site's list (docs/sync-format.md) row by row; a row that breaks a rule is named by",
        "`url:line`, and the domain is not synced. Problems that need the whole fleet (an owner who is nobody, an",
        "alias loop, ...) get the codes above, located at the row too. Each row is a test against a real HTTPS server.",
        "",
        "| code | format | what is wrong | example row | the finding printed |",
        "|---|---|---|---|---|",
    ]
    for sync_case in SYNC_CASES:
        url = SOURCE_URL.replace(".csv", f".{sync_case.format}")
        expected = sync_case.expected.format(url=url)
        row = sync_case.body.splitlines()[int(expected.removeprefix(url + ":").split(":")[0]) - 1 :][:1]
        shown = (row[0] if row else "(end of the list)").replace("|", "\\|")
        lines.append(
            f"| `{sync_case.code}` | {sync_case.format} | {sync_case.summary} | `{shown}` | "
            f"`{expected.replace('|', chr(92) + '|')}` |"
        )
    return "\n".join(lines + EXIT_CODES) + "\n"


# The exit codes of every verb (compiler/errors.py); tests/test_cli.py, test_build_io.py, test_build_concurrent.py
# and test_publish.py assert the lines shown.
EXIT_CODES = [
    "",
    "## Exit codes",
    "",
    "| code | meaning | what is printed (on standard error) |",
    "|---|---|---|",
    "| 0 | done | what was written or found, if anything |",
    "| 1 | the input is wrong: findings, a stale `out/`, `schema/` or CODEOWNERS (`--check`), an unsafe plan, "
    "a recipient `explain` refuses | every finding, or the diff, the plan's reasons, the refusal |",
    "| 2 | the command could not do what was asked; nothing was written, unless the line says otherwise | "
    "one line: `mailgw: unknown revision 'x'`, `mailgw: another mailgw is writing /srv/gw/out (...)`, "
    "`mailgw: cannot write /srv/gw/out: No space left on device (at /srv/gw/.out.staging-…/ldap/directory.ldif); "
    "/srv/gw/out is unchanged`, `mailgw: cannot write the output to /dev/full: No space left on device`, "
    "`mailgw: git could not stage out/: fatal: ...` |",
    "| 2 | a bug of mailgw | `mailgw: internal error: ...`: please report it, with the output of the command run "
    "again with `MAILGW_DEBUG=1` |",
]


if __name__ == "__main__":
    print(markdown(), end="")
