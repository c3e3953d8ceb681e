"""Benchmark the quarantine portal: ingest rate and the list page of a user with many held messages.

    python bench/portal.py                              # SQLite and PostgreSQL, 2,000 posts, 10,000 items
    python bench/portal.py --database sqlite --messages 500 --items 1000

The portal runs as in production: `mailgw-portal serve` (uvicorn, one
process) over TLS, reading a real slapd (the bundled directory) and signing
in through a real OpenID provider. Ingest is measured over HTTPS as Rspamd
posts (basic auth, a 5 KiB message, one recipient), first from one client,
then from 4 at once. The list is measured for one person who owns 10,000
held items (stored through the same store code, in-process, before the
measurement): the first page, a page deep in the list, and a subject filter
that matches a few items; each the median of 20 requests over one
keep-alive connection, the directory lookup of every request included.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import yaml  # noqa: E402

from tests import portal_env as env  # noqa: E402
from tests.mx_harness import Sink  # noqa: E402

REPO = HERE.parent
BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 90 + "\r\n").strip()


def _owner() -> tuple[str, str]:
    tifpa = yaml.safe_load((REPO / "domains" / "tifpa.example.org.yaml").read_text())
    uid = sorted(v for v in tifpa["recipients"].values() if isinstance(v, str))[0]
    return uid, next(f"{k.lower()}@tifpa.example.org" for k, v in tifpa["recipients"].items() if v == uid)


def ingest_rate(portal: env.Portal, count: int, clients: int, rcpt: str, tag: str) -> float:
    def post_many(worker: int) -> None:
        with portal.client() as client:
            for i in range(worker, count, clients):
                message = env.held_message("bench@ext.example.net", [rcpt], f"{tag} {i}", BODY)
                reply = client.post(
                    portal.document["ingest"]["path"],
                    content=env.prefixed(message),
                    headers={
                        "Content-Type": "message/rfc822",
                        "X-Rspamd-rcpt": json.dumps([rcpt]),
                        "X-Rspamd-from": "bench@ext.example.net",
                        "X-Rspamd-score": "20.00",
                    },
                    auth=(env.INGEST_USER, portal.ingest_password),
                )
                assert reply.status_code == 200, reply.text

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post_many, range(clients)))
    return count / (time.perf_counter() - start)


def fill(portal: env.Portal, items: int, rcpt: str) -> None:
    """`items` held messages for rcpt, through the store's own ingest (no HTTP), so the list can be measured."""
    from portal import config as portal_config
    from portal import ingest
    from portal.store import Store

    config = portal_config.load(portal.config)
    store = Store(config.database_url())
    for i in range(items):
        message = env.prefixed(env.held_message("filler@ext.example.net", [rcpt], f"filler {i}", BODY))
        headers = {"content-type": "message/rfc822", "x-rspamd-rcpt": json.dumps([rcpt]), "x-rspamd-from": "a@b.c"}
        store.ingest(ingest.parse(headers, message, config.max_message_bytes), config)
    store.engine.dispose()


def page_times(portal: env.Portal, uid: str, params: dict[str, str], runs: int = 20) -> float:
    with portal.sign_in(uid) as client:
        client.get("/", params=params)  # warm
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            reply = client.get("/", params=params)
            times.append(time.perf_counter() - start)
            assert reply.status_code == 200
    return statistics.median(times) * 1000


def run(database: str, messages: int, items: int) -> dict[str, float]:
    uid, rcpt = _owner()
    root = Path(tempfile.mkdtemp(prefix=f"mailgw-bench-portal-{database}-"))
    document = json.loads((REPO / "out" / "portal" / "portal.json").read_text())
    base_dn = yaml.safe_load((REPO / "gateway.yaml").read_text())["ldap"]["base_dn"]
    oidc = env.OidcProvider(root)
    directory = env.Directory((REPO / "out" / "ldap" / "directory.ldif").read_bytes(), base_dn)
    mx = Sink("release")
    postgres = env.Postgres() if database == "postgresql" else None
    portal = None
    try:
        url = postgres.create_database("bench") if postgres else None
        portal = env.Portal(root / "portal", document, oidc, directory, ("127.0.0.1", mx.port), database_url=url)
        oidc.add_user(uid, uid=uid)
        assert portal.command("init-db").returncode == 0
        portal.start()
        results = {
            "ingest, 1 client (msg/s)": ingest_rate(portal, messages, 1, "someone@lnf.example.org", "one"),
            "ingest, 4 clients (msg/s)": ingest_rate(portal, messages, 4, "someone@lnf.example.org", "four"),
        }
        fill(portal, items, rcpt)
        deep = max(1, items // 50 // 2)
        results["list, first page (ms)"] = page_times(portal, uid, {})
        results[f"list, page {deep} (ms)"] = page_times(portal, uid, {"page": str(deep)})
        results["list, subject filter (ms)"] = page_times(portal, uid, {"subject": "filler 123"})
        return results
    finally:
        if portal is not None:
            portal.stop()
        mx.stop()
        directory.close()
        oidc.close()
        if postgres is not None:
            postgres.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--messages", type=int, default=2000, help="posts per ingest measurement")
    parser.add_argument("--items", type=int, default=10000, help="held items of the user whose list is measured")
    args = parser.parse_args()
    databases = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    table = {database: run(database, args.messages, args.items) for database in databases}
    names = list(next(iter(table.values())))
    print(f"{'':32}" + "".join(f"{database:>14}" for database in databases))
    for name in names:
        print(f"{name:32}" + "".join(f"{table[database][name]:>14.1f}" for database in databases))
    print(f"({args.messages} posts per ingest line; {args.items} held items for the listed user)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
