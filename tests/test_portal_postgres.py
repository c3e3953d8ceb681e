"""Two portals on one PostgreSQL (Debian's server, started here as 'postgres' on a unix socket), as on the MX
pair: either node ingests, shows and releases any message, a message posted to both is stored once, and
purging on both at once is safe.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from tests import portal_env as env
from tests.conftest import REPO
from tests.mx_harness import Sink, wait_for

pytestmark = pytest.mark.needs("slapd", "slapadd", "openssl", "pg_ctlcluster")

DOCUMENT = json.loads((REPO / "out" / "portal" / "portal.json").read_text())
BASE_DN = yaml.safe_load((REPO / "gateway.yaml").read_text())["ldap"]["base_dn"]
TIFPA = yaml.safe_load((REPO / "domains" / "tifpa.example.org.yaml").read_text())
UID = sorted(v for v in TIFPA["recipients"].values() if isinstance(v, str))[0]
OWN = next(f"{k.lower()}@tifpa.example.org" for k, v in TIFPA["recipients"].items() if v == UID)


@pytest.fixture(scope="module")
def pair():
    root = Path(tempfile.mkdtemp(prefix="mailgw-portal-pg-"))
    postgres = env.Postgres()
    oidc = env.OidcProvider(root)
    directory = env.Directory((REPO / "out" / "ldap" / "directory.ldif").read_bytes(), BASE_DN)
    mx = Sink("release")
    portals = []
    try:
        url = postgres.create_database("quarantine")
        for name in ("mx1", "mx2"):
            portals.append(env.Portal(root / name, DOCUMENT, oidc, directory, ("127.0.0.1", mx.port), database_url=url))
        oidc.add_user(UID, uid=UID)
        for portal in portals:  # both nodes create the tables: idempotent
            done = portal.command("init-db")
            assert done.returncode == 0, done.stderr
            portal.start()
        yield portals, mx, postgres
    finally:
        for portal in portals:
            portal.stop()
        mx.stop()
        directory.close()
        oidc.close()
        postgres.close()
        shutil.rmtree(root, ignore_errors=True)


def test_ingest_on_one_node_release_on_the_other(pair):
    (mx1, mx2), mx, _ = pair
    message = env.held_message("news@ext.example.net", [OWN], subject="one store for the pair")
    assert mx1.post(env.prefixed(message), [OWN], "news@ext.example.net").status_code == 200
    assert mx2.post(env.prefixed(message), [OWN], "news@ext.example.net").status_code == 200  # the other MX's copy
    with mx2.sign_in(UID) as owner:
        [message_id] = re.findall(r'href="/messages/([\w-]+)"', owner.get("/", params={"subject": "one store"}).text)
        view = owner.get(f"/messages/{message_id}").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', view).group(1)
        assert owner.post(f"/messages/{message_id}/release", data={"csrf": csrf}).status_code == 303
    [released] = wait_for(lambda: [m for m in mx.messages if b"one store for the pair" in m.content], 10, "the release")
    assert (released.mail_from, released.rcpt_tos) == ("news@ext.example.net", (OWN,))
    with mx1.sign_in(UID) as owner:
        page = owner.get(f"/messages/{message_id}").text
        assert "(released " in page and 'id="release"' not in page


def test_two_nodes_releasing_at_once_deliver_once(pair):
    (mx1, mx2), mx, _ = pair
    message = env.held_message("race@ext.example.net", [OWN], subject="released twice at once")
    assert mx1.post(env.prefixed(message), [OWN], "race@ext.example.net").status_code == 200
    clients, forms = [], []
    with mx1.sign_in(UID) as one, mx2.sign_in(UID) as two:
        [message_id] = re.findall(r'href="/messages/([\w-]+)"', one.get("/", params={"subject": "released twice"}).text)
        for client in (one, two):
            csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(f"/messages/{message_id}").text).group(1)
            clients.append(client)
            forms.append({"csrf": csrf})
        threads = [
            threading.Thread(target=c.post, args=(f"/messages/{message_id}/release",), kwargs={"data": f})
            for c, f in zip(clients, forms, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    wait_for(lambda: [m for m in mx.messages if b"released twice at once" in m.content], 10, "the release")
    assert len([m for m in mx.messages if b"released twice at once" in m.content]) == 1


def test_purge_on_both_nodes_is_idempotent(pair):
    (mx1, mx2), _, _ = pair
    message = env.held_message("old@ext.example.net", [OWN], subject="past its retention")
    assert mx1.post(env.prefixed(message, days=1), [OWN], "old@ext.example.net").status_code == 200
    from portal.store import Recipient, Store

    store = Store(Path(mx1.config.parent / "secrets" / "database").read_text().strip())
    with store.sessions() as session, session.begin():  # a day and a minute later
        for row in session.query(Recipient).filter(Recipient.address == OWN):
            row.expires_at = datetime.datetime(2000, 1, 1)
    outputs = [portal.command("purge") for portal in (mx1, mx2, mx1)]
    assert all(done.returncode == 0 for done in outputs), [done.stderr for done in outputs]
    purged = [
        re.match(r"purged (\d+) expired recipient\(s\), (\d+) message\(s\)", done.stdout).groups() for done in outputs
    ]
    assert sum(int(r) for r, _ in purged) >= 1 and purged[-1] == ("0", "0")
    with mx2.sign_in(UID) as owner:
        assert "past its retention" not in owner.get("/").text


def _digests(mx: Sink, since: int) -> dict[str, int]:
    """Held-for address -> how many digests the MX took for it since message `since`."""
    found: dict[str, int] = {}
    for message in mx.messages[since:]:
        subject = re.search(rb"^Subject: Quarantine: .* held for (\S+?)\r?$", message.content, re.M)
        if subject:
            found[subject.group(1).decode()] = found.get(subject.group(1).decode(), 0) + 1
    return found


def test_digests_run_on_both_nodes_at_once_mail_each_item_once(pair):
    (mx1, mx2), mx, _ = pair
    assert all(portal.command("digest").returncode == 0 for portal in (mx1, mx2))  # what earlier tests left
    before = len(mx.messages)
    for n in range(3):
        message = env.held_message("digests@ext.example.net", [OWN], subject=f"digest race {n}")
        assert (mx1 if n % 2 else mx2).post(env.prefixed(message), [OWN], "digests@ext.example.net").status_code == 200
    results: list = []
    first = threading.Thread(target=lambda: results.append(mx1.command("digest")))
    rcpts = len(mx.rcpts)
    mx.data_delay = 3.0  # the first node's digest is still being sent when the second node runs its own
    try:
        first.start()
        wait_for(lambda: len(mx.rcpts) > rcpts, 60, "the first node's digest to reach the MX")
        results.append(mx2.command("digest"))
        first.join(timeout=120)
    finally:
        mx.data_delay = 0.0
    assert [done.returncode for done in results] == [0, 0], [done.stderr for done in results]
    assert [done.stdout.split(";")[0] for done in results] == ["sent 0 digest(s)", "sent 1 digest(s)"]
    assert _digests(mx, before) == {OWN: 1}
    items = b"".join(m.content for m in mx.messages[before:])
    assert all(items.count(f"digest race {n}".encode()) == 1 for n in range(3)), "every item in exactly one digest"


def test_a_digest_the_mx_refuses_is_sent_by_the_next_run(pair):
    (mx1, _), mx, _ = pair
    assert mx1.command("digest").returncode == 0
    before = len(mx.messages)
    message = env.held_message("later@ext.example.net", [OWN], subject="digest after a refusal")
    assert mx1.post(env.prefixed(message), [OWN], "later@ext.example.net").status_code == 200
    mx.known = set()  # the MX refuses every recipient for a while
    try:
        assert mx1.command("digest").returncode != 0
    finally:
        mx.known = None
    assert _digests(mx, before) == {}
    done = mx1.command("digest")
    assert done.returncode == 0 and done.stdout.startswith("sent 1 digest(s)"), done.stdout + done.stderr
    assert _digests(mx, before) == {OWN: 1}


def test_while_the_database_is_down_ingest_is_refused_so_rspamd_defers(pair):
    (mx1, _), _, postgres = pair
    message = env.held_message("down@ext.example.net", [OWN], subject="while the database was down")
    postgres.stop()
    try:
        reply = mx1.post(env.prefixed(message), [OWN], "down@ext.example.net")
        assert reply.status_code == 503  # not 200: Rspamd defers, the sender keeps the message
    finally:
        postgres.start()
    assert mx1.post(env.prefixed(message), [OWN], "down@ext.example.net").status_code == 200
    with mx1.sign_in(UID) as owner:
        assert len(re.findall(r'href="/messages/', owner.get("/", params={"subject": "database was down"}).text)) == 1
