"""The exchange format: a site's address list as CSV or JSON, read into addresses (docs/sync-format.md).

Every row is checked with the grammars of compiler/values.py before it can
reach a generated line; what needs the whole fleet (owners that exist, alias
targets, loops) is left to the check stage, which runs on the synced file
before it is written. Each problem names the row: 'url:line'.
REFERENCES: RFC 4180 (CSV), RFC 8259 (JSON), RFC 3629 (UTF-8).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticCustomError

from compiler import values
from compiler.declarations import Address

REFERENCES = ("RFC 4180", "RFC 8259", "RFC 3629")

RECIPIENT_COLUMNS = ("address", "kind", "uid", "owners")
ALIAS_COLUMNS = ("address", "target")
KINDS = ("person", "alias", "role", "list")
JSON_SECTIONS = ("recipients", "external_aliases")
RECIPIENT_FIELDS = {"person": ("address", "kind", "uid"), "alias": ("address", "kind", "uid")}
OWNED_FIELDS = ("address", "kind", "owners")
ALIAS_FIELDS = ("address", "targets")
_WHITESPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True, order=True)
class RowFinding:
    """A problem with one row of a site's list, at 'url:line'."""

    url: str
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.url}:{self.line}: error[{self.code}]: {self.message}"


@dataclass(frozen=True)
class SiteList:
    """What a site's list holds: its addresses, the line each came from, and every problem found."""

    addresses: list[Address]
    lines: dict[str, int]  # address -> the line of its row
    findings: list[RowFinding]


class _Rows:
    """Collects addresses and findings; one address per row, each at most once."""

    def __init__(self, url: str, domain: str):
        self.url, self.domain = url, domain
        self.addresses: list[Address] = []
        self.lines: dict[str, int] = {}
        self.findings: list[RowFinding] = []
        self._domains: dict[str, str] = {}  # as written -> A-label: every row has the same one or two spellings

    def refuse(self, line: int, code: str, message: str) -> None:
        self.findings.append(RowFinding(self.url, line, code, message))

    def result(self) -> SiteList:
        return SiteList(self.addresses, self.lines, sorted(self.findings))

    def add(self, line: int, written: str, kind: str, uid: str, owners: list[str], targets: list[str]) -> None:
        address = self._address(line, written)
        if address is None:
            return
        checked: list[str] = []
        try:
            if kind not in KINDS + ("external",):
                raise PydanticCustomError("invalid-choice", _bad_kind(kind), {})
            if kind in ("person", "alias"):
                if owners:
                    raise PydanticCustomError("bad-row", "a {kind} has a uid and no owners", {"kind": kind})
                uid = values.uid(uid)
            elif kind in ("role", "list"):
                if uid:
                    raise PydanticCustomError("bad-row", "a {kind} has owners and no uid", {"kind": kind})
                if not owners:
                    raise PydanticCustomError("bad-row", "a {kind} needs at least one owner", {"kind": kind})
                checked = sorted({values.uid(owner) for owner in owners})
            else:
                if not targets:
                    raise PydanticCustomError("bad-row", "an external alias needs at least one target", {})
                checked = sorted({values.mail_address(target) for target in targets})
        except PydanticCustomError as err:
            self.refuse(line, err.type, f"{written}: {err.message()}")
            return
        if address in self.lines:
            self.refuse(
                line,
                "duplicate-address",
                f"address '{address}' is already listed at {self.url}:{self.lines[address]}",
            )
            return
        self.lines[address] = line
        local = address.rpartition("@")[0]
        if kind in ("person", "alias"):
            self.addresses.append(Address(address, kind, uid, (), (), local))
        elif kind == "external":
            self.addresses.append(Address(address, kind, None, (), tuple(checked), local))
        else:
            self.addresses.append(Address(address, kind, None, tuple(checked), (), local))

    def _address(self, line: int, written: str) -> str | None:
        """The row's address, lower case, in the domain the list is for."""
        local, at, domain = written.rpartition("@")
        try:
            if not at or not local:
                raise PydanticCustomError(
                    "bad-address", "'{value}' is not a mail address like 'name@example.org'", {"value": written}
                )
            local = values.local_part(local).lower()
            if domain not in self._domains:
                self._domains[domain] = values.domain_name(domain)
            domain = self._domains[domain]
        except PydanticCustomError as err:
            self.refuse(line, err.type, err.message())
            return None
        if domain != self.domain:
            self.refuse(
                line,
                "wrong-domain",
                f"address '{written}' is not in {self.domain}; this list is the source of {self.domain} only",
            )
            return None
        return f"{local}@{domain}"


def _bad_kind(kind: str) -> str:
    return f"kind {kind!r} is not one of 'person', 'alias', 'role' or 'list'"


def read(text: str, format: str, url: str, domain: str) -> SiteList:
    """Parse a site's list (already decoded) in its declared format."""
    rows = _Rows(url, domain)
    (_read_csv if format == "csv" else _read_json)(text, rows)
    return rows.result()


def decode(body: bytes, url: str) -> tuple[str | None, RowFinding | None]:
    """The body as text: UTF-8 only (a leading byte-order mark is dropped), else the line of the bad byte."""
    try:
        return body.decode("utf-8").removeprefix("\ufeff"), None
    except UnicodeDecodeError as err:
        line = body.count(b"\n", 0, err.start) + 1
        return None, RowFinding(
            url, line, "not-utf8", f"byte 0x{body[err.start]:02x} is not valid UTF-8; the list must be UTF-8"
        )


# --- CSV ---------------------------------------------------------------------------------------


def _read_csv(text: str, rows: _Rows) -> None:
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    columns: tuple[str, ...] | None = None
    seen: set[tuple[str, ...]] = set()
    try:
        for record in reader:
            line = reader.line_num
            if not record or record == [""]:
                columns = None  # a blank line ends a table
                continue
            if columns is None:
                header = tuple(record)
                if header not in (RECIPIENT_COLUMNS, ALIAS_COLUMNS) or header in seen:
                    expected = ",".join(RECIPIENT_COLUMNS) if not seen else ",".join(ALIAS_COLUMNS)
                    what = "a second table like this one" if header in seen else f"'{','.join(record)}'"
                    rows.refuse(
                        line,
                        "bad-list-format",
                        f"expected the header '{expected}' of a table, got {what}; "
                        "tables are separated by one empty line (docs/sync-format.md)",
                    )
                    return
                columns = header
                seen.add(header)
                continue
            if len(record) != len(columns):
                rows.refuse(
                    line, "bad-row", f"{len(record)} column(s); the table '{','.join(columns)}' has {len(columns)}"
                )
                continue
            if columns == RECIPIENT_COLUMNS:
                address, kind, uid, owners = record
                if kind == "external":  # external aliases have a table of their own
                    rows.refuse(line, "invalid-choice", f"{address}: {_bad_kind(kind)}")
                    continue
                rows.add(line, address, kind, uid, _split(owners), [])
            else:
                address, target = record
                rows.add(line, address, "external", "", [], _split(target))
    except csv.Error as err:
        rows.refuse(reader.line_num, "bad-list-format", f"not CSV: {err}")


def _split(cell: str) -> list[str]:
    """Owners and targets: separated by single spaces ('' stays a value, for values.* to refuse)."""
    return cell.split(" ") if cell else []


# --- JSON --------------------------------------------------------------------------------------


class _JsonError(Exception):
    def __init__(self, position: int, message: str):
        super().__init__(message)
        self.position, self.message = position, message


def _read_json(text: str, rows: _Rows) -> None:
    lines = _LineCounter(text)
    try:
        for section, position, element in _json_elements(text):
            line = lines.at(position)
            if not isinstance(element, dict) or not all(isinstance(v, (str, list)) for v in element.values()):
                rows.refuse(line, "bad-row", f"an entry of '{section}' must be an object of text and lists")
                continue
            kind = element.get("kind", "external" if section == "external_aliases" else None)
            if section == "recipients" and kind not in KINDS:
                what = "missing field 'kind'" if kind is None else _bad_kind(str(kind))
                rows.refuse(line, "invalid-choice" if kind is not None else "bad-row", what)
                continue
            fields = ALIAS_FIELDS if section == "external_aliases" else RECIPIENT_FIELDS.get(str(kind), OWNED_FIELDS)
            extra = sorted(set(element) - set(fields))
            missing = [name for name in fields if name not in element]
            if extra or missing:
                problem = f"unknown field '{extra[0]}'" if extra else f"missing field '{missing[0]}'"
                rows.refuse(line, "bad-row", f"{problem}; an entry of this kind has {', '.join(fields)}")
                continue
            lists = ("owners", "targets")
            if not all(isinstance(element[name], list) == (name in lists) for name in fields) or not all(
                isinstance(item, str) for name in lists for item in element.get(name, [])
            ):
                rows.refuse(line, "bad-row", "'owners' and 'targets' are lists of text, every other field is text")
                continue
            rows.add(
                line,
                element["address"],
                str(kind),
                element.get("uid", ""),
                element.get("owners", []),
                element.get("targets", []),
            )
    except _JsonError as err:
        rows.refuse(lines.at(err.position), "bad-list-format", err.message)


class _LineCounter:
    """Line numbers of increasing positions in one pass (counting from the start each time is quadratic)."""

    def __init__(self, text: str):
        self.text, self.position, self.line = text, 0, 1

    def at(self, position: int) -> int:
        if position < self.position:
            self.position, self.line = 0, 1
        self.line += self.text.count("\n", self.position, position)
        self.position = position
        return self.line


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key '{key}' appears twice in one object")
        found[key] = value
    return found


def _json_elements(text: str) -> Iterator[tuple[str, int, Any]]:
    """(section, position, element) of every entry of the top-level object's lists, in order."""
    decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates)
    decode: Callable[[int], tuple[Any, int]] = lambda at: _decode(decoder, text, at)  # noqa: E731

    def skip(at: int) -> int:
        match = _WHITESPACE.match(text, at)
        return match.end() if match else at

    def expect(at: int, chars: str, what: str) -> str:
        if at >= len(text) or text[at] not in chars:
            raise _JsonError(min(at, len(text)), f"not JSON: expected {what}")
        return text[at]

    at = skip(0)
    expect(at, "{", "an object with 'recipients' and 'external_aliases'")
    at = skip(at + 1)
    seen: set[str] = set()
    if text.startswith("}", at):
        at += 1
    else:
        while True:
            key_at = at
            expect(at, '"', "a key in double quotes")
            key, at = decode(at)
            if key not in JSON_SECTIONS or key in seen:
                twice = "appears twice" if key in seen else "is not 'recipients' or 'external_aliases'"
                raise _JsonError(key_at, f"the key '{key}' {twice}")
            seen.add(key)
            at = skip(at)
            expect(at, ":", "':'")
            at = skip(at + 1)
            expect(at, "[", f"a list as the value of '{key}'")
            at = skip(at + 1)
            if text.startswith("]", at):
                at += 1
            else:
                while True:
                    element, end = decode(at)
                    yield key, at, element
                    at = skip(end)
                    if expect(at, ",]", "',' or ']' after an entry") == "]":
                        at += 1
                        break
                    at = skip(at + 1)
            at = skip(at)
            if expect(at, ",}", "',' or '}'") == "}":
                at += 1
                break
            at = skip(at + 1)
    if skip(at) != len(text):
        raise _JsonError(skip(at), "not JSON: text after the end of the object")


def _decode(decoder: json.JSONDecoder, text: str, at: int) -> tuple[Any, int]:
    try:
        return decoder.raw_decode(text, at)
    except json.JSONDecodeError as err:
        raise _JsonError(err.pos, f"not JSON: {err.msg}") from None
    except ValueError as err:  # a duplicate key, from _no_duplicates
        raise _JsonError(at, str(err)) from None
    except RecursionError:
        raise _JsonError(at, "not JSON: nested too deeply") from None
