"""The national alias domain: each person's uid@ and name.surname@ aliases, and the primary address they reach.

Rules (docs/national-aliases.md, for the people who use them):

- Every person (an AAI uid with addresses of its own in the fleet) gets the
  simple alias uid@NATIONAL, and with a declared name the extended alias
  name.surname@NATIONAL; both go to the person's primary address (virtual(5)),
  so the mail then follows that address's site.
- An extended form is the name without accents (Unicode decomposition, and
  a few Latin letters that do not decompose spelt out), apostrophes, hyphens
  and the spaces of a multi-part name removed, lower case: 'Maria Chiara De
  Luca' is mariachiara.deluca. The default is given.surname; a person may
  choose another form of their name (first given name, initial, surname
  first, parts apart).
- National/aliases.yaml is the ledger: every alias ever given, under its uid,
  for good. `mailgw national assign` gives the missing ones, in uid order, a
  homonym the first free suffix (mario.rossi, mario.rossi2, ...); nothing in
  the ledger is ever moved to another uid, so the first two Mario Rossi keep
  their aliases when a third arrives, and an alias of someone who left is
  retired, never reused. Until assigned, a person has no national alias
  (a note says so), so nothing depends on the order people arrive in a build.
- Never given: RFC 2142's role names, postmaster, and every local part the
  national domain declares itself (its roles, lists, external aliases).
- National/choices.yaml holds each person's choices: an extended alias the
  ledger gives them, and a primary address among those they own. A choice
  that no longer fits (an address the site removed) is set aside with a note,
  and the defaults apply: a site's change is never blocked by a choice.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from compiler import values
from compiler.declarations import Address, DomainSource, NationalFiles, NationalPerson, NationalResolution
from compiler.findings import Finding, FindingsError, Note
from compiler.load import Document, load_file
from compiler.model import GatewayDeclaration, NationalAliases, NationalChoice, NationalChoices, parse

REFERENCES = ("RFC 2142", "RFC 5321 4.1.2", "Unicode UAX #15 (NFKD)", "virtual(5)")

NATIONAL_DIR = "national"
LEDGER = f"{NATIONAL_DIR}/aliases.yaml"
CHOICES = f"{NATIONAL_DIR}/choices.yaml"
KIND = "national"
# RFC 2142's mailbox names, and the system names every mail domain keeps for itself.
RFC_2142 = (
    "abuse",
    "ftp",
    "hostmaster",
    "info",
    "mailer-daemon",
    "marketing",
    "news",
    "noc",
    "postmaster",
    "root",
    "sales",
    "security",
    "support",
    "usenet",
    "uucp",
    "webmaster",
    "www",
)
# A homonym's suffix: 'mario.rossi2' up to this; the base leaves room for it in 64 characters.
MAX_SUFFIX = 999
MAX_BASE = 60
# Latin letters that Unicode decomposition leaves as they are, spelt in ASCII.
_SPELT = str.maketrans(
    {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "\u0131": "i", "ħ": "h"}
)
_LOCAL_PART = re.compile(values.LOCAL_PART_PATTERN)
LEDGER_HEADER = (
    "# The national domain's aliases, each under the AAI uid it belongs to for good (docs/national-aliases.md).\n"
    "# Written by 'mailgw national assign' and 'mailgw national choose'; an alias never moves to another uid.\n"
)
CHOICES_HEADER = (
    "# Each person's choices for the national domain (docs/national-aliases.md): written by\n"
    "# 'mailgw national choose' and the portal, one commit per change.\n"
)


class ChoiceRefused(Exception):
    """A choice that the rules do not allow: the message says why, for the person who made it."""


# --- names and forms -----------------------------------------------------------------------------


def spell(word: str) -> str:
    """A word of a name in the local-part alphabet: no accents or punctuation, lower case (D'Angelo: dangelo)."""
    decomposed = unicodedata.normalize("NFKD", word.lower().translate(_SPELT))
    return "".join(char for char in decomposed if "a" <= char <= "z" or "0" <= char <= "9")


def words(name: str) -> tuple[list[str], list[str]] | None:
    """The given names and surnames spelt for an alias ('-' splits words too); None when one side spells nothing."""
    given, surname = values.name_parts(name)
    spelt_given = [w for part in given for w in map(spell, part.split("-")) if w]
    spelt_surname = [w for part in surname for w in map(spell, part.split("-")) if w]
    if not spelt_given or not spelt_surname:
        return None
    return spelt_given, spelt_surname


def forms(name: str) -> tuple[str, ...]:
    """The extended forms a name allows, the default first: given.surname, then the other spellings."""
    spelt = words(name)
    if spelt is None:
        return ()
    given, surname = spelt
    whole_given, whole_surname = "".join(given), "".join(surname)
    candidates = [
        f"{whole_given}.{whole_surname}",
        f"{given[0]}.{whole_surname}",
        ".".join(given + [whole_surname]),
        ".".join([whole_given] + surname),
        f"{given[0][0]}.{whole_surname}",
        f"{whole_surname}.{whole_given}",
    ]
    found: list[str] = []
    for form in candidates:
        if form not in found and len(form) <= MAX_BASE and _LOCAL_PART.fullmatch(form):
            found.append(form)
    return tuple(found)


def sequence(base: str) -> Iterator[str]:
    """The default's candidates in order: base, base2, base3, ..."""
    yield base
    for suffix in range(2, MAX_SUFFIX + 1):
        yield f"{base}{suffix}"


def in_sequence(alias: str, base: str) -> int | None:
    """The position of `alias` in sequence(base) (1 for the base itself), or None."""
    if alias == base:
        return 1
    suffix = alias[len(base) :] if alias.startswith(base) else ""
    if suffix.isdigit() and suffix[0] != "0" and 2 <= int(suffix) <= MAX_SUFFIX:
        return int(suffix)
    return None


def is_alias(local: str) -> bool:
    return len(local) <= 64 and _LOCAL_PART.fullmatch(local) is not None


# --- loading the two files -----------------------------------------------------------------------


def load_files(root: Path, gateway: GatewayDeclaration | None) -> tuple[NationalFiles | None, list[Finding]]:
    """national/aliases.yaml and national/choices.yaml (each optional); refused when no national domain is named."""
    findings: list[Finding] = []
    present = [rel for rel in (LEDGER, CHOICES) if (root / rel).is_file() or (root / rel).is_symlink()]
    if gateway is not None and gateway.national is None:
        return None, [
            Finding(
                rel,
                1,
                1,
                "national-not-declared",
                f"{rel} is for the national alias domain, but gateway.yaml names none (national: {{domain: ...}})",
            )
            for rel in present
        ]
    docs: dict[str, Document | None] = {LEDGER: None, CHOICES: None}
    for rel in present:
        try:
            docs[rel] = load_file(root / rel, rel)
        except FindingsError as err:
            findings += err.findings
    aliases, choices = NationalAliases(), NationalChoices()
    ledger_doc, choices_doc = docs[LEDGER], docs[CHOICES]
    if ledger_doc is not None and ledger_doc.data is not None:
        parsed_aliases, found = parse(ledger_doc, NationalAliases)
        findings += found
        aliases = parsed_aliases or aliases
    if choices_doc is not None and choices_doc.data is not None:
        parsed_choices, found = parse(choices_doc, NationalChoices)
        findings += found
        choices = parsed_choices or choices
    return NationalFiles(ledger_doc, aliases, choices_doc, choices), findings


# --- resolving the domain ------------------------------------------------------------------------


def reserved(national: DomainSource | None) -> frozenset[str]:
    """Local parts never given as aliases: RFC 2142's and what the national domain declares itself."""
    own = {entry.key.lower() for entry in national.addresses} if national is not None else set()
    return frozenset(RFC_2142) | own


def resolve(
    gateway: GatewayDeclaration, gateway_doc: Document, domains: tuple[DomainSource, ...], files: NationalFiles | None
) -> NationalResolution | None:
    """The national domain of these declarations; None when gateway.yaml names none."""
    if gateway.national is None:
        return None
    name = gateway.national.domain
    files = files or NationalFiles(None, NationalAliases(), None, NationalChoices())
    national = next((source for source in domains if source.decl.domain == name), None)
    findings: list[Finding] = []
    notes: list[Note] = []
    if national is None:
        findings.append(
            gateway_doc.finding(
                ("national", "domain"),
                "national-domain-undeclared",
                f"the national domain '{name}' has no file: add domains/{name}.yaml with its site, its next hop "
                "(where its own roles, lists, postmaster@ and abuse@ go) and recipient_check: list",
            )
        )
    else:
        findings += _national_file_rules(national)
    taken = reserved(national)
    people, name_notes = _people(domains, name)
    notes += name_notes
    owner_of, ledger_findings = _ledger(files, taken, national)
    findings += ledger_findings
    ledger = {uid: tuple(local.lower() for local in owned) for uid, owned in files.aliases.aliases.items()}
    resolved: dict[str, NationalPerson] = {}
    aliases: list[Address] = []
    pending: list[str] = []
    unspellable: list[str] = []
    for uid, (person_name, owned_addresses, default_primary) in people.items():
        owned = ledger.get(uid, ())
        allowed = forms(person_name) if person_name else ()
        if person_name and not allowed:
            unspellable.append(uid)
        default_extended = _default_extended(uid, owned, allowed)
        choice = files.choices.choices.get(uid)
        extended, primary = default_extended, default_primary
        if choice is not None and choice.alias is not None and choice.alias.lower() in owned:
            extended = choice.alias.lower()
        if choice is not None and choice.primary is not None:
            if choice.primary.lower() in owned_addresses:
                primary = choice.primary.lower()
            else:
                notes.append(
                    _choice_note(
                        files,
                        uid,
                        "primary",
                        "national-choice-set-aside",
                        f"{uid}'s chosen primary address '{choice.primary}' is not one of theirs any more; "
                        f"their national aliases go to {default_primary} until they choose again",
                    )
                )
        simple = uid if owner_of.get(uid) == uid else None
        if (simple is None and uid not in owner_of and is_alias(uid) and uid not in taken) or (
            allowed and not any(in_sequence(alias, allowed[0]) for alias in owned)
        ):
            pending.append(uid)
        resolved[uid] = NationalPerson(
            uid, person_name, owned_addresses, primary, default_primary, simple, extended, default_extended,
            allowed, owned,
        )  # fmt: skip
        for local in dict.fromkeys(alias for alias in (simple, extended) if alias is not None):
            aliases.append(Address(f"{local}@{name}", KIND, uid, (), (primary,), local))
    for uid, choice in files.choices.choices.items():
        findings += _choice_findings(files, uid, choice, resolved.get(uid), owner_of)
        if uid not in resolved:
            notes.append(
                _choice_note(
                    files,
                    uid,
                    None,
                    "national-choice-set-aside",
                    f"{uid} has no address in the fleet any more; their choices wait in case they come back",
                )
            )
    notes += _pending_notes(files, gateway_doc, pending, unspellable)
    return NationalResolution(name, tuple(sorted(aliases)), resolved, taken, tuple(findings), tuple(sorted(set(notes))))


def _default_extended(uid: str, owned: tuple[str, ...], allowed: tuple[str, ...]) -> str | None:
    """The first alias of the name's sequence that the uid owns; else the last extended alias it was given."""
    if allowed:
        positions = [(position, alias) for alias in owned if (position := in_sequence(alias, allowed[0]))]
        if positions:
            return min(positions)[1]
    extended = [alias for alias in owned if alias != uid]
    return extended[-1] if extended else None


def _national_file_rules(national: DomainSource) -> list[Finding]:
    """The national domain's own file: its roles, lists and external aliases; people's addresses are generated."""
    findings = [
        national.doc.finding(
            (entry.section, entry.key),
            "national-own-address",
            f"'{entry.key}' is a {entry.kind} address in the national domain, whose people's addresses are "
            "generated (docs/national-aliases.md); declare roles, lists and external aliases here",
            at_key=True,
        )
        for entry in national.addresses
        if entry.uid is not None
    ]
    if national.decl.recipient_check != "list":
        findings.append(
            national.doc.finding(
                ("recipient_check",),
                "national-verify",
                "the national domain knows every address it has (its own and the generated aliases): "
                "recipient_check must be 'list'",
            )
        )
    if national.decl.source is not None:
        findings.append(
            national.doc.finding(
                ("source",),
                "national-source",
                "the national domain's addresses are its own roles and lists and the generated aliases; "
                "it cannot have a source",
                at_key=True,
            )
        )
    return findings


def _people(
    domains: tuple[DomainSource, ...], national: str
) -> tuple[dict[str, tuple[str | None, tuple[str, ...], str]], list[Note]]:
    """uid -> (name, owned addresses sorted, default primary); a note for each domain with nameless people."""
    names: dict[str, str] = {}
    owned: dict[str, list[Address]] = {}
    for source in sorted(domains, key=lambda s: s.doc.relpath):
        if source.decl.domain == national:
            continue
        for entry in source.addresses:
            if entry.uid is None:
                continue
            owned.setdefault(entry.uid, []).append(entry)
            if entry.name and entry.uid not in names:  # a second, different name is check.names_agree's
                names[entry.uid] = entry.name
    people = {}
    nameless: dict[str, list[Address]] = {}
    for uid in sorted(owned):
        entries = owned[uid]
        addresses = tuple(sorted(entry.address for entry in entries))
        own = sorted(entry.address for entry in entries if entry.kind == "person")
        people[uid] = (names.get(uid), addresses, own[0] if own else addresses[0])
        if uid not in names:
            first_person = next((e for e in entries if e.kind == "person"), entries[0])
            nameless.setdefault(first_person.address.rpartition("@")[2], []).append(first_person)
    notes = []
    for source in domains:
        missing = nameless.get(source.decl.domain)
        if missing:
            shown = ", ".join(entry.uid or "" for entry in missing[:5]) + (", ..." if len(missing) > 5 else "")
            where = source.doc.finding(("recipients", missing[0].key), at_key=True)
            notes.append(
                Note(
                    where.path,
                    where.line,
                    where.col,
                    "national-no-name",
                    f"{len(missing)} person(s) of {source.decl.domain} have no name ({shown}), so no name.surname "
                    "alias in the national domain: add it where the person is declared, like "
                    "'mario.rossi: {uid: mrossi, name: \"Mario Rossi\"}'",
                )
            )
    return people, notes


def _ledger(
    files: NationalFiles, taken: frozenset[str], national: DomainSource | None
) -> tuple[dict[str, str], list[Finding]]:
    """alias -> its uid; an alias given twice, or one the national domain keeps, is a finding."""
    owner_of: dict[str, str] = {}
    findings: list[Finding] = []
    doc = files.aliases_doc
    own = {entry.key.lower(): entry for entry in national.addresses} if national is not None else {}
    for uid, owned in files.aliases.aliases.items():
        for index, written in enumerate(owned):
            alias = written.lower()
            first = owner_of.get(alias)
            if first is not None and doc is not None:
                findings.append(
                    doc.finding(
                        ("aliases", uid, index),
                        "national-alias-twice",
                        f"alias '{alias}' is already given to {first}; an alias belongs to one uid for good",
                    )
                )
                continue
            owner_of[alias] = uid
            if alias in own and national is not None:
                findings.append(
                    national.doc.finding(
                        (own[alias].section, own[alias].key),
                        "national-alias-reserved",
                        f"'{own[alias].key}' is the national alias of {uid} ({LEDGER}); an alias is never taken "
                        "back: choose another name for this address",
                        at_key=True,
                    )
                )
            elif alias in taken and doc is not None:
                findings.append(
                    doc.finding(
                        ("aliases", uid, index),
                        "national-alias-reserved",
                        f"'{alias}' is an RFC 2142 or system mailbox name; it is never anybody's alias",
                    )
                )
    return owner_of, findings


def _choice_findings(
    files: NationalFiles, uid: str, choice: NationalChoice, person: NationalPerson | None, owner_of: dict[str, str]
) -> list[Finding]:
    doc = files.choices_doc
    if doc is None or choice.alias is None:
        return []
    alias = choice.alias.lower()
    owner = owner_of.get(alias)
    if owner == uid:
        return []
    why = f"is the alias of {owner}" if owner is not None else f"is not given to {uid} in {LEDGER}"
    return [
        doc.finding(
            ("choices", uid, "alias"),
            "national-choice",
            f"{uid}'s chosen alias '{alias}' {why}; choose with 'mailgw national choose {uid} --alias FORM' "
            "(or the portal), which checks the form is free",
        )
    ]


def _choice_note(files: NationalFiles, uid: str, field: str | None, code: str, message: str) -> Note:
    doc = files.choices_doc
    if doc is None:
        return Note(CHOICES, 1, 1, code, message)
    where = doc.finding(("choices", uid) + ((field,) if field else ()), at_key=field is None)
    return Note(where.path, where.line, where.col, code, message)


def _pending_notes(
    files: NationalFiles, gateway_doc: Document, pending: list[str], unspellable: list[str]
) -> list[Note]:
    notes = []
    if pending:
        shown = ", ".join(pending[:5]) + (", ..." if len(pending) > 5 else "")
        notes.append(
            Note(
                LEDGER,
                1,
                1,
                "national-unassigned",
                f"{len(pending)} person(s) have national aliases still to be given ({shown}): run "
                f"'mailgw national assign' and commit {LEDGER}; until then they have none",
            )
        )
    if unspellable:
        notes.append(
            Note(
                LEDGER,
                1,
                1,
                "national-name-unspellable",
                f"the names of {', '.join(unspellable[:5])} have no letter an address can spell "
                "(a-z once accents are taken off), so no name.surname alias; the gateway team can give one by "
                f"hand in {LEDGER} and {CHOICES}",
            )
        )
    return notes


# --- changing the ledger and the choices -----------------------------------------------------------


def assign(resolution: NationalResolution, files: NationalFiles) -> NationalAliases:
    """The ledger with every missing alias given: simple aliases first, then the extended ones, in uid order."""
    ledger = {uid: [local.lower() for local in owned] for uid, owned in files.aliases.aliases.items()}
    taken = set(resolution.reserved) | {alias for owned in ledger.values() for alias in owned}
    people = resolution.people
    for uid in sorted(people):
        if uid not in taken and is_alias(uid):
            ledger.setdefault(uid, []).append(uid)
            taken.add(uid)
    for uid in sorted(people):
        allowed = people[uid].forms
        owned = ledger.get(uid, [])
        if not allowed or any(in_sequence(alias, allowed[0]) for alias in owned):
            continue
        for candidate in sequence(allowed[0]):
            if candidate not in taken:
                ledger.setdefault(uid, []).append(candidate)
                taken.add(candidate)
                break
    return NationalAliases(aliases=ledger)


def choose(
    resolution: NationalResolution, files: NationalFiles, uid: str, alias: str | None, primary: str | None
) -> tuple[NationalAliases, NationalChoices]:
    """The ledger and choices with `uid`'s new choice; raises ChoiceRefused when the rules do not allow it."""
    person = resolution.people.get(uid)
    if person is None:
        raise ChoiceRefused(f"{uid} has no address of their own in the fleet, so no national alias")
    ledger = {owner: [local.lower() for local in owned] for owner, owned in files.aliases.aliases.items()}
    owner_of = {local: owner for owner, owned in ledger.items() for local in owned}
    current = files.choices.choices.get(uid, NationalChoice())
    chosen_alias, chosen_primary = current.alias, current.primary
    if alias is not None:
        alias = alias.lower()
        if owner_of.get(alias) not in (None, uid):
            raise ChoiceRefused(f"'{alias}' is somebody else's alias")
        if alias in resolution.reserved:
            raise ChoiceRefused(f"'{alias}' is a name the national domain keeps for itself")
        if alias not in person.forms and alias not in person.owned:
            shown = ", ".join(person.forms) if person.forms else "none: the fleet has no name for them"
            raise ChoiceRefused(f"'{alias}' is not a form of {uid}'s name (the forms: {shown})")
        if owner_of.get(alias) is None:
            ledger.setdefault(uid, []).append(alias)
        chosen_alias = alias
    if primary is not None:
        primary = primary.lower()
        if primary not in person.addresses:
            raise ChoiceRefused(f"'{primary}' is not one of {uid}'s addresses ({', '.join(person.addresses)})")
        chosen_primary = primary
    choices = dict(files.choices.choices)
    choices[uid] = NationalChoice(alias=chosen_alias, primary=chosen_primary)
    return NationalAliases(aliases=ledger), NationalChoices(choices=choices)


# --- writing them ----------------------------------------------------------------------------------

# libyaml resolves plain scalars starting with these to something else than text (YAML 1.1).
_RESOLVER_FIRST = frozenset("0123456789+-.~<=!&*yYnNtTfFoO")
# (node kind, value, (plain, quoted)) -> tag; the stubs leave Resolver.resolve untyped.
_RESOLVE: Callable[[type[yaml.Node], str, tuple[bool, bool]], str] = yaml.resolver.Resolver().resolve
_STR = "tag:yaml.org,2002:str"


def _scalar(value: str) -> str:
    """A validated value as YAML reads it back as text: quoted when libyaml would see a number, a boolean, ..."""
    if value[0] not in _RESOLVER_FIRST or _RESOLVE(yaml.ScalarNode, value, (True, False)) == _STR:
        return value
    return f"'{value}'"  # validated values carry no quote


def render_aliases(aliases: NationalAliases) -> bytes:
    """The ledger, uids sorted, each uid's aliases in the order they were given."""
    lines = [LEDGER_HEADER.rstrip("\n"), "aliases:" if aliases.aliases else "aliases: {}"]
    for uid in sorted(aliases.aliases):
        lines.append(f"  {_scalar(uid)}: [{', '.join(_scalar(local) for local in aliases.aliases[uid])}]")
    return ("\n".join(lines) + "\n").encode("ascii")


def render_choices(choices: NationalChoices) -> bytes:
    lines = [CHOICES_HEADER.rstrip("\n"), "choices:" if choices.choices else "choices: {}"]
    for uid in sorted(choices.choices):
        choice = choices.choices[uid]
        fields = [
            f"{field}: {_scalar(value)}"
            for field, value in (("alias", choice.alias), ("primary", choice.primary))
            if value
        ]
        lines.append(f"  {_scalar(uid)}: {{{', '.join(fields)}}}")
    return ("\n".join(lines) + "\n").encode("ascii")
