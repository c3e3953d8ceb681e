"""The mailgw command line: parse arguments, dispatch to a verb, map errors to exit codes.

Every expected failure is a UserError (compiler/errors.py), printed as its
own line(s) with its exit code; whatever else escapes a verb is a bug.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path

from compiler import __version__
from compiler.commands import (
    build,
    codeowners,
    dkim,
    dns,
    explain,
    ldap_diff,
    national,
    plan,
    publish,
    schema,
    sync,
    validate,
)
from compiler.errors import EXIT_USAGE, UserError, flush_output

# Each verb is a module in compiler/commands with register(verbs) and run(args).
COMMANDS = (validate, build, explain, ldap_diff, plan, publish, schema, codeowners, sync, dkim, dns, national)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mailgw", description="Compile the mail gateway's declarations.")
    top.add_argument("--version", action="version", version=f"mailgw {__version__}")
    top.add_argument(
        "-C",
        "--root",
        type=Path,
        default=Path("."),
        help="the gateway repository (holding gateway.yaml and domains/); default: .",
    )
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    for command in COMMANDS:
        command.register(verbs)
    return top


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as a command: 'mailgw plan | head' ends quietly, as other Unix tools do
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = parser().parse_args(argv)
    try:
        exit_code: int = args.run(args)
        flush_output()
        return exit_code
    except UserError as err:
        err.show(sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug of ours: one line, the traceback only on request
        if os.environ.get("MAILGW_DEBUG"):
            traceback.print_exc()
        print(
            f"mailgw: internal error: {type(err).__name__}: {err} (set MAILGW_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_USAGE
