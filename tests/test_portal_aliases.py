"""The national alias page over HTTP: a real portal process (uvicorn, TLS), a real slapd with the bundled
directory, a real OpenID provider, and the gateway repository as real git repositories: a bare 'origin'
holding the bundled fleet on main, and the portal's own clone of it.

The person, their name and addresses come from the bundled declarations (read here with PyYAML); the
forms of the name are written by hand from docs/national-aliases.md, never asked of the compiler.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import git
import pytest
import yaml

from tests import gitrepo
from tests import portal_env as env
from tests.conftest import REPO

pytestmark = pytest.mark.needs("slapd", "slapadd", "openssl")

DOCUMENT = json.loads((REPO / "out" / "portal" / "portal.json").read_text())
GATEWAY = yaml.safe_load((REPO / "gateway.yaml").read_text())
NATIONAL = GATEWAY["national"]["domain"]
LNF = yaml.safe_load((REPO / "domains" / "lnf.example.org.yaml").read_text())
# Francesca Bruni: declared with her name and an alias in lnf.example.org; a form of her name that is not the
# default (surname first, docs/national-aliases.md), written by hand.
UID = "fbruni"
LOCAL = next(local for local, value in LNF["recipients"].items() if isinstance(value, dict) and value.get("name"))
NAME = LNF["recipients"][LOCAL]["name"]
SURNAME_FIRST = "bruni.francesca"
OWN = f"{LOCAL}@lnf.example.org"
LEDGER = yaml.safe_load((REPO / "national" / "aliases.yaml").read_text())["aliases"]
SOMEONE_ELSES = next(alias for uid, owned in sorted(LEDGER.items()) if uid != UID for alias in owned if "." in alias)
NOBODY = GATEWAY["portal"]["operators"][0]  # an operator, with no address of their own


@pytest.fixture(scope="module")
def stack():
    root = Path(tempfile.mkdtemp(prefix="mailgw-portal-aliases-"))
    origin = gitrepo.init(root / "origin.git", bare=True)
    work = gitrepo.fleet_repo(root / "work")
    work.create_remote("origin", origin.working_dir if origin.working_dir else str(root / "origin.git"))
    work.remote("origin").push("main:main")
    clone = git.Repo.clone_from(str(root / "origin.git"), root / "clone")
    document = json.loads(json.dumps(DOCUMENT))
    document["national"]["repository"] = str(root / "clone")
    oidc = env.OidcProvider(root)
    directory = env.Directory((REPO / "out" / "ldap" / "directory.ldif").read_bytes(), GATEWAY["ldap"]["base_dn"])
    portal = env.Portal(root / "portal", document, oidc, directory, ("127.0.0.1", env.free_port()))
    try:
        for uid in (UID, NOBODY):
            oidc.add_user(uid, uid=uid)
        assert portal.command("init-db").returncode == 0
        portal.start()
        yield portal, git.Repo(root / "origin.git"), clone
    finally:
        portal.stop()
        directory.close()
        oidc.close()
        shutil.rmtree(root, ignore_errors=True)


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _file_at(commit: git.Commit, path: str) -> dict:
    return yaml.safe_load((commit.tree / path).data_stream.read())


def test_the_page_shows_the_person_s_aliases_and_the_forms_of_their_name(stack):
    portal, _, _ = stack
    with portal.sign_in(UID) as person:
        page = person.get("/aliases")
    assert page.status_code == 200, page.text
    assert f'<dd id="simple">{UID}@{NATIONAL}</dd>' in page.text
    assert f'<dd id="name">{NAME}</dd>' in page.text
    assert f'value="{SURNAME_FIRST}"' in page.text and f'value="{OWN}"' in page.text


def test_a_choice_is_one_commit_on_the_person_s_branch_after_validate_and_plan(stack):
    portal, origin, clone = stack
    main = origin.commit("main")
    with portal.sign_in(UID) as person:
        csrf = _csrf(person.get("/aliases").text)
        reply = person.post("/aliases", data={"csrf": csrf, "alias": SURNAME_FIRST, "primary": OWN})
        assert reply.status_code == 200, reply.text
        assert f"national/{UID}" in reply.text and 'id="proposed"' in reply.text
        first = origin.commit(f"national/{UID}")
        assert first.parents == (main,), "one commit on top of main"
        assert sorted(first.stats.files) == ["national/aliases.yaml", "national/choices.yaml"]
        assert _file_at(first, "national/choices.yaml")["choices"][UID]["alias"] == SURNAME_FIRST
        assert SURNAME_FIRST in _file_at(first, "national/aliases.yaml")["aliases"][UID]
        assert f"{SURNAME_FIRST}@{NATIONAL}" in first.message, "the plan is the commit's message"
        # The page now shows the pending choice; a second change is a second commit on the same branch.
        page = person.get("/aliases").text
        assert f'<dd id="extended">{SURNAME_FIRST}@{NATIONAL}</dd>' in page
        other = next(a for a in re.findall(r'name="primary" value="([^"]+)"', page) if a != OWN)
        reply = person.post("/aliases", data={"csrf": _csrf(page), "primary": other})
        assert reply.status_code == 200, reply.text
        second = origin.commit(f"national/{UID}")
        assert second.parents == (first,)
        assert _file_at(second, "national/choices.yaml")["choices"][UID] == {"alias": SURNAME_FIRST, "primary": other}
    assert not clone.is_dirty(untracked_files=True) and clone.head.commit == main, "the clone is left at main"


def test_a_choice_the_rules_refuse_commits_nothing(stack):
    portal, origin, _ = stack
    before = {ref.name: ref.commit for ref in origin.references}
    with portal.sign_in(UID) as person:
        csrf = _csrf(person.get("/aliases").text)
        taken = person.post("/aliases", data={"csrf": csrf, "alias": SOMEONE_ELSES})
        assert taken.status_code == 409 and "somebody else" in taken.text
        not_theirs = person.post("/aliases", data={"csrf": csrf, "primary": "stranger@lnf.example.org"})
        assert not_theirs.status_code == 409 and "not one of" in not_theirs.text
        forged = person.post("/aliases", data={"csrf": "forged", "alias": SURNAME_FIRST})
        assert forged.status_code == 403
    assert {ref.name: ref.commit for ref in origin.references} == before


def test_someone_without_an_address_of_their_own_has_no_national_alias(stack):
    portal, _, _ = stack
    with portal.sign_in(NOBODY) as person:
        page = person.get("/aliases")
    assert page.status_code == 200 and 'id="none"' in page.text
