"""mailgw schema: write schema/*.schema.json for editors (or check that they are current)."""

from __future__ import annotations

import argparse

from compiler import schema
from compiler.generated import write_or_check


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser("schema", help="write the JSON Schemas of gateway.yaml and domains/*.yaml")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 when schema/ is stale")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return write_or_check(args.root, schema.files(), schema.COMMAND, args.check)
