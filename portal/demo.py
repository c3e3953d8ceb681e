"""`mailgw-portal demo`: the portal on this machine, to try it, with nothing of production.

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
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portal import config as portal_config
from portal.ingest import Held, fingerprint

if TYPE_CHECKING:
    from portal.directory import LdifDirectory
    from portal.store import Store

SAMPLES = (
    ("offers@bulk.example.biz", "You have WON a prize", 18.4, None),
    ("billing@invoices.example.net", "Your invoice <script>alert(1)</script>", 11.2, None),
    ("it-support@phish.example.com", "Password expiry notice", 9.5, "Win.Test.EICAR_HDB-1"),
)


def run(out: str, port: int) -> int:
    try:
        import oidc_provider_mock
        import uvicorn
    except ImportError:
        print("mailgw-portal demo needs the test dependencies (make venv installs them)")
        return 1
    from portal.app import create_app
    from portal.directory import LdifDirectory
    from portal.store import Store

    source = Path(out) / "portal" / "portal.json"
    ldif_path = Path(out) / "ldap" / "directory.ldif"
    work = Path(tempfile.mkdtemp(prefix="mailgw-portal-demo-"))
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
