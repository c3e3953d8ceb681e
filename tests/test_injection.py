"""Every string field of the declarations, fed hostile text: refused cleanly, or read back exactly by every consumer.

The fields are found by walking schema/*.schema.json, so a field added to the
models is covered here without a change: every property of type string (and
every string choice), every list item, every value and every key of a mapping
with free keys. Each example puts one hostile string into one field of a valid
base fleet (BASE_GATEWAY, BASE_DOMAIN below) and runs `mailgw build`:

- refused: exit 1, exactly one finding, located in the file that holds the
  field, on one line of printable characters (controls, line separators, bidi
  and the like shown as escapes), and so is its GitHub annotation; out/ is not
  created.
- accepted: the real consumers read every artifact back, and what they read is
  what they read for the base fleet with the base value replaced by the new
  one, as written (itself, lower case, its A-label, a normalised network or
  path; or unchanged, when it means the base value): `postmap -s` of every
  map, `postconf -n` of main.cf, `slapadd` then `slapcat` of the directory,
  `rspamadm configdump` of the Rspamd sections mailgw writes, `doveconf -n` of
  Dovecot's configuration, and the lines of the cidr tables, Rspamd map files
  and Dovecot's LDAP settings, dnspython's reading of the zone snippets of
  out/dns and the MTA-STS policy, and the shell's reading of postsrsd's
  settings. An injected line, parameter, entry, record or template expansion
  shows up as a difference.

The strings: the base value with a piece put before, inside or after it, a
piece alone, or any short text. Pieces are the separators of every consumer's
syntax (map, main.cf, LDIF, UCL, workflow commands), Rspamd's template markers
and variables, controls and ESC, line and paragraph separators, bidi and other
format characters, letters that change under case folding or normalisation,
and over-long runs. Examples are derandomised: every run tries the same ones.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import ipaddress
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import dns.rdatatype
import dns.zone
import idna
import ldif
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from compiler.main import main
from tests import rspamd_env
from tests.conftest import REPO, program
from tests.mx_harness import age
from tests.slapd import Slapd

pytestmark = pytest.mark.needs("postmap", "postconf", "slapadd", "slapcat", "rspamadm", "doveconf")

GATEWAY_FILE = "gateway.yaml"
DOMAIN = "basedomain.example.org"
# The national alias domain's own file: fixed, its fields are tried in BASE_DOMAIN like any domain's; an
# external alias only, so that no uid tried elsewhere is named twice.
NATIONAL_DOMAIN = "nationalbase.example.net"
NATIONAL_FILE = f"""\
domain: {NATIONAL_DOMAIN}
site: SITENATIONAL
admins: ["@orgnational/mail"]
delivery: {{nexthop: "smtp:[relaynational.example.net]:25"}}
external_aliases:
  forwardnational: [targetnational@externalnational.example.net]
"""
DOMAIN_FILE = f"domains/{DOMAIN}.yaml"

# Every value a distinct token, found nowhere else in the artifacts, so that replacing it is exact.
# Two RSA public keys as DKIM records publish them (a domain's, the gateway's ARC key).
DKIM_KEY = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuH5sF8nq4JplXfD9u9ACjhbEi71wEhea4/yAxTn+vwITlraT4K0d447e"
    "FYX1STncDr+6glQ0Xd9q+4Sov3kVKm6lARJU8B+dAORNFkoxq/PEG0MtB5kNLhsMy2IomAQIaXNPmx4Aq1sqJDjogiZn2b7W6Du2"
    "LnercE0W+Y3zK36HczL9r1+e0HGb4+B4aPewfXSJ8DWVs0KQa4k3T/aPMzMWbrU6rP7aNthRjthnjzfwfcWcwVy8hOxqFPquKrz/"
    "O52jp3GVcagQTfQsvneoLhZV2l4aWIxx3WuraSUuRwcYZH+g816YWuOdM6ETGILigMq6wLXy74+NudHs8/DOlQIDAQAB"
)
ARC_KEY = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtcocauMG+JblcxVj+L0elMcqZEcf13rQWcKveO+YqTIwtA9kNhd/AFLK"
    "ukfg88g82d8vdqhrOWlonNjcGNAjxyEwB8oT0T2f39X29eQBprAH4issdK7yYLpiiqtCIT6NOhYibnln9mfrvNSewsnSYAZwDVDF"
    "a4gKyJCy6tRheGKry+7+tF6vnbcDR47NsgMRGpxr7ymUcTTXW06dwzBxi/DGKlMEtVe0rEDGZwJVIUVmFmDR2FvhkqP0qHeGHPSY"
    "c3HUN2o5zmTr4cQREw1G3r0wB2rcyXKXTefs/16Zy28h+w37QQQUI7BXvK/eMoLcHAvUPWOBCdlMUnqYLsQ51wIDAQAB"
)
BASE_GATEWAY: dict[str, Any] = {
    "mx_hosts": ["mxbase.gw.example.org"],
    "admins": ["@gwbase/gateway"],
    "postmaster": "gwteam@postmasterbase.example.net",
    "ldap": {
        "base_dn": "ou=dirbase,dc=example,dc=org",
        "listen": {"mxbase.gw.example.org": ["192.0.2.77"]},
        "config_directory": "/etc/ldap/configbase.d",
        "database_directory": "/var/lib/ldap/databasebase",
        "run_directory": "/run/runbase",
        "tls_certificate": "/etc/ldap/tls/certbase.pem",
        "tls_key": "/etc/ldap/tls/keybase.pem",
    },
    "postfix": {"map_directory": "/etc/postfix/mapsbase"},
    "postscreen": {
        "dnsbl_sites": [{"domain": "dnsblbase.example.net", "filter": "127.0.0.2", "weight": 2}],
        "dnsbl_threshold": 2,
        "dnsbl_action": "enforce",
        "denylist_action": "drop",
        "access": {"192.0.2.128/25": "reject"},
    },
    "quarantine": {"url": "https://quarantinebase.example.net/api"},
    "clamav": {"socket": "/run/clamav/socketbase.ctl"},
    "portal": {
        "public_url": "https://portalbase.example.net",
        "oidc_issuer": "https://issuerbase.example.net/oidc",
        "oidc_client_id": "clientbase",
        "oidc_client_secret_file": "/etc/mailgw/clientsecretbase",
        "uid_claim": "claimbase",
        "operators": ["uidowner"],
        "ldap_uri": "ldap://ldapbase.example.net",
        "ldap_reader_password_file": "/etc/mailgw/readerbase.password",
        "release_service": "127.0.0.1:10099",
        "release_clients": ["127.0.0.1"],
        "ingest_user": "ingestbase",
        "ingest_password_file": "/etc/mailgw/ingestbase.password",
        "ingest_rspamd_include": "/etc/rspamd/ingestbase.inc",
        "digest_sender": "digestbase@senderbase.example.net",
        "store_directory": "/var/lib/storebase",
        "database_url_file": "/etc/mailgw/databasebase.url",
        "session_secret_file": "/etc/mailgw/sessionbase.key",
        "repository": "/var/lib/repositorybase",
    },
    "national": {"domain": NATIONAL_DOMAIN},
    "capture": {"notice_service": "127.0.0.1:10098"},
    "submission": {
        "aai_directory": {
            "uris": ["ldaps://aaibase.example.net"],
            "base": "ou=aaibase,dc=example,dc=org",
            "user_filter": "(&(objectClass=filterbase)(uid=%u))",
            "search_dn": "cn=searchbase,dc=example,dc=org",
            "search_password_file": "/etc/mailgw/searchbase.conf",
            "ca_file": "/etc/ssl/aaicabase.pem",
        },
        "tls_chain_file": "/etc/postfix/tls/chainbase.pem",
        "auth_socket": "/run/socketbase/auth",
        "automation_services": [{"port": 2525, "messages_per_hour": 60}],
    },
    "filters": {
        "inbound": {
            "spam": {"add_header": 5, "rewrite_subject": 7, "subject": "[GWINBASE] %s", "reject": 15},
            "virus": "reject",
            "quarantine": {"enabled": True, "retention_days": 30},
        },
        "outbound": {"spam": {"reject": 10, "subject": "[GWOUTBASE] %s"}, "virus": "reject", "notify_sender": True},
    },
    "dkim": {"key_directory": "/var/lib/rspamd/keysbase"},
    "dns": {
        "spf_record": "_spfbase.gw.example.org",
        "mx_addresses": {"mxbase.gw.example.org": ["192.0.2.78", "2001:db8:78::78"]},
        "ttl": 3600,
        "mta_sts": {"mode": "enforce", "max_age": 604800, "policy_host": "policybase.example.net"},
        "tls_reports": ["tlsbase@tlsrptbase.example.net"],
    },
    "forwarding": {
        "srs_domain": "srsbase.example.net",
        "srs_secret_file": "/etc/postsrsd/secretbase",
        "srs_forward_lookup": "127.0.0.1:10091",
        "srs_reverse_lookup": "127.0.0.1:10092",
        "service": "127.0.0.1:10093",
        "arc": {"name": "arcbase", "public_key": ARC_KEY},
    },
}
BASE_DOMAIN: dict[str, Any] = {
    "domain": DOMAIN,
    "site": "SITEBASE",
    "admins": ["@orgbase/mail"],
    "role": "primary",
    "delivery": {"nexthop": ["smtp:[relaybase.example.net]:25"]},
    "recipient_check": "list",
    "outbound_relays": ["198.51.100.64/28"],
    "recipients": {
        "personbase": {"uid": "uidperson", "name": "Givenbase Surnamebase"},
        "aliasbase": {"kind": "alias", "uid": "uidalias"},
        "ownerbase": "uidowner",
        "rolebase": {"kind": "role", "owners": ["uidowner"]},
    },
    "external_aliases": {"forwardbase": ["targetbase@externalbase.example.net"]},
    "capture": {
        "addresses": ["ownerbase"],
        "destination": "capturebase@capturedestbase.example.net",
        "notify": ["noticebase@noticedestbase.example.net"],
    },
    "filters": {
        "inbound": {
            "spam": {"subject": "[DOMINBASE] %s"},
            "virus": "quarantine",
            "allow": {"senders": ["allowbase@sendersbase.example.net"], "networks": ["203.0.113.0/28"]},
            "block": {"senders": ["@blockbase.example.com"], "networks": ["203.0.113.128/28"]},
        },
        "outbound": {"spam": {"subject": "[DOMOUTBASE] %s"}},
    },
    "submission": {
        "client_certificates": {
            "certbase": {"fingerprint": ":".join(["10"] * 32), "sender_domains": [DOMAIN]},
        },
        "automation_clients": {
            "automationbase": {
                "networks": ["198.51.100.160/28"],
                "destinations": ["destinationbase@externalbase.example.net"],
                "messages_per_hour": 60,
            },
        },
    },
    "dkim": {"selectors": [{"name": "selectorbase", "algorithm": "rsa", "public_key": DKIM_KEY, "signing": True}]},
    "dmarc": {
        "policy": "reject",
        "subdomain_policy": "quarantine",
        "reports": ["ruabase@reportsbase.example.net"],
        "failure_reports": ["rufbase@failuresbase.example.net"],
    },
}

# A second domain, whose addresses `mailgw sync` writes into sources/: the home of the `source` fields.
SYNCED_DOMAIN = "syncbase.example.org"
BASE_SYNCED: dict[str, Any] = {
    "domain": SYNCED_DOMAIN,
    "site": "SITESYNC",
    "admins": ["@orgsync/mail"],
    "delivery": {"nexthop": ["smtp:[relaysync.example.net]:25"]},
    "source": {
        "url": "https://listbase.example.net/mailgw/list.csv",
        "format": "csv",
        "client_certificate": "/etc/mailgw-sync/certbase.pem",
        "client_key": "/etc/mailgw-sync/keybase.pem",
        "token_file": "/etc/mailgw-sync/tokenbase",
        "ca_file": "/etc/mailgw-sync/cabase.pem",
    },
}


def synced_file() -> str:
    """sources/syncbase.example.org.yaml as mailgw sync writes it: one person."""
    from compiler.declarations import Address
    from compiler.sync.synced import Validators, render

    person = Address(f"syncperson@{SYNCED_DOMAIN}", "person", "uidsynced", (), (), "syncperson")
    return render("https://listbase.example.net/mailgw/list.csv", [person], Validators())[0]


def base_document(field: Field) -> dict[str, Any]:
    """The declaration a field is tried in: gateway.yaml, the synced domain for `source`, else the base domain."""
    if field.file == GATEWAY_FILE:
        return BASE_GATEWAY
    return BASE_SYNCED if field.path[:1] == ("source",) else BASE_DOMAIN


def declarations(field: Field, changed: dict[str, Any]) -> tuple[dict, dict, dict]:
    """(gateway, domain, synced domain) with `changed` in the place of the field's own declaration."""
    document = base_document(field)
    if field.path == ("domain",):
        changed = renamed(changed, changed["domain"])
    return tuple(changed if base is document else base for base in (BASE_GATEWAY, BASE_DOMAIN, BASE_SYNCED))


def renamed(domain: dict, name: Any) -> dict:
    """The domain declaration under another name. Its certificates' sender_domains name the domain: left out,
    they mean the domain of the file, as renamed."""
    domain = copy.deepcopy(domain)
    domain["domain"] = name
    for certificate in domain["submission"]["client_certificates"].values():
        certificate.pop("sender_domains")
    return domain


# --- the fields, from the schemas -------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    file: str  # GATEWAY_FILE or DOMAIN_FILE
    path: tuple[str, ...]  # property names; '[]' the first list item, '*' a mapping's value, '<key>' its key
    choice: bool  # a fixed set of strings (an enum): only the refusal is checked

    def __str__(self) -> str:
        return f"{self.file}:{'.'.join(self.path)}"


def _walk(node: dict, definitions: dict, path: tuple[str, ...], found: dict, seen: tuple[str, ...] = ()) -> None:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            _walk(definitions[name], definitions, path, found, seen + (name,))
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in node.get(key, []):
            _walk(branch, definitions, path, found, seen)
    fixed = node["enum"] if "enum" in node else [node["const"]] if "const" in node else None
    if node.get("type") == "string" or (fixed and all(isinstance(value, str) for value in fixed)):
        found[path] = found.get(path, True) and fixed is not None  # a free string anywhere makes it free
    if node.get("type") == "object":
        for name, child in node.get("properties", {}).items():
            _walk(child, definitions, path + (name,), found, seen)
        if isinstance(node.get("additionalProperties"), dict):
            found.setdefault(path + ("<key>",), False)  # a mapping's keys are text too
            _walk(node["additionalProperties"], definitions, path + ("*",), found, seen)
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        _walk(node["items"], definitions, path + ("[]",), found, seen)


def schema_fields() -> list[Field]:
    fields = []
    for schema, file in (("gateway.schema.json", GATEWAY_FILE), ("domain.schema.json", DOMAIN_FILE)):
        document = json.loads((REPO / "schema" / schema).read_text())
        found: dict[tuple[str, ...], bool] = {}
        _walk(document, document.get("definitions", {}), (), found)
        fields += [Field(file, path, choice) for path, choice in sorted(found.items())]
    return fields


FIELDS = schema_fields()


def _entry(mapping: dict, rest: tuple[str, ...]) -> str:
    """The key of the first entry of `mapping` whose value has the shape the rest of the path asks for."""
    for key, value in mapping.items():
        if (
            (not rest and isinstance(value, str))
            or (rest[:1] == ("[]",) and isinstance(value, list))
            or (rest and isinstance(value, dict) and rest[0] in value)
        ):
            return key
    if not rest and mapping:
        return next(iter(mapping))
    raise AssertionError(f"the base fleet has no entry shaped like {rest}: add one to BASE_GATEWAY or BASE_DOMAIN")


def _put(node: Any, path: tuple[str, ...], value: str) -> Any:
    part, rest = path[0], path[1:]
    if part == "<key>":
        base = next(iter(node))
        node[value] = node.pop(base)
        return base
    if part in ("[]", "*"):
        key = 0 if part == "[]" else _entry(node, rest)
        if part == "[]" and not node:
            node.append({} if rest else value)
    else:
        key = part
        if rest and key not in node:
            node[key] = [] if rest[0] == "[]" else {}  # a field the base fleet leaves out: created
    if not rest:
        base = node[key] if part in ("[]", "*") else node.get(key)
        node[key] = value
        return base
    return _put(node[key], rest, value)


def put(document: dict, path: tuple[str, ...], value: str) -> tuple[dict, str]:
    """A copy of `document` with `value` at `path`, and the base value it replaces ('' when not text)."""
    document = copy.deepcopy(document)
    base = _put(document, path, value)
    if isinstance(base, list) and len(base) == 1:
        base = base[0]  # one string where the base has a list of one ('one or many')
    return document, base if isinstance(base, str) else ""


# --- the hostile strings ------------------------------------------------------------------------

PIECES = (
    # separators: postmap/access, main.cf, LDIF, UCL, Rspamd maps, cidr, CODEOWNERS, workflow commands
    *" \t\n\r\x0b\x0c#,:;=\"'`\\{}[]()<>|$%@/*+!&?~^.-_",
    "\r\n",
    "..",
    "\tREJECT",
    " OK",
    "\\\n",
    "$myhostname",
    "${config_directory}",
    ": ",
    ":: ",
    ":< ",
    "\ndn: cn=x\n",
    "\n-\n",
    '";',
    "};",
    '\n.include "/etc/passwd"\n',
    "\n::error file=x,line=1::forged",
    "%0A::warning::x",
    # Rspamd's template engine and UCL variables
    "{=",
    "=}",
    "{%",
    "%}",
    "{#",
    "#}",
    "{{",
    "}}",
    "{= 7*7 =}",
    "{% if true %}x{% endif %}",
    "{# x #}",
    "$CONFDIR",
    "${CONFDIR}",
    "%s",
    ".priority",
    # controls, ESC, line and paragraph separators, bidi and other format characters
    *(chr(c) for c in (0, 1, 7, 8, 0x1B, 0x7F, 0x80, 0x85, 0x9B)),
    "\x1b[31m",
    "\u2028",
    "\u2029",
    *"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c",
    *"\u200b\u200c\u200d\ufeff\u00ad\u00a0",
    # letters that change under case folding or normalisation
    *"\u212a\u212b\u0130\u0131\u017f\u00df\ufb01\u1e9e\u01c5\u03a3\u03c2\u2126",
    "e\u0301",
    "\u00e9",
    "\uff4d",
    "\u2460",
    "\u00b2",
    "A\u030a",
    "\U0001d400",
    # over-long runs
    "a" * 63,
    "a" * 64,
    "a" * 65,
    "a" * 250,
    "a" * 300,
    ("a" * 63 + ".") * 4,
)


@st.composite
def hostile(draw, base: str) -> str:
    piece = draw(st.sampled_from(PIECES))
    form = draw(st.integers(0, 5))
    if form == 0 or not base:
        return piece
    if form == 1:
        return piece + base
    if form == 2:
        return base + piece
    if form == 3:
        at = draw(st.integers(0, len(base)))
        return base[:at] + piece + base[at:]
    if form == 4:
        return draw(st.sampled_from([base.upper(), base.swapcase(), base + "." + base, base * 20]))
    return draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12))


# --- running the compiler -----------------------------------------------------------------------


@dataclass
class Build:
    code: int
    out: str
    err: str
    root: Path
    out_dir: Path


def domain_file(domain: dict) -> str:
    """domains/<the domain as written>.yaml: a file is named after its domain (the base name when it cannot be)."""
    name = domain.get("domain")
    if isinstance(name, str) and name and "/" not in name and "\0" not in name and len(name.encode()) <= 250:
        return f"domains/{name}.yaml"
    return DOMAIN_FILE


def synced_domain_file(domain: dict) -> str:
    name = domain.get("domain")
    return f"domains/{name}.yaml" if name == SYNCED_DOMAIN else f"domains/{SYNCED_DOMAIN}.yaml"


def build(work: Path, gateway: dict, domain: dict, synced: dict | None = None) -> Build:
    """`mailgw build --out` on a fresh repository holding these declarations, under GitHub Actions."""
    if work.exists():
        shutil.rmtree(work)
    root, out_dir = work / "repo", work / "out"
    (root / "domains").mkdir(parents=True)
    (root / "sources").mkdir()
    (root / "sources" / f"{SYNCED_DOMAIN}.yaml").write_text(synced_file())
    (root / "domains" / f"{NATIONAL_DOMAIN}.yaml").write_text(NATIONAL_FILE)
    synced = BASE_SYNCED if synced is None else synced
    for rel, data in ((GATEWAY_FILE, gateway), (domain_file(domain), domain), (synced_domain_file(synced), synced)):
        text = yaml.dump(data, Dumper=yaml.CSafeDumper, allow_unicode=True, sort_keys=False, width=1 << 20)
        (root / rel).write_text(text)
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, {"GITHUB_ACTIONS": "true"}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = main(["--root", str(root), "build", "--out", str(out_dir)])
    return Build(code, out.getvalue(), err.getvalue(), root, out_dir)


def finding_file(field: Field, domain: dict, synced: dict) -> str:
    """The file a refusal of `field` must point at."""
    if field.file == GATEWAY_FILE:
        return GATEWAY_FILE
    return synced_domain_file(synced) if base_document(field) is BASE_SYNCED else domain_file(domain)


FINDING = re.compile(r":(?P<line>[0-9]+):(?P<col>[0-9]+): error\[[a-z0-9-]+\]: .+")


def assert_refused_cleanly(result: Build, field: Field, file: str) -> None:
    assert result.code == 1, f"exit {result.code}:\n{result.err}"
    assert not result.out_dir.exists(), "a refused build writes no out/"
    lines = result.err.split("\n")
    assert lines[-1] == "", "output ends with a newline"
    lines = lines[:-1]
    assert all(line.isprintable() for line in lines), f"unescaped characters reach the terminal: {lines!r}"
    findings = [line for line in lines if not line.startswith("::") and not line.endswith(" error(s)")]
    annotations = [line for line in lines if line.startswith("::error file=")]
    assert lines == findings + annotations + ["1 error(s)"], f"exactly one finding and its annotation:\n{lines!r}"
    [finding] = findings
    assert finding.startswith(_shown(file) + ":"), f"located in the file of {field}: {finding}"
    match = FINDING.fullmatch(finding, len(_shown(file)))
    assert match, finding
    written = (result.root / file).read_text().split("\n")
    assert 1 <= int(match["line"]) <= len(written) and int(match["col"]) >= 1, finding
    [annotation] = annotations
    assert annotation.startswith(
        f"::error file={_property(_shown(file))},line={match['line']},col={match['col']},title="
    )


def _shown(text: str) -> str:
    """How a finding shows text: printable characters as they are, every other one as an escape."""
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "".join(
        c
        if c.isprintable()
        else named.get(c)
        or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
        for c in text
    )


def _property(text: str) -> str:
    """A workflow command's property value as the runner wants it escaped."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A").replace(":", "%3A").replace(",", "%2C")


# --- what the consumers read back ---------------------------------------------------------------

RSPAMD_SECTIONS = (
    "settings",
    "actions",
    "antivirus",
    "force_actions",
    "multimap",
    "milter_headers",
    "dkim_signing",
    "arc",
)
POLICY_NAME = re.compile(r"mailgw_(inbound|outbound)_[0-9a-f]{8}")
LDAP_OPERATIONAL = {
    "entryuuid",
    "entrycsn",
    "creatorsname",
    "createtimestamp",
    "modifiersname",
    "modifytimestamp",
    "structuralobjectclass",
    "entrydn",
    "subschemasubentry",
    "hassubordinates",
}


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120)


def read_postfix(out: Path, work: Path) -> list[str]:
    """postmap -s of every map, postconf -n of main.cf: one line per entry or parameter ('map: key<TAB>value')."""
    conf = work / "postfix-conf"
    conf.mkdir()
    shutil.copy(out / "postfix/main.cf", conf / "main.cf")
    shutil.copy(out / "postfix/master.cf", conf / "master.cf")
    age(conf / "main.cf", conf / "master.cf")
    read = []
    for source in sorted((out / "postfix").iterdir()):
        if "." in source.name:
            continue
        table = conf / source.name
        shutil.copy(source, table)
        done = _run(program("postmap"), "-c", str(conf), f"lmdb:{table}")
        assert done.returncode == 0 and done.stderr == "", f"postmap {source.name}: {done.stderr}"
        done = _run(program("postmap"), "-c", str(conf), "-s", f"lmdb:{table}")
        assert done.returncode == 0 and done.stderr == "", done.stderr
        read += [f"{source.name}: {line}" for line in done.stdout.splitlines()]
    done = _run(program("postconf"), "-c", str(conf), "-n")
    assert done.returncode == 0 and done.stderr == "", f"postconf: {done.stderr}"
    read += [f"main.cf: {line}" for line in done.stdout.splitlines() if not line.startswith("config_directory =")]
    for table in sorted((out / "postfix").glob("*.cidr")):
        read += [f"{table.name}: {line}" for line in table.read_text().splitlines() if not line.startswith("#")]
    return read


def read_directory(out: Path, base_dn: str) -> list[str]:
    """slapadd the LDIF into a fresh mdb database, slapcat it back: 'dn | attribute: value' per value."""
    server = Slapd(base_dn)
    try:
        added = server.slapadd((out / "ldap/directory.ldif").read_bytes())
        assert added.returncode == 0, f"slapadd: {added.stderr.decode(errors='replace')}"
        done = subprocess.run(
            [program("slapcat"), "-F", str(server.work / "config"), "-b", base_dn], capture_output=True, timeout=120
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    finally:
        server.close()
    read = []
    for pretty, attributes in ldif.LDIFParser(io.BytesIO(done.stdout)).parse():
        # Compared as the directory compares them: every attribute mailgw writes matches without case, and a
        # DN's escapes ('\\+', '\\2B') are spellings of one character.
        dn = re.sub(r"\\([0-9A-Fa-f]{2}|.)", lambda m: chr(int(m[1], 16)) if len(m[1]) == 2 else m[1], pretty)
        for name, values in attributes.items():
            if name.lower() not in LDAP_OPERATIONAL:
                read += [f"{dn} | {name}: {_text(value)}".lower() for value in values]
    return read


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_rspamd(out: Path, work: Path, hs_cache: Path | None = None) -> list[str]:
    """rspamadm configdump of the sections mailgw writes (every leaf as 'path = value'), and the map files' lines."""
    tree = rspamd_env.config_tree(out, work / "rspamd", hs_cache=hs_cache)
    done = _run(program("rspamadm"), *tree.variables(), "configdump", "-j", "-c", str(tree.conf / "rspamd.conf"))
    assert done.returncode == 0, done.stderr
    dumped = json.loads(done.stdout[done.stdout.index("{") :])
    read: list[str] = []

    def leaves(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                leaves(child, f"{path}.{key}")
        elif isinstance(value, list):
            for child in value:
                leaves(child, f"{path}[]")
        else:
            read.append(f"{path} = {value}")

    for section in RSPAMD_SECTIONS:
        leaves(dumped.get(section), section)
    for map_file in sorted((out / "rspamd/maps.d").glob("*")):
        read += [f"{map_file.name}: {line}" for line in map_file.read_text().splitlines() if not line.startswith("#")]
    return [POLICY_NAME.sub("mailgw_CLASS", line).replace(str(tree.conf), "$CONFDIR") for line in read]


def read_dovecot(out: Path) -> list[str]:
    """doveconf -n of dovecot.conf (every setting it parsed), and the lines of the LDAP settings it names."""
    done = _run(program("doveconf"), "-n", "-c", str(out / "dovecot/dovecot.conf"))
    assert done.returncode == 0 and done.stderr == "", f"doveconf: {done.stderr}"
    read = [f"dovecot.conf: {line}" for line in done.stdout.splitlines() if not line.startswith("#")]
    for ldap_settings in sorted((out / "dovecot").glob("*.ext")):
        lines = ldap_settings.read_text().splitlines()
        read += [f"{ldap_settings.name}: {line}" for line in lines if not line.startswith("#")]
    return read


MTA_STS_ID = re.compile(r"v=STSv1; id=[A-Za-z0-9]+")


def read_dns(out: Path) -> list[str]:
    """dnspython's reading of every zone snippet ('owner TYPE data', TXT strings joined), and the MTA-STS policy.

    The MTA-STS id is a digest of the policy, so it is read as 'id=ID': the policy's own lines show its change.
    """
    read = []
    for path in sorted((out / "dns").glob("*.zone")):
        text = "$ORIGIN .\n" + "".join(
            line + "\n" for line in path.read_text().splitlines() if line[:1] not in ("", ";")
        )
        zone = dns.zone.from_text(text, ".", relativize=False, check_origin=False)
        for name, rdataset in zone.iterate_rdatasets():
            for rdata in rdataset:
                data = b"".join(rdata.strings).decode() if rdataset.rdtype == dns.rdatatype.TXT else rdata.to_text()
                kind = dns.rdatatype.to_text(rdataset.rdtype)
                read.append(f"{path.name}: {name} {kind} {MTA_STS_ID.sub('v=STSv1; id=ID', data)}")
    policy = out / "mta-sts" / "mta-sts.txt"
    read += [f"mta-sts.txt: {line}" for line in policy.read_text().splitlines()] if policy.exists() else []
    return read


SRS_SETTINGS = ("SRS_DOMAIN", "SRS_SECRET", "SRS_LISTEN_ADDR", "SRS_FORWARD_PORT", "SRS_REVERSE_PORT", "SRS_SEPARATOR")


def read_srs(out: Path) -> list[str]:
    """out/srs/postsrsd as postsrsd's init script reads it: sourced by the shell, each setting printed back."""
    script = '. "$1" && printf "%s\\n" ' + " ".join(f'"{name}=${name}"' for name in SRS_SETTINGS)
    done = _run("/bin/sh", "-c", script, "read-srs", str(out / "srs" / "postsrsd"))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [f"postsrsd: {line}" for line in done.stdout.splitlines()]


def read_back(
    out: Path, work: Path, base_dn: str, only: set[str] | None = None, hs_cache: Path | None = None
) -> dict[str, list[str]]:
    readers = {
        "postfix": lambda: read_postfix(out, work),
        "ldap": lambda: read_directory(out, base_dn),
        "rspamd": lambda: read_rspamd(out, work, hs_cache),
        "dns": lambda: read_dns(out),
        "srs": lambda: read_srs(out),
        "dovecot": lambda: read_dovecot(out),
    }
    return {name: sorted(reader()) for name, reader in readers.items() if only is None or name in only}


@pytest.fixture(scope="module")
def base(tmp_path_factory, rspamadm_hs_cache) -> tuple[Build, dict[str, list[str]]]:
    work = tmp_path_factory.mktemp("base")
    result = build(work / "build", BASE_GATEWAY, BASE_DOMAIN)
    assert result.code == 0, result.err
    return result, read_back(result.out_dir, work, BASE_GATEWAY["ldap"]["base_dn"], hs_cache=rspamadm_hs_cache)


def written_forms(value: str) -> list[str]:
    """How an accepted value may be written: as is, lower case, A-labels, a normalised network or path."""
    forms = [value, value.lower(), value.rstrip("/")]
    with contextlib.suppress(ValueError):
        forms.append(str(ipaddress.ip_network(value, strict=True)))
    digits = value.replace(":", "")
    if re.fullmatch(r"[0-9A-Fa-f]{64}", digits):  # a SHA-256 fingerprint: 'AB:CD:...' (folded by postmap)
        pairs = ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))
        forms += [pairs.upper(), pairs.lower()]
    local, at, domain = value.rpartition("@")
    head, bracket, host = value.partition("[")
    host, closing, tail = host.partition("]")
    for before, name, after in (
        (f"{local}{at}", domain, ""),
        (f"{local.lower()}{at}", domain, ""),
        (head.lower() + bracket, host, closing + tail),
    ):
        for spelling in {name, name.rstrip(".")}:
            with contextlib.suppress(idna.IDNAError, UnicodeError):
                forms.append(before + idna.encode(spelling.lower(), uts46=True).decode() + after)
    return list(dict.fromkeys(forms))


def _variants(text: str) -> list[str]:
    """The spellings of one value in the artifacts: itself, in a regexp (HELO check), in a Rspamd symbol,
    and an address inside a capture's internal ones ('@' as '=', compiler/capture.py)."""
    return [
        text,
        text.replace(".", "\\."),
        text.upper().replace("-", "__").replace(".", "_"),
        text.replace("@", "=") if "@" in text else text,
    ]


def replaced(readback: dict[str, list[str]], old: str, new: str) -> dict[str, list[str]]:
    """The read-back with every spelling of `old` replaced by the same spelling of `new`, in one pass."""
    spellings: dict[str, str] = {}
    for o, n in zip(_variants(old), _variants(new), strict=True):
        if o:
            spellings.setdefault(o, n)
    if not spellings:
        return readback
    pattern = re.compile("|".join(re.escape(o) for o in sorted(spellings, key=len, reverse=True)))
    return {
        name: sorted(pattern.sub(lambda m: spellings[m[0]], line) for line in lines) for name, lines in readback.items()
    }


def assert_read_back_exactly(
    result: Build,
    base_build: Build,
    base_read: dict[str, list[str]],
    old: str,
    value: str,
    work: Path,
    hs_cache: Path | None = None,
) -> None:
    """The consumers read the accepted build as they read the base one, with the base value replaced."""
    base_dn = yaml.safe_load((result.root / GATEWAY_FILE).read_text())["ldap"]["base_dn"]
    changed = {
        name
        for name, tops in (
            ("postfix", ["postfix"]),
            ("ldap", ["ldap"]),
            ("rspamd", ["rspamd"]),
            ("dns", ["dns", "mta-sts"]),
            ("srs", ["srs"]),
            ("dovecot", ["dovecot"]),
        )
        if any(_digest(result.out_dir / top) != _digest(base_build.out_dir / top) for top in tops)
    }
    read = read_back(result.out_dir, work, base_dn, only=changed, hs_cache=hs_cache)
    tried = []
    for form in [old, *written_forms(value)]:
        expected = {name: lines for name, lines in replaced(base_read, old, form).items() if name in changed}
        if "ldap" in expected:  # read without case, so replaced without case
            expected["ldap"] = replaced({"ldap": base_read["ldap"]}, old.lower(), form.lower())["ldap"]
        if read == expected:
            return
        tried.append(form)
    expected = replaced(base_read, old, value)
    difference = {name: sorted(set(lines) ^ set(expected[name]))[:8] for name, lines in read.items()}
    raise AssertionError(f"{value!r} was accepted but not read back as written (forms {tried!r}): {difference}")


def _digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# --- the tests ----------------------------------------------------------------------------------


def test_the_schemas_name_every_field_of_the_base_fleet():
    """The walk finds the fields (a schema that yields nothing would make the property below vacuous)."""
    names = {str(field) for field in FIELDS}
    assert len(FIELDS) >= 40
    for expected in (
        f"{DOMAIN_FILE}:recipients.<key>",
        f"{DOMAIN_FILE}:recipients.*.uid",
        f"{DOMAIN_FILE}:filters.inbound.spam.subject",
        f"{GATEWAY_FILE}:ldap.base_dn",
        f"{GATEWAY_FILE}:postscreen.access.<key>",
    ):
        assert expected in names
    for field in FIELDS:
        put(base_document(field), field.path, "x")


# Examples per field (a third of it for a fixed choice); MAILGW_INJECTION_EXAMPLES=1000 for a long run.
EXAMPLES = int(os.environ.get("MAILGW_INJECTION_EXAMPLES", "50"))
# How many distinct accepted builds of one field the consumers read back (each costs a second or so).
READ_BACKS = 3


@pytest.mark.parametrize("field", FIELDS, ids=str)
def test_a_hostile_string_in_any_field_is_refused_cleanly_or_read_back_exactly(
    field, base, rspamadm_hs_cache, tmp_path_factory
):
    base_build, base_read = base
    work = tmp_path_factory.mktemp("injection")
    document = base_document(field)
    _, base_value = put(document, field.path, "")
    accepted: dict[str, tuple[str, Build]] = {}

    @settings(
        max_examples=EXAMPLES // 3 if field.choice else EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(value=hostile(base_value))
    def example(value: str) -> None:
        assume(value != base_value)
        changed, _ = put(document, field.path, value)
        gateway, domain, synced = declarations(field, changed)
        # A domain that no file can be named after is also a wrong file name: two findings, by design.
        assume(field.path != ("domain",) or domain_file(domain) != DOMAIN_FILE or value == DOMAIN)
        result = build(work / f"e{len(accepted)}", gateway, domain, synced)
        if result.code != 0:
            assert_refused_cleanly(result, field, finding_file(field, domain, synced))
            return
        assert result.err.startswith(f"wrote {result.out_dir}: "), result.err
        digest = _digest(result.out_dir)
        if not field.choice and digest not in accepted and len(accepted) < READ_BACKS:
            kept = work / f"accepted-{len(accepted)}"
            shutil.move(work / f"e{len(accepted)}", kept)
            accepted[digest] = (value, Build(result.code, result.out, result.err, kept / "repo", kept / "out"))

    example()
    for i, (value, result) in enumerate(accepted.values()):
        reader_work = work / f"read-{i}"
        reader_work.mkdir()
        assert_read_back_exactly(result, base_build, base_read, base_value, value, reader_work, rspamadm_hs_cache)
    shutil.rmtree(work, ignore_errors=True)


# The strings issue 13 found, each in the field it was found in: refused cleanly or read back exactly too.
FOUND = [
    (DOMAIN_FILE, ("filters", "inbound", "spam", "subject"), "[{= 7*7 =}] %s"),
    (GATEWAY_FILE, ("filters", "inbound", "spam", "subject"), "{= paths.CONFDIR =} %s"),
    (DOMAIN_FILE, ("filters", "outbound", "spam", "subject"), "[{#] %s"),
    (DOMAIN_FILE, ("recipients", "<key>"), "x\n::error file=gateway.yaml,line=1::forged"),
    (DOMAIN_FILE, ("recipients", "<key>"), "\x1b[2J\x1b[31mred"),
    (DOMAIN_FILE, ("external_aliases", "*", "[]"), "\u212aelvin@example.net"),
    (GATEWAY_FILE, ("ldap", "base_dn"), "ou=" + "m" * 240 + ",dc=org"),
    (DOMAIN_FILE, ("domain",), ".".join(["d" * 61] * 3) + ".d" + "x" * 60),
    (DOMAIN_FILE, ("domain",), ".".join(["d" * 50] * 4) + "." + "x" * 45),
    (DOMAIN_FILE, ("domain",), "basedomain.example." + "o" * 64),
    (DOMAIN_FILE, ("delivery", "nexthop", "[]"), "smtp:[relaybase.example." + "n" * 64 + "]:25"),
    (DOMAIN_FILE, ("delivery", "nexthop", "[]"), "[127.0.0.1]:25"),
    (DOMAIN_FILE, ("delivery", "nexthop", "[]"), "[0.0.0.0]:25"),
    (DOMAIN_FILE, ("delivery", "nexthop", "[]"), "[127.0.0.2]:10025"),
    (DOMAIN_FILE, ("outbound_relays", "[]"), "127.0.0.3"),
]


@pytest.mark.parametrize("file, path, value", FOUND, ids=[repr(value)[:40] for _, _, value in FOUND])
def test_the_strings_the_issue_found(file, path, value, base, rspamadm_hs_cache, tmp_path):
    field = next(f for f in FIELDS if f.file == file and f.path == path)
    changed, old = put(base_document(field), path, value)
    gateway, domain, synced = declarations(field, changed)
    result = build(tmp_path / "build", gateway, domain, synced)
    if result.code != 0:
        assert_refused_cleanly(result, field, finding_file(field, domain, synced))
    else:
        base_build, base_read = base
        (tmp_path / "read").mkdir()
        assert_read_back_exactly(result, base_build, base_read, old, value, tmp_path / "read", rspamadm_hs_cache)


def _name(length: int) -> str:
    """A valid domain of exactly `length` characters: labels of 'd', then '.example.org'."""
    labels, left = [], length - len(".example.org")
    while left > 0:
        label = min(63, left if left <= 63 else 62)
        labels.append("d" * label)
        left -= label + 1
    return ".".join(labels) + ".example.org"


@pytest.mark.parametrize("fits", [True, False], ids=["at-the-limit", "one-over"])
def test_the_directory_limits_are_what_slapadd_stores(fits, tmp_path):
    """A base DN, a domain and a role address each exactly as long as the directory stores load into slapd's mdb;
    one character more is refused by the compiler, with the limit in the message."""
    over = 0 if fits else 1
    base_dn = "ou=" + "m" * (245 - len("ou=,dc=org") + over) + ",dc=org"
    domain_name = _name(245 - len("associatedDomain=") + over)
    role_domain = _name(200)
    role = "r" * (245 - len("cn=@") - len(role_domain) + over)
    cases = [
        ({**BASE_GATEWAY, "ldap": {"base_dn": base_dn}}, BASE_DOMAIN, "245"),
        (BASE_GATEWAY, renamed(BASE_DOMAIN, domain_name), "228"),
        (
            BASE_GATEWAY,
            {
                **renamed(BASE_DOMAIN, role_domain),
                "recipients": {"ownerbase": "uidowner", role: {"kind": "role", "owners": ["uidowner"]}},
            },
            "245",
        ),
    ]
    for i, (gateway, domain, limit) in enumerate(cases):
        result = build(tmp_path / f"build{i}", gateway, domain)
        if fits:
            assert result.code == 0, result.err
            assert read_directory(result.out_dir, gateway["ldap"]["base_dn"])
        else:
            assert result.code == 1 and f"at most {limit}" in result.err, result.err
