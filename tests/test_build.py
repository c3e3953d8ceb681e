"""mailgw build: same input, same bytes; out/ replaced atomically, and only what changed is rewritten."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from compiler import write
from tests.conftest import REPO, domain_yaml, run_mailgw_process


def _copy_fleet(dest: Path) -> Path:
    shutil.copytree(REPO / "domains", dest / "domains")
    shutil.copy(REPO / "gateway.yaml", dest / "gateway.yaml")
    return dest


def _shuffled(data, rng: random.Random):
    """The same YAML data with every mapping's keys in another order."""
    if isinstance(data, dict):
        items = list(data.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(data, list):
        return [_shuffled(v, rng) for v in data]
    return data


def test_committed_out_is_what_the_declarations_build(mailgw):
    """The repository's own out/ matches a fresh build byte for byte."""
    result = mailgw(REPO, "build", "--check")
    assert result.code == 0, result.out


def test_shuffled_keys_and_file_order_give_identical_bytes(tmp_path, mailgw):
    first = _copy_fleet(tmp_path / "a")
    assert mailgw(first, "build").code == 0
    for seed in range(3):
        rng = random.Random(seed)
        other = tmp_path / f"shuffled-{seed}"
        (other / "domains").mkdir(parents=True)
        names = sorted((first / "domains").iterdir())
        rng.shuffle(names)  # creation order differs, and so may directory order
        for path in names:
            data = yaml.safe_load(path.read_text())
            (other / "domains" / path.name).write_text(
                yaml.safe_dump(_shuffled(data, rng), sort_keys=False, allow_unicode=True)
            )
        shutil.copy(first / "gateway.yaml", other / "gateway.yaml")
        assert mailgw(other, "build").code == 0
        artifacts_a = json.loads((first / "out/MANIFEST.json").read_text())["artifacts"]
        artifacts_b = json.loads((other / "out/MANIFEST.json").read_text())["artifacts"]
        assert artifacts_a == artifacts_b
        for name in artifacts_a:
            assert (first / "out" / name).read_bytes() == (other / "out" / name).read_bytes()


def test_two_processes_with_other_hash_seeds_and_file_orders_write_the_same_bytes(tmp_path):
    """Determinism across processes: str hashes (set and dict order) differ with PYTHONHASHSEED, and so may
    the order in which the file system lists domains/ when the files were created in another order."""
    outs = []
    for seed, order in (("1", sorted), ("2", lambda paths: sorted(paths, reverse=True)), ("3", _shuffled_order)):
        root = tmp_path / f"seed-{seed}"
        (root / "domains").mkdir(parents=True)
        shutil.copy(REPO / "gateway.yaml", root / "gateway.yaml")
        rng = random.Random(int(seed))
        for path in order(list((REPO / "domains").glob("*.yaml"))):
            text = (
                path.read_text()
                if seed == "1"
                else yaml.safe_dump(
                    _shuffled(yaml.safe_load(path.read_text()), rng), sort_keys=False, allow_unicode=True
                )
            )
            (root / "domains" / path.name).write_text(text)
        done = run_mailgw_process("build", cwd=root, env={"PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr
        outs.append(
            {p.relative_to(root / "out").as_posix(): p.read_bytes() for p in (root / "out").rglob("*") if p.is_file()}
        )
    first = outs[0]
    assert len(first) > 15
    # The seeds do change what an unsorted set of the domain names would put first.
    names = sorted(p.stem for p in (REPO / "domains").glob("*.yaml"))
    orders = {
        subprocess.run(
            [sys.executable, "-c", f"print(list(set({names!r})))"],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(orders) > 1
    for other in outs[1:]:
        assert other.keys() == first.keys()
        for rel, data in first.items():
            # MANIFEST.json lists the inputs' hashes too: reordered keys are other input bytes.
            if rel != "MANIFEST.json":
                assert other[rel] == data, rel
        assert json.loads(other["MANIFEST.json"])["artifacts"] == json.loads(first["MANIFEST.json"])["artifacts"]


def _shuffled_order(paths: list[Path]) -> list[Path]:
    order = sorted(paths)
    random.Random(7).shuffle(order)
    return order


def test_manifest_lists_every_artifact_and_input(tmp_path, mailgw):
    root = _copy_fleet(tmp_path)
    assert mailgw(root, "build").code == 0
    manifest = json.loads((root / "out/MANIFEST.json").read_text())
    on_disk = {p.relative_to(root / "out").as_posix() for p in (root / "out").rglob("*") if p.is_file()}
    assert set(manifest["artifacts"]) == on_disk - {"MANIFEST.json"}
    assert set(manifest["inputs"]) == {"gateway.yaml"} | {f"domains/{p.name}" for p in (root / "domains").iterdir()}
    import hashlib

    for name, entry in manifest["artifacts"].items():
        data = (root / "out" / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    text = (root / "out/MANIFEST.json").read_text()
    assert text == json.dumps(manifest, sort_keys=True, indent=2) + "\n"


def _snapshot(out: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        p.relative_to(out).as_posix(): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
        for p in out.rglob("*")
        if p.is_file()
    }


def test_failed_validation_leaves_out_byte_for_byte(tmp_path, mailgw):
    root = _copy_fleet(tmp_path)
    assert mailgw(root, "build").code == 0
    before = _snapshot(root / "out")
    path = root / "domains/tifpa.example.org.yaml"
    path.write_text(path.read_text().replace("mario.rossi: mrossi", "mario.rossi: M Rossi"))
    result = mailgw(root, "build")
    assert result.code == 1 and "error[bad-uid]" in result.err
    assert _snapshot(root / "out") == before


def test_crash_before_the_swap_leaves_out_as_it_was(tmp_path, mailgw, monkeypatch):
    root = _copy_fleet(tmp_path)
    assert mailgw(root, "build").code == 0
    before = _snapshot(root / "out")
    path = root / "domains/tifpa.example.org.yaml"
    path.write_text(path.read_text().replace("  paolo.conti: pconti\n", ""))

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(write, "_exchange", crash)
    result = mailgw(root, "build")
    assert result.code == 2 and "No space left on device" in result.err and "Traceback" not in result.err
    assert _snapshot(root / "out") == before
    assert not list(tmp_path.glob(".out.staging-*")), "the staging directory is cleaned up"
    monkeypatch.undo()
    assert mailgw(root, "build").code == 0
    assert b"paolo.conti" not in (root / "out/postfix/relay_recipients").read_bytes()


def test_only_changed_files_are_rewritten(tmp_path, mailgw):
    root = _copy_fleet(tmp_path)
    assert mailgw(root, "build").code == 0
    before = _snapshot(root / "out")
    assert mailgw(root, "build").err.strip().endswith("is up to date")
    assert _snapshot(root / "out") == before
    path = root / "domains/tifpa.example.org.yaml"
    path.write_text(path.read_text().replace("  paolo.conti: pconti\n", "  paolo.conti: pconti\n  new.one: pconti\n"))
    result = mailgw(root, "build")
    assert "postfix/relay_recipients" in result.err
    after = _snapshot(root / "out")
    changed = {name for name in after if after[name] != before.get(name)}
    # sender_logins: gateway.yaml's submission section lets pconti send as the new address.
    assert changed == {"postfix/relay_recipients", "postfix/sender_logins", "ldap/directory.ldif", "MANIFEST.json"}
    for name in set(after) - changed:
        assert after[name][1:] == before[name][1:], f"{name} was rewritten"


def test_out_that_is_not_ours_is_refused(tmp_path, mailgw):
    root = _copy_fleet(tmp_path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    result = mailgw(root, "build", "--out", str(precious))
    assert result.code == 2 and "not an output directory of mailgw" in result.err
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_build_check_reports_a_stale_out(tmp_path, mailgw):
    root = _copy_fleet(tmp_path)
    assert mailgw(root, "build").code == 0
    assert mailgw(root, "build", "--check").code == 0
    (root / "out/postfix/transport").write_text("tampered\n")
    result = mailgw(root, "build", "--check")
    assert result.code == 1
    assert "out is stale: 1 file(s) differ" in result.out
    assert "-tampered" in result.out


def test_build_into_another_directory(tmp_path, make_repo, mailgw):
    root = make_repo({"domains/tifpa.example.org.yaml": domain_yaml()})
    result = mailgw(root, "build", "--out", str(tmp_path / "elsewhere" / "out"))
    assert result.code == 0
    assert (tmp_path / "elsewhere/out/postfix/relay_recipients").read_text().splitlines()[1:] == [
        "abuse@tifpa.example.org\treserved",
        "info@tifpa.example.org\trole",
        "mario.rossi@tifpa.example.org\tperson",
        "postmaster@tifpa.example.org\treserved",
    ]
