"""`make portal-demo` (python -m tests.portal_demo): the portal on this machine, to try it, with nothing of
production.

It binds 127.0.0.1 only, over plain HTTP, keeps everything in a temporary
directory (SQLite, generated secrets), reads who owns what from out/'s
directory.ldif instead of an LDAP server, signs people in through a local
mock OpenID provider (oidc-provider-mock, installed with the test
dependencies: type any uid of the directory), and releases into a local SMTP
sink that prints what it receives. It never reads /etc/mailgw or a database
URL, so it cannot be turned on against production by a setting.
"""

from __future__ import annotations

import email.utils
import json
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ldif

from portal import config as portal_config
from portal.config import Ldap
from portal.directory import Directory, Owner, _uid_of
from portal.ingest import Held, fingerprint

if TYPE_CHECKING:
    from portal.store import Store

SAMPLES = (
    ("offers@bulk.example.biz", "You have WON a prize", 18.4, None),
    ("billing@invoices.example.net", "Your invoice <script>alert(1)</script>", 11.2, None),
    ("it-support@phish.example.com", "Password expiry notice", 9.5, "Win.Test.EICAR_HDB-1"),
)


def run(out: str, port: int) -> int:
    work = Path(tempfile.mkdtemp(prefix="mailgw-portal-demo-"))
    try:
        return _run(out, port, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # nothing of the trial stays behind


def _run(out: str, port: int, work: Path) -> int:
    import oidc_provider_mock
    import uvicorn

    from portal.app import create_app
    from portal.store import Store

    source = Path(out) / "portal" / "portal.json"
    ldif_path = Path(out) / "ldap" / "directory.ldif"
    for name in ("oidc", "ingest", "session", "ldap"):
        (work / name).write_text(secrets.token_urlsafe(24) + "\n")
    sink_port = _sink()
    with oidc_provider_mock.run_server_in_thread() as provider:
        document = json.loads(source.read_text())
        document["public_url"] = f"http://127.0.0.1:{port}"
        document["oidc"].update(
            issuer=f"http://localhost:{provider.server_port}",
            client_secret_file=str(work / "oidc"),
            uid_claim="sub",
        )
        document["ingest"]["password_file"] = str(work / "ingest")
        document["ldap"]["reader_password_file"] = str(work / "ldap")
        document["release"] = {"host": "127.0.0.1", "port": sink_port}
        document.update(
            store_directory=str(work),
            database_url_file=str(work / "no-database-url"),
            session_secret_file=str(work / "session"),
        )
        (work / "portal.json").write_text(json.dumps(document))
        config = portal_config.load(work / "portal.json")
        directory = LdifDirectory(config.ldap, ldif_path)
        store = Store.from_config(config)
        store.create()
        people = _seed(store, config, directory)
        print(f"\nThe quarantine portal: http://127.0.0.1:{port}/  (sign in with a uid, e.g. {people})")
        print(
            f"Ingest: POST http://127.0.0.1:{port}{config.ingest_path} as '{config.ingest_user}', "
            f"password in {work / 'ingest'}\nStop with Ctrl-C.\n"
        )
        uvicorn.run(create_app(config, store, directory), host="127.0.0.1", port=port, log_level="warning")
    return 0


def _seed(store: Store, config: portal_config.Config, directory: LdifDirectory) -> str:
    """A few held messages for the first person of the directory; returns that person's uid."""
    entries = directory.entries
    uid = next((a["uid"][0] for dn, a in entries if dn.startswith("uid=") and a.get("uid")), "mrossi")
    own = sorted(directory.addresses(uid))
    for i, (sender, subject, score, virus) in enumerate(SAMPLES):
        rcpt = own[i % len(own)] if own else "someone@example.org"
        content = (
            f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\nDate: {email.utils.formatdate()}\r\n"
            f"Message-ID: <demo{i}@example.net>\r\n\r\nHello,\r\nthis is sample message {i + 1}.\r\n"
        ).encode()
        held = Held(
            fingerprint(sender, (rcpt,), content),
            sender,
            (rcpt,),
            content,
            subject,
            sender,
            score,
            ("GTUBE",),
            virus,
            "inbound",
            None,
            "192.0.2.1",
        )
        store.ingest(held, config)
    return uid


class LdifDirectory(Directory):
    """The same answers from a directory.ldif file, for the local trial only (make portal-demo; no LDAP server)."""

    def __init__(self, settings: Ldap, ldif_path: Path):
        self.settings = settings
        with open(ldif_path, "rb") as handle:
            records = ldif.LDIFParser(handle).parse()
            self.entries = [
                (dn, {name.lower(): [str(v) for v in values] for name, values in attributes.items()})
                for dn, attributes in records
                if dn is not None
            ]

    def addresses(self, uid: str) -> frozenset[str]:
        person = self.person_dn(uid).lower()
        found: set[str] = set()
        for dn, attributes in self.entries:
            mine = dn.lower() == person or person in (o.lower() for o in attributes.get("owner", []))
            if mine:
                found.update(a.lower() for a in attributes.get("maillocaladdress", []))
        return frozenset(found)

    def owners(self, addresses: list[str]) -> dict[str, Owner]:
        result = {}
        for address in addresses:
            for _dn, attributes in self.entries:
                if address in (a.lower() for a in attributes.get("maillocaladdress", [])):
                    uids = sorted(set(attributes.get("uid", []) + [_uid_of(o) for o in attributes.get("owner", [])]))
                    uids = [u for u in uids if u]
                    if uids:
                        result[address] = Owner(
                            tuple(uids), {u: tuple(sorted(self.addresses_of_person(u))) for u in uids}
                        )
        return result

    def addresses_of_person(self, uid: str) -> list[str]:
        person = self.person_dn(uid).lower()
        return [
            a.lower() for dn, attrs in self.entries if dn.lower() == person for a in attrs.get("maillocaladdress", [])
        ]


def _sink() -> int:
    """A local SMTP server that prints each released message's envelope."""
    from aiosmtpd.controller import Controller

    class Printer:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            print(f"released: from <{envelope.mail_from}> to {envelope.rcpt_tos}")
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    Controller(Printer(), hostname="127.0.0.1", port=port, server_hostname="demo.sink").start()
    return port


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Try the quarantine portal locally (never for production).")
    parser.add_argument("--out", default="out", help="the out/ tree of mailgw build")
    parser.add_argument("--port", type=int, default=8025)
    arguments = parser.parse_args()
    sys.exit(run(arguments.out, arguments.port))
