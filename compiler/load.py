"""Stage 1, load: YAML files -> plain data, with every position recoverable.

The build path parses with libyaml (PyYAML's C loader): it is several times
faster than ruamel.yaml and gives the same marks. Positions are not stored
for every node; a finding asks for one and the file is composed again then,
so a clean build pays nothing for locations.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from compiler.findings import Finding, FindingsError

# One domain of a 1,000,000-address fleet stays well below this; a bigger
# file is a mistake or an attack, and libyaml would hold all of it in memory.
MAX_FILE_BYTES = 16 * 1024 * 1024

BOM = b"\xef\xbb\xbf"
# The sections of a domain file that list addresses; mailgw sync writes them to a file of their own.
ADDRESS_SECTIONS = ("recipients", "external_aliases")


@dataclass(eq=False)
class Document:
    """One YAML file: its bytes, its data, and where each node sits."""

    relpath: str
    raw: bytes
    text: str
    data: Any
    _root: Node | None = field(default=None, repr=False)
    # A domain whose addresses mailgw sync writes: the file holding its address sections (sources/<domain>.yaml).
    sections: Document | None = field(default=None, repr=False)

    def finding(
        self, loc: tuple[str | int, ...] = (), code: str = "", message: str = "", *, at_key: bool = False
    ) -> Finding:
        doc = self._holder(loc)
        line, col = doc.position(loc, at_key=at_key)
        return Finding(doc.relpath, line, col, code, message)

    def location(self, loc: tuple[str | int, ...], *, at_key: bool = False) -> str:
        """'path:line:col' of the node at `loc`, in whichever file holds it."""
        doc = self._holder(loc)
        line, col = doc.position(loc, at_key=at_key)
        return f"{doc.relpath}:{line}:{col}"

    def _holder(self, loc: tuple[str | int, ...]) -> Document:
        if self.sections is not None and loc and loc[0] in ADDRESS_SECTIONS:
            return self.sections
        return self

    def position(self, loc: tuple[str | int, ...], *, at_key: bool = False) -> tuple[int, int]:
        """1-based line and column of the node at `loc` (a pydantic-style path).

        Path parts that name no node (a union tag, a missing field) are
        skipped, so the position is that of the deepest node that exists.
        With at_key, a mapping entry is located at its key, not its value.
        """
        if self._holder(loc) is not self:
            return self._holder(loc).position(loc, at_key=at_key)
        node, key_node, _ = self.walk(loc)
        if node is None:
            return 1, 1
        target = key_node if (at_key and key_node is not None) else node
        return target.start_mark.line + 1, target.start_mark.column + 1

    def walk(self, loc: tuple[str | int, ...]) -> tuple[Node | None, Node | None, tuple[str | int, ...]]:
        """The node at `loc`, its key node, and the parts of `loc` that exist in the file."""
        if self._holder(loc) is not self:
            return self._holder(loc).walk(loc)
        if self._root is None:
            self._root = yaml.compose(self.text, Loader=yaml.CSafeLoader)
        node: Node | None = self._root
        key_node: Node | None = None
        found: list[str | int] = []
        for part in loc:
            if part == "[key]" and key_node is not None:
                return key_node, key_node, tuple(found)
            if isinstance(node, MappingNode):
                for k, v in node.value:
                    if isinstance(k, ScalarNode) and k.value == str(part):
                        key_node, node = k, v
                        found.append(part)
                        break
            elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                key_node, node = None, node.value[part]
                found.append(part)
        return node, key_node, tuple(found)


class _Loader(yaml.CSafeLoader):
    """Safe loader that refuses what a declaration never needs and hides mistakes."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        # An alias re-uses a node already built: refusing it rules out
        # expansion bombs and spooky shared values in one place.
        if node in self.constructed_objects:
            raise _Refused(
                "yaml-alias", node.start_mark, "anchors and aliases (&name, *name) are not allowed; write the value out"
            )
        return super().construct_object(node, deep=deep)

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Hashable, Any]:
        if not isinstance(node, MappingNode):
            raise _Refused("yaml-syntax", node.start_mark, "expected a mapping")
        mapping: dict[Hashable, Any] = {}
        first: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused("yaml-syntax", key_node.start_mark, "mapping keys must be plain text")
            # Keys are always text, taken literally: 'no:' or '1e3:' as a
            # local part must not turn into a boolean or a number.
            key = key_node.value
            if key in first:
                where = first[key].start_mark
                raise _Refused(
                    "duplicate-key",
                    key_node.start_mark,
                    f"key '{key}' is already defined at line {where.line + 1} column "
                    f"{where.column + 1}; a key may appear only once in a mapping",
                )
            first[key] = key_node
            if value_node in self.constructed_objects:
                raise _Refused(
                    "yaml-alias",
                    key_node.start_mark,
                    f"the value of '{key}' is an alias (*name); "
                    "anchors and aliases are not allowed, write the value out",
                )
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_sequence(self, node: SequenceNode, deep: bool = False) -> list[Any]:
        if any(child in self.constructed_objects for child in node.value):
            raise _Refused(
                "yaml-alias",
                node.start_mark,
                "this list holds an alias (*name); anchors and aliases are not allowed, write the value out",
            )
        return super().construct_sequence(node, deep=deep)


class _Refused(yaml.MarkedYAMLError):
    def __init__(self, code: str, mark: Mark | None, message: str):
        super().__init__(problem=message, problem_mark=mark)
        self.code = code


def load_file(path: Path, relpath: str) -> Document:
    """Read and parse one YAML file; raises FindingsError with its one finding."""
    doc = read_document(path, relpath)
    load_yaml(doc)
    return doc


def read_document(path: Path, relpath: str) -> Document:
    """The file's bytes and text, refused if too large, with a BOM, or not UTF-8 (data not parsed yet)."""

    def refuse(code: str, message: str, line: int = 1, col: int = 1) -> NoReturn:
        raise FindingsError([Finding(relpath, line, col, code, message)])

    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            refuse(
                "file-too-large",
                f"file is {size} bytes; the limit is {MAX_FILE_BYTES} bytes "
                "(split the recipients or ask the gateway team)",
            )
        raw = path.read_bytes()
    except OSError as err:
        refuse("unreadable-file", f"cannot read the file: {err.strerror}")
    return document(raw, relpath)


def document(raw: bytes, relpath: str) -> Document:
    """A file's bytes as a Document: refused with a BOM or when not UTF-8 (data not parsed yet)."""

    def refuse(code: str, message: str, line: int = 1, col: int = 1) -> NoReturn:
        raise FindingsError([Finding(relpath, line, col, code, message)])

    if raw.startswith(BOM):
        refuse("byte-order-mark", "file starts with a byte-order mark; save it as UTF-8 without BOM")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line, col = _byte_position(raw, err.start)
        refuse("not-utf8", f"byte 0x{raw[err.start]:02x} is not valid UTF-8; save the file as UTF-8", line, col)
    return Document(relpath=relpath, raw=raw, text=text, data=None)


def parse_text(text: str) -> Any:
    """YAML text -> data with the declaration loader's rules; raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)


def load_yaml(doc: Document) -> None:
    """Parse the document's text into doc.data; raises FindingsError with the first YAML problem."""

    def refuse(code: str, message: str, line: int = 1, col: int = 1) -> NoReturn:
        raise FindingsError([Finding(doc.relpath, line, col, code, message)])

    try:
        doc.data = parse_text(doc.text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = _yaml_message(err, doc.text)
        code = getattr(err, "code", "yaml-too-deep" if "nests too deeply" in message else "yaml-syntax")
        refuse(code, message, line, col)
    except yaml.reader.ReaderError as err:
        line = doc.text.count("\n", 0, err.position) + 1
        col = err.position - doc.text.rfind("\n", 0, err.position)
        refuse(
            "control-character", f"control character U+{err.character:04X} is not allowed in YAML; remove it", line, col
        )
    except yaml.YAMLError as err:
        refuse("yaml-syntax", str(err).splitlines()[0])
    except RecursionError:
        refuse("yaml-too-deep", "the YAML nests too deeply")


def _byte_position(raw: bytes, offset: int) -> tuple[int, int]:
    line_start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, len(raw[line_start:offset].decode("utf-8", "replace")) + 1


def _yaml_message(err: yaml.MarkedYAMLError, text: str) -> str:
    if getattr(err, "code", None):
        assert err.problem is not None  # only _Refused has a code, and it always has a problem
        return err.problem
    problem = err.problem or "invalid YAML"
    mark = err.problem_mark
    if mark is not None and text[mark.index : mark.index + 1] == "\t":
        return "tab character: YAML is indented with spaces only"
    if "maximum nesting depth" in problem:
        return "the YAML nests too deeply"
    if "expected a single document" in (err.context or ""):
        return "the file holds more than one YAML document ('---'); keep one"
    context = f"{err.context}: " if err.context else ""
    return f"invalid YAML: {context}{problem}"
