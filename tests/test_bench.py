"""Smoke runs of the benchmark: the generator's fleet is valid, and the bench script prints its table."""

from __future__ import annotations

import pytest

from tests.conftest import REPO


def test_generated_bench_fleet_is_valid(tmp_path):
    from bench.generate import generate
    from compiler.pipeline import load_declarations

    generate(3000, tmp_path)
    declarations = load_declarations(tmp_path)
    assert sum(len(s.addresses) for s in declarations.domains) == 3000
    assert len(declarations.domains) == 60


@pytest.mark.needs("postmap")
def test_bench_script_runs_and_prints_its_table(tmp_path):
    """A smoke run of `make bench` on a tiny fleet: every row and every target line is printed."""
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench/run.py"),
            "--addresses",
            "2000",
            "--runs",
            "1",
            "--fleet",
            str(tmp_path / "fleet"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for row in (
        "PyYAML C parse (baseline)",
        "mailgw validate",
        "mailgw build, cold",
        "postmap lmdb: all maps (baseline)",
        "mailgw build, warm (one domain changed)",
        "mailgw build --check (one domain changed)",
        "cold build <= 1.5x PyYAML C parse",
        "warm one-domain rebuild < 0.5 s",
        "peak memory < 300 MB",
    ):
        assert row in done.stdout, row
