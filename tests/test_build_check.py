"""mailgw build --check: exit 1 with a short diff whenever the committed out/ is not a fresh build."""

from __future__ import annotations

import shutil

from tests.conftest import REPO


def fleet(tmp_path, mailgw):
    for name in ("gateway.yaml", "domains"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    assert mailgw(tmp_path, "build").code == 0
    return tmp_path


def test_a_file_the_build_does_not_write_is_stale(tmp_path, mailgw):
    root = fleet(tmp_path, mailgw)
    (root / "out/postfix/leftover").write_text("old\n")
    result = mailgw(root, "build", "--check")
    assert result.code == 1
    assert result.out.splitlines() == [
        f"{root}/out is stale: 1 file(s) differ from a fresh build; run 'mailgw build'",
        "--- out/postfix/leftover",
        "+++ fresh/postfix/leftover",
        "@@ -1 +0,0 @@",
        "-old",
    ]


def test_a_missing_out_is_stale_and_the_diff_is_cut(tmp_path, mailgw):
    root = fleet(tmp_path, mailgw)
    artifacts = sum(1 for p in (root / "out").rglob("*") if p.is_file())
    shutil.rmtree(root / "out")
    result = mailgw(root, "build", "--check")
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0] == f"{root}/out is stale: {artifacts} file(s) differ from a fresh build; run 'mailgw build'"
    assert lines[-1] == "... (diff cut)" and len(lines) == 42
    assert not (root / "out").exists(), "--check writes nothing"


def test_a_declaration_change_makes_out_stale_until_built(tmp_path, mailgw):
    root = fleet(tmp_path, mailgw)
    path = root / "domains/ge.example.org.yaml"
    path.write_text(path.read_text().replace("  marco.ricci: mricci\n", "  marco.ricci: mricci\n  m.ricci: mricci\n"))
    result = mailgw(root, "build", "--check")
    assert result.code == 1
    assert "+m.ricci@ge.example.org\tperson" in result.out.splitlines()
    assert mailgw(root, "build").code == 0
    assert mailgw(root, "build", "--check").code == 0
