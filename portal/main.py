"""mailgw-portal: the quarantine portal's commands.

    mailgw-portal [--config FILE] serve [--host H] [--port P] [--certfile F --keyfile F]
    mailgw-portal [--config FILE] init-db     create the tables (idempotent)
    mailgw-portal [--config FILE] digest      mail the pending digests
    mailgw-portal [--config FILE] purge       delete what outlived its retention (idempotent)

Exit codes: 0 fine, 1 the configuration, a secret or a service is not usable, 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import smtplib
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from portal import config as portal_config
from portal.config import ConfigError
from portal.directory import DirectoryError

DEFAULT_CONFIG = "/etc/mailgw/portal/portal.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailgw-portal", description="The mail gateway's quarantine portal.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="portal.json from mailgw build (out/portal/)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    serve = verbs.add_parser("serve", help="run the web service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--certfile", help="TLS certificate chain (PEM); without it, plain HTTP behind a proxy")
    serve.add_argument("--keyfile", help="TLS private key (PEM)")
    verbs.add_parser("init-db", help="create the database tables")
    verbs.add_parser("digest", help="mail the pending digests")
    verbs.add_parser("purge", help="delete held messages past their retention")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = portal_config.load(args.config)
        return _run(args, config)
    except ConfigError as err:
        print(f"mailgw-portal: {err}", file=sys.stderr)
        return 1
    except (DirectoryError, OSError, smtplib.SMTPException, SQLAlchemyError) as err:
        # A service the command needs (the database, the directory, the MX) did not answer.
        print(f"mailgw-portal {args.verb}: {err}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, config: portal_config.Config) -> int:
    from portal.store import Store

    store = Store.from_config(config)
    if args.verb == "init-db":
        store.create()
        print("the quarantine's tables are in place")
        return 0
    if args.verb == "purge":
        recipients, messages = store.purge()
        print(f"purged {recipients} expired recipient(s), {messages} message(s)")
        return 0
    from portal.directory import Directory

    if args.verb == "digest":
        from portal import digest

        sent, unowned = digest.run(config, store, Directory(config.ldap))
        print(f"sent {sent} digest(s); {unowned} address(es) with nobody to tell")
        return 0
    import uvicorn

    from portal.app import create_app

    store.create()
    uvicorn.run(
        create_app(config, store),
        host=args.host,
        port=args.port,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
        log_level="info",
        proxy_headers=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
