"""Benchmark mailgw sync: one site of N addresses (default 100,000) fetched from an HTTPS server on loopback.

    python bench/sync.py                       # 100,000 addresses, median of 3 runs
    python bench/sync.py --addresses 1000000 --runs 1

The site's list is the bench fleet's largest kind of domain (bench/generate.py:
people with aliases, lists, roles, external aliases), served as CSV and as
JSON by the tests' HTTPS server (a client certificate required). Each row is
the command as a user runs it, in its own process: the first sync (fetch,
read, validate with every rule, plan, write), a sync of an unchanged list (one
conditional request answered 304) and a sync after one person was added.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.generate import GATEWAY, domain_file  # noqa: E402
from compiler.pipeline import load_domain  # noqa: E402
from tests.https_source import Served, SiteServer  # noqa: E402

DOMAIN = "site00-d00.example.org"
# Linux counts the memory a process was forked from in its peak RSS: this benchmark holds the lists
# and the server, so each command is started by a small launcher, which times it and reports its peak.
LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = child.stderr.read()
_, status, usage = os.wait4(child.pid, 0)
sys.stderr.buffer.write(err)
print(f"\\n{os.waitstatus_to_exitcode(status)} {time.perf_counter() - start} {usage.ru_maxrss}", file=sys.stderr)
"""


def site_list(addresses: int, work: Path) -> tuple[str, list]:
    """The generated domain's header and its addresses, read by the compiler from the generated YAML."""
    name, text = domain_file(0, addresses, random.Random(2018))
    assert name == DOMAIN
    path = work / f"{name}.yaml"
    path.write_text(text)
    source, findings = load_domain(path, f"domains/{name}.yaml")
    assert source is not None and not findings, findings
    return text[: text.index("recipients:\n")], source.addresses


def as_csv(entries: list) -> bytes:
    rows = ["address,kind,uid,owners"]
    rows += [f"{a.address},{a.kind},{a.uid or ''},{' '.join(a.owners)}" for a in entries if a.kind != "external"]
    rows += ["", "address,target"]
    rows += [f"{a.address},{' '.join(a.targets)}" for a in entries if a.kind == "external"]
    return ("\n".join(rows) + "\n").encode()


def as_json(entries: list) -> bytes:
    def entry(a) -> dict:
        if a.kind in ("person", "alias"):
            return {"address": a.address, "kind": a.kind, "uid": a.uid}
        return {"address": a.address, "kind": a.kind, "owners": list(a.owners)}

    document = {
        "recipients": [entry(a) for a in entries if a.kind != "external"],
        "external_aliases": [
            {"address": a.address, "targets": list(a.targets)} for a in entries if a.kind == "external"
        ],
    }
    return json.dumps(document, indent=0).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addresses", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mailgw-bench-sync-"))
    mailgw = [sys.executable, "-m", "compiler"]
    env = {"PYTHONPATH": str(HERE.parent), "PATH": "/usr/bin:/bin"}
    rows: dict[str, tuple[float, int]] = {}
    try:
        header, entries = site_list(args.addresses, work)
        csv_body, json_body = as_csv(entries), as_json(entries)
        with SiteServer(work, client_certificates=True) as site:
            root = work / "gateway"
            (root / "domains").mkdir(parents=True)
            (root / "gateway.yaml").write_text(GATEWAY)
            domain_path = root / "domains" / f"{DOMAIN}.yaml"
            synced = root / "sources" / f"{DOMAIN}.yaml"

            def declare(fmt: str, body: bytes) -> None:
                url = site.serve(f"/addresses.{fmt}", Served(body, content_type=f"text/{fmt}"))
                domain_path.write_text(
                    header + f"source:\n  url: {url}\n  format: {fmt}\n  client_certificate: "
                    f"{site.client_certificate}\n  client_key: {site.client_key}\n  ca_file: {site.ca_file}\n"
                )

            def sync() -> tuple[float, int]:
                launched = [sys.executable, "-c", LAUNCHER, *mailgw, "-C", str(root), "sync"]
                done = subprocess.run(launched, env=env, capture_output=True, text=True, timeout=600)
                code, elapsed, peak = done.stderr.split()[-3:]
                assert code == "0", done.stderr
                return float(elapsed), int(peak)

            def first(fmt: str, body: bytes):
                def measure() -> tuple[float, int]:
                    declare(fmt, body)
                    synced.unlink(missing_ok=True)
                    return sync()

                return measure

            rows[f"first sync, CSV ({len(csv_body) / 1e6:.1f} MB)"] = median_of(args.runs, first("csv", csv_body))
            rows["unchanged list (304 Not Modified)"] = median_of(args.runs, sync)
            counter = iter(range(10**6))

            def one_added() -> tuple[float, int]:
                n = next(counter)
                grown = csv_body.replace(
                    b"\n\naddress,target\n", f"\nbench.{n}@{DOMAIN},person,bench{n},\n\naddress,target\n".encode()
                )
                site.serve("/addresses.csv", Served(grown, content_type="text/csv"))
                return sync()

            rows["one person added, CSV"] = median_of(args.runs, one_added)
            rows[f"first sync, JSON ({len(json_body) / 1e6:.1f} MB)"] = median_of(args.runs, first("json", json_body))
            size = synced.stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmailgw sync benchmark: one site of {len(entries):,} addresses; median of {args.runs} runs\n")
    print(f"| {'measure':<36} | {'median s':>9} | {'peak MB':>8} |")
    print(f"|{'-' * 38}|{'-' * 11}|{'-' * 10}|")
    for name, (seconds, peak_kib) in rows.items():
        print(f"| {name:<36} | {seconds:>9.3f} | {peak_kib / 1024:>8.0f} |")
    print(f"\nsources/{DOMAIN}.yaml: {size / 1e6:.1f} MB")


def median_of(runs: int, measure) -> tuple[float, int]:
    results = [measure() for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


if __name__ == "__main__":
    main()
