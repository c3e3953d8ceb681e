"""mailgw build: compile the declarations into out/ (or check that out/ is current)."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from compiler.pipeline import compile_repository
from compiler.write import read_tree, write_tree

MAX_DIFF_LINES = 40
# difflib is quadratic on large files: it only sees the region between the common head and tail,
# and at most this many lines of it (the diff shown is cut at MAX_DIFF_LINES anyway).
DIFF_WINDOW = 2000
_HUNK = re.compile(r"@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser("build", help="compile the declarations into out/")
    parser.add_argument("--out", type=Path, help="output directory (default: ROOT/out)")
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 with a short diff if out/ differs from a fresh build"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    compiled = compile_repository(args.root)
    out = args.out if args.out is not None else args.root / "out"
    if args.check:
        return _check(out, compiled.artifacts)
    changed = write_tree(out, compiled.artifacts)
    if changed:
        print(f"wrote {out}: {len(changed)} file(s) changed: {', '.join(changed)}", file=sys.stderr)
    else:
        print(f"{out} is up to date", file=sys.stderr)
    return 0


def _check(out: Path, artifacts: dict[str, bytes]) -> int:
    """Exit 1 with a short diff when the committed out/ differs from a fresh build."""
    current = read_tree(out)
    stale = sorted(path for path in set(current) | set(artifacts) if current.get(path) != artifacts.get(path))
    if not stale:
        print(f"{out} is up to date", file=sys.stderr)
        return 0
    print(f"{out} is stale: {len(stale)} file(s) differ from a fresh build; run 'mailgw build'")
    shown = 0
    for path in stale:
        old = current.get(path, b"").decode("utf-8", "replace").splitlines(keepends=True)
        new = artifacts.get(path, b"").decode("utf-8", "replace").splitlines(keepends=True)
        for line in short_diff(old, new, f"{out.name}/{path}", f"fresh/{path}"):
            if shown == MAX_DIFF_LINES:
                print("... (diff cut)")
                return 1
            print(line, end="" if line.endswith("\n") else "\n")
            shown += 1
    return 1


def short_diff(old: list[str], new: list[str], old_name: str, new_name: str) -> Iterator[str]:
    """A unified diff without context of the region where old and new differ."""
    head = 0
    while head < min(len(old), len(new)) and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < min(len(old), len(new)) - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    old_mid = old[head : len(old) - tail][:DIFF_WINDOW]
    new_mid = new[head : len(new) - tail][:DIFF_WINDOW]
    for line in difflib.unified_diff(old_mid, new_mid, old_name, new_name, n=0):
        match = _HUNK.match(line)
        if match:  # hunk positions count from the start of the file, not of the region
            line = (
                f"@@ -{int(match[1]) + head}{match[2] or ''} +{int(match[3]) + head}{match[4] or ''} @@"
                + line[match.end() :]
            )
        yield line
