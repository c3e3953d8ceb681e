"""Findings: what is wrong with the declarations, and where."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TextIO

from compiler.errors import EXIT_FINDINGS, UserError


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    col: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: error[{self.code}]: {self.message}"

    def annotation(self) -> str:
        """The GitHub Actions workflow command that shows this finding on the diff."""
        message = self.message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return f"::error file={self.path},line={self.line},col={self.col},title={self.code}::{message}"


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
