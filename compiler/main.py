"""The mailgw command line: parse arguments, dispatch to a verb, map errors to exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from compiler import __version__
from compiler.commands import build, validate
from compiler.findings import FindingsError, report
from compiler.write import OutputError

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mailgw", description="Compile the mail gateway's declarations.")
    top.add_argument("--version", action="version", version=f"mailgw {__version__}")
    top.add_argument("-C", "--root", type=Path, default=Path("."),
                     help="the gateway repository (holding gateway.yaml and domains/); default: .")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("validate", help="check every declaration; print every finding").set_defaults(run=validate.run)
    b = verbs.add_parser("build", help="compile the declarations into out/")
    b.add_argument("--out", type=Path, help="output directory (default: ROOT/out)")
    b.add_argument("--check", action="store_true", help="do not write; exit 1 if out/ differs from a fresh build")
    b.set_defaults(run=build.run)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except FindingsError as err:
        report(err.findings, sys.stderr)
        return EXIT_FINDINGS
    except OutputError as err:
        print(f"mailgw: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug of ours: one line, the traceback only on request
        if os.environ.get("MAILGW_DEBUG"):
            traceback.print_exc()
        print(f"mailgw: internal error: {type(err).__name__}: {err} (set MAILGW_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_USAGE
