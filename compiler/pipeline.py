"""The stages in order: load, model, check, fleet, targets (write is the caller's)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from compiler import check, fastpath, national, targets
from compiler.declarations import Address, Declarations, DomainSource, addresses_of
from compiler.errors import file_error
from compiler.findings import Finding, FindingsError, Note
from compiler.fleet import Fleet, build_fleet
from compiler.load import ADDRESS_SECTIONS, Document, document, load_file, load_yaml, read_document
from compiler.model import DomainDeclaration, GatewayDeclaration, SyncedAddresses, parse
from compiler.sync import synced as synced_file
from compiler.sync.synced import SOURCES_DIR, relpath
from compiler.write import manifest

GATEWAY_FILE = "gateway.yaml"
DOMAINS_DIR = "domains"


@dataclass(frozen=True)
class Compiled:
    fleet: Fleet
    artifacts: dict[str, bytes]  # out/ relative path -> bytes, MANIFEST.json included
    inputs: dict[str, bytes]
    notes: tuple[Note, ...] = ()  # what the declarations should add, which does not stop a build


def declaration_files(root: Path) -> tuple[list[str], list[Finding]]:
    """The repository-relative paths of gateway.yaml and every domain file, sorted."""
    findings = []
    if not (root / GATEWAY_FILE).is_file():
        findings.append(
            Finding(GATEWAY_FILE, 1, 1, "missing-file", "gateway.yaml is missing; every gateway repository has one")
        )
    paths = [GATEWAY_FILE]
    domains = root / DOMAINS_DIR
    try:
        entries = sorted(domains.iterdir()) if domains.is_dir() else []
    except OSError as err:  # the directory itself cannot be listed (each file's own failure is a finding)
        raise file_error("list the domain files in", err, domains) from None
    for path in entries:
        rel = f"{DOMAINS_DIR}/{path.name}"
        if path.name.startswith("."):
            # An editor's lock link or swap file is no declaration; a hidden domain file would vanish silently.
            if path.suffix in (".yaml", ".yml") and path.is_file() and not path.is_symlink():
                findings.append(
                    Finding(rel, 1, 1, "hidden-file", "a hidden domain file is never read; name it after its domain")
                )
            continue
        if path.suffix == ".yml":
            findings.append(Finding(rel, 1, 1, "wrong-extension", "domain files end in '.yaml'; rename this one"))
        elif path.suffix == ".yaml":
            if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
                findings.append(
                    Finding(
                        rel,
                        1,
                        1,
                        "symlink-outside",
                        "symbolic link to a file outside the repository; declarations live in the repository",
                    )
                )
            else:
                paths.append(rel)
    return paths, findings


def load_declarations(
    root: Path, *, cross_checked: bool = True, synced: Mapping[str, bytes] | None = None
) -> Declarations:
    """Load and validate every declaration; raises FindingsError with all findings of all files.

    cross_checked=False skips the cross-file rules and the digests of synced
    files: the plan reads an older revision that a rule added since may
    reject, and still needs its Fleet.
    synced: domain -> the bytes of its sources/<domain>.yaml to read instead
    of the file (mailgw sync validates what it would write before writing it).
    """
    paths, findings = declaration_files(root)
    gateway_doc = gateway = None
    if GATEWAY_FILE in paths and (root / GATEWAY_FILE).exists():
        try:
            gateway_doc = load_file(root / GATEWAY_FILE, GATEWAY_FILE)
            gateway, found = parse(gateway_doc, GatewayDeclaration)
            findings += found
        except FindingsError as err:
            findings += err.findings
    domains = []
    for rel in paths[1:]:
        source, found = load_domain(root / rel, rel)
        findings += found
        if source is not None and source.decl.source is not None:
            source, found = load_synced(root, source, synced or {}, verified=cross_checked)
            findings += found
        if source is not None:
            domains.append(source)
    # Like the cross-file rules: only once every domain file is valid, so a broken file's source never
    # leaves its synced file looking unclaimed.
    if not findings:
        findings += unclaimed_synced_files(root, domains)
    national_files, found = national.load_files(root, gateway)
    findings += found
    if findings or gateway is None or gateway_doc is None:  # a gateway is only parsed from its document
        raise FindingsError(findings)
    resolution = national.resolve(gateway, gateway_doc, tuple(domains), national_files)
    declarations = Declarations(gateway_doc, gateway, tuple(domains), national_files, resolution)
    findings = check.check(declarations) if cross_checked else []
    if findings:
        raise FindingsError(findings)
    return declarations


def load_domain(path: Path, rel: str) -> tuple[DomainSource | None, list[Finding]]:
    """One domain file: the fast path when its shape allows, else libyaml and the model."""
    try:
        doc = read_document(path, rel)
        source = fastpath.read_domain(doc)
        if source is not None:
            return source, []
        load_yaml(doc)
    except FindingsError as err:
        return None, err.findings
    decl, findings = parse(doc, DomainDeclaration)
    return (DomainSource(doc, decl, addresses_of(decl)) if decl is not None else None), findings


def load_synced(
    root: Path, source: DomainSource, synced: Mapping[str, bytes], *, verified: bool = True
) -> tuple[DomainSource, list[Finding]]:
    """A domain with a source: its addresses from sources/<domain>.yaml (none until the first sync).

    verified=False reads a hand-edited file as it is: the plan's base and the
    sync's starting point, which the sync then replaces.
    """
    decl = source.decl
    if source.addresses:  # the domain file lists addresses of its own
        return source, [
            source.doc.finding(
                (section,),
                "source-owns-recipients",
                f"{decl.domain} has a source: its {section} are written by 'mailgw sync' into "
                f"{relpath(decl.domain)}; remove this section, or remove 'source'",
                at_key=True,
            )
            for section in ADDRESS_SECTIONS
            if source.doc.walk((section,))[2] == (section,)
        ]
    rel = relpath(decl.domain)
    path = root / rel
    try:
        if decl.domain in synced:
            doc = document(synced[decl.domain], rel)
        elif path.is_file() or path.is_symlink():
            doc = read_document(path, rel)
        else:
            return source, []  # the check stage reports a domain never synced
        if verified and not synced_file.is_intact(doc.text):
            return source, [
                Finding(
                    rel,
                    1,
                    1,
                    "synced-file-edited",
                    f"{rel} is not as 'mailgw sync' wrote it (its sha256 does not match its content): "
                    f"change the list at its source ({decl.source.url if decl.source else ''}) and run "
                    f"'mailgw sync {decl.domain}'; a hand edit would be lost at the next sync",
                )
            ]
        addresses, findings = synced_addresses(doc, decl)
    except FindingsError as err:
        return source, err.findings
    source.doc.sections = doc
    return DomainSource(source.doc, decl, addresses), findings


def synced_addresses(doc: Document, decl: DomainDeclaration) -> tuple[list[Address], list[Finding]]:
    """The addresses of a synced file: the fast path when every line allows, else libyaml and the model."""
    parts = fastpath.split(doc.text)
    if parts is not None and all(not line.strip() or line.startswith("#") for line in parts[0].split("\n")):
        found = fastpath.addresses(parts[1], "@" + decl.domain)
        if found is not None:
            return found, []
    load_yaml(doc)
    if doc.data is None:
        return [], []
    parsed, findings = parse(doc, SyncedAddresses)
    if parsed is None:
        return [], findings
    update = {"recipients": parsed.recipients, "external_aliases": parsed.external_aliases}
    return addresses_of(decl.model_copy(update=update)), []


def unclaimed_synced_files(root: Path, domains: list[DomainSource]) -> list[Finding]:
    """A file in sources/ that no domain's source writes is left over (a source removed, a domain renamed)."""
    directory = root / SOURCES_DIR
    if not directory.is_dir():
        return []
    claimed = {relpath(s.decl.domain) for s in domains if s.decl.source is not None}
    return [
        Finding(
            f"{SOURCES_DIR}/{path.name}",
            1,
            1,
            "unclaimed-synced-file",
            f"no domain declares a source that 'mailgw sync' writes into {SOURCES_DIR}/{path.name}; "
            "delete the file, or add the source back to its domain",
        )
        for path in sorted(directory.iterdir())
        if not path.name.startswith(".") and f"{SOURCES_DIR}/{path.name}" not in claimed
    ]


def compile_repository(root: Path) -> Compiled:
    declarations = load_declarations(root)
    fleet = build_fleet(declarations)
    artifacts = targets.render(fleet)
    inputs = {declarations.gateway_doc.relpath: declarations.gateway_doc.raw}
    inputs.update((source.doc.relpath, source.doc.raw) for source in declarations.domains)
    inputs.update((s.doc.sections.relpath, s.doc.sections.raw) for s in declarations.domains if s.doc.sections)
    files = declarations.national_files
    if files is not None:
        inputs.update((doc.relpath, doc.raw) for doc in (files.aliases_doc, files.choices_doc) if doc is not None)
    artifacts["MANIFEST.json"] = manifest(artifacts, inputs)
    notes = declarations.national.notes if declarations.national is not None else ()
    return Compiled(fleet, artifacts, inputs, notes)
