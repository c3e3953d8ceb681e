"""mailgw explain ADDRESS: what the MX does with that recipient, and the lookups that decide it.

Exit 0 when the MX accepts the recipient, or leaves the answer to the site
(verify domains); 1 when it refuses it; 2 for an argument that is not an
address or an IP address. Declarations with findings exit 1 with the findings,
as every verb does.
"""

from __future__ import annotations

import argparse
import ipaddress

from pydantic_core import PydanticCustomError

from compiler import values
from compiler.errors import UserError
from compiler.mx import Tables, explain, render
from compiler.pipeline import compile_repository

EXIT_ACCEPTED, EXIT_REJECTED = 0, 1


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser(
        "explain",
        help="what the MX does with a recipient address, and why",
        description="Replay the MX's lookups for RCPT TO:<ADDRESS>. Exit 0: accepted (or "
        "left to the site's answer); 1: refused.",
    )
    parser.add_argument("address", metavar="ADDRESS", help="the recipient, like mario.rossi@tifpa.example.org")
    parser.add_argument(
        "--client",
        metavar="IP",
        type=_ip,
        help="the connecting client's IP address (default: any client on the internet)",
    )
    parser.set_defaults(run=run)


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not an IP address") from None


def run(args: argparse.Namespace) -> int:
    address = _address(args.address)
    if address is None:
        raise UserError(f"explain: '{args.address}' is not an address like 'name@example.org'")
    compiled = compile_repository(args.root)
    explanation = explain(compiled.fleet, Tables(compiled.artifacts), address, args.client)
    print(render(explanation), end="")
    return EXIT_ACCEPTED if explanation.accepted else EXIT_REJECTED


def _address(text: str) -> str | None:
    """The address with its domain as A-labels, or None when it is not local@domain."""
    local, at, domain = text.rpartition("@")
    if not at or not local or any(char.isspace() or ord(char) < 32 for char in local):
        return None
    try:
        alabel = values.domain_name(domain)
    except PydanticCustomError:
        return None
    if domain.isascii():
        # The case stays as written (it shows in the reply); a trailing dot or the like is refused.
        return f"{local}@{domain}" if alabel == domain.lower() else None
    return f"{local}@{alabel}"
