"""The build's fast path: the recipients of a domain file read line by line.

A large site's file is tens of thousands of lines like 'mario.rossi: mrossi'.
Parsing them with libyaml, then validating each with pydantic, costs ten
times more than recognising each line with one compiled regex that embeds
the same grammars as compiler/values.py. So a file whose recipient and
external alias sections consist only of such lines is read here; anything
else (another shape, a quote, an anchor, a tab, a value YAML would read as
a number or a boolean, a doubtful entry) makes this module decline, and the
file goes through libyaml and pydantic, which also locate every finding.
tests/test_fastpath.py checks that whenever this module answers, the answer
is exactly what the slow path gives.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import yaml
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from compiler import values
from compiler.declarations import Address, DomainSource
from compiler.load import Document, parse_text
from compiler.model import DomainDeclaration

SECTIONS = ("recipients", "external_aliases")

_UID = values.UID_PATTERN
# The local-part grammar with upper case allowed (keys keep their case; the address is folded).
_KEY = values.LOCAL_PART_PATTERN.replace("a-z", "A-Za-z")
_TAIL = r"[ ]*(?: #[^\n]*)?$"
# One pass over a whole section: a person, an alias (or explicit person), an owned address, or a person
# with a name in double quotes (no escapes: a backslash or a quote sends the file to libyaml).
_RECIPIENT = re.compile(
    rf"^( +)({_KEY}): +(?:({_UID})|\{{kind: (alias|person), uid: ({_UID})\}}"
    rf"|\{{kind: (role|list), owners: \[([^\[\]{{}}#\n]+)\]\}}"
    rf'|\{{uid: ({_UID}), name: "([^"\\\x00-\x1f\x7f]*)"\}}){_TAIL}',
    re.M,
)
_EXTERNAL = re.compile(rf"^( +)({_KEY}): +(?:\[([^\[\]{{}}#\n]+)\]|([^\[\]{{}},#\s]+)){_TAIL}", re.M)
_CONTENT_LINE = re.compile(r"^[ ]*[^ #\n]", re.M)
_TOP_KEY = re.compile(r"(?P<name>[a-z_]+):[ \t]*(?:#.*)?")

# libyaml resolves plain scalars starting with these to numbers, booleans,
# null or dates (YAML 1.1); those go through the resolver itself.
_RESOLVER_FIRST = frozenset("0123456789+-.~<=!&*yYnNtTfFoO")
# (node kind, value, (plain, quoted)) -> tag; the stubs leave Resolver.resolve untyped.
_RESOLVE: Callable[[type[yaml.Node], str, tuple[bool, bool]], str] = yaml.resolver.Resolver().resolve
_STR = "tag:yaml.org,2002:str"
_UID_RE = re.compile(_UID)


def read_domain(doc: Document) -> DomainSource | None:
    """The domain file read on the fast path, or None when it must take the slow one."""
    parts = split(doc.text)
    if parts is None:
        return None
    try:
        header = parse_text(parts[0])
        if not isinstance(header, dict) or header.keys() & set(SECTIONS):
            return None
        decl = DomainDeclaration.model_validate(header)
    except (yaml.YAMLError, ValidationError, RecursionError):
        return None
    found = addresses(parts[1], "@" + decl.domain)
    return DomainSource(doc, decl, found) if found is not None else None


def _is_text(scalar: str) -> bool:
    """Would libyaml read this plain scalar as a string?"""
    return scalar[0] not in _RESOLVER_FIRST or _RESOLVE(yaml.ScalarNode, scalar, (True, False)) == _STR


def split(text: str) -> tuple[str, dict[str, list[str]]] | None:
    """The file without its recipient sections, and each section's lines; None if it is not that simple."""
    if "\t" in text or "\r" in text or "\ufeff" in text:
        return None
    header: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.split("\n"):
        if line[:1] == " " or not line.strip():
            (header if current is None else current).append(line)
            continue
        if line[0] == "#":
            header.append(line)
            continue
        top = _TOP_KEY.fullmatch(line)
        if top and top["name"] in SECTIONS:
            if top["name"] in sections:
                return None
            current = sections[top["name"]] = []
        elif line.startswith(("---", "...", "%")):
            return None
        else:
            current = None
            header.append(line)
    return "\n".join(header), sections


def addresses(sections: dict[str, list[str]], at: str) -> list[Address] | None:
    """Every address of the sections, or None as soon as one line is outside the simple shapes."""
    found: list[Address] = []
    for section, lines in sections.items():
        text = "\n".join(lines)
        pattern = _EXTERNAL if section == "external_aliases" else _RECIPIENT
        matches = pattern.findall(text)
        # Every line with content must be an entry, all at one indentation, each key once.
        if (
            not matches
            or len(matches) != len(_CONTENT_LINE.findall(text))
            or len({m[0] for m in matches}) != 1
            or len({m[1] for m in matches}) != len(matches)
        ):
            return None
        if section == "external_aliases":
            for _, key, listed, single in matches:
                targets = _targets(listed.split(",") if listed else [single])
                if targets is None or len(key) > 64:
                    return None
                found.append(Address(key.lower() + at, "external", None, (), targets, key))
            continue
        # The common case first, in one comprehension: 'mario.rossi: mrossi'.
        people = [
            Address(key.lower() + at, "person", uid, (), (), key)
            for _, key, uid, *_ in matches
            if uid and (uid[0] not in _RESOLVER_FIRST or _is_text(uid))
        ]
        if any(len(key) > 64 for _, key, *_ in matches):
            return None
        found += people
        for _, key, uid, kind, kind_uid, owned_kind, owners, named_uid, name in matches:
            if uid:
                continue
            if kind:
                if not _is_text(kind_uid):
                    return None
                found.append(Address(key.lower() + at, kind, kind_uid, (), (), key))
            elif named_uid:
                if not _is_text(named_uid) or not _is_name(name):
                    return None
                found.append(Address(key.lower() + at, "person", named_uid, (), (), key, name))
            else:
                listed = [owner.strip() for owner in owners.split(",")]
                if not all(owner and _UID_RE.fullmatch(owner) and _is_text(owner) for owner in listed):
                    return None
                found.append(Address(key.lower() + at, owned_kind, None, tuple(sorted(set(listed))), (), key))
        if sum(1 for m in matches if m[2]) != len(people):
            return None  # a uid that YAML reads as a number, a boolean or a date
    return found


def _is_name(written: str) -> bool:
    """A name as values.person_name accepts it (the slow path gives the finding of one it refuses)."""
    try:
        values.person_name(written)
    except PydanticCustomError:
        return False
    return True


def _targets(written: list[str]) -> tuple[str, ...] | None:
    targets = []
    for target in (t.strip() for t in written):
        if not target or not _is_text(target):
            return None
        try:
            targets.append(values.mail_address(target))
        except PydanticCustomError:
            return None
    return tuple(sorted(set(targets)))
