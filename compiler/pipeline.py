"""The stages in order: load, model, check, fleet, targets (write is the caller's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compiler import check, fastpath, targets
from compiler.declarations import Declarations, DomainSource, addresses_of
from compiler.errors import file_error
from compiler.findings import Finding, FindingsError
from compiler.fleet import Fleet, build_fleet
from compiler.load import load_file, load_yaml, read_document
from compiler.model import DomainDeclaration, GatewayDeclaration, parse
from compiler.write import manifest

GATEWAY_FILE = "gateway.yaml"
DOMAINS_DIR = "domains"


@dataclass(frozen=True)
class Compiled:
    fleet: Fleet
    artifacts: dict[str, bytes]  # out/ relative path -> bytes, MANIFEST.json included
    inputs: dict[str, bytes]


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


def load_declarations(root: Path, *, cross_checked: bool = True) -> Declarations:
    """Load and validate every declaration; raises FindingsError with all findings of all files.

    cross_checked=False skips the cross-file rules: the plan reads an older
    revision that a rule added since may reject, and still needs its Fleet.
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
        if source is not None:
            domains.append(source)
    if findings or gateway is None or gateway_doc is None:  # a gateway is only parsed from its document
        raise FindingsError(findings)
    declarations = Declarations(gateway_doc, gateway, tuple(domains))
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


def compile_repository(root: Path) -> Compiled:
    declarations = load_declarations(root)
    fleet = build_fleet(declarations)
    artifacts = targets.render(fleet)
    inputs = {declarations.gateway_doc.relpath: declarations.gateway_doc.raw}
    inputs.update((source.doc.relpath, source.doc.raw) for source in declarations.domains)
    artifacts["MANIFEST.json"] = manifest(artifacts, inputs)
    return Compiled(fleet, artifacts, inputs)
