"""mailgw dkim DOMAIN --selector S --private-key PATH: a new DKIM key pair for a domain.

The private key goes to PATH (created with mode 0600; an existing file is
never overwritten), for the operator's secret store: Puppet installs it on
every node as <dkim.key_directory>/<domain>.<selector>.key. The public half is
added to domains/<domain>.yaml as a selector with `signing: false`: it is
published first, and signs once `mailgw dns check` sees its record
(docs/site-admins.md). Nothing is written unless the edited declaration
validates and declares exactly what it did plus the new key.
Exit 0 done, 1 findings in the declarations, 2 a usage or file error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic_core import PydanticCustomError

from compiler import dkim, values
from compiler.errors import UserError, file_error
from compiler.findings import Finding, FindingsError
from compiler.load import document, load_yaml
from compiler.model import Dkim, DkimKey, DomainDeclaration, parse
from compiler.pipeline import DOMAINS_DIR, load_declarations


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser(
        "dkim",
        help="generate a DKIM key pair: the private key to a file, the public key into the domain's declaration",
        description="Generate a DKIM key pair for DOMAIN. The private key is written to PATH (mode 0600, for the "
        "secret store); the public key is added to domains/DOMAIN.yaml as a selector that does not sign yet.",
    )
    parser.add_argument("domain", metavar="DOMAIN", help="a domain of domains/, like tifpa.example.org")
    parser.add_argument("--selector", required=True, metavar="S", help="the new selector, like mailgw2025a")
    parser.add_argument("--algorithm", choices=values.DKIM_ALGORITHMS, default="rsa", help="default: rsa (2048 bits)")
    parser.add_argument(
        "--private-key", required=True, type=Path, metavar="PATH", help="where to write the private key (new file)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        selector = values.dkim_selector(args.selector)
        domain = values.domain_name(args.domain)
    except PydanticCustomError as err:
        raise UserError(f"dkim: {err.message()}") from None
    declarations = load_declarations(args.root)
    source = next((s for s in declarations.domains if s.decl.domain == domain), None)
    if source is None:
        raise UserError(f"dkim: no domain {domain} in {DOMAINS_DIR}/")
    path = args.root / source.doc.relpath
    existing = [key.name for key in source.decl.dkim.selectors] if source.decl.dkim else []
    if selector in existing:
        where = source.doc.location(("dkim", "selectors", existing.index(selector), "name"))
        raise UserError(f"dkim: {domain} already has selector '{selector}' ({where}); choose a new one")
    pair = dkim.generate(args.algorithm)
    try:
        edited = dkim.add_selector(source.doc.text, selector, args.algorithm, pair.public_key, signing=False)
    except dkim.CannotEdit as err:
        raise UserError(f"dkim: cannot add the selector to {source.doc.relpath}: {err}; add it by hand") from None
    key = DkimKey(name=selector, algorithm=args.algorithm, public_key=pair.public_key, signing=False)
    _check_edit(source.doc.relpath, source.doc.text, edited, key)
    _write_private_key(args.private_key, pair.private_key)
    try:
        _replace_text(path, edited)
    except UserError:
        args.private_key.unlink(missing_ok=True)  # a key whose public half is declared nowhere is of no use
        raise
    key_directory = declarations.gateway.dkim.key_directory
    print(
        f"wrote the private key to {args.private_key}: put it in the secret store as {domain}.{selector}.key "
        f"(Puppet installs it as {key_directory}/{domain}.{selector}.key)\n"
        f"added selector '{selector}' ({args.algorithm}, signing: false) to {source.doc.relpath}: merge it, publish "
        f"{selector}._domainkey.{domain} (out/dns/{domain}.zone), check it with 'mailgw dns check {domain}', "
        "then set signing: true",
        file=sys.stderr,
    )
    return 0


def _check_edit(relpath: str, text: str, edited: str, key: DkimKey) -> None:
    """The edited file validates and says what the file said before, with `key` added to its selectors."""
    before, _ = _parse(relpath, text)
    after, findings = _parse(relpath, edited)
    if before is None or after is None or findings:
        why = str(findings[0]) if findings else "it would not validate"
        raise UserError(f"dkim: refusing to edit {relpath}: {why}; add the selector by hand")
    selectors = [*(before.dkim.selectors if before.dkim else []), key]
    expected = before.model_copy(update={"dkim": Dkim(selectors=selectors)})
    if after.model_dump() != expected.model_dump():
        raise UserError(f"dkim: refusing to edit {relpath}: it would declare something else; add the selector by hand")


def _parse(relpath: str, text: str) -> tuple[DomainDeclaration | None, list[Finding]]:
    try:
        doc = document(text.encode("utf-8"), relpath)
        load_yaml(doc)
    except FindingsError as err:
        return None, err.findings
    return parse(doc, DomainDeclaration)


def _write_private_key(path: Path, key: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"dkim: {path} exists; a private key is never overwritten, choose another path") from None
    except OSError as err:
        raise file_error("write the private key to", err, path) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        path.unlink(missing_ok=True)
        raise file_error("write the private key to", err, path) from None


def _replace_text(path: Path, text: str) -> None:
    """Write the declaration through a temporary file and a rename: a reader never sees half of it."""
    temporary = path.with_name(f".{path.name}.mailgw-dkim")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise file_error("write", err, path) from None
