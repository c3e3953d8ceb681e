"""Stage 5, write: out/ replaced as a whole, or not at all.

The new tree is staged beside out/ (same file system), unchanged files are
hard links to the old ones (so they are not rewritten), and the staged tree
takes out/'s place with one atomic exchange of the two directories
(renameat2 RENAME_EXCHANGE). A crash before the exchange leaves out/ as it
was; a stale staging directory is removed by the next build.

One writer at a time: a build or publish holds an exclusive lock (flock) on
the directory that holds out/ while it writes, and another one is refused
at once rather than left waiting behind a build that may be stopped (Ctrl-Z).
Only the holder of the lock removes staging directories, so it never
removes the one another build is filling. The kernel drops the lock of a
process that dies, so a killed build blocks nobody.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from compiler.errors import UserError, file_error

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = 1


class OutputError(UserError):
    """out/ cannot be written as asked (a usage problem, not a finding in the declarations)."""


# The directories this process holds the lock of: publish holds it around write_tree, which asks again.
_held: set[Path] = set()


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Be the only mailgw writing `out` (the lock is on its parent directory); refused when another one is."""
    parent = out.absolute().parent
    if parent in _held:
        yield
        return
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise file_error("write", err, out.absolute()) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"another mailgw is writing {out.absolute()} (a build or publish running, or stopped with Ctrl-Z); "
                "out/ is left to it: run this again when it has finished"
            ) from None
        _held.add(parent)
        try:
            yield
        finally:
            _held.discard(parent)
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def manifest(artifacts: dict[str, bytes], inputs: dict[str, bytes]) -> bytes:
    """Sorted JSON: sha256 and size of every artifact and input, and nothing that changes between runs."""

    def digest(files: dict[str, bytes]) -> dict[str, dict[str, str | int]]:
        return {path: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for path, data in files.items()}

    document = {"format": MANIFEST_FORMAT, "artifacts": digest(artifacts), "inputs": digest(inputs)}
    return (json.dumps(document, sort_keys=True, indent=2) + "\n").encode("ascii")


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under root, by relative POSIX path."""
    try:
        if not root.is_dir():
            return {}
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }
    except OSError as err:
        raise file_error("read", err, root) from None


def write_tree(out: Path, files: dict[str, bytes]) -> list[str]:
    """Make `out` hold exactly `files`; returns the paths whose bytes changed (empty: nothing written)."""
    out = out.absolute()
    with exclusive(out):
        try:
            return _replace(out, files)
        except OSError as err:
            # Before the exchange out/ is as it was; _replace says so itself when the failure comes after it.
            raise OutputError(f"{file_error('write', err, out)}; {out} is unchanged") from None


def _replace(out: Path, files: dict[str, bytes]) -> list[str]:
    _remove_stale(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a directory")
    old_names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} if out.is_dir() else set()
    if old_names and MANIFEST not in old_names:
        raise OutputError(f"refusing to replace {out}: it is not an output directory of mailgw (no {MANIFEST})")
    changed = sorted(rel for rel, data in files.items() if not _same_bytes(out / rel, data))
    if not changed and old_names == set(files):
        return []
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        for rel, data in sorted(files.items()):
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel in changed:
                _write_durably(target, data)
            else:
                os.link(out / rel, target)
        _sync_dir(stage)
        if out.exists():
            _exchange(stage, out)
        else:
            os.rename(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    try:
        _sync_dir(out.parent)
    except OSError as err:
        raise OutputError(f"{out} holds the new files, but {file_error('sync', err, out.parent)}") from None
    return sorted(set(changed) | (old_names - set(files)))


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _write_durably(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from None  # write() and fsync() do not say which file


def _sync_dir(path: Path) -> None:
    try:
        _fsync_dir(path)
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(out: Path) -> None:
    for stale in out.parent.glob(f".{out.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically (Linux renameat2); readers see the old or the new tree, never none."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), str(b))
    # Without renameat2 (old kernel or file system): two renames, a brief window without out/.
    aside = b.with_name(b.name + ".previous")
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(b, aside)
    try:
        os.rename(a, b)
    except OSError:
        os.rename(aside, b)  # the old tree goes back: out/ stays as it was
        raise
    os.rename(aside, a)
