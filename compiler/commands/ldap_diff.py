"""mailgw ldap-diff OLD NEW: the change LDIF that turns directory OLD into NEW, for ldapmodify."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compiler import ldapdiff
from compiler.errors import EXIT_OK, UserError, file_error, output_failed


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser(
        "ldap-diff",
        help="print the ldapmodify changes that turn directory OLD into NEW",
        description="Compare two directory LDIF files (like out/ldap/directory.ldif of two builds) and print "
        "the change records (add, modify, delete) that turn OLD into NEW on a live server: "
        "ldapmodify -f CHANGES. Exit 0 also when there is nothing to change.",
    )
    parser.add_argument("old", type=Path, metavar="OLD", help="the directory the server holds now")
    parser.add_argument("new", type=Path, metavar="NEW", help="the directory it should hold")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    directories = []
    for path in (args.old, args.new):
        try:
            directories.append(ldapdiff.read_directory(path.read_bytes()))
        except OSError as err:
            raise UserError(f"ldap-diff: {file_error('read', err, path)}") from None
        except ldapdiff.LdifError as err:
            raise UserError(f"ldap-diff: {path}: {err}") from None
    changes = ldapdiff.diff(*directories)
    try:
        sys.stdout.buffer.write(ldapdiff.render(changes))
        sys.stdout.flush()
    except OSError as err:
        raise output_failed(err) from None
    print(f"ldap-diff: {ldapdiff.summary(changes)}", file=sys.stderr)
    return EXIT_OK
