"""mailgw validate: load and check every declaration, print every finding."""

from __future__ import annotations

import argparse
import sys

from compiler.commands.national import print_notes
from compiler.pipeline import load_declarations


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verbs.add_parser("validate", help="check every declaration; print every finding").set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    declarations = load_declarations(args.root)
    addresses = sum(len(s.addresses) for s in declarations.domains)
    print(f"ok: {len(declarations.domains)} domain(s), {addresses} address(es)", file=sys.stderr)
    print_notes(declarations)
    return 0
