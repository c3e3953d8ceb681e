"""mailgw explain ADDRESS: what the MX does with that recipient, and the lookups that decide it.

With --sender, the same for the outbound services (docs/submission.md):
`--sender S --login UID` on the submission ports, `--sender S --certificate
FINGERPRINT` for a client certificate, `--sender S --client IP` on the
automation relay; ADDRESS (the recipient) may then be left out for a login or
a certificate.

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
from compiler.mx import Explanation, Tables, explain, explain_submission, render
from compiler.pipeline import compile_repository

EXIT_ACCEPTED, EXIT_REJECTED = 0, 1


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser(
        "explain",
        help="what the MX does with a recipient address, and why",
        description="Replay the MX's lookups for RCPT TO:<ADDRESS>. Exit 0: accepted (or "
        "left to the site's answer); 1: refused.",
    )
    parser.add_argument(
        "address", metavar="ADDRESS", nargs="?", help="the recipient, like mario.rossi@tifpa.example.org"
    )
    parser.add_argument(
        "--client",
        metavar="IP",
        type=_ip,
        help="the connecting client's IP address (default: any client on the internet); with --sender alone, "
        "an automation client's",
    )
    submission = parser.add_argument_group("the outbound services (docs/submission.md)")
    submission.add_argument("--sender", metavar="ADDRESS", help="MAIL FROM of a submission or of the automation relay")
    who = submission.add_mutually_exclusive_group()
    who.add_argument("--login", metavar="UID", help="logged in (SASL) as this AAI uid, on 587 or 465")
    who.add_argument(
        "--certificate", metavar="FINGERPRINT", help="with this TLS client certificate (its SHA-256 fingerprint)"
    )
    parser.set_defaults(run=run)


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not an IP address") from None


def run(args: argparse.Namespace) -> int:
    address = None if args.address is None else _address(args.address)
    if args.address is not None and address is None:
        raise UserError(f"explain: '{args.address}' is not an address like 'name@example.org'")
    if args.sender is None:
        if args.login or args.certificate:
            raise UserError("explain: --login and --certificate explain a submission: give its --sender too")
        if address is None:
            raise UserError("explain: give the recipient ADDRESS (or --sender for the outbound services)")
        compiled = compile_repository(args.root)
        explanation = explain(compiled.fleet, Tables(compiled.artifacts), address, args.client)
    else:
        explanation = _submission(args, address)
    print(render(explanation), end="")
    return EXIT_ACCEPTED if explanation.accepted else EXIT_REJECTED


def _submission(args: argparse.Namespace, address: str | None) -> Explanation:
    sender = "" if args.sender in ("", "<>") else _address(args.sender)
    if sender is None:
        raise UserError(f"explain: --sender '{args.sender}' is not an address like 'name@example.org' (or '<>')")
    certificate = None
    if args.certificate is not None:
        try:
            certificate = values.certificate_fingerprint(args.certificate)
        except PydanticCustomError as err:
            raise UserError(f"explain: --certificate: {err.message()}") from None
    if args.login is None and certificate is None and (args.client is None or address is None):
        raise UserError("explain: --sender needs --login UID, --certificate FINGERPRINT, or --client IP and ADDRESS")
    compiled = compile_repository(args.root)
    return explain_submission(
        compiled.fleet,
        Tables(compiled.artifacts),
        compiled.artifacts,
        sender,
        address,
        login=args.login,
        certificate=certificate,
        client=args.client,
    )


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
