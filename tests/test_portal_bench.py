"""The portal's benchmark script runs and prints its table (tiny numbers; the real ones are in docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.needs("slapd", "slapadd", "openssl")


def test_bench_portal_prints_its_table():
    done = subprocess.run(
        [sys.executable, "bench/portal.py", "--database", "sqlite", "--messages", "20", "--items", "60"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["sqlite"]
    assert [line[:32].strip() for line in lines[1:-1]] == [
        "ingest, 1 client (msg/s)",
        "ingest, 4 clients (msg/s)",
        "list, first page (ms)",
        "list, page 1 (ms)",
        "list, subject filter (ms)",
    ]
    assert all(float(line[32:]) > 0 for line in lines[1:-1])
