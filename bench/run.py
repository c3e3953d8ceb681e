"""Benchmark mailgw on a generated fleet, against two baselines measured in the same run.

    python bench/run.py                 # 100,000 addresses
    python bench/run.py --addresses 1000000 --runs 3

Measures the mailgw commands as a user runs them (a process each, startup
included) and, on the same files, PyYAML's C loader parsing every domain
file (in-process, parse only) and `postmap lmdb:` indexing every map the
build emitted. Prints medians, ratios to the baselines and peak memory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.generate import generate  # noqa: E402

SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PARSE_BASELINE = """
import sys, time, yaml
from pathlib import Path
texts = [p.read_text() for p in sorted(Path(sys.argv[1]).glob("*.yaml"))]
start = time.perf_counter()
for text in texts:
    yaml.load(text, Loader=yaml.CSafeLoader)
print(time.perf_counter() - start)
"""


def timed(command: list[str], **kwargs) -> tuple[float, int, subprocess.CompletedProcess | None]:
    """Wall seconds and peak RSS (KiB) of one command run as its own process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    out, err = process.stdout.read(), process.stderr.read()
    if process.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}): {err.decode()[-2000:]}")
    return elapsed, usage.ru_maxrss, subprocess.CompletedProcess(command, process.returncode, out, err)


def median_of(runs: int, measure) -> tuple[float, int]:
    times, peaks = [], []
    for _ in range(runs):
        elapsed, peak = measure()
        times.append(elapsed)
        peaks.append(peak)
    return statistics.median(times), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addresses", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fleet", type=Path, help="where the generated fleet is kept (default: bench/fleet-N)")
    args = parser.parse_args()

    mailgw = [sys.executable, "-m", "compiler"]
    postmap = shutil.which("postmap", path=SBIN)
    fleet = args.fleet or HERE / f"fleet-{args.addresses // 1000}k"
    if not (fleet / "gateway.yaml").exists():
        print(f"generating {args.addresses} addresses into {fleet} ...", file=sys.stderr)
        generate(args.addresses, fleet)
    work = Path(tempfile.mkdtemp(prefix="mailgw-bench-"))
    out = work / "out"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    rows: dict[str, tuple[float, int]] = {}
    try:
        # Baseline 1: PyYAML's C loader over every domain file, parse only.
        parse_times = [
            float(timed([sys.executable, "-c", PARSE_BASELINE, str(fleet / "domains")])[2].stdout)
            for _ in range(args.runs)
        ]
        rows["PyYAML C parse (baseline)"] = (statistics.median(parse_times), 0)

        rows["mailgw validate"] = median_of(
            args.runs, lambda: timed([*mailgw, "-C", str(fleet), "validate"], env=env)[:2]
        )

        def cold():
            shutil.rmtree(out, ignore_errors=True)
            _clear_cache(fleet)
            return timed([*mailgw, "-C", str(fleet), "build", "--out", str(out)], env=env)[:2]

        rows["mailgw build, cold"] = median_of(args.runs, cold)

        # Baseline 2: postmap lmdb: over every map the build emitted.
        maps = sorted(p for p in (out / "postfix").iterdir() if p.is_file() and not p.suffix)
        config = work / "postfix-config"
        config.mkdir()
        (config / "main.cf").write_text("")

        def index_all():
            elapsed, peak = 0.0, 0
            for path in maps:
                e, p, _ = timed([postmap, "-c", str(config), f"lmdb:{path}"])
                elapsed, peak = elapsed + e, max(peak, p)
            return elapsed, peak

        rows["postmap lmdb: all maps (baseline)"] = median_of(args.runs, index_all) if postmap else (float("nan"), 0)

        changed = sorted((fleet / "domains").glob("*.yaml"))[len(maps) % 7]
        original = changed.read_bytes()
        counter = iter(range(10**6))

        def one_domain_changed():
            changed.write_bytes(
                original.replace(b"\nrecipients:\n", f"\nrecipients:\n  bench.{next(counter)}: bench{0}\n".encode(), 1)
            )

        try:
            timed([*mailgw, "-C", str(fleet), "build", "--out", str(out)], env=env)

            def warm():
                one_domain_changed()
                return timed([*mailgw, "-C", str(fleet), "build", "--out", str(out)], env=env)[:2]

            rows["mailgw build, warm (one domain changed)"] = median_of(args.runs, warm)

            def check():
                one_domain_changed()
                return timed([*mailgw, "-C", str(fleet), "build", "--out", str(out), "--check"], env=env)[:2]

            rows["mailgw build --check (one domain changed)"] = median_of(args.runs, check)
        finally:
            changed.write_bytes(original)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args.addresses, args.runs, rows)


def _clear_cache(fleet: Path) -> None:
    shutil.rmtree(fleet / ".cache", ignore_errors=True)


def report(addresses: int, runs: int, rows: dict[str, tuple[float, int]]) -> None:
    parse = rows["PyYAML C parse (baseline)"][0]
    postmap = rows["postmap lmdb: all maps (baseline)"][0]
    print(
        f"\nmailgw benchmark: {addresses:,} addresses in 60 domains; median of {runs} runs; "
        f"{os.cpu_count()} cores; Python {sys.version.split()[0]}\n"
    )
    print(f"| {'measure':<42} | {'median s':>9} | {'x parse':>8} | {'x postmap':>9} | {'peak MB':>8} |")
    print(f"|{'-' * 44}|{'-' * 11}|{'-' * 10}|{'-' * 11}|{'-' * 10}|")
    for name, (seconds, peak_kib) in rows.items():
        peak = f"{peak_kib / 1024:.0f}" if peak_kib else "-"
        print(f"| {name:<42} | {seconds:>9.3f} | {seconds / parse:>8.2f} | {seconds / postmap:>9.2f} | {peak:>8} |")
    cold, cold_peak = rows["mailgw build, cold"]
    warm = rows["mailgw build, warm (one domain changed)"][0]
    print()
    if addresses >= 1_000_000:
        targets = [("1M build < 20 s", cold < 20), ("1M peak memory < 2.5 GB", cold_peak < 2.5 * 1024 * 1024)]
    else:
        targets = [
            ("cold build <= 1.5x PyYAML C parse", cold <= 1.5 * parse),
            ("cold build <= 4x postmap of all maps", cold <= 4 * postmap),
            ("warm one-domain rebuild < 0.5 s", warm < 0.5),
            ("peak memory < 300 MB", cold_peak < 300 * 1024),
        ]
    for name, met in targets:
        print(f"{'met   ' if met else 'MISSED'}  {name}")


if __name__ == "__main__":
    main()
