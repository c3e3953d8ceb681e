"""The one exception for failures that are the user's to fix, caught once in `main`.

Invalid declarations, a revision that cannot be read, a publish that would
commit the wrong thing, another build writing out/, a full disk: each is a
UserError carrying its exit code and one line that says what failed and
where. `main` prints that line; anything else that escapes a verb is a bug
of ours and is reported as an internal error.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

# The exit codes of every verb (README, docs/errors.md).
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """An expected failure: main prints 'mailgw: MESSAGE' and exits with `exit_code`."""

    exit_code = EXIT_USAGE  # a subclass says otherwise (FindingsError: 1)

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


def flush_output() -> None:
    """Flush standard output; when it refuses the bytes (a full disk, a device error) that is a UserError."""
    try:
        if sys.stdout is not None:  # None: started with standard output closed
            sys.stdout.flush()
    except OSError as err:
        raise output_failed(err) from None


def output_failed(err: OSError) -> UserError:
    """Standard output refused what a verb wrote: the error to raise, with the file output was redirected to."""
    try:
        target = os.readlink(f"/proc/self/fd/{sys.stdout.fileno()}")
        # What could not be written is dropped, so that Python's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        target = "standard output"
    return file_error("write the output to", err, target)
