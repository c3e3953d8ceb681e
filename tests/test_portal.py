"""The quarantine portal as people and Rspamd use it: a real uvicorn process over TLS, SQLite, a real slapd
with the bundled directory, a real OpenID provider; released mail goes to an SMTP sink standing for the MX's
release service (tests/test_portal_e2e.py runs the real MX).

Who owns what comes from the bundled declarations (domains/*.yaml), read here
with PyYAML, never from the portal.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tests import portal_env as env
from tests.conftest import REPO
from tests.mx_harness import Sink, wait_for

pytestmark = pytest.mark.needs("slapd", "slapadd", "openssl")

DOCUMENT = json.loads((REPO / "out" / "portal" / "portal.json").read_text())
BASE_DN = yaml.safe_load((REPO / "gateway.yaml").read_text())["ldap"]["base_dn"]
TIFPA = yaml.safe_load((REPO / "domains" / "tifpa.example.org.yaml").read_text())
OPERATOR = yaml.safe_load((REPO / "gateway.yaml").read_text())["portal"]["operators"][0]
GATEWAY = yaml.safe_load((REPO / "gateway.yaml").read_text())
GATEWAY_FILTERS = GATEWAY["filters"]


def address(local: str) -> str:
    return f"{local}@tifpa.example.org"


def _owned(uid: str) -> set[str]:
    """What the declarations give `uid` in tifpa.example.org: own addresses, aliases, lists and roles owned."""
    found = set()
    for local, recipient in TIFPA["recipients"].items():
        if recipient == uid or (
            isinstance(recipient, dict) and uid in (recipient.get("owners") or [recipient.get("uid")])
        ):
            found.add(address(local.lower()))
    return found


def _person_and_list() -> tuple[str, str, str, str]:
    """A uid with an own address and a list it owns, and a list owner's role address."""
    lists = {k: v for k, v in TIFPA["recipients"].items() if isinstance(v, dict) and v.get("kind") == "list"}
    roles = {k: v for k, v in TIFPA["recipients"].items() if isinstance(v, dict) and v.get("kind") == "role"}
    uid = sorted(set.intersection(*(set(v["owners"]) for v in [*lists.values(), *roles.values()][:1])))[0]
    own = next(k for k, v in TIFPA["recipients"].items() if v == uid)
    a_list = next(k for k, v in lists.items() if uid in v["owners"])
    return uid, address(own), address(a_list), address(next(iter(roles)))


UID, OWN, LIST, ROLE = _person_and_list()
STRANGER = next(v for v in TIFPA["recipients"].values() if isinstance(v, str) and not (_owned(v) & _owned(UID)))


@pytest.fixture(scope="module")
def stack():
    root = Path(tempfile.mkdtemp(prefix="mailgw-portal-"))
    oidc = env.OidcProvider(root)
    directory = env.Directory((REPO / "out" / "ldap" / "directory.ldif").read_bytes(), BASE_DN)
    mx = Sink("release")
    portal = env.Portal(root / "portal", DOCUMENT, oidc, directory, ("127.0.0.1", mx.port))
    try:
        for uid in (UID, STRANGER, OPERATOR):
            oidc.add_user(uid, uid=uid)
        assert portal.command("init-db").returncode == 0
        portal.start()
        yield portal, mx
    finally:
        portal.stop()
        mx.stop()
        directory.close()
        oidc.close()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def ids_in(page: str) -> list[str]:
    return re.findall(r'href="/messages/([A-Za-z0-9_-]+)"', page)


def test_what_the_directory_says_the_owner_manages(stack):
    """The owner's own address, a list and a role they own: each in the declarations."""
    assert {OWN, LIST} <= _owned(UID)
    assert ROLE in _owned(UID) or ROLE not in _owned(STRANGER)


def test_ingest_stores_once_and_the_owner_sees_exactly_their_messages(stack):
    portal, _ = stack
    mine = {}
    for rcpt in (OWN, LIST):
        message = env.held_message("spammer@ext.example.net", [rcpt], subject=f"spam to {rcpt}")
        for _ in range(2):  # Rspamd posts again after a deferral: stored once
            reply = portal.post(env.prefixed(message), [rcpt], "spammer@ext.example.net")
            assert reply.status_code == 200, reply.text
        mine[rcpt] = message
    other = env.held_message("spammer@ext.example.net", ["x@lnf.example.org"], subject="not for the owner")
    assert portal.post(env.prefixed(other), ["x@lnf.example.org"], "spammer@ext.example.net").status_code == 200
    with portal.sign_in(UID) as owner:
        page = owner.get("/", params={"sender": "spammer@ext.example.net"}).text
        subjects = set(re.findall(r"spam to ([^<]+)</a>", page))
        assert subjects == {OWN, LIST}
        assert "not for the owner" not in page
    with portal.sign_in(STRANGER) as stranger:
        page = stranger.get("/").text
        assert "spam to" not in page and "not for the owner" not in page
    with portal.sign_in(OPERATOR) as operator:
        page = operator.get("/", params={"sender": "spammer@ext.example.net"}).text
        assert {OWN, LIST} <= set(re.findall(r"spam to ([^<]+)</a>", page)) and "not for the owner" in page


def test_release_reinjects_for_the_owners_recipients_only(stack):
    portal, mx = stack
    sender = "bounce-1@news.example.net"
    message = env.held_message(sender, [OWN, "someone@lnf.example.org"], subject="release me")
    assert portal.post(env.prefixed(message), [OWN, "someone@lnf.example.org"], sender).status_code == 200
    with portal.sign_in(UID) as owner:
        [message_id] = ids_in(owner.get("/", params={"subject": "release me"}).text)
        view = owner.get(f"/messages/{message_id}")
        csrf = re.search(r'name="csrf" value="([^"]+)"', view.text).group(1)
        reply = owner.post(f"/messages/{message_id}/release", data={"csrf": csrf})
        assert reply.status_code == 303
        arrived = wait_for(lambda: [m for m in mx.messages if b"release me" in m.content], 10, "the release")
        assert [(m.mail_from, m.rcpt_tos) for m in arrived] == [(sender, (OWN,))]
        # The exporter's lines are not part of what is released; the message is as received.
        assert arrived[0].content.replace(b"\r\n", b"\n") == message.replace(b"\r\n", b"\n")
        again = owner.post(f"/messages/{message_id}/release", data={"csrf": csrf})
        assert again.headers["location"].endswith("done=nothing")
        assert len([m for m in mx.messages if b"release me" in m.content]) == 1


def test_a_virus_is_released_by_operators_only(stack):
    portal, mx = stack
    message = env.held_message("x@ext.example.net", [OWN], subject="infected attachment")
    assert portal.post(env.prefixed(message, virus="Mailgw.Test.EICAR"), [OWN], "x@ext.example.net").status_code == 200
    with portal.sign_in(UID) as owner:
        [message_id] = ids_in(owner.get("/", params={"reason": "virus"}).text)
        view = owner.get(f"/messages/{message_id}").text
        assert "virus: Mailgw.Test.EICAR" in view and 'id="release"' not in view
        csrf = re.search(r'name="csrf" value="([^"]+)"', view).group(1)
        assert owner.post(f"/messages/{message_id}/release", data={"csrf": csrf}).status_code == 403
    with portal.sign_in(OPERATOR) as operator:
        view = operator.get(f"/messages/{message_id}").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', view).group(1)
        assert operator.post(f"/messages/{message_id}/release", data={"csrf": csrf}).status_code == 303
    wait_for(lambda: [m for m in mx.messages if b"infected attachment" in m.content], 10, "the release")


def test_delete_and_download(stack):
    portal, _ = stack
    message = env.held_message("x@ext.example.net", [OWN], subject="delete me")
    assert portal.post(env.prefixed(message), [OWN], "x@ext.example.net").status_code == 200
    with portal.sign_in(UID) as owner:
        [message_id] = ids_in(owner.get("/", params={"subject": "delete me"}).text)
        eml = owner.get(f"/messages/{message_id}/eml")
        assert eml.status_code == 200 and eml.content == message
        assert eml.headers["content-disposition"].startswith("attachment;")
        csrf = re.search(r'name="csrf" value="([^"]+)"', owner.get(f"/messages/{message_id}").text).group(1)
        assert owner.post(f"/messages/{message_id}/delete", data={"csrf": csrf}).status_code == 303
        assert owner.get(f"/messages/{message_id}").status_code == 404
        assert ids_in(owner.get("/", params={"subject": "delete me"}).text) == []


# --- security --------------------------------------------------------------------------------


def _a_message_of(portal, rcpt: str, subject: str) -> str:
    message = env.held_message("x@ext.example.net", [rcpt], subject=subject)
    assert portal.post(env.prefixed(message), [rcpt], "x@ext.example.net").status_code == 200
    with portal.sign_in(OPERATOR) as operator:
        [message_id] = ids_in(operator.get("/", params={"subject": subject}).text)
    return message_id


ROUTES = [
    ("GET", "/"),
    ("GET", "/messages/{id}"),
    ("GET", "/messages/{id}/eml"),
    ("POST", "/messages/{id}/release"),
    ("POST", "/messages/{id}/delete"),
    ("POST", "/logout"),
]


def test_every_route_without_a_session(stack):
    portal, mx = stack
    message_id = _a_message_of(portal, OWN, "no session")
    before = len(mx.messages)
    with portal.client() as anonymous:
        for method, path in ROUTES:
            reply = anonymous.request(method, path.format(id=message_id))
            if method == "GET":
                assert reply.status_code == 303 and reply.headers["location"].startswith("/login?next="), path
            else:
                assert reply.status_code == 403, path
            assert "no session" not in reply.text
    assert len(mx.messages) == before


def test_another_users_message_and_forged_ids_are_not_found(stack):
    portal, mx = stack
    message_id = _a_message_of(portal, OWN, "not yours")
    before = len(mx.messages)
    with portal.sign_in(STRANGER) as stranger:
        csrf = re.search(r'name="csrf" value="([^"]+)"', stranger.get("/").text).group(1)
        for forged in (message_id, message_id[:-1] + ("A" if message_id[-1] != "A" else "B"), "1", "..%2f..%2fetc"):
            for method, path in ROUTES[1:5]:
                reply = stranger.request(
                    method, path.format(id=forged), data={"csrf": csrf} if method == "POST" else None
                )
                assert reply.status_code == 404, (method, path, forged)
                assert "not yours" not in reply.text
    assert len(mx.messages) == before
    with portal.sign_in(UID) as owner:
        assert owner.get(f"/messages/{message_id}").status_code == 200


def test_every_state_change_needs_the_csrf_token(stack):
    portal, mx = stack
    message_id = _a_message_of(portal, OWN, "csrf target")
    before = len(mx.messages)
    with portal.sign_in(UID) as owner:
        for _, path in [r for r in ROUTES if r[0] == "POST"]:
            for data in (None, {"csrf": "forged"}, {"csrf": ""}):
                assert owner.post(path.format(id=message_id), data=data).status_code == 403, path
        assert owner.get(f"/messages/{message_id}").status_code == 200  # neither deleted nor signed out
    assert len(mx.messages) == before


def test_markup_in_a_message_is_shown_inert(stack):
    portal, _ = stack
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    message = (
        f'From: "{evil}" <evil@ext.example.net>\r\nTo: <{OWN}>\r\nSubject: hello {evil}\r\n'
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        f'<html><body><p>Click</p>{evil}<a href="javascript:alert(2)">here</a></body></html>\r\n'
    ).encode()
    assert portal.post(env.prefixed(message), [OWN], "evil@ext.example.net").status_code == 200
    with portal.sign_in(UID) as owner:
        listing = owner.get("/", params={"sender": "evil@ext.example.net"})
        [message_id] = ids_in(listing.text)
        view = owner.get(f"/messages/{message_id}")
        for page in (listing, view):
            assert "<script>" not in page.text and "<img" not in page.text and 'href="javascript:' not in page.text
            assert "&lt;script&gt;" in page.text
            assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script
        assert "Click" in view.text


def test_ingest_refuses_without_credentials_and_bad_posts(stack):
    portal, _ = stack
    message = env.held_message("x@ext.example.net", [OWN], subject="refused post")
    body = env.prefixed(message)
    assert portal.post(body, [OWN], "x@ext.example.net", auth=("", "")).status_code == 401
    assert portal.post(body, [OWN], "x@ext.example.net", auth=(env.INGEST_USER, "wrong")).status_code == 401
    assert portal.post(body, [OWN], "x@ext.example.net", auth=("someone", portal.ingest_password)).status_code == 401
    with portal.client() as client:
        assert client.post(portal.document["ingest"]["path"], content=body).status_code == 401
    too_big = env.prefixed(
        env.held_message("x@ext.example.net", [OWN], "refused post", "x" * DOCUMENT["max_message_bytes"])
    )
    assert portal.post(too_big, [OWN], "x@ext.example.net").status_code == 413
    for headers, content in (
        ({"X-Rspamd-rcpt": "not json"}, body),
        ({"X-Rspamd-rcpt": "[]"}, body),
        ({"X-Rspamd-rcpt": json.dumps(["<script>"])}, body),
        ({"Content-Type": "text/plain"}, body),
        ({}, b""),
        ({}, b"\r\n\r\nno header at all"),
    ):
        assert 400 <= portal.post(content, [OWN], "x@ext.example.net", headers=headers).status_code < 500, headers
    with portal.sign_in(OPERATOR) as operator:
        assert ids_in(operator.get("/", params={"subject": "refused post"}).text) == []


def test_purge_is_idempotent_and_keeps_what_is_within_retention(stack):
    portal, _ = stack
    first = portal.command("purge")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "purged 0 expired recipient(s), 0 message(s)\n"


def _addresses_of(uid: str) -> list[str]:
    """A person's own addresses and aliases across every bundled domain, from the declarations."""
    found = []
    for path in sorted((REPO / "domains").glob("*.yaml")):
        declaration = yaml.safe_load(path.read_text())
        domain = (
            declaration["domain"].encode("idna").decode()
            if not declaration["domain"].isascii()
            else declaration["domain"]
        )
        for local, recipient in (declaration.get("recipients") or {}).items():
            if recipient == uid or (isinstance(recipient, dict) and recipient.get("uid") == uid):
                found.append(f"{local.lower()}@{domain}")
    return sorted(found)


def test_digests_go_to_the_person_and_to_the_list_owners_once_with_a_sign_in_link(stack):
    portal, mx = stack
    assert portal.command("digest").returncode == 0  # what earlier tests left pending
    before = len(mx.messages)
    for rcpt in (OWN, LIST):
        message = env.held_message("digest@ext.example.net", [rcpt], subject=f"digest item for {rcpt}")
        assert portal.post(env.prefixed(message), [rcpt], "digest@ext.example.net").status_code == 200
    done = portal.command("digest")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sent 2 digest(s)")
    digests = mx.messages[before:]
    by_address = {}
    for digest in digests:
        text = digest.content.decode()
        held_for = re.search(r"Subject: Quarantine: 1 new message held for (\S+)", text).group(1)
        by_address[held_for] = (digest.rcpt_tos, text)
    owners = next(v["owners"] for k, v in TIFPA["recipients"].items() if address(k.lower()) == LIST)
    assert by_address[OWN][0] == (OWN,)
    assert sorted(by_address[LIST][0]) == sorted({_addresses_of(uid)[0] for uid in owners})
    for rcpt, (_, text) in by_address.items():
        assert f"digest item for {rcpt}" in text
        link = f"{portal.url}/?address={rcpt.replace('@', '%40')}"
        assert link in text
        assert "/release" not in text and "/delete" not in text and "/messages/" not in text
    again = portal.command("digest")
    assert again.stdout.startswith("sent 0 digest(s)") and len(mx.messages) == before + 2
    # The link leads to the sign-in, not to the messages.
    with portal.client() as anonymous:
        reply = anonymous.get(f"/?address={OWN}")
        assert reply.status_code == 303 and reply.headers["location"].startswith("/login")


def test_sign_in_asks_the_provider_for_the_scopes_of_gateway_yaml(stack):
    portal, _ = stack
    with portal.client() as client:
        authorize = client.get("/login").headers["location"]
    [scope] = parse_qs(urlsplit(authorize).query)["scope"]
    assert scope.split(" ") == GATEWAY["portal"]["oidc_scopes"]


def test_sign_in_returns_only_to_a_page_of_the_portal(stack):
    portal, _ = stack
    for target, expected in (("/?subject=x", "/?subject=x"), ("//evil.example/", "/"), ("https://evil.example/", "/")):
        with portal.client() as client:
            authorize = client.get("/login", params={"next": target}).headers["location"]
            answer = env.httpx.post(authorize, data={"sub": UID}, verify=portal.oidc.tls.context())
            back = client.get(answer.headers["location"])
            assert back.status_code == 303 and back.headers["location"] == expected, target


def _kept_until(page: str) -> str:
    return re.search(r"<dt>Kept until \(UTC\)</dt><dd>([0-9-]+)</dd>", page).group(1)


def test_held_items_expire_after_their_domain_s_retention_for_their_direction(stack):
    """Inbound: the recipient's domain's days; outbound: the sender's domain's (from the declarations)."""
    import datetime

    portal, _ = stack
    gateway_days = GATEWAY_FILTERS["inbound"]["quarantine"]["retention_days"]
    tifpa_outbound = TIFPA["filters"]["outbound"]["quarantine"]["retention_days"]
    inbound = env.held_message("x@ext.example.net", [OWN], subject="retention inbound")
    outbound = env.held_message(OWN, ["friend@ext.example.net"], subject="retention outbound")
    assert portal.post(env.prefixed(inbound, days=999), [OWN], "x@ext.example.net").status_code == 200
    assert (
        portal.post(env.prefixed(outbound, days=999, direction="outbound"), ["friend@ext.example.net"], OWN).status_code
        == 200
    )
    today = datetime.datetime.now(datetime.UTC).date()
    with portal.sign_in(OPERATOR) as operator:
        for subject, days in (("retention inbound", gateway_days), ("retention outbound", tifpa_outbound)):
            [message_id] = ids_in(operator.get("/", params={"subject": subject}).text)
            kept = _kept_until(operator.get(f"/messages/{message_id}").text)
            assert kept in {str(today + datetime.timedelta(days=days + d)) for d in (0, 1)}, subject
