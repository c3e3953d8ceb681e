"""Every error code: its failing input, the exact finding, exit 1 and out/ untouched."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import GATEWAY, REPO
from tests.error_cases import CASES, NOTE_CASES, SYNC_CASES, Case, markdown


def _materialise(root: Path, case: Case) -> None:
    (root / "domains").mkdir(parents=True)
    gateway = GATEWAY if case.gateway is None else case.gateway
    if gateway:
        (root / "gateway.yaml").write_text(gateway)
    for rel, content in case.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for rel, target in case.symlinks.items():
        os.symlink(target, root / rel)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.code}-{i}" for i, c in enumerate(CASES)])
def test_error_case(case, tmp_path, mailgw):
    root = tmp_path / "repo"
    _materialise(root, case)
    result = mailgw(root, "build")
    assert result.lines == case.expected
    assert result.code == 1
    assert not (root / "out").exists(), "a failed build must not write out/"
    assert "Traceback" not in result.err


def test_every_code_has_a_case():
    """Each code string in the compiler's sources appears in the table."""
    sources = "\n".join(p.read_text() for p in (REPO / "compiler").rglob("*.py"))
    emitted = set(re.findall(r'"([a-z]{2,}(?:-[a-z0-9]+)+)"', sources))
    # An encoding name, a verb, and the local parts Postfix never splits at the delimiter (compiler/mx.py).
    not_codes = {"utf-8", "ldap-diff", "mailer-daemon", "double-bounce"}
    # A kind of network the node's own addresses belong to (values.NODE_NETWORKS), named in messages.
    not_codes |= {"link-local"}
    # The fallback for a pydantic error type the model does not produce today.
    fallback = {"invalid-value"}
    assert emitted - not_codes - fallback - {case.code for case in CASES + SYNC_CASES + NOTE_CASES} == set()


def test_docs_table_is_current():
    assert (REPO / "docs" / "errors.md").read_text() == markdown(), (
        "docs/errors.md is stale: run 'python -m tests.error_cases > docs/errors.md'"
    )


@pytest.mark.parametrize("case", NOTE_CASES, ids=[case.code for case in NOTE_CASES])
def test_note_case(case, tmp_path, mailgw):
    """A note is printed, and the command succeeds all the same."""
    root = tmp_path / "repo"
    _materialise(root, case)
    result = mailgw(root, "validate")
    assert result.code == 0, result.err
    assert [line for line in result.err.splitlines() if ": note[" in line] == case.expected
