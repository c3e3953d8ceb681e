"""mailgw codeowners: write .github/CODEOWNERS from the domains' admins (or check that it is current)."""

from __future__ import annotations

import argparse

from compiler import codeowners
from compiler.generated import write_or_check
from compiler.pipeline import load_declarations


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser("codeowners", help="write .github/CODEOWNERS from each domain's admins")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 when CODEOWNERS is stale")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    files = {codeowners.PATH: codeowners.render(load_declarations(args.root))}
    return write_or_check(args.root, files, codeowners.COMMAND, args.check)
