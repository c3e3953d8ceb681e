"""mailgw ldap-diff OLD NEW: its change records, applied by ldapmodify to a real slapd holding OLD, give NEW."""

from __future__ import annotations

import copy
import io
import subprocess
from pathlib import Path

import ldif
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import ldapdiff
from compiler.declarations import Address
from compiler.fleet import Domain, Fleet
from compiler.model import GatewayDeclaration, LdapSettings, NextHop
from compiler.pipeline import compile_repository
from compiler.targets import ldap
from tests.conftest import GATEWAY, program, run_mailgw_process
from tests.slapd import Slapd

BASE = "ou=mailgw,dc=example,dc=org"
SLAPD = ("slapd", "slapadd", "ldapadd", "ldapmodify", "ldapsearch", "ldapdelete")

FLEET = {
    "tifpa.example.org": {
        "site": "TIFPA",
        "admins": ["@example/tifpa-mail"],
        "delivery": {"nexthop": "smtp:[smtp.tifpa.example.org]:25"},
        "recipients": {
            "mario.rossi": "mrossi",
            "m.rossi": {"kind": "alias", "uid": "mrossi"},
            "laura.bianchi": "lbianchi",
            "giulia.neri": "gneri",
            "staff": {"kind": "list", "owners": ["mrossi", "lbianchi"]},
            "info": {"kind": "role", "owners": ["mrossi"]},
        },
        "external_aliases": {"g.verdi": ["giuseppe.verdi@example.net"]},
    },
    "lnf.example.org": {
        "site": "LNF",
        "admins": ["@example/lnf-mail"],
        "delivery": {"nexthop": "smtp:[mx.lnf.example.org]:25"},
        "recipients": {
            "francesca.bruni": "fbruni",
            "f.bruni": {"kind": "alias", "uid": "fbruni"},
            "acceleratori": {"kind": "list", "owners": ["fbruni", "mrossi"]},
        },
    },
}


def _tifpa(fleet: dict) -> dict:
    return fleet["tifpa.example.org"]["recipients"]


def _rename_uid(fleet: dict) -> None:
    """mrossi becomes mario.rossi: his entry's DN changes, and so do the lists he owns."""
    for domain in fleet.values():
        for local, recipient in domain["recipients"].items():
            if recipient == "mrossi":
                domain["recipients"][local] = "mario.rossi"
            elif isinstance(recipient, dict) and recipient.get("uid") == "mrossi":
                recipient["uid"] = "mario.rossi"
            elif isinstance(recipient, dict) and "owners" in recipient:
                recipient["owners"] = ["mario.rossi" if o == "mrossi" else o for o in recipient["owners"]]


def _external_alias_becomes_person(fleet: dict) -> None:
    del fleet["tifpa.example.org"]["external_aliases"]
    _tifpa(fleet)["g.verdi"] = "gverdi"


def _everyone_leaves(fleet: dict) -> None:
    for domain in fleet.values():
        domain.update(recipients={}, external_aliases={}, recipient_check="verify")


def _add_domain(fleet: dict) -> None:
    fleet["ge.example.org"] = {
        "site": "GENOVA",
        "admins": ["@example/genova-mail"],
        "delivery": {"nexthop": "[relay.ge.example.org]:25"},
        "recipients": {"marco.ricci": "mricci", "a+b": {"kind": "role", "owners": ["mricci"]}},
    }


# name -> (how NEW differs from FLEET, the summary ldap-diff prints)
CASES = {
    "nothing changes": (lambda f: None, "0 to add, 0 to modify, 0 to delete"),
    "add a person": (lambda f: _tifpa(f).update({"paolo.conti": "pconti"}), "1 to add, 0 to modify, 0 to delete"),
    "remove an alias": (lambda f: _tifpa(f).pop("m.rossi"), "0 to add, 1 to modify, 0 to delete"),
    "change list owners": (lambda f: _tifpa(f)["staff"].update(owners=["gneri"]), "0 to add, 1 to modify, 0 to delete"),
    "give an address to another person": (
        lambda f: _tifpa(f).update({"m.rossi": {"kind": "alias", "uid": "gneri"}}),
        "0 to add, 2 to modify, 0 to delete",
    ),
    "remove a domain": (lambda f: f.pop("lnf.example.org"), "0 to add, 0 to modify, 3 to delete"),
    "add a domain": (_add_domain, "3 to add, 0 to modify, 0 to delete"),
    "rename a uid": (_rename_uid, "1 to add, 3 to modify, 1 to delete"),
    "rename an address": (
        lambda f: _tifpa(f).update({"mario.rossi2": _tifpa(f).pop("mario.rossi")}),
        "0 to add, 1 to modify, 0 to delete",
    ),
    "a list becomes a role": (lambda f: _tifpa(f)["staff"].update(kind="role"), "1 to add, 0 to modify, 1 to delete"),
    "an external alias becomes a person": (_external_alias_becomes_person, "1 to add, 0 to modify, 1 to delete"),
    "a domain changes site and admins": (
        lambda f: f["lnf.example.org"].update(site="FRASCATI", admins=["@example/lnf-mail", "@fbruni"]),
        "0 to add, 1 to modify, 0 to delete",
    ),
    "a site changes only its case": (
        lambda f: f["lnf.example.org"].update(site="Lnf"),
        "0 to add, 1 to modify, 0 to delete",
    ),
    "everyone leaves": (_everyone_leaves, "0 to add, 0 to modify, 8 to delete"),
}


def _build(root: Path, fleet: dict) -> Path:
    (root / "domains").mkdir(parents=True)
    (root / "gateway.yaml").write_text(GATEWAY)
    for name, declaration in fleet.items():
        (root / f"domains/{name}.yaml").write_text(yaml.safe_dump({"domain": name, **declaration}))
    path = root / "directory.ldif"
    path.write_bytes(compile_repository(root).artifacts[ldap.PATH])
    return path


@pytest.fixture(scope="module")
def server():
    slapd = Slapd(BASE)
    try:
        yield slapd.start()
    finally:
        slapd.close()


def _apply_and_compare(server: Slapd, old: bytes, changes: bytes, new: bytes) -> None:
    """ldapmodify CHANGES on a server holding OLD leaves what a server loaded with NEW holds."""
    server.wipe()
    server.add(old)
    server.modify(changes)
    updated = server.dump()
    server.wipe()
    server.add(new)
    assert updated == server.dump()


# --- hand-written cases, through the command line ---------------------------------------


@pytest.mark.needs(*SLAPD)
@pytest.mark.parametrize("case", list(CASES))
def test_ldap_diff_turns_old_into_new_on_slapd(case, server, tmp_path, mailgw):
    change, summary = CASES[case]
    new_fleet = copy.deepcopy(FLEET)
    change(new_fleet)
    old, new = _build(tmp_path / "old", FLEET), _build(tmp_path / "new", new_fleet)
    result = mailgw(tmp_path, "ldap-diff", str(old), str(new))
    assert result.code == 0, result.err
    assert result.err == f"ldap-diff: {summary}\n"
    assert result.out.startswith(ldapdiff.HEADER + "version: 1\n")
    _apply_and_compare(server, old.read_bytes(), result.out.encode(), new.read_bytes())


@pytest.mark.needs(*SLAPD)
def test_a_structural_class_change_recreates_the_entry_and_its_subtree(server):
    old = f"""\
dn: {BASE}
objectClass: organizationalUnit
ou: mailgw

dn: cn=desk,{BASE}
objectClass: groupOfNames
cn: desk
member: cn=desk,{BASE}

dn: cn=night,cn=desk,{BASE}
objectClass: organizationalRole
cn: night

dn: cn=other,{BASE}
objectClass: organizationalRole
cn: other
""".encode()
    new = old.replace(
        b"objectClass: groupOfNames\ncn: desk\nmember: cn=desk," + BASE.encode(),
        b"objectClass: organizationalRole\ncn: desk\ndescription: now a role",
    )
    changes = ldapdiff.diff(ldapdiff.read_directory(old), ldapdiff.read_directory(new))
    assert [(c.changetype, c.dn.split(",")[0]) for c in changes] == [
        ("delete", "cn=night"),
        ("delete", "cn=desk"),
        ("add", "cn=desk"),
        ("add", "cn=night"),
    ]
    _apply_and_compare(server, old, ldapdiff.render(changes), new)


@pytest.mark.needs(*SLAPD)
def test_subtrees_are_added_parents_first_and_deleted_children_first(server):
    def tree(top: str) -> str:
        return f"""\
dn: ou={top},{BASE}
objectClass: organizationalUnit
ou: {top}

dn: ou=inner,ou={top},{BASE}
objectClass: organizationalUnit
ou: inner

dn: cn=leaf,ou=inner,ou={top},{BASE}
objectClass: organizationalRole
cn: leaf

"""

    root = f"dn: {BASE}\nobjectClass: organizationalUnit\nou: mailgw\n\n"
    old, new = (root + tree("gone")).encode(), (root + tree("new")).encode()
    changes = ldapdiff.diff(ldapdiff.read_directory(old), ldapdiff.read_directory(new))
    assert [(c.changetype, c.dn.split(",")[0]) for c in changes] == [
        ("add", "ou=new"),
        ("add", "ou=inner"),
        ("add", "cn=leaf"),
        ("delete", "cn=leaf"),
        ("delete", "ou=inner"),
        ("delete", "ou=gone"),
    ]
    _apply_and_compare(server, old, ldapdiff.render(changes), new)


@pytest.mark.needs(*SLAPD, "slapcat")
def test_the_live_servers_own_dump_can_be_old(server, tmp_path, mailgw):
    """slapcat's operational attributes (entryUUID, timestamps...) are not the directory's: they are ignored."""
    new_fleet = copy.deepcopy(FLEET)
    _tifpa(new_fleet).pop("info")
    _tifpa(new_fleet).pop("m.rossi")
    old, new = _build(tmp_path / "old", FLEET), _build(tmp_path / "new", new_fleet)
    server.wipe()
    server.add(old.read_bytes())
    dump = subprocess.run(
        [program("slapcat"), "-F", str(server.work / "config"), "-b", BASE], capture_output=True, timeout=30
    )
    assert dump.returncode == 0 and b"entryUUID: " in dump.stdout
    live = tmp_path / "live.ldif"
    live.write_bytes(dump.stdout)
    result = mailgw(tmp_path, "ldap-diff", str(live), str(new))
    assert result.err == "ldap-diff: 0 to add, 1 to modify, 1 to delete\n"
    _apply_and_compare(server, old.read_bytes(), result.out.encode(), new.read_bytes())


# --- the change records themselves ------------------------------------------------------


def test_adds_go_parents_first_then_modifies_then_deletes_children_first(tmp_path):
    lnf = copy.deepcopy(FLEET["lnf.example.org"])
    lnf["recipients"]["acceleratori"]["owners"] = ["fbruni"]
    old = ldapdiff.read_directory(
        _build(tmp_path / "old", {"tifpa.example.org": FLEET["tifpa.example.org"]}).read_bytes()
    )
    new = ldapdiff.read_directory(_build(tmp_path / "new", {"lnf.example.org": lnf}).read_bytes())
    changes = ldapdiff.diff(old, new)
    kinds = [c.changetype for c in changes]
    assert kinds == sorted(kinds, key=["add", "modify", "delete"].index)
    done: set[tuple] = set(old)
    for change in changes:
        key = ldapdiff.dn_key(change.dn)
        if change.changetype == "add":
            assert key[1:] in done, f"{change.dn} added before its parent"
            done.add(key)
        elif change.changetype == "delete":
            assert not any(k[1:] == key for k in done if k != key), f"{change.dn} deleted before its children"
            done.discard(key)
    assert done == set(new)


def test_the_same_directory_gives_no_change_whatever_its_spelling():
    a = b"dn: cn=a\\+b,o=x\nobjectClass: organizationalRole\ncn: a+b\ndescription: one\ndescription: two\n"
    b = (
        b"# another writer\nversion: 1\n\ndn: CN=A\\2Bb,O=X\nobjectclass: organizationalRole\n"
        b"description: two\nDESCRIPTION: one\ncn:: YSti\n"
    )
    assert ldapdiff.diff(ldapdiff.read_directory(a), ldapdiff.read_directory(b)) == []


def test_an_entry_gains_its_new_values_first_and_loses_the_old_ones_last():
    old = ldapdiff.read_directory(
        b"dn: o=x\nobjectClass: organization\no: x\ndescription: a\ndescription: b\nl: Rome\n"
    )
    new = ldapdiff.read_directory(
        b"dn: o=x\nobjectClass: organization\no: x\ndescription: b\ndescription: c\nst: Lazio\n"
    )
    changes = ldapdiff.diff(old, new)
    assert changes == [
        ldapdiff.Change("o=x", "modify", (("add", "description", ("c",)), ("add", "st", ("Lazio",)))),
        ldapdiff.Change("o=x", "modify", (("delete", "description", ("a",)), ("delete", "l", ()))),
    ]
    assert ldapdiff.summary(changes) == "0 to add, 1 to modify, 0 to delete"
    assert ldapdiff.render(changes).decode() == (
        ldapdiff.HEADER + "version: 1\n"
        "dn: o=x\nchangetype: modify\n"
        "add: description\ndescription: c\n-\nadd: st\nst: Lazio\n-\n\n"
        "dn: o=x\nchangetype: modify\n"
        "delete: description\ndescription: a\n-\ndelete: l\n-\n\n"
    )


def test_a_new_spelling_and_a_single_value_replace_the_old_in_one_operation():
    """The server would refuse 'Lnf' next to 'LNF' (ou matches case-insensitively), or a second 'dc'."""
    old = ldapdiff.read_directory(b"dn: dc=x\nobjectClass: domain\ndc: x\nou: LNF\nou: Frascati\n")
    new = ldapdiff.read_directory(b"dn: dc=x\nobjectClass: domain\ndc: X\nou: Lnf\n")
    assert ldapdiff.diff(old, new) == [
        ldapdiff.Change(
            "dc=x",
            "modify",
            (("delete", "dc", ("x",)), ("add", "dc", ("X",)), ("delete", "ou", ("LNF",)), ("add", "ou", ("Lnf",))),
        ),
        ldapdiff.Change("dc=x", "modify", (("delete", "ou", ("Frascati",)),)),
    ]


def test_an_address_given_to_another_uid_is_added_there_before_it_is_deleted_here(tmp_path):
    """giulia.neri goes from gneri to mrossi, and gneri gets g.neri: gneri's entry sorts first, yet loses last."""
    new = copy.deepcopy(FLEET)
    _tifpa(new).update({"giulia.neri": "mrossi", "g.neri": "gneri"})
    old_path, new_path = _build(tmp_path / "old", FLEET), _build(tmp_path / "new", new)
    changes = ldapdiff.diff(
        ldapdiff.read_directory(old_path.read_bytes()), ldapdiff.read_directory(new_path.read_bytes())
    )
    steps = [
        (c.dn.split(",")[0], operation, value)
        for c in changes
        for operation, name, values in c.items
        if name == "mailLocalAddress"
        for value in values
    ]
    assert steps == [
        ("uid=gneri", "add", "g.neri@tifpa.example.org"),
        ("uid=mrossi", "add", "giulia.neri@tifpa.example.org"),
        ("uid=gneri", "delete", "giulia.neri@tifpa.example.org"),
    ]
    assert ldapdiff.summary(changes) == "0 to add, 2 to modify, 0 to delete"


def test_values_that_need_it_are_base64_in_the_changes_too():
    old = ldapdiff.read_directory(b"dn: o=x\nobjectClass: organization\no: x\n")
    new = ldapdiff.read_directory("dn: o=x\nobjectClass: organization\no: x\ndescription: città \n".encode())
    text = ldapdiff.render(ldapdiff.diff(old, new)).decode("ascii")
    assert "description:: Y2l0dMOg\n" in text  # 'città' (RFC 2849 strips the unencoded trailing space)


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"dn: o=x\nobjectClass: organization\nno colon here\n",
            "line 3: not LDIF (RFC 2849): a line that is not 'type: value'",
        ),
        (b"dn: o=x\nchangetype: delete\n", "'o=x' is a change record; ldap-diff compares two directories"),
        (
            b"dn: o=x\nobjectClass: organization\no: x\n\ndn: O=X\nobjectClass: organization\no: x\n",
            "entry 'O=X' appears twice",
        ),
        (b"objectClass: organization\n", "First line of record does not start with 'dn:'"),
        (b"dn: o=x\n", "entry 'o=x' has no attributes"),
        (b"dn: o=x\nentryUUID: 1\n", "entry 'o=x' has no attributes"),
        (b"dn:: !!!notbase64\nobjectClass: organization\n", "not LDIF (RFC 2849)"),
    ],
)
def test_what_is_not_a_directory_is_refused_with_exit_2(content, message, tmp_path, mailgw):
    (tmp_path / "bad.ldif").write_bytes(content)
    (tmp_path / "good.ldif").write_bytes(b"dn: o=x\nobjectClass: organization\no: x\n")
    for args in (("bad.ldif", "good.ldif"), ("good.ldif", "bad.ldif")):
        result = mailgw(tmp_path, "ldap-diff", *(str(tmp_path / a) for a in args))
        assert result.code == 2
        assert result.out == ""
        assert result.err.startswith(f"mailgw: ldap-diff: {tmp_path / 'bad.ldif'}: ")
        assert message in result.err
        assert "Traceback" not in result.err


def test_the_command_in_its_own_process_prints_the_changes(tmp_path):
    old = _build(tmp_path / "old", FLEET)
    new_fleet = copy.deepcopy(FLEET)
    _tifpa(new_fleet).pop("m.rossi")
    new = _build(tmp_path / "new", new_fleet)
    done = run_mailgw_process("ldap-diff", str(old), str(new), cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "ldap-diff: 0 to add, 1 to modify, 0 to delete\n")
    assert done.stdout == (
        ldapdiff.HEADER + "version: 1\n"
        f"dn: uid=mrossi,ou=people,{BASE}\nchangetype: modify\n"
        "delete: mailLocalAddress\nmailLocalAddress: m.rossi@tifpa.example.org\n-\n\n"
    )


def test_an_unreadable_file_is_a_usage_error(tmp_path, mailgw):
    (tmp_path / "good.ldif").write_bytes(b"dn: o=x\nobjectClass: organization\no: x\n")
    result = mailgw(tmp_path, "ldap-diff", str(tmp_path / "missing.ldif"), str(tmp_path / "good.ldif"))
    assert (result.code, result.out) == (2, "")
    assert result.err == f"mailgw: ldap-diff: cannot read {tmp_path / 'missing.ldif'}: No such file or directory\n"
    result = mailgw(tmp_path, "ldap-diff", str(tmp_path), str(tmp_path / "good.ldif"))
    assert result.code == 2 and "Is a directory" in result.err


# --- the quick reader reads what the `ldif` parser reads --------------------------------


def _parser(data: bytes):
    try:
        return [(dn, dict(attributes)) for dn, attributes in ldif.LDIFParser(io.BytesIO(data)).parse()]
    except Exception as err:
        return type(err)


def _ours(data: bytes):
    try:
        return [(dn, dict(attributes)) for dn, attributes in ldapdiff.parse_records(data)]
    except ldapdiff.LdifError:
        return ValueError


_DN_LINES = st.sampled_from(
    [
        "dn: cn=a,o=x",
        "dn: cn=b+sn=c,o=x",
        "dn: o=x",
        "dn:o=y",
        "dn: not a dn",
        "dn:: Y249w6ksbz14",
        "dn: cn=\xe9,o=x",
        "# comment\ndn: o=z",
        "version: 1\ndn: o=v",
    ]
)
_LINES = st.sampled_from(
    [
        "cn: a",
        "cn:a",
        "cn:  padded  ",
        "cn:",
        "CN: b",
        "description: a: b",
        "description:: w6k=",
        "description:: !!",
        "description:< file:///nonexistent",
        " folded",
        "  folded with space",
        "# comment",
        "# note: x",
        "#",
        "dn: o=again",
        "version: 1",
        "changetype: add",
        "no colon",
        "cn: a\r",
        "jpegPhoto: \udcff\udcfe",
        "t\xe9: x",
        "",
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(_DN_LINES, st.lists(_LINES, max_size=5)), max_size=4), st.sampled_from(["\n\n", "\n\n\n", "\n"])
)
def test_the_quick_reader_agrees_with_the_parser_on_any_lines(blocks, separator):
    text = separator.join("\n".join([dn, *lines]) for dn, lines in blocks)
    data = text.encode("utf-8", "surrogateescape")
    expected = _parser(data)
    got = _ours(data)
    if isinstance(expected, type):
        assert got is ValueError, f"the parser refuses ({expected.__name__}) what we read: {got}"
    else:
        assert got == expected


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(st.sampled_from("ab :<é#\n"), max_size=80),
            st.lists(st.text(st.sampled_from("ab :<é#\n"), max_size=80), min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_the_quick_reader_agrees_with_the_parser_on_written_directories(entries):
    written = ldap.render(
        [
            ldap.Entry(f"cn=e{i},o=x", (("cn", (f"e{i}",)), ("description", tuple(values))))
            for i, (_, values) in enumerate(entries)
        ],
        ldap.HEADER,
    )
    assert _ours(written) == _parser(written)


# --- random fleets ----------------------------------------------------------------------

GATEWAY_DECLARATION = GatewayDeclaration(mx_hosts=["mx1.gw.example.org"], ldap=LdapSettings(base_dn=BASE))
UIDS = ("mrossi", "lbianchi", "g.neri", "p-conti")
LOCALS = ("info", "mario.rossi", "a+b", "staff", "x_y", "postmaster")
DOMAINS = ("tifpa.example.org", "lnf.example.org", "xn--citt-3na.example.org")
TARGETS = ("a@example.net", "b@example.com")


@st.composite
def fleets(draw) -> Fleet:
    """A small fleet as the checks allow it: every owner is the uid of some person or alias."""
    kinds = {
        (name, local): draw(st.sampled_from(("person", "alias", "role", "list", "external")))
        for name in draw(st.sets(st.sampled_from(DOMAINS), min_size=1))
        for local in draw(st.sets(st.sampled_from(LOCALS)))
    }
    uids = {key: draw(st.sampled_from(UIDS)) for key, kind in kinds.items() if kind in ("person", "alias")}
    known = sorted(set(uids.values()))
    domains = []
    for name in sorted({name for name, _ in kinds}):
        addresses = []
        for (domain, local), kind in sorted(kinds.items()):
            if domain != name or (kind in ("role", "list") and not known):
                continue
            owners = (
                tuple(sorted(draw(st.sets(st.sampled_from(known), min_size=1)))) if kind in ("role", "list") else ()
            )
            targets = tuple(sorted(draw(st.sets(st.sampled_from(TARGETS), min_size=1)))) if kind == "external" else ()
            addresses.append(Address(f"{local}@{name}", kind, uids.get((domain, local)), owners, targets))
        domains.append(
            Domain(
                name=name,
                site=draw(st.sampled_from(("TIFPA", "LNF"))),
                admins=tuple(sorted(draw(st.sets(st.sampled_from(("@example/a", "@b")), min_size=1)))),
                role="primary",
                nexthops=(NextHop("smtp", "relay.example.org", 25),),
                recipient_check="list",
                addresses=tuple(addresses),
                source=f"domains/{name}.yaml",
            )
        )
    return Fleet(GATEWAY_DECLARATION, tuple(domains))


@pytest.mark.needs(*SLAPD)
@settings(max_examples=20, deadline=None)
@given(old_fleet=fleets(), new_fleet=fleets())
def test_random_fleets_old_plus_diff_is_new(server, old_fleet, new_fleet):
    old = ldap.render(ldap.directory(old_fleet), ldap.HEADER)
    new = ldap.render(ldap.directory(new_fleet), ldap.HEADER)
    old_records, new_records = ldapdiff.read_directory(old), ldapdiff.read_directory(new)
    assert ldapdiff.diff(new_records, new_records) == []
    _apply_and_compare(server, old, ldapdiff.render(ldapdiff.diff(old_records, new_records)), new)
