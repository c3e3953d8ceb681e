"""One domain synced: fetch its list, read it, validate it as the repository would, plan it, guard it.

Nothing here writes: the result says what sources/<domain>.yaml would
become and why it may or may not (compiler/commands/sync.py writes it, or
proposes it as a commit). The new file is validated by loading the whole
repository with it in place of the file on disk, so every rule of validate
applies, and each finding in it is traced back to its row of the list.
The plan's own guard (compiler/plan.py) decides whether a removal is too
large to go through unforced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from compiler.findings import Finding, FindingsError
from compiler.fleet import Fleet, build_fleet
from compiler.load import MAX_FILE_BYTES
from compiler.model import DomainDeclaration
from compiler.pipeline import declaration_files, load_declarations, load_domain
from compiler.plan import Plan, make_plan
from compiler.sync import sitelist, synced
from compiler.sync.fetch import FetchError, Limits, fetch


class Baseline:
    """The repository before the sync, loaded once and only when a list arrives (a 304 needs none of it)."""

    def __init__(self, root: Path):
        self.root = root
        self._fleet: Fleet | None = None
        self._known: frozenset[Finding] | None = None

    def fleet(self) -> Fleet:
        """What the plan compares with: a hand-edited synced file is read as it stands (the sync replaces it)."""
        if self._fleet is None:
            self._fleet = build_fleet(load_declarations(self.root, cross_checked=False))
        return self._fleet

    def known(self) -> frozenset[Finding]:
        """What is wrong already: no list's fault, so no list is refused for it."""
        if self._known is None:
            try:
                load_declarations(self.root)
                self._known = frozenset()
            except FindingsError as err:
                self._known = frozenset(err.findings)
        return self._known


def declared_sources(root: Path) -> dict[str, DomainDeclaration]:
    """Domain -> its declaration, for every domain file with a source (the domain files only are read)."""
    paths, findings = declaration_files(root)
    found = {}
    for rel in paths[1:]:
        source, problems = load_domain(root / rel, rel)
        findings += problems
        if source is not None and source.decl.source is not None:
            found[source.decl.domain] = source.decl
    if findings:
        raise FindingsError(findings)
    return found


@dataclass(frozen=True)
class Outcome:
    """What syncing one domain came to: 'unchanged', 'changed' (with the new file and its plan) or 'refused'."""

    domain: str
    status: str
    reason: str  # one line: why refused, or what happened
    findings: list[str] = field(default_factory=list)  # every problem found, each naming its row or file
    text: str | None = None  # the new sources/<domain>.yaml
    plan: Plan | None = None


def sync_domain(
    root: Path,
    decl: DomainDeclaration,
    baseline: Baseline,
    limits: Limits,
    *,
    credentials: Path | None = None,
    forced: bool = False,
) -> Outcome:
    """Sync one domain against the repository as it was before the sync (`baseline`)."""
    assert decl.source is not None
    source, name = decl.source, decl.domain
    rel = synced.relpath(name)
    current = (root / rel).read_text(encoding="utf-8", errors="replace") if (root / rel).is_file() else None
    header = synced.read_header(current) if current is not None else None
    # Validators only describe the list they came with: not after a hand edit, not from another URL.
    validators = header.validators if header and header.url == source.url and synced.is_intact(current or "") else None

    def refused(reason: str, findings: list[str] | None = None) -> Outcome:
        return Outcome(name, "refused", reason, findings or [])

    try:
        fetched = fetch(source, credentials, validators, limits)
    except FetchError as err:
        return refused(f"fetching {source.url} failed: {err}")
    if fetched.body is None:
        if validators is None:
            return refused(f"{source.url} answered 304 Not Modified to a request that was not conditional")
        return Outcome(name, "unchanged", "not modified since the last sync (HTTP 304)")

    text, bad = sitelist.decode(fetched.body, source.url)
    if text is None:
        return refused(f"{source.url} is not UTF-8", [str(bad)])
    site = sitelist.read(text, source.format, source.url, name)
    if site.findings:
        return refused(f"{len(site.findings)} problem(s) in {source.url}", [str(f) for f in site.findings])
    if not site.addresses:
        return refused(
            f"{source.url} lists no address; an empty list would reject all mail for {name} "
            "(to serve no address, remove the domain or its source)"
        )
    new_text, lines = synced.render(source.url, site.addresses, fetched.validators)
    same_source = header is not None and header.url == source.url and synced.is_intact(current or "")
    if same_source and synced.sections(current or "") == synced.sections(new_text):
        # New validators alone are not worth a commit: the next sync fetches the list once more.
        return Outcome(name, "unchanged", "the list is the same as the last sync")
    data = new_text.encode("utf-8")
    if len(data) > MAX_FILE_BYTES:
        return refused(f"{rel} would be {len(data)} bytes, over the {MAX_FILE_BYTES} bytes of a declaration file")

    try:
        declarations = load_declarations(root, synced={name: data})
    except FindingsError as err:
        # A finding in the new file is a row of the list; anywhere else it is what the list breaks there.
        row_at = {line: site.lines[address] for address, line in lines.items()}
        shown = [
            f"{source.url}:{row_at[f.line]}: error[{f.code}]: {f.message}"
            if f.path == rel and f.line in row_at
            else str(f)
            for f in err.findings
            if f.path == rel or f not in baseline.known()
        ]
        if shown:
            return refused(f"the list does not validate ({len(shown)} finding(s))", shown)
        declarations = load_declarations(root, synced={name: data}, cross_checked=False)

    plan = make_plan("the repository before this sync", baseline.fleet(), {}, build_fleet(declarations), {})
    plan = Plan(plan.base, tuple(d for d in plan.domains if d.name == name), (), (), ())
    if not plan.allowed(forced):
        return Outcome(name, "refused", "; ".join(plan.reasons()) + " (--force to sync anyway)", plan=plan)
    # Only the header can change with the same addresses: the source moved, or the file was edited by hand.
    summary = plan.summary() if plan.domains else f"{name}: the same addresses, from {source.url}"
    return Outcome(name, "changed", summary, text=new_text, plan=plan)
