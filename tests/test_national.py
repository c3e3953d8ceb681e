"""The national domain's aliases: the forms of a name, the notes, the ledger's stability, explain and plan.

Expected aliases are written by hand from the rules of docs/national-aliases.md; the property test
builds random fleets valid by construction and checks the rules' promises on what the compiler gives.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import national
from compiler.mx import Tables, explain
from compiler.pipeline import compile_repository, load_declarations
from tests import gitrepo
from tests.conftest import example, reached, run_mailgw_process

GATEWAY = """\
mx_hosts: [mx1.gw.example.org]
ldap: {base_dn: "ou=mailgw,dc=example,dc=org"}
national: {domain: example.it}
"""
NATIONAL_FILE = """\
domain: example.it
site: AC
admins: ["@example/mail-gateway"]
delivery: {nexthop: "smtp:[smtp.ac.example.it]:25"}
recipients:
  presidenza: {kind: role, owners: [mrossi]}
"""


def _site(domain: str, recipients: str, extra: str = "") -> str:
    return (
        f'domain: {domain}\nsite: {domain.split(".")[0].upper()}\nadmins: ["@example/mail"]\n'
        f'delivery: {{nexthop: "smtp:[relay.{domain}]:25"}}\nrecipients:\n{recipients}{extra}'
    )


# --- the forms of a name (docs/national-aliases.md) ----------------------------------------------

FORMS = [
    ("Mario Rossi", ["mario.rossi", "m.rossi", "rossi.mario"]),
    (
        "Maria Chiara De Luca",
        [
            "mariachiara.deluca",
            "maria.deluca",
            "maria.chiara.deluca",
            "mariachiara.de.luca",
            "m.deluca",
            "deluca.mariachiara",
        ],
    ),
    ("Rossi Bianchi, Anna", ["anna.rossibianchi", "anna.rossi.bianchi", "a.rossibianchi", "rossibianchi.anna"]),
    ("Carlo D'Esposito", ["carlo.desposito", "c.desposito", "desposito.carlo"]),
    ("Jean-Luc Picard", ["jeanluc.picard", "jean.picard", "jean.luc.picard", "j.picard", "picard.jeanluc"]),
    ("Nicolò Müller", ["nicolo.muller", "n.muller", "muller.nicolo"]),
    ("Łukasz Żółć", ["lukasz.zolc", "l.zolc", "zolc.lukasz"]),
    ("Ægir Þórsson", ["aegir.thorsson", "a.thorsson", "thorsson.aegir"]),
    ("Ludwig van Beethoven", ["ludwig.vanbeethoven", "ludwig.van.beethoven", "l.vanbeethoven", "vanbeethoven.ludwig"]),
    ("Zoe\u0308 Martin", ["zoe.martin", "z.martin", "martin.zoe"]),  # written decomposed
    ("Σωκράτης Παππάς", []),  # no letter an address can spell
]


@pytest.mark.parametrize("name, expected", FORMS)
def test_the_forms_of_a_name(name, expected):
    assert list(national.forms(name)) == expected


# --- notes: what a declaration should add --------------------------------------------------------


def _fleet(make_repo, people: str, extra: dict[str, str] | None = None) -> Path:
    files = {
        "domains/example.it.yaml": NATIONAL_FILE,
        "domains/tifpa.example.org.yaml": _site("tifpa.example.org", people),
    }
    return make_repo({**files, **(extra or {})}, gateway=GATEWAY)


def test_validate_says_who_has_no_name_and_that_aliases_wait_for_assign(make_repo, mailgw):
    root = _fleet(make_repo, '  mario.rossi: {uid: mrossi, name: "Mario Rossi"}\n  l.bianchi: lbianchi\n')
    result = mailgw(root, "validate")
    assert result.code == 0
    notes = [line for line in result.err.splitlines() if "note[" in line]
    assert notes[0].startswith("domains/tifpa.example.org.yaml:7:3: note[national-no-name]: 1 person(s)")
    assert "(lbianchi)" in notes[0]
    assert notes[1].startswith("national/aliases.yaml:1:1: note[national-unassigned]: 2 person(s)")
    assert mailgw(root, "national", "assign").code == 0
    assert yaml.safe_load((root / "national/aliases.yaml").read_text()) == {
        "aliases": {"lbianchi": ["lbianchi"], "mrossi": ["mrossi", "mario.rossi"]}
    }
    notes = [line for line in mailgw(root, "validate").err.splitlines() if "note[" in line]
    assert [note.split("note[")[1].split("]")[0] for note in notes] == ["national-no-name"]


def test_a_choice_that_no_longer_fits_is_set_aside_with_a_note(make_repo, mailgw):
    root = _fleet(
        make_repo,
        '  mario.rossi: {uid: mrossi, name: "Mario Rossi"}\n  m.rossi: {kind: alias, uid: mrossi}\n',
        {"national/choices.yaml": "choices:\n  mrossi: {primary: m.rossi@tifpa.example.org}\n"},
    )
    assert mailgw(root, "national", "assign").code == 0
    fleet = compile_repository(root).fleet
    aliases = {a.address: a.targets for a in fleet.domain("example.it").addresses if a.kind == "national"}
    assert aliases["mrossi@example.it"] == ("m.rossi@tifpa.example.org",)
    # The site removes the address: its change goes through, the aliases go to the default again.
    path = root / "domains/tifpa.example.org.yaml"
    path.write_text(path.read_text().replace("  m.rossi: {kind: alias, uid: mrossi}\n", ""))
    result = mailgw(root, "validate")
    assert result.code == 0 and "note[national-choice-set-aside]" in result.err
    fleet = compile_repository(root).fleet
    aliases = {a.address: a.targets for a in fleet.domain("example.it").addresses if a.kind == "national"}
    assert aliases["mrossi@example.it"] == ("mario.rossi@tifpa.example.org",)


def test_choose_refuses_what_the_rules_do_not_allow(make_repo, mailgw):
    root = _fleet(
        make_repo,
        '  mario.rossi: {uid: mrossi, name: "Mario Rossi"}\n  marco.rossi: {uid: mrossi2, name: "Marco Rossi"}\n',
    )
    assert mailgw(root, "national", "assign").code == 0
    for args, why in [
        (["mrossi2", "--alias", "mario.rossi"], "'mario.rossi' is somebody else's alias"),
        (["mrossi2", "--alias", "m.rossi2"], "'m.rossi2' is not a form of mrossi2's name"),
        (["mrossi", "--alias", "presidenza"], "'presidenza' is a name the national domain keeps for itself"),
        (["mrossi", "--primary", "marco.rossi@tifpa.example.org"], "is not one of mrossi's addresses"),
        (["nobody", "--alias", "x"], "nobody has no address of their own in the fleet"),
    ]:
        result = mailgw(root, "national", "choose", *args)
        assert result.code == 1 and why in result.err, result.err
    # m.rossi is free for the first who asks, and then nobody else's.
    assert mailgw(root, "national", "choose", "mrossi2", "--alias", "m.rossi").code == 0
    result = mailgw(root, "national", "choose", "mrossi", "--alias", "m.rossi")
    assert result.code == 1 and "somebody else's" in result.err


# --- the ledger's promises, across random fleets -------------------------------------------------

GIVEN = ["Mario", "Maria Chiara", "Anna", "José", "Łukasz", "Giulia", "Jean-Luc", "Nicolò", "Info", "Web"]
SURNAMES = ["Rossi", "De Luca", "D'Angelo", "Müller", "Þórsson", "van der Berg", "O'Brien", "Master", "Σωκράτης"]
# Local parts the national domain keeps: RFC 2142's and system names (written here from the RFC), its own roles.
RFC_2142 = {"info", "marketing", "sales", "support", "abuse", "noc", "security", "postmaster", "hostmaster"}
RFC_2142 |= {"usenet", "news", "webmaster", "www", "uucp", "ftp", "mailer-daemon", "root"}
ROLES = ["presidenza", "mario.rossi", "info.rossi", "anna.deluca", "r.mario"]
# The grammar of a local part the gateway writes (docs/declarations.md).
LOCAL_PART = re.compile(r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*")
UIDS = st.one_of(
    st.from_regex(r"[a-z][a-z0-9]{1,6}", fullmatch=True),
    st.sampled_from(["info", "www", "mario.rossi", "anna.deluca", "presidenza", "a..b", "rossi.mario"]),
)
PERSON = st.tuples(UIDS, st.one_of(st.none(), st.builds(lambda g, s: f"{g} {s}", st.sampled_from(GIVEN),
                                                        st.sampled_from(SURNAMES))))  # fmt: skip


def _write(root: Path, people: list[tuple[str, str | None]], roles: list[str]) -> None:
    domains = root / "domains"
    for path in domains.glob("*.yaml"):
        path.unlink()
    (root / "gateway.yaml").write_text(GATEWAY)
    owner = people[0][0]
    role_lines = "".join(f"  {role}: {{kind: role, owners: [{owner}]}}\n" for role in roles)
    national_file = NATIONAL_FILE.split("recipients:\n")[0] + ("recipients:\n" + role_lines if roles else "")
    (domains / "example.it.yaml").write_text(national_file)
    sites: dict[int, str] = {}
    for i, (uid, name) in enumerate(people):
        # Quoted: a uid like 'no' or 'on' is a boolean to YAML 1.1 when plain.
        value = f'{{uid: "{uid}", name: "{name}"}}' if name else f'{{uid: "{uid}"}}'
        sites[i % 3] = sites.get(i % 3, "") + f"  p{i}: {value}\n"
    for site, lines in sites.items():
        (domains / f"s{site}.example.org.yaml").write_text(_site(f"s{site}.example.org", lines))


def _assigned(root: Path, roles: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """Assign, then each uid's (simple, extended) national alias, from a fresh load."""
    declarations = load_declarations(root)
    files = declarations.national_files
    ledger = national.assign(declarations.national, files)
    (root / "national").mkdir(exist_ok=True)
    (root / national.LEDGER).write_bytes(national.render_aliases(ledger))
    resolved = load_declarations(root).national
    aliases = [alias.key for alias in resolved.aliases]
    assert len(aliases) == len(set(aliases)), "every alias belongs to one person"
    for alias in aliases:
        assert LOCAL_PART.fullmatch(alias) and len(alias) <= 64, alias
        assert alias not in RFC_2142 and alias not in roles, alias
    return {uid: (p.simple, p.extended) for uid, p in resolved.people.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    people=st.lists(PERSON, min_size=1, max_size=8, unique_by=lambda p: p[0]),
    arriving=st.lists(PERSON, max_size=4),
    leaving=st.sets(st.integers(0, 7), max_size=3),
    roles=st.lists(st.sampled_from(ROLES), max_size=3, unique=True),
)
def test_aliases_are_unique_valid_never_reserved_and_stable_when_people_come_and_go(people, arriving, leaving, roles):
    example("national aliases")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "domains").mkdir()
        _write(root, people, roles)
        first = _assigned(root, roles)
        for uid, name in people:
            if name and national.words(name):  # a name an address can spell always gives an extended alias
                assert first[uid][1] is not None, uid
        staying = [person for i, person in enumerate(people) if i not in leaving or i == 0]
        known = {uid for uid, _ in people}
        later = list({uid: (uid, name) for uid, name in staying + [p for p in arriving if p[0] not in known]}.values())
        _write(root, later, roles)
        second = _assigned(root, roles)
        for uid, _ in staying:
            assert second[uid] == first[uid], f"{uid}'s aliases changed when others came and went"
        reached("national aliases", "unique, valid, never reserved, stable")


# --- explain and plan ----------------------------------------------------------------------------


def test_explain_follows_a_national_alias_and_shows_a_capture(make_repo, mailgw):
    root = _fleet(
        make_repo,
        '  mario.rossi: {uid: mrossi, name: "Mario Rossi"}\n  segreteria: {kind: role, owners: [mrossi]}\n',
        {},
    )
    path = root / "domains/tifpa.example.org.yaml"
    path.write_text(
        path.read_text()
        + "capture:\n  addresses: [mario.rossi]\n  destination: archivio@example.net\n"
        + "  notify: [segreteria@tifpa.example.org]\n"
    )
    assert mailgw(root, "national", "assign").code == 0
    compiled = compile_repository(root)
    result = explain(compiled.fleet, Tables(compiled.artifacts), "mario.rossi@example.it")
    assert result.accepted and result.owner.startswith("mrossi (a national alias")
    shown = [(d.recipient, d.route) for d in result.deliveries]
    assert shown[0] == ("mario.rossi@tifpa.example.org", "smtp:[relay.tifpa.example.org]:25 (site TIFPA)")
    assert shown[1][0] == "archivio@example.net (capture)"
    assert shown[2][0] == "segreteria=tifpa.example.org@notice.mailgw.invalid (capture)"
    assert "tells segreteria@tifpa.example.org" in shown[2][1]
    assert mailgw(root, "explain", "nobody@example.it").code == 1


def test_the_plan_shows_a_choice_as_a_change_of_the_national_domain(tmp_path):
    root = tmp_path / "repo"
    repo = gitrepo.fleet_repo(root)
    done = run_mailgw_process("national", "choose", "fbruni", "--primary", "f.bruni@lnf.example.org", cwd=root)
    assert done.returncode == 0, done.stderr
    gitrepo.commit_all(repo, "fbruni's choice")
    done = run_mailgw_process("plan", "--base", "HEAD~1", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "example.it" in done.stdout
    for alias in ("fbruni@example.it", "francesca.bruni@example.it"):
        line = next(line for line in done.stdout.splitlines() if alias in line)
        assert "national alias of fbruni, to f.bruni@lnf.example.org" in line, line
