"""`make bench-mx` at a tiny size, so that it cannot rot: every load, both instances, filtering with Rspamd and clamd.

The figures mean nothing at this size; the test checks that every run
delivered (or refused) everything it sent, that the report has every row,
and that the results block of docs/performance.md is where --write-doc
looks for it.
"""

from __future__ import annotations

import os
import re

import pytest

from bench import mx
from tests.conftest import REPO

pytestmark = [
    pytest.mark.needs("postfix", "postconf", "postmap", "smtp-source", "smtp-sink", "rspamd", "clamd", "openssl"),
    pytest.mark.skipif(os.geteuid() != 0, reason="starting Postfix needs root (CI runs 'sudo make test')"),
]


def test_bench_mx_runs_every_load_at_a_tiny_size(clamd, hs_cache):
    options = mx.Options(sizes=[10_000], runs=1, messages=40, filtering_messages=20)
    results = mx.benchmark(options, clamd=clamd, hs_cache=hs_cache)

    unfiltered = [row for row in results.rows if not row.filtering]
    assert [row.load for row in unfiltered] == [load.name for load in mx.LOADS]
    for row in unfiltered:
        assert row.addresses == 10_000
        assert all(measured.rate > 0 for measured in (*row.bare, *row.generated))
    # CPU time comes in ticks of 10 ms: a tiny run may take none, all of them together do.
    assert sum(m.cpu["Postfix"] for row in unfiltered for m in (*row.bare, *row.generated)) > 0
    with_filtering = [row for row in results.rows if row.filtering == "with filtering"]
    assert [row.load for row in with_filtering] == [load.name for load in mx.LOADS if not load.unknown]
    for row in with_filtering:
        [measured] = row.generated
        assert measured.rate > 0 and measured.scan_ms is not None, "Rspamd scanned the messages"
    assert sum(row.generated[0].cpu["Rspamd"] for row in with_filtering) > 0
    assert [row.load for row in results.rows if row.filtering.endswith("loopback TCP")] == [
        "1 rcpt, 1 session",
        "1 rcpt, 20 sessions",
    ]

    text = mx.report(results)
    for row in results.rows:
        assert f"| {row.filtering + ': ' if row.filtering else ''}{row.load} ({row.unit}) | 10,000 |" in text
    assert re.search(r"^- with filtering, one node carries \*\*\d+ messages/s\*\*", text, re.M)


def test_the_results_block_is_rewritten_in_place(tmp_path):
    page = tmp_path / "performance.md"
    original = (REPO / "docs" / "performance.md").read_text()
    page.write_text(original)
    mx.write_doc(page, "| new | table |\n")
    head, _, rest = original.partition(mx.BEGIN)
    _, _, tail = rest.partition(mx.END)
    assert page.read_text() == f"{head}{mx.BEGIN}\n\n| new | table |\n\n{mx.END}{tail}"
