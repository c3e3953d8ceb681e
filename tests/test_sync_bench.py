"""A smoke run of bench/sync.py (docs/performance.md): a small site, every row of its table printed."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_sync_bench_runs_and_prints_its_table():
    done = subprocess.run(
        [sys.executable, str(REPO / "bench/sync.py"), "--addresses", "2000", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for row in (
        "one site of 2,000 addresses",
        "| first sync, CSV (0.1 MB)",
        "| unchanged list (304 Not Modified)",
        "| one person added, CSV",
        "| first sync, JSON (0.2 MB)",
        "sources/site00-d00.example.org.yaml: 0.1 MB",
    ):
        assert row in done.stdout, row
