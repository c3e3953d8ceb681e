"""mailgw national: the national domain's aliases (docs/national-aliases.md).

    mailgw national assign                       give every person the aliases still missing (national/aliases.yaml)
    mailgw national show UID [--format json]     a person's aliases, primary address and the forms they may choose
    mailgw national choose UID [--alias FORM] [--primary ADDRESS]
                                                 record a person's choice (national/choices.yaml and the ledger)

The files are written whole (sorted, atomically) and only when they change;
the change is then reviewed and published like any other (plan, merge,
publish). Exit 0 fine; 1 findings in the declarations, or a choice or a uid
the rules refuse; 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from compiler import national
from compiler.commands.sync import write_atomically
from compiler.declarations import Declarations, NationalFiles, NationalPerson, NationalResolution
from compiler.errors import EXIT_FINDINGS, UserError, file_error
from compiler.findings import report_notes
from compiler.model import NationalAliases, NationalChoices
from compiler.pipeline import load_declarations


class NationalRefused(UserError):
    """The rules refuse what was asked (exit 1), in one line that says why."""

    exit_code = EXIT_FINDINGS


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser("national", help="the national domain's aliases: assign, show, choose")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("assign", help=f"give the missing aliases, in {national.LEDGER}").set_defaults(run=run_assign)
    show = actions.add_parser("show", help="a person's national aliases and what they may choose")
    show.add_argument("uid", metavar="UID")
    show.add_argument("--format", choices=("text", "json"), default="text", help="default: text")
    show.set_defaults(run=run_show)
    choose = actions.add_parser("choose", help=f"record a person's choice in {national.CHOICES}")
    choose.add_argument("uid", metavar="UID")
    choose.add_argument("--alias", metavar="FORM", help="the extended alias: a form of the person's name")
    choose.add_argument("--primary", metavar="ADDRESS", help="where the national aliases go: one of their addresses")
    choose.set_defaults(run=run_choose)


def _resolved(root: Path) -> tuple[Declarations, NationalResolution, NationalFiles]:
    declarations = load_declarations(root)
    if declarations.national is None:
        raise NationalRefused("gateway.yaml names no national domain (national: {domain: ...})")
    files = declarations.national_files or NationalFiles(None, NationalAliases(), None, NationalChoices())
    return declarations, declarations.national, files


def _write(root: Path, rel: str, data: bytes) -> bool:
    path = root / rel
    try:
        if path.is_file() and path.read_bytes() == data:
            return False
        write_atomically(path, data)
    except OSError as err:
        raise file_error("write", err, path) from None
    return True


def run_assign(args: argparse.Namespace) -> int:
    _, resolution, files = _resolved(args.root)
    ledger = national.assign(resolution, files)
    given = {
        uid: [alias for alias in owned if alias not in files.aliases.aliases.get(uid, [])]
        for uid, owned in ledger.aliases.items()
    }
    given = {uid: aliases for uid, aliases in given.items() if aliases}
    if _write(args.root, national.LEDGER, national.render_aliases(ledger)):
        print(f"wrote {national.LEDGER}: gave {sum(map(len, given.values()))} alias(es)", file=sys.stderr)
        for uid, aliases in sorted(given.items()):
            print(f"  {uid}: {', '.join(f'{alias}@{resolution.domain}' for alias in aliases)}", file=sys.stderr)
    else:
        print(f"{national.LEDGER}: every person has their aliases", file=sys.stderr)
    return 0


def run_show(args: argparse.Namespace) -> int:
    _, resolution, files = _resolved(args.root)
    person = resolution.people.get(args.uid)
    if person is None:
        raise NationalRefused(f"{args.uid} has no address of their own in the fleet, so no national alias")
    shown = describe(resolution, files, person)
    if args.format == "json":
        print(json.dumps(shown, indent=2, sort_keys=True))
        return 0
    at = f"@{resolution.domain}"
    lines = [f"{person.uid}: {person.name or '(no name declared)'}"]
    lines.append(f"  simple alias:   {person.simple + at if person.simple else '(none)'}")
    lines.append(f"  extended alias: {person.extended + at if person.extended else '(none)'}")
    lines.append(f"  primary:        {person.primary}")
    lines.append(f"  addresses:      {', '.join(person.addresses)}")
    lines += [f"  form {form['alias']}{at}: {form['state']}" for form in shown["forms"]]
    print("\n".join(lines))
    return 0


def describe(resolution: NationalResolution, files: NationalFiles, person: NationalPerson) -> dict[str, Any]:
    """What `show --format json` prints: plain data the portal reads (it never imports the compiler)."""
    owner_of = {alias.lower(): uid for uid, owned in files.aliases.aliases.items() for alias in owned}
    forms = list(person.forms) + [alias for alias in person.owned if alias not in person.forms and alias != person.uid]

    def state(alias: str) -> str:
        if alias == person.extended:
            return "yours"
        if owner_of.get(alias) == person.uid:
            return "owned"
        if alias in owner_of or alias in resolution.reserved:
            return "taken"
        return "free"

    at = f"@{resolution.domain}"
    return {
        "uid": person.uid,
        "name": person.name,
        "domain": resolution.domain,
        "simple": person.simple + at if person.simple else None,
        "extended": person.extended + at if person.extended else None,
        "default_extended": person.default_extended + at if person.default_extended else None,
        "primary": person.primary,
        "default_primary": person.default_primary,
        "addresses": list(person.addresses),
        "forms": [{"alias": alias, "state": state(alias)} for alias in forms],
    }


def run_choose(args: argparse.Namespace) -> int:
    if args.alias is None and args.primary is None:
        raise UserError("national choose: give --alias, --primary or both")
    _, resolution, files = _resolved(args.root)
    try:
        ledger, choices = national.choose(resolution, files, args.uid, args.alias, args.primary)
    except national.ChoiceRefused as refused:
        raise NationalRefused(f"national choose: refused: {refused}") from None
    wrote = [
        rel
        for rel, data in (
            (national.LEDGER, national.render_aliases(ledger)),
            (national.CHOICES, national.render_choices(choices)),
        )
        if _write(args.root, rel, data)
    ]
    choice = choices.choices[args.uid]
    print(
        f"{', '.join(f'wrote {rel}' for rel in wrote) or 'nothing changed'}: {args.uid} chose "
        f"alias {choice.alias or '(the default)'}, primary {choice.primary or '(the default)'}",
        file=sys.stderr,
    )
    return 0


def print_notes(declarations: Declarations) -> None:
    """The national domain's notes (names to add, aliases to assign): they never fail a command."""
    if declarations.national is not None and declarations.national.notes:
        report_notes(list(declarations.national.notes), sys.stderr)
