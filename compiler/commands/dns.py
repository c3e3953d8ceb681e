"""mailgw dns check DOMAIN: what DOMAIN publishes in DNS against what it must publish (out/dns/DOMAIN.zone).

Each required record set is asked of a resolver (the system's, or --resolver
IP[:PORT]) and judged: correct, missing (no such record) or stale (other
data). MX, TXT and the rest compare as sets of data; TXT records as their
joined strings; the domain's SPF as its one 'v=spf1' record among the name's
TXT records; a backup-MX domain's MX need only include the gateway's nodes.
DOMAIN may also be the gateway's SPF record name, for the gateway's own
records. Exit 0 when every record is correct, 1 when one is missing or
stale, 2 when a lookup fails (no answer, a server error) or for a usage error.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
from dataclasses import dataclass

import dns.exception
import dns.rdata
import dns.rdatatype
import dns.resolver
from pydantic_core import PydanticCustomError

from compiler import values
from compiler.errors import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, UserError
from compiler.fleet import build_fleet
from compiler.pipeline import load_declarations
from compiler.targets import dns as records

REFERENCES = ("RFC 1035", "RFC 7208 4.5 (one SPF record)")

DEFAULT_TIMEOUT = 5.0


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser("dns", help="the DNS records of the domains: check what one publishes")
    checks = parser.add_subparsers(dest="dns_verb", required=True, metavar="check")
    check = checks.add_parser(
        "check",
        help="compare what DOMAIN publishes with what it must publish",
        description="Ask a resolver for every record DOMAIN must publish for the gateway (out/dns/DOMAIN.zone) "
        "and print which are correct, missing or stale. Exit 0: all correct; 1: some missing or stale; "
        "2: a lookup failed.",
    )
    check.add_argument("domain", metavar="DOMAIN", help="a domain of domains/, or the gateway's SPF record name")
    check.add_argument(
        "--resolver", metavar="IP[:PORT]", type=_resolver, help="ask this server (default: the system's resolvers)"
    )
    check.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S", help="per lookup; default 5")
    check.set_defaults(run=run)


def _resolver(text: str) -> tuple[str, int]:
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else -1 if rest else 53
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        port = int(number) if number.isdigit() else -1
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        address = ""
    if not address or not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not IP, IP:PORT or [IPv6]:PORT")
    return address, port


@dataclass(frozen=True)
class Verdict:
    record: records.Record
    status: str  # correct | missing | stale | failed
    published: tuple[str, ...]
    error: str = ""


def run(args: argparse.Namespace) -> int:
    try:
        name = values.dns_record_name(args.domain) if args.domain.startswith("_") else values.domain_name(args.domain)
    except PydanticCustomError as err:
        raise UserError(f"dns check: {err.message()}") from None
    fleet = build_fleet(load_declarations(args.root))
    if fleet.gateway.dns is None:
        raise UserError("dns check: gateway.yaml has no dns section, so no domain has records to publish")
    required = records.required(fleet, name)
    if required is None:
        raise UserError(
            f"dns check: {name} is neither a domain of domains/ nor the gateway's own {fleet.gateway.dns.spf_record}"
        )
    resolver = dns.resolver.Resolver(configure=args.resolver is None)
    if args.resolver is not None:
        resolver.nameservers, resolver.port = [args.resolver[0]], args.resolver[1]
    resolver.timeout = resolver.lifetime = args.timeout
    verdicts = [judge(record, resolver) for record in required]
    where = f"{args.resolver[0]}:{args.resolver[1]}" if args.resolver else "the system's resolvers"
    print(f"mailgw dns check {name} (asking {where})")
    for verdict in verdicts:
        print(*_lines(verdict, name), sep="\n")
    counts = {status: sum(v.status == status for v in verdicts) for status in ("correct", "missing", "stale", "failed")}
    print("summary: " + ", ".join(f"{count} {status}" for status, count in counts.items() if count))
    if counts["failed"]:
        return EXIT_USAGE
    return EXIT_FINDINGS if counts["missing"] or counts["stale"] else EXIT_OK


def judge(record: records.Record, resolver: dns.resolver.Resolver) -> Verdict:
    try:
        answer = resolver.resolve(record.name + ".", record.type, raise_on_no_answer=False, search=False)
        rrset = answer.rrset
        published = tuple(sorted(_value(rdata) for rdata in rrset)) if rrset is not None else ()
    except dns.resolver.NXDOMAIN:
        published = ()
    except (
        dns.exception.Timeout,
        dns.resolver.NoNameservers,
        dns.resolver.NoAnswer,
        dns.exception.DNSException,
    ) as err:
        return Verdict(record, "failed", (), str(err).splitlines()[0] if str(err) else type(err).__name__)
    required = {_fold(record.type, v) for v in record.values}
    if record.match == "spf":
        published = tuple(v for v in published if v.lower() == "v=spf1" or v.lower().startswith("v=spf1 "))
    found = {_fold(record.type, v) for v in published}
    if not found:
        status = "missing"
    elif (required <= found) if record.match == "includes" else (found == required and len(published) == len(found)):
        status = "correct"
    else:
        status = "stale"
    return Verdict(record, status, published)


def _value(rdata: dns.rdata.Rdata) -> str:
    """One published record's data as required() writes it: TXT joined, names absolute, addresses canonical."""
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
    if rdata.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return str(ipaddress.ip_address(rdata.address))  # type: ignore[attr-defined]
    return str(rdata.to_text())


def _fold(record_type: str, value: str) -> str:
    """Names compare without case; TXT data as it is."""
    return value if record_type == "TXT" else value.lower()


def _lines(verdict: Verdict, zone: str) -> list[str]:
    record = verdict.record
    elsewhere = f" (published by the zone of {record.publisher})" if record.publisher not in ("", zone) else ""
    head = f"{verdict.status:<8} {record.owner} {record.type}{elsewhere}"
    if verdict.status == "correct":
        return [head]
    if verdict.status == "failed":
        return [f"{head}: the lookup failed: {verdict.error}"]
    lines = [head]
    if verdict.status == "stale":
        lines += [f"           publishes:    {_show(record.type, v)}" for v in verdict.published]
    lines += [f"           must publish: {_show(record.type, v)}" for v in record.values]
    return lines


def _show(record_type: str, value: str) -> str:
    # A published TXT string may hold anything: shown as a JSON string, one line of printable ASCII.
    return json.dumps(value) if record_type == "TXT" else value
