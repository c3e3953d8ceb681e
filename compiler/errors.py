"""The one exception for failures that are the user's to fix, caught once in `main`.

Invalid declarations, a revision that cannot be read, a publish that would
commit the wrong thing, another build writing out/, a full disk: each is a
UserError carrying its exit code and one line that says what failed and
where. `main` prints that line; anything else that escapes a verb is a bug
of ours and is reported as an internal error.
"""

from __future__ import annotations

import os
from typing import TextIO

# The exit codes of every verb (README, docs/errors.md).
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """An expected failure: main prints 'mailgw: MESSAGE' and exits with `exit_code`."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    def show(self, stream: TextIO) -> None:
        print(f"mailgw: {self}", file=stream)


def file_error(doing: str, err: OSError, where: str | os.PathLike[str] | None = None) -> UserError:
    """The file system said no (full, read-only, permission denied): what we were doing, where, and why.

    `where` is the path the operator knows (out/, the file named on the command
    line); the path of the failing call is added when it is another one.
    """
    why = err.strerror or type(err).__name__
    failing = os.fsdecode(err.filename) if err.filename is not None else None
    if where is None and failing is None:
        return UserError(f"cannot {doing}: {why}")
    place = os.fspath(where) if where is not None else None
    if place is None or failing is None or place == failing:
        return UserError(f"cannot {doing} {place or failing}: {why}")
    return UserError(f"cannot {doing} {place}: {why} (at {failing})")
