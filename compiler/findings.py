"""Findings: what is wrong with the declarations, and where."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TextIO

from compiler.errors import EXIT_FINDINGS, UserError

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(text: str) -> str:
    """`text` on one line that a terminal or a CI log shows as it is: every character that is not
    printable (controls, ESC, line and paragraph separators, bidi and other format characters,
    spaces other than ' ') becomes a visible escape such as '\\n', '\\x1b' or '\\u202e'."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _ESCAPES.get(char) or _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    col: int
    code: str
    message: str

    def __str__(self) -> str:
        """Always one line: a value quoted in the message is shown with escapes, never raw."""
        return f"{shown(self.path)}:{self.line}:{self.col}: error[{shown(self.code)}]: {shown(self.message)}"

    def annotation(self) -> str:
        """The GitHub Actions workflow command that shows this finding on the diff, on one line.

        Properties escape '%', CR, LF, ':' and ',' and the message '%', CR and LF (the runner's
        escaping), after the escapes of shown(): the runner turns them back into text, never into a command.
        """
        path = _workflow_escape(shown(self.path), ":,")
        code = _workflow_escape(shown(self.code), ":,")
        message = _workflow_escape(shown(self.message), "")
        return f"::error file={path},line={self.line},col={self.col},title={code}::{message}"


def _workflow_escape(text: str, also: str) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    for char in also:
        text = text.replace(char, f"%{ord(char):02X}")
    return text


class FindingsError(UserError):
    """The user's input is wrong; carries every finding of the run."""

    exit_code = EXIT_FINDINGS

    def __init__(self, findings: list[Finding]):
        super().__init__(f"{len(findings)} finding(s)")
        self.findings = sorted(set(findings))

    def show(self, stream: TextIO) -> None:
        report(self.findings, stream)


def report(findings: list[Finding], stream: TextIO) -> None:
    """Print every finding; under GitHub Actions also as annotations (the log keeps the full list)."""
    for finding in findings:
        print(finding, file=stream)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for finding in findings:
            print(finding.annotation(), file=stream)
    print(f"{len(findings)} error(s)", file=stream)


@dataclass(frozen=True, order=True)
class Note(Finding):
    """Something a declaration should add, which does not stop a build (a name, a pending alias)."""

    def __str__(self) -> str:
        return f"{shown(self.path)}:{self.line}:{self.col}: note[{shown(self.code)}]: {shown(self.message)}"

    def annotation(self) -> str:
        return "::notice" + super().annotation().removeprefix("::error")


def report_notes(notes: list[Note], stream: TextIO) -> None:
    """Print every note; under GitHub Actions also as notice annotations."""
    for note in notes:
        print(note, file=stream)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for note in notes:
            print(note.annotation(), file=stream)
