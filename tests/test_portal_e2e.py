"""The quarantine end to end over real programs: SMTP into a real Postfix running the generated main.cf and
master.cf, a real Rspamd (with clamd) running the generated local.d that POSTs what it holds to the real
portal (uvicorn over TLS, HTTP basic auth from the include file), a real slapd with the generated directory,
a real OpenID provider; a release goes back through the generated release service of master.cf (no milter)
to the site's SMTP sink.

The fleet is the bundled one with the changes the filtering tests make (next
hops to a sink, services on loopback) and one more: tifpa.example.org's
inbound spam is quarantined from 10 and never refused, so GTUBE is held.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml

from compiler.pipeline import compile_repository
from tests import portal_env as penv
from tests import rspamd_env as env
from tests.conftest import REPO, program
from tests.mx_harness import PostfixInstance, Sink, install, rmtree, sites_on_loopback, smtp_session, wait_for

pytestmark = [
    pytest.mark.needs("postfix", "postconf", "postmap", "rspamd", "rspamadm", "clamd", "slapd", "slapadd", "openssl"),
    pytest.mark.skipif(os.geteuid() != 0, reason="starting Postfix needs root (CI runs 'sudo make test')"),
]

DOMAIN = "tifpa.example.org"
STRANGER_IP = "127.0.0.3"
EXTERNAL = "someone@ext.example.net"
TEMPFAIL = "451 4.7.1"


def _declarations(root: Path, sites: Sink, services: dict, map_directory: Path) -> dict:
    """The bundled declarations with next hops, map directory and services pointing at the test's."""
    gateway = yaml.safe_load((REPO / "gateway.yaml").read_text())
    gateway.update(services)
    gateway["postfix"] = {"map_directory": str(map_directory)}
    gateway["postscreen"].pop("dnsbl_sites")  # their queries would leave loopback
    gateway.pop("forwarding", None)  # its second pass listens on a fixed port; tests/test_dkim_srs_e2e.py runs it
    (root / "domains").mkdir(parents=True)
    (root / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    declarations = {}
    for path in sorted((REPO / "domains").glob("*.yaml")):
        domain = yaml.safe_load(path.read_text())
        domain["delivery"] = {"nexthop": f"smtp:[127.0.0.1]:{sites.port}"}
        domain.pop("outbound_relays", None)
        if domain["domain"] == DOMAIN:
            domain.setdefault("filters", {}).setdefault("inbound", {}).setdefault("spam", {}).update(
                quarantine=10, reject=False
            )
        (root / "domains" / path.name).write_text(yaml.safe_dump(domain, allow_unicode=True))
        declarations[domain["domain"]] = domain
    return declarations


def _owner_of_a_person_list_and_role(domain: dict) -> tuple[str, str, str, str]:
    """From the declaration: a uid with its own address, a list and a role address it owns."""
    recipients = domain["recipients"]
    for uid in sorted({v for v in recipients.values() if isinstance(v, str)}):
        own = [k for k, v in recipients.items() if v == uid]
        lists = [
            k for k, v in recipients.items() if isinstance(v, dict) and v.get("kind") == "list" and uid in v["owners"]
        ]
        roles = [
            k for k, v in recipients.items() if isinstance(v, dict) and v.get("kind") == "role" and uid in v["owners"]
        ]
        if own and lists and roles:
            return uid, *(f"{local.lower()}@{DOMAIN}" for local in (own[0], lists[0], roles[0]))
    raise AssertionError("the bundled domain has nobody who owns a list and a role")


class Gateway:
    def __init__(self, base: Path, clamd, hs_cache):
        self.base = base
        self.sites = Sink("sites")
        self.postfix = PostfixInstance(base / "mx")
        self.oidc = penv.OidcProvider(base)
        self.release_port = penv.free_port()
        self.portal_port = penv.free_port()
        include = base / "secrets" / "quarantine-ingest.ucl"
        services = {
            "quarantine": {"url": f"https://127.0.0.1:{self.portal_port}/api/v1/messages"},
            "clamav": {"socket": str(clamd.socket)},
        }
        gateway_portal = yaml.safe_load((REPO / "gateway.yaml").read_text())["portal"]
        gateway_portal.update(release_service=f"127.0.0.1:{self.release_port}", ingest_rspamd_include=str(include))
        services["portal"] = gateway_portal
        self.declarations = _declarations(base / "repo", self.sites, services, self.postfix.conf / "mailgw")
        with sites_on_loopback():  # the sites are sinks on this machine
            compiled = compile_repository(base / "repo")
        for rel, data in compiled.artifacts.items():
            (base / "out" / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / "out" / rel).write_bytes(data)
        self.fleet = compiled.fleet
        document = json.loads((base / "out" / "portal" / "portal.json").read_text())
        self.directory = penv.Directory(
            (base / "out" / "ldap" / "directory.ldif").read_bytes(), document["ldap"]["base_dn"]
        )
        self.portal = penv.Portal(
            base / "portal",
            document,
            self.oidc,
            self.directory,
            ("127.0.0.1", self.release_port),
            port=self.portal_port,
        )
        # The secret Puppet installs for Rspamd from the operator's store: the same password as the portal's.
        include.parent.mkdir(exist_ok=True)
        include.write_text(f'password = "{self.portal.ingest_password}";\n')
        self.tree = env.config_tree(base / "out", base / "rspamd", ca_file=self.portal.tls.cert, hs_cache=hs_cache)
        self.rspamd = env.Rspamd(self.tree)

    def start(self) -> None:
        assert self.portal.command("init-db").returncode == 0
        self.portal.start()
        self.rspamd.__enter__()
        install(
            self.postfix,
            self.base / "out",
            internet_port=self.sites.port,
            milter=f"inet:127.0.0.1:{self.rspamd.proxy_port}",
        )
        self.postfix.start()

    def stop(self) -> None:
        self.postfix.stop()
        self.rspamd.__exit__(None, None, None)
        self.portal.stop()
        self.directory.close()
        self.oidc.close()
        self.sites.stop()

    def send(self, rcpts: list[str], message: bytes) -> str:
        session = smtp_session(self.postfix.port, STRANGER_IP)
        try:
            session.mail(EXTERNAL)
            for rcpt in rcpts:
                code, text = session.rcpt(rcpt)
                assert code == 250, text
            code, text = session.data(message)
            return f"{code} {text.decode()}"
        finally:
            session.close()


@pytest.fixture(scope="module")
def gw(clamd, hs_cache):
    base = Path(tempfile.mkdtemp(prefix="mailgw-portal-e2e-"))
    base.chmod(0o755)  # Postfix's daemons run as 'postfix' and must traverse the path
    gateway = None
    try:
        gateway = Gateway(base, clamd, hs_cache)
        gateway.start()
        yield gateway
    finally:
        if gateway is not None:
            gateway.stop()
        rmtree(base)


def ids_in(page: str) -> list[str]:
    return re.findall(r'href="/messages/([A-Za-z0-9_-]+)"', page)


def test_rspamd_takes_the_ingest_password_from_the_node_file_not_from_out(gw):
    generated = (gw.base / "out" / "rspamd" / "local.d" / "metadata_exporter.conf").read_text()
    assert gw.portal.ingest_password not in generated
    dumped = subprocess_run(
        [
            program("rspamadm"),
            *gw.tree.variables(),
            "configdump",
            "-c",
            str(gw.tree.conf / "rspamd.conf"),
            "metadata_exporter",
        ]
    )
    assert f'password = "{gw.portal.ingest_password}";' in dumped
    assert 'user = "rspamd";' in dumped


def subprocess_run(argv: list[str]) -> str:
    import subprocess

    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_gtube_for_a_person_a_list_and_a_role_reaches_their_owner_who_releases_one(gw):
    uid, own, a_list, role = _owner_of_a_person_list_and_role(gw.declarations[DOMAIN])
    nobody = next(a for d in gw.fleet.domains if d.name != DOMAIN for a in d.addresses if a.kind == "person").uid
    gw.oidc.add_user(uid, uid=uid)
    gw.oidc.add_user(nobody, uid=nobody)
    subjects = {}
    for rcpt in (own, a_list, role):
        subjects[rcpt] = f"gtube for {rcpt}"
        reply = gw.send([rcpt], env.gtube(sender=EXTERNAL, to=[rcpt], subject=subjects[rcpt]))
        assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    with gw.portal.sign_in(uid) as owner:
        page = wait_for(
            lambda: (text := owner.get("/", params={"subject": "gtube for"}).text).count('class="open"') == 3 and text,
            30,
            "three held messages in the portal",
        )
        assert set(re.findall(r"gtube for ([^<]+)</a>", page)) == {own, a_list, role}
        assert len(gw.sites.messages) == 0 or not [m for m in gw.sites.messages if b"gtube for" in m.content]
        [list_message] = ids_in(owner.get("/", params={"subject": f"gtube for {a_list}"}).text)
        view = owner.get(f"/messages/{list_message}").text
        assert "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL" in view
        csrf = re.search(r'name="csrf" value="([^"]+)"', view).group(1)
        assert owner.post(f"/messages/{list_message}/release", data={"csrf": csrf}).status_code == 303
    [released] = wait_for(
        lambda: [m for m in list(gw.sites.messages) if subjects[a_list].encode() in m.content], 30, "the release"
    )
    assert (released.mail_from, released.rcpt_tos) == (EXTERNAL, (a_list,))
    assert b"X-Quarantine-Retention-Days" not in released.content
    wait_for(lambda: "postfix/release/smtpd" in gw.postfix.log(), 10, "the release service to log")
    # Not quarantined again: nothing new reached the portal, the message was delivered once.
    with gw.portal.sign_in(nobody) as stranger:
        assert ids_in(stranger.get("/", params={"subject": "gtube for"}).text) == []


def test_the_same_message_delivered_twice_is_held_once(gw):
    uid, own, _, _ = _owner_of_a_person_list_and_role(gw.declarations[DOMAIN])
    gw.oidc.add_user(uid, uid=uid)
    message = env.gtube(sender=EXTERNAL, to=[own], subject="delivered twice")
    for _ in range(2):
        assert gw.send([own], message).startswith("250 ")
    with gw.portal.sign_in(uid) as owner:
        wait_for(lambda: ids_in(owner.get("/", params={"subject": "delivered twice"}).text), 30, "the held message")
        assert len(ids_in(owner.get("/", params={"subject": "delivered twice"}).text)) == 1


def test_while_the_portal_is_down_spam_is_deferred_and_held_once_it_is_back(gw):
    uid, own, _, _ = _owner_of_a_person_list_and_role(gw.declarations[DOMAIN])
    gw.oidc.add_user(uid, uid=uid)
    message = env.gtube(sender=EXTERNAL, to=[own], subject="while the portal was down")
    gw.portal.stop()
    try:
        reply = gw.send([own], message)
        assert reply.startswith(TEMPFAIL), reply  # the sending server keeps it and retries
        assert not [m for m in gw.sites.messages if b"while the portal was down" in m.content]
    finally:
        gw.portal.start()
    assert gw.send([own], message).startswith("250 ")  # the sender's retry
    with gw.portal.sign_in(uid) as owner:
        wait_for(
            lambda: ids_in(owner.get("/", params={"subject": "while the portal was down"}).text), 30, "the held message"
        )
