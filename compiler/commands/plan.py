"""mailgw plan: what merging the working tree would change on the MX, and whether that is safe.

The Plan (compiler/plan.py) is data; text, Markdown and JSON are three views of it.
Each view shows the widenings first, with who approves them.
REFERENCES: GitHub Flavored Markdown (tables, alerts) for the job summary; GitHub
Actions workflow commands ('::error') for the annotations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from compiler import history, widenings
from compiler.errors import output_failed
from compiler.findings import report_notes
from compiler.pipeline import compile_repository
from compiler.plan import (
    FORCE_ENV,
    FORCE_LABEL,
    WIDEN_ENV,
    WIDEN_LABEL,
    Change,
    DomainPlan,
    Plan,
    make_plan,
)
from compiler.widenings import Widening

REFERENCES = ("GitHub Flavored Markdown", "GitHub Actions workflow commands")

EXIT_UNSAFE = 1
# Past this many lines a section is cut in text and Markdown (JSON always has everything).
MAX_SECTION_LINES = 50
MARKS = {"added": "+", "removed": "-", "changed": "~"}
FORCE_HINT = (
    f"to go ahead anyway, label the merge request '{FORCE_LABEL}' (CI then sets {FORCE_ENV}=1) "
    "or run 'mailgw plan --force'"
)
WIDEN_HINT = (
    f"a widening needs the gateway team: one of its members labels the merge request '{WIDEN_LABEL}' "
    f"(CI then sets {WIDEN_ENV}=1), or run 'mailgw plan --widen'"
)


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser("plan", help="show what the MX would do differently; exit 1 when unsafe")
    parser.add_argument(
        "--base", metavar="REF", help="compare with this revision (default: the merge base of HEAD with main)"
    )
    parser.add_argument("--format", choices=sorted(RENDERERS), default="text", help="default: text")
    parser.add_argument(
        "--force", action="store_true", help=f"go ahead with an unsafe plan (also: {FORCE_ENV}=1 in the environment)"
    )
    parser.add_argument(
        "--widen",
        action="store_true",
        help=f"the gateway team approves the plan's widenings (also: {WIDEN_ENV}=1 in the environment)",
    )
    parser.set_defaults(run=run)


def forced_by_environment() -> bool:
    return _flag(FORCE_ENV)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def run(args: argparse.Namespace) -> int:
    forced = args.force or forced_by_environment()
    widened = args.widen or _flag(WIDEN_ENV)
    compiled = compile_repository(args.root)
    checkout = history.open_checkout(args.root)
    if args.base:
        base = history.revision(checkout, history.resolve(checkout, args.base), args.base)
    else:
        base = history.revision(checkout, history.default_base(checkout), "the merge base with main")
    plan = make_plan(base.label, base.fleet, base.artifacts, compiled.fleet, compiled.artifacts)
    try:
        sys.stdout.write(RENDERERS[args.format](plan, forced, widened))
    except OSError as err:  # a large plan goes straight to the file, past the buffer
        raise output_failed(err) from None
    report_notes(list(compiled.notes), sys.stderr)
    if plan.allowed(forced, widened):
        return 0
    print("mailgw: the plan is unsafe:", file=sys.stderr)
    for reason in plan.reasons():
        print(f"  {reason}", file=sys.stderr)
    for hint in _hints(plan, forced, widened):
        print(f"mailgw: {hint}", file=sys.stderr)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for reason in plan.reasons():
            print(f"::error title=unsafe plan::{_escape_annotation(reason)}", file=sys.stderr)
    return EXIT_UNSAFE


def _hints(plan: Plan, forced: bool, widened: bool) -> list[str]:
    """How to go ahead: for each kind of reason that is still held."""
    hints = [FORCE_HINT] if plan.guard_reasons() and not forced else []
    return hints + ([WIDEN_HINT] if plan.widening_reasons() and not widened else [])


def _escape_annotation(message: str) -> str:
    return message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


# --- text -----------------------------------------------------------------------------------------


def _sections(domain: DomainPlan) -> list[tuple[str, tuple[Change, ...]]]:
    sections = [
        ("recipients", domain.recipients),
        ("external aliases", domain.aliases),
        ("routing", (domain.routing,) if domain.routing else ()),
        ("settings", domain.settings),
        ("directory entries", domain.directory),
        ("sending rights", domain.senders),
        ("DNS records", domain.dns),
    ]
    return [(title, changes) for title, changes in sections if changes]


def _change_line(change: Change) -> str:
    if change.status == "added":
        return f"+ {change.name}: {change.after}"
    if change.status == "removed":
        return f"- {change.name}: {change.before}"
    return f"~ {change.name}: {change.before} -> {change.after}"


def _entry_line(change: Change) -> str:
    return f"{MARKS[change.status]} {change.name}"


def _cut(lines: list[str], indent: str) -> list[str]:
    if len(lines) <= MAX_SECTION_LINES:
        return [indent + line for line in lines]
    return [indent + line for line in lines[:MAX_SECTION_LINES]] + [
        f"{indent}... and {len(lines) - MAX_SECTION_LINES} more (see --format json)"
    ]


def _approval_text(plan: Plan, widening: Widening) -> str:
    team = ", ".join(plan.team) or "no gateway team"
    if plan.approval(widening) == "review":
        return f"approved by the review of {team}, its code owners"
    return f"needs the label '{WIDEN_LABEL}' from {team}"


def _widening_lines(plan: Plan) -> list[str]:
    """The widenings, first: under where they are declared and who approves them."""
    if not plan.widenings:
        return []
    lines = ["", "widenings (more mail through, or more clients in; the gateway team approves them):"]
    heading = ""
    for widening in plan.widenings:
        where = f"    {widening.where} ({widening.file}; {_approval_text(plan, widening)}):"
        if where != heading:
            lines.append(heading := where)
        lines.append(f"      ! {widenings.title(widening.kind)}: {widening.change}")
    return lines


def render_text(plan: Plan, forced: bool = False, widened: bool = False, *, verdict: bool = True) -> str:
    lines = [f"mailgw plan: the working tree against {plan.base}"]
    lines += _widening_lines(plan)
    for domain in plan.domains:
        suffix = f" ({domain.status})" if domain.status != "changed" else ""
        lines += ["", f"{MARKS[domain.status]} {domain.name}{suffix}"]
        for title, changes in _sections(domain):
            show = _entry_line if title == "directory entries" else _change_line
            lines.append(f"    {title}:")
            lines += _cut([show(c) for c in changes], "      ")
    if plan.gateway:
        lines += ["", "gateway:"] + _cut([_change_line(c) for c in plan.gateway], "    ")
    if plan.directory:
        lines += ["", "directory entries of no domain:"] + _cut([_entry_line(c) for c in plan.directory], "    ")
    if plan.records:
        lines += ["", "DNS records of the gateway itself:"] + _cut([_change_line(c) for c in plan.records], "    ")
    for section, title in (
        ("policy", "policy (out/rspamd)"),
        ("directory", "directory (out/ldap)"),
        ("records", "DNS records (out/dns, out/mta-sts)"),
        ("artifacts", "other out/ files"),
    ):
        files = [f for f in plan.files if f.section == section]
        if files:
            lines += ["", f"{title}:"] + _cut(
                [f"{MARKS[f.status]} {f.path} (+{f.lines_added} -{f.lines_removed} lines)" for f in files], "    "
            )
    lines += ["", f"summary: {plan.summary()}"]
    if verdict:
        lines += _verdict_lines(plan, forced, widened)
    return "\n".join(lines) + "\n"


def _verdict_lines(plan: Plan, forced: bool, widened: bool) -> list[str]:
    reasons = plan.reasons()
    verdict = plan.verdict(forced, widened)
    if verdict == "safe":
        return ["verdict: safe"]
    head = "verdict: forced through, although unsafe:" if verdict == "forced" else "verdict: UNSAFE:"
    lines = [head] + [f"  - {reason}" for reason in reasons]
    return lines + [f"  {hint}" for hint in _hints(plan, forced, widened)]


# --- Markdown (the merge request's job summary) -------------------------------------------------


def _code(text: str | None) -> str:
    if text is None:
        return ""
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def render_markdown(plan: Plan, forced: bool = False, widened: bool = False) -> str:
    verdict = plan.verdict(forced, widened)
    badge = {"safe": "safe", "forced": "**unsafe, forced through**", "unsafe": "**UNSAFE**"}[verdict]
    lines = [
        "## mailgw plan",
        "",
        f"**{_escape_md(plan.summary())}**",
        "",
        f"Compared with {_escape_md(plan.base)}. Verdict: {badge}.",
    ]
    if verdict != "safe":
        kind = "WARNING" if verdict == "forced" else "CAUTION"
        lines += ["", f"> [!{kind}]"] + [f"> - {_escape_md(reason)}" for reason in plan.reasons()]
        if plan.guard_reasons() and not forced:
            lines.append(f"> \n> To go ahead anyway, add the label `{FORCE_LABEL}` to the merge request.")
        if plan.widening_reasons() and not widened:
            lines.append(f"> \n> A widening needs the gateway team: one of its members adds the label `{WIDEN_LABEL}`.")
    if plan.widenings:
        lines += [
            "",
            "### Widenings: more mail through, or more clients in",
            "",
            "| kind | where | change | declared in | approval |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {widenings.title(w.kind)} | {_code(w.where)} | {_escape_md(w.change)} | {_code(w.file)} | "
            f"{_escape_md(_approval_text(plan, w))} |"
            for w in plan.widenings
        ]
    for domain in plan.domains:
        suffix = f" ({domain.status})" if domain.status != "changed" else ""
        lines += [
            "",
            f"### {MARKS[domain.status]} {_code(domain.name)}{suffix}",
            "",
            "| | section | name | before | after |",
            "|---|---|---|---|---|",
        ]
        lines += _cut([_row(title, c) for title, changes in _sections(domain) for c in changes], "")
    if plan.gateway:
        lines += ["", "### gateway.yaml", "", "| | setting | before | after |", "|---|---|---|---|"]
        lines += [
            f"| {MARKS[c.status]} | {_code(c.name)} | {_code(c.before)} | {_code(c.after)} |" for c in plan.gateway
        ]
    if plan.directory:
        lines += ["", "### Directory entries of no domain", ""]
        lines += _cut([f"- {MARKS[c.status]} {_code(c.name)}" for c in plan.directory], "")
    if plan.records:
        lines += ["", "### DNS records of the gateway itself", "", "| | record | before | after |", "|---|---|---|---|"]
        lines += _cut(
            [f"| {MARKS[c.status]} | {_code(c.name)} | {_code(c.before)} | {_code(c.after)} |" for c in plan.records],
            "",
        )
    if plan.files:
        lines += ["", "### Files in out/", "", "| | file | section | lines |", "|---|---|---|---|"]
        lines += _cut(
            [
                f"| {MARKS[f.status]} | {_code(f.path)} | {f.section} | +{f.lines_added} -{f.lines_removed} |"
                for f in plan.files
            ],
            "",
        )
    return "\n".join(lines) + "\n"


def _row(section: str, change: Change) -> str:
    # A directory entry's before and after are whole LDIF records: the DN says enough.
    before, after = (None, None) if section == "directory entries" else (change.before, change.after)
    return f"| {MARKS[change.status]} | {section} | {_code(change.name)} | {_code(before)} | {_code(after)} |"


def _escape_md(text: str) -> str:
    return "".join("\\" + char if char in "\\`*_[]<>|#" else char for char in text)


# --- JSON ---------------------------------------------------------------------------------------


def render_json(plan: Plan, forced: bool = False, widened: bool = False) -> str:
    document = {**plan.to_dict(), "forced": forced, "widened": widened, "verdict": plan.verdict(forced, widened)}
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}
