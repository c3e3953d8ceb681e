"""Files the repository commits and a command regenerates (schema/, .github/CODEOWNERS): write or check."""

from __future__ import annotations

import sys
from pathlib import Path

from compiler.errors import file_error

EXIT_STALE = 1


def write_or_check(root: Path, files: dict[str, bytes], command: str, check: bool) -> int:
    """Write the files (only those whose bytes changed), or with check exit 1 naming the stale ones."""
    try:
        stale = [rel for rel, data in sorted(files.items()) if not _holds(root / rel, data)]
    except OSError as err:
        raise file_error("read", err) from None
    if check:
        if stale:
            print(f"{', '.join(stale)}: stale; run '{command}' and commit the result", file=sys.stderr)
            return EXIT_STALE
        print(f"{', '.join(sorted(files))}: current", file=sys.stderr)
        return 0
    for rel in stale:
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(files[rel])
        except OSError as err:
            raise file_error("write", err, path) from None
    print(f"wrote {', '.join(stale)}" if stale else f"{', '.join(sorted(files))}: current", file=sys.stderr)
    return 0


def _holds(path: Path, data: bytes) -> bool:
    return path.is_file() and path.read_bytes() == data
