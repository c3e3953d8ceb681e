"""The gateway's own LDAP server: a real slapd started from exactly out/ldap/slapd-config and slapd.yaml.

The bundled fleet is built with a gateway.yaml whose ldap section puts the
node paths (configuration, databases, run directory, TLS files) into a
temporary directory and the port on a free one (tests/slapd.py), so the
configuration is used as generated. The directory is loaded with slapadd,
the reader's entry is added as Puppet adds it, and slapd listens on its
local socket and StartTLS on 127.0.0.1. What is expected comes from the
declarations (the Fleet) and from directory.ldif, never from the slapd target.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from compiler.ldapdiff import dn_key, read_directory
from compiler.pipeline import compile_repository
from tests.conftest import REPO, program
from tests.slapd import (
    NEEDS_ROOT,
    READER_PASSWORD,
    GatewaySlapd,
    free_port,
    gateway_yaml,
    make_tls,
    normalise,
    parse_entries,
    reader_hash,
)

PROGRAMS = ("slapd", "slapadd", "slapcat", "slappasswd", "ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "openssl")
BASE = "ou=mailgw,dc=example,dc=org"
SIZE_LIMIT = 30  # below the bundled directory's 38 entries
LDAP_SUCCESS, SIZE_LIMIT_EXCEEDED, CONFIDENTIALITY_REQUIRED, NO_SUCH_OBJECT = 0, 4, 13, 32
INAPPROPRIATE_AUTHENTICATION, INVALID_CREDENTIALS, INSUFFICIENT_ACCESS, UNWILLING = 48, 49, 50, 53

pytestmark = [pytest.mark.needs(*PROGRAMS), pytest.mark.needs_root(NEEDS_ROOT)]


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    # A short path of its own: the socket's path must fit in 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="mailgw-gwldap-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def built(work):
    """out/ of the bundled fleet for a node whose paths are under WORK; its Fleet."""
    tls = make_tls(work / "tls")
    repo = work / "repo"
    shutil.copytree(REPO / "domains", repo / "domains")
    gateway = gateway_yaml((REPO / "gateway.yaml").read_text(), work, tls, free_port(), size_limit=SIZE_LIMIT)
    (repo / "gateway.yaml").write_text(gateway)
    compiled = compile_repository(repo)
    out = work / "out"
    for rel, data in compiled.artifacts.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    return out, tls, compiled.fleet


@pytest.fixture(scope="module")
def server(built):
    out, tls, _ = built
    slapd = GatewaySlapd(out, tls).configure()
    try:
        slapd.load(out / "ldap/directory.ldif")
        slapd.start()
        slapd.add_reader(reader_hash())
        yield slapd
    finally:
        slapd.close()


def lookups(server: GatewaySlapd, addresses: list[str], url: str | None = None) -> dict[str, list[str]]:
    found = server.lookups(addresses, url)
    assert [address for address, _ in found] == addresses
    return dict(found)


# --- what the reader finds ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["local socket", "StartTLS on loopback"])
def test_every_address_answers_with_its_owner(server, built, transport):
    _, _, fleet = built
    declared = {a.address: a for d in fleet.domains for a in d.addresses}
    assert len(declared) > 30
    url = server.tcp if transport != "local socket" else None
    found = lookups(server, [*sorted(declared), "nobody@tifpa.example.org"], url=url)
    assert found.pop("nobody@tifpa.example.org") == []
    assert found.keys() == declared.keys()
    for address, dns in found.items():
        declaration = declared[address]
        owner = {
            "person": f"uid={declaration.uid},ou=people,{BASE}",
            "alias": f"uid={declaration.uid},ou=people,{BASE}",
            "list": f"cn={address},ou=lists,{BASE}",
            "role": f"cn={address},ou=roles,{BASE}",
            "external": f"cn={address},ou=external-aliases,{BASE}",
        }[declaration.kind]
        assert [dn_key(dn) for dn in dns] == [dn_key(owner)], address


def test_the_portals_searches_find_a_persons_addresses_and_what_they_manage(server, built):
    _, _, fleet = built
    addresses: dict[str, set[str]] = {}
    managed: dict[str, set[str]] = {}
    for domain in fleet.domains:
        for address in domain.addresses:
            if address.uid:
                addresses.setdefault(address.uid, set()).add(address.address)
            for owner in address.owners:
                managed.setdefault(owner, set()).add(address.address)
    assert managed and addresses
    for uid, owned in addresses.items():
        done = server.as_reader(
            "ldapsearch",
            "-LLL",
            "-b",
            f"ou=people,{BASE}",
            f"(&(objectClass=inetLocalMailRecipient)(uid={uid}))",
            "mailLocalAddress",
        )
        assert done.returncode == LDAP_SUCCESS, done.stderr
        assert {v for e in parse_entries(done.stdout).values() for v in e["maillocaladdress"]} == owned, uid
    for uid, owned in managed.items():
        found = set()
        for branch in ("ou=lists", "ou=roles"):
            done = server.as_reader(
                "ldapsearch",
                "-LLL",
                "-b",
                f"{branch},{BASE}",
                f"(owner=uid={uid},ou=people,{BASE})",
                "mailLocalAddress",
            )
            assert done.returncode == LDAP_SUCCESS, done.stderr
            found |= {v for e in parse_entries(done.stdout).values() for v in e["maillocaladdress"]}
        assert found == owned, uid


def test_the_reader_sees_every_entry_and_attribute_of_the_directory(server, built):
    """Branch by branch (each under the size limit): what the reader reads is directory.ldif, nothing less."""
    out, _, _ = built
    written = normalise(parse_entries((out / "ldap/directory.ldif").read_bytes()))
    seen: dict = {}
    for base, scope in (
        [(BASE, "base")]
        + [(f"{b},{BASE}", "sub") for b in ("ou=people", "ou=lists", "ou=roles")]
        + [(f"{b},{BASE}", "sub") for b in ("ou=external-aliases", "ou=domains")]
    ):
        done = server.as_reader("ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-s", scope, "-b", base, "(objectClass=*)")
        assert done.returncode == LDAP_SUCCESS, done.stderr
        seen |= normalise(parse_entries(done.stdout))
    assert seen == written


def test_a_search_past_the_size_limit_is_cut_for_the_reader_but_not_for_the_deployment(server, built):
    out, _, _ = built
    total = len(read_directory((out / "ldap/directory.ldif").read_bytes()))
    assert total > SIZE_LIMIT
    done = server.as_reader("ldapsearch", "-LLL", "-b", BASE, "(objectClass=*)", "1.1")
    assert done.returncode == SIZE_LIMIT_EXCEEDED, done.stderr
    assert done.stdout.count(b"dn: ") == SIZE_LIMIT
    done = server.as_root("ldapsearch", "-LLL", "-b", BASE, "(objectClass=*)", "1.1")
    assert done.returncode == LDAP_SUCCESS and done.stdout.count(b"dn: ") == total


# --- who may do what ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["local socket", "StartTLS on loopback"])
def test_an_anonymous_client_reads_nothing_not_even_the_root_dse(server, transport):
    tls = ["-H", server.tcp, "-ZZ"] if transport != "local socket" else ["-H", server.socket]
    for base, scope in ((BASE, "sub"), (BASE, "base"), ("", "base"), ("cn=Subschema", "base")):
        done = subprocess.run(
            [program("ldapsearch"), *tls, "-x", "-LLL", "-s", scope, "-b", base, "(objectClass=*)"],
            capture_output=True,
            timeout=30,
            env={**os.environ, "LDAPTLS_CACERT": str(server.tls.ca)},
        )
        assert done.returncode == INAPPROPRIATE_AUTHENTICATION, done.stderr
        assert b"anonymous bind disallowed" in done.stderr
        assert done.stdout == b""


def test_a_search_without_any_bind_is_refused(server):
    """A client may skip the bind entirely (ldapsearch cannot): the databases require authentication first,
    and the root DSE and the schema, which the frontend answers itself, are hidden by its access rules."""
    path = unquote(server.socket.removeprefix("ldapi://"))
    assert unbound_search(path, BASE) == (UNWILLING, 0)
    assert unbound_search(path, server.reader_dn) == (UNWILLING, 0)
    assert unbound_search(path, "") == (NO_SUCH_OBJECT, 0)
    assert unbound_search(path, "cn=Subschema") == (NO_SUCH_OBJECT, 0)


def test_the_reader_reads_and_the_deployment_writes_but_the_reader_cannot(server):
    person = f"uid=mrossi,ou=people,{BASE}"
    change = f"dn: {person}\nchangetype: modify\nadd: mailLocalAddress\nmailLocalAddress: intruso@tifpa.example.org\n"
    new_entry = f"dn: uid=intruso,ou=people,{BASE}\nobjectClass: account\nuid: intruso\n"
    before = server.dump()
    for tool, data, args in (
        ("ldapmodify", change, ()),
        ("ldapadd", new_entry, ()),
        ("ldapdelete", None, (f"cn=info@tifpa.example.org,ou=roles,{BASE}",)),
        ("ldapmodify", f"dn: {server.reader_dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: x\n", ()),
    ):
        done = server.as_reader(tool, *args, data=data.encode() if data else None)
        assert done.returncode == INSUFFICIENT_ACCESS, (tool, done.stderr)
    assert server.dump() == before
    assert server.as_reader("ldapsearch", "-b", BASE, "(mailLocalAddress=intruso@tifpa.example.org)").returncode == 0
    try:
        done = server.as_root("ldapmodify", data=change.encode())
        assert done.returncode == LDAP_SUCCESS, done.stderr
        assert lookups(server, ["intruso@tifpa.example.org"]) == {"intruso@tifpa.example.org": [person]}
    finally:
        undo = change.replace("add: mailLocalAddress", "delete: mailLocalAddress")
        assert server.as_root("ldapmodify", data=undo.encode()).returncode == LDAP_SUCCESS
    assert server.dump() == before


def test_a_bind_over_plain_tcp_is_refused_and_a_wrong_password_too(server):
    plain = subprocess.run(
        [program("ldapsearch"), "-H", server.tcp, "-x", "-D", server.reader_dn, "-w", READER_PASSWORD, "-b", BASE]
        + ["(uid=mrossi)"],
        capture_output=True,
        timeout=30,
    )
    assert plain.returncode == CONFIDENTIALITY_REQUIRED, plain.stderr
    assert plain.stdout == b""
    for url in (None, server.tcp):
        wrong = server.as_reader("ldapsearch", "-b", BASE, "(uid=mrossi)", url=url, password="not the password")
        assert wrong.returncode == INVALID_CREDENTIALS, wrong.stderr


def test_starttls_presents_the_configured_certificate(server, built):
    _, tls, _ = built
    done = server.as_reader("ldapsearch", "-LLL", "-b", BASE, "-s", "base", "1.1", url=server.tcp)
    assert done.returncode == LDAP_SUCCESS, done.stderr
    untrusted = subprocess.run(
        [program("ldapsearch"), "-H", server.tcp, "-ZZ", "-x", "-D", server.reader_dn, "-w", READER_PASSWORD]
        + ["-b", BASE, "-s", "base", "1.1"],
        capture_output=True,
        timeout=30,
        env={**os.environ, "LDAPTLS_CACERT": str(tls.certificate.parent / "nobody.crt"), "LDAPTLS_REQCERT": "demand"},
    )
    assert untrusted.returncode != LDAP_SUCCESS, "a client that does not trust the CA cannot connect"


# --- the reader's own database, and the deployment's diff ------------------------------------------------


def test_the_reader_is_outside_the_directory_so_the_deployments_diff_never_touches_it(server, built, tmp_path, mailgw):
    out, _, _ = built
    live = server.tool("slapcat", "-F", str(server.config), "-b", BASE)
    assert live.returncode == 0 and b"cn=reader" not in live.stdout
    (tmp_path / "live.ldif").write_bytes(live.stdout)
    result = mailgw(tmp_path, "ldap-diff", str(tmp_path / "live.ldif"), str(out / "ldap/directory.ldif"))
    assert result.err == "ldap-diff: 0 to add, 0 to modify, 0 to delete\n"
    (tmp_path / "root-only.ldif").write_bytes(f"dn: {BASE}\nobjectClass: organizationalUnit\nou: mailgw\n".encode())
    everything_goes = mailgw(tmp_path, "ldap-diff", str(tmp_path / "live.ldif"), str(tmp_path / "root-only.ldif"))
    assert "cn=reader" not in everything_goes.out
    found = server.as_root("ldapsearch", "-LLL", "-b", BASE, "(cn=reader)", "1.1")
    assert found.returncode == LDAP_SUCCESS and found.stdout == b"", "not under the directory's tree either"
    reader = server.as_root("ldapsearch", "-LLL", "-s", "base", "-b", server.reader_dn, "objectClass")
    assert reader.returncode == LDAP_SUCCESS and b"simpleSecurityObject" in reader.stdout


def test_every_filtered_attribute_is_indexed(server):
    """slapd says '<= mdb_equality_candidates: (ATTR) not indexed' (debug level filter) for a filter it must scan."""
    server.stop()
    server.log.write_bytes(b"")
    server.start(debug="filter")
    try:
        filters = [
            "(mailLocalAddress=info@tifpa.example.org)",
            "(&(objectClass=inetLocalMailRecipient)(uid=mrossi))",
            f"(owner=uid=mrossi,ou=people,{BASE})",
            f"(member=uid=mrossi,ou=people,{BASE})",
            "(associatedDomain=tifpa.example.org)",
        ]
        for search_filter in filters:
            assert server.as_reader("ldapsearch", "-b", BASE, search_filter, "1.1").returncode == LDAP_SUCCESS
        indexed_log = server.log.read_text(errors="replace")
        control = server.as_reader("ldapsearch", "-b", BASE, "(rfc822MailMember=a.ferri@physics.example.edu)", "1.1")
        assert control.returncode == LDAP_SUCCESS
        control_log = server.log.read_text(errors="replace")[len(indexed_log) :]
    finally:
        server.stop()
        server.start()
    assert "(rfc822MailMember) not indexed" in control_log, "the log does show a scan"
    assert "not indexed" not in indexed_log


# --- a search with no bind at all, written by hand (RFC 4511, BER) -----------------------------------------


def _ber(tag: int, content: bytes) -> bytes:
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    size = (len(content).bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + len(content).to_bytes(size, "big") + content


def _read_element(data: bytes, at: int) -> tuple[int, bytes, int]:
    """(tag, content, where the next element starts) of the BER element at AT."""
    tag, length, at = data[at], data[at + 1], at + 2
    if length & 0x80:
        size = length & 0x7F
        length, at = int.from_bytes(data[at : at + size], "big"), at + size
    return tag, data[at : at + length], at + length


def unbound_search(path: str, base: str) -> tuple[int, int]:
    """(resultCode, entries returned) of a subtree search for (objectClass=*) sent before any bind."""
    search = _ber(
        0x63,  # SearchRequest
        _ber(0x04, base.encode())
        + _ber(0x0A, b"\x02")  # wholeSubtree
        + _ber(0x0A, b"\x00")  # neverDerefAliases
        + _ber(0x02, b"\x00")  # no size limit
        + _ber(0x02, b"\x00")  # no time limit
        + _ber(0x01, b"\x00")  # typesOnly FALSE
        + _ber(0x87, b"objectClass")  # present
        + _ber(0x30, b""),
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(path)
        client.sendall(_ber(0x30, _ber(0x02, b"\x01") + search))
        data, entries = b"", 0
        while True:
            chunk = client.recv(65536)
            assert chunk, "slapd closed the connection without a result"
            data += chunk
            at = 0
            while at + 2 <= len(data):
                try:
                    _, message, following = _read_element(data, at)
                except IndexError:
                    break
                if following > len(data):
                    break
                _, _, op_at = _read_element(message, 0)  # the message ID
                op, result, _ = _read_element(message, op_at)
                if op == 0x64:  # SearchResultEntry
                    entries += 1
                elif op == 0x65:  # SearchResultDone: its first element is the resultCode
                    return _read_element(result, 0)[1][0], entries
                at = following
            data = data[at:]


# --- the quarantine portal, the reader's first client -------------------------------------------------


def test_the_portals_directory_client_reads_as_the_reader_over_the_socket(server, built, tmp_path):
    """portal/directory.py with the settings the bundled gateway.yaml gives it: the socket, cn=reader, a password
    file. Over TCP without StartTLS, which that client does not run, the server refuses it."""
    from portal.config import Ldap
    from portal.directory import Directory, DirectoryError

    _, _, fleet = built
    password = tmp_path / "ldap-reader.password"
    password.write_text(READER_PASSWORD + "\n")
    directory = Directory(Ldap(server.socket, BASE, server.reader_dn, str(password)))
    own = {a.address for d in fleet.domains for a in d.addresses if a.uid == "mrossi"}
    managed = {a.address for d in fleet.domains for a in d.addresses if "mrossi" in a.owners}
    assert own and managed
    assert directory.addresses("mrossi") == own | managed
    [staff] = [a for d in fleet.domains for a in d.addresses if a.address == "staff@tifpa.example.org"]
    assert directory.owners([staff.address])[staff.address].uids == tuple(sorted(staff.owners))
    with pytest.raises(DirectoryError, match="confidentialityRequired"):
        Directory(Ldap(server.tcp, BASE, server.reader_dn, str(password))).addresses("mrossi")
