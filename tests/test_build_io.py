"""The file system says no: full, read-only, permission denied, a file size limit, a full output device.

Every failure here is real: a tmpfs filled to the last byte and a read-only
bind mount (in a private mount namespace, so nothing outside the test sees
them), a directory without write permission (root's override dropped with
setpriv), RLIMIT_FSIZE, and /dev/full. Each time mailgw prints one line that
says what it could not do, where and why, exits 2 (docs/errors.md), and
out/ keeps every file, byte, inode and timestamp it had.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, program

TIFPA = "domains/tifpa.example.org.yaml"


def _state(out: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file of out/ with its bytes, inode and modification time: 'untouched' means all three."""
    return {
        p.relative_to(out).as_posix(): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def _mailgw(*args: str, prefix: tuple[str, ...] = (), **options) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "compiler", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        **options,
    )


@pytest.fixture
def changed(tmp_path) -> tuple[Path, Path]:
    """A fleet whose out/ (in its own directory, AREA/out) was built before one recipient was added: (root, out)."""
    root, area = tmp_path / "gw", tmp_path / "area"
    (root / "domains").mkdir(parents=True)
    area.mkdir()
    shutil.copy(REPO / "gateway.yaml", root)
    for path in (REPO / "domains").glob("*.yaml"):
        shutil.copy(path, root / "domains")
    done = _mailgw("-C", str(root), "build", "--out", str(area / "out"))
    assert done.returncode == 0, done.stderr
    path = root / TIFPA
    path.write_text(path.read_text().replace("recipients:\n", "recipients:\n  new.colleague: ncolleague\n"))
    return root, area / "out"


def _refused(done: subprocess.CompletedProcess, out: Path, why: str, failing: str) -> None:
    """One line: what could not be written, the errno's words, the failing path, and that out/ is unchanged."""
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"mailgw: cannot write {out}: {why} (at {out.parent}/{failing}"), line
    assert line.endswith(f"; {out} is unchanged"), line
    assert "internal error" not in line and "Traceback" not in done.stderr


def _stagings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}.staging-*"))


# A shell run in a private mount namespace (unshare -m): the mounts it makes vanish with it.
IN_NAMESPACE = """\
set -eu
{setup}
find "$OUT" -type f -printf '%P %i %s %T@\\n' | sort > "$REPORT/before"
set +e
"$PYTHON" -m compiler -C "$ROOT" build --out "$OUT" > "$REPORT/stdout" 2> "$REPORT/stderr"
echo $? > "$REPORT/code"
set -e
find "$OUT" -type f -printf '%P %i %s %T@\\n' | sort > "$REPORT/after"
ls -A "$(dirname "$OUT")" > "$REPORT/listing"
rm -rf "$REPORT/out" && cp -a "$OUT" "$REPORT/out"
"""


def _in_namespace(root: Path, out: Path, report: Path, setup: str) -> subprocess.CompletedProcess:
    report.mkdir()
    done = subprocess.run(
        [program("unshare"), "-m", "--propagation", "private", "sh", "-c", IN_NAMESPACE.format(setup=setup)],
        cwd=REPO,
        env={**os.environ, "ROOT": str(root), "OUT": str(out), "REPORT": str(report), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (report / "before").read_text() == (report / "after").read_text(), "out/ lost or rewrote a file"
    return subprocess.CompletedProcess(
        done.args, int((report / "code").read_text()), (report / "stdout").read_text(), (report / "stderr").read_text()
    )


@pytest.mark.needs("unshare", "mount")
@pytest.mark.needs_root("mounting a file system")
def test_a_full_disk(changed, tmp_path):
    root, prebuilt = changed
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "out"
    setup = (
        f'mount -t tmpfs -o size=1m,mode=0755 tmpfs "{disk}"\n'
        f'cp -a "{prebuilt}" "$OUT"\n'
        f'head -c 2000000 /dev/zero > "{disk}/filler" 2>/dev/null || true  # every free byte\n'
    )
    done = _in_namespace(root, out, tmp_path / "report", setup)
    _refused(done, out, "No space left on device", ".out.staging-")
    assert (tmp_path / "report" / "listing").read_text() == "filler\nout\n", "no staging directory is left"
    assert _state(tmp_path / "report" / "out").keys() == _state(prebuilt).keys()
    for rel, (data, _, _) in _state(prebuilt).items():
        assert (tmp_path / "report" / "out" / rel).read_bytes() == data, rel


@pytest.mark.needs("unshare", "mount")
@pytest.mark.needs_root("mounting a file system")
def test_a_read_only_file_system(changed, tmp_path):
    root, out = changed
    before = _state(out)
    setup = f'mount --bind "{out.parent}" "{out.parent}"\nmount -o remount,bind,ro "{out.parent}"\n'
    done = _in_namespace(root, out, tmp_path / "report", setup)
    _refused(done, out, "Read-only file system", ".out.staging-")
    assert _state(out) == before and _stagings(out) == []


@pytest.mark.needs("setpriv")
def test_a_directory_without_write_permission(changed):
    root, out = changed
    before = _state(out)
    # Root writes anywhere (CAP_DAC_OVERRIDE): without that capability, root obeys the mode like anyone.
    prefix = (program("setpriv"), "--bounding-set=-dac_override,-dac_read_search", "--") if os.geteuid() == 0 else ()
    out.parent.chmod(0o555)
    try:
        done = _mailgw("-C", str(root), "build", "--out", str(out), prefix=prefix)
    finally:
        out.parent.chmod(0o755)
    _refused(done, out, "Permission denied", ".out.staging-")
    assert _state(out) == before and _stagings(out) == []


def test_a_file_size_limit(changed):
    """RLIMIT_FSIZE (ulimit -f): the kernel refuses the first file over the limit with EFBIG."""
    root, out = changed
    before = _state(out)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    done = _mailgw("-C", str(root), "build", "--out", str(out), preexec_fn=limited)
    _refused(done, out, "File too large", ".out.staging-")
    assert _state(out) == before and _stagings(out) == []


def test_a_full_output_device(changed):
    """Standard output on /dev/full: the changes cannot be printed, and mailgw says so instead of tracing back."""
    _, out = changed
    directory = out / "ldap" / "directory.ldif"
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "compiler", "ldap-diff", str(directory), str(directory)],
            cwd=REPO,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    assert done.stderr == "mailgw: cannot write the output to /dev/full: No space left on device\n"


@pytest.mark.needs("unshare", "mount")
@pytest.mark.needs_root("mounting a file system")
def test_schema_on_a_read_only_file_system(changed):
    root, _ = changed
    done = subprocess.run(
        [
            program("unshare"),
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount --bind "$ROOT" "$ROOT" && mount -o remount,bind,ro "$ROOT" && exec "$@"',
            "mailgw",
            sys.executable,
            "-m",
            "compiler",
            "-C",
            str(root),
            "schema",
        ],
        cwd=REPO,
        env={**os.environ, "ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"mailgw: cannot write {root}/schema/domain.schema.json: Read-only file system (at {root}/schema)"
    ]
    assert not (root / "schema").exists()
