"""The plan's widening guards and its thresholds: every change that lets more mail through or more clients in.

Each case edits the bundled fleet on a branch (tests/gitrepo.py) and runs the real CLI. The expected
widenings are written by hand from the edit: what the YAML says before and after, never what the code
under test prints. A widening in a domain file needs the gateway team's label ('mailgw:widen', --widen);
one in gateway.yaml is approved by the gateway team's own review (CODEOWNERS), unless gateway.yaml names no
team. Narrowing changes are never refused. The label's check in the pull-request workflow runs here too,
as the runner runs it, against a stand-in for the GitHub API (`github` below).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from compiler.plan import WIDEN_ENV, WIDEN_LABEL
from compiler.widenings import KINDS
from tests.conftest import REPO
from tests.gitrepo import edit, fleet_repo
from tests.test_merge_request import run_step

TIFPA = "domains/tifpa.example.org.yaml"
LNF = "domains/lnf.example.org.yaml"
TEAM = "@example/mail-gateway"
NO_TEAM = ('admins: ["@example/mail-gateway"]\n', "")


@pytest.fixture
def branch(tmp_path):
    root = tmp_path / "gw"
    repo = fleet_repo(root)
    repo.git.checkout("-b", "change")
    return root, repo


def plan_json(mailgw, root: Path, *args: str) -> tuple[int, dict]:
    result = mailgw(root, "plan", "--format", "json", *args)
    return result.code, json.loads(result.out)


def widened(data: dict) -> list[tuple[str, str, str, str, str]]:
    return [(w["kind"], w["where"], w["change"], w["file"], w["approval"]) for w in data["widenings"]]


# A client certificate's SHA-256 fingerprint, as the plan writes it (pairs of upper-case hex digits).
CERTIFICATE = ":".join(["5A"] * 32)

# Each edit of a domain file that widens, alone: (file, old text, new text, the widening in words).
DOMAIN_WIDENINGS = {
    "relay network": (
        TIFPA,
        "  - 198.51.100.11\n",
        "  - 198.51.100.11\n  - 192.0.2.128/25\n",
        "relay_networks",
        "relay network 192.0.2.128/25 of site TIFPA may send mail through the MX to anywhere",
    ),
    "list to verify": (
        LNF,
        "recipient_check: list",
        "recipient_check: verify",
        "recipient_check",
        "recipient check from 'list' to 'verify': the MX accepts every address the site's next hop does not refuse",
    ),
    "quarantine threshold raised": (
        TIFPA,
        "spam: {quarantine: 10}",
        "spam: {quarantine: 12}",
        "filters",
        "inbound spam quarantine threshold raised: 10 -> 12",
    ),
    "reject turned off": (
        TIFPA,
        "spam: {quarantine: 10}",
        "spam: {quarantine: 10, reject: false}",
        "filters",
        "inbound spam reject threshold turned off: 15 -> off",
    ),
    "viruses no longer rejected": (
        LNF,
        "recipient_check: list\n",
        "recipient_check: list\nfilters:\n  outbound:\n    virus: quarantine\n    quarantine: {enabled: true}\n",
        "filters",
        "outbound viruses no longer rejected: reject -> quarantine",
    ),
    "quarantine turned off": (
        TIFPA,
        "    notify_sender: false                 # refused outbound spam goes to the quarantine\n"
        "    quarantine: {enabled: true, retention_days: 14}",
        "    quarantine: {enabled: false}",
        "filters",
        "outbound quarantine turned off",
    ),
    "allowed sender added": (
        TIFPA,
        '"newsletter@physics.example.edu"]',
        '"newsletter@physics.example.edu", "@friends.example.net"]',
        "filters",
        "inbound allow list: @friends.example.net added (its mail is never spam)",
    ),
    "blocked network removed": (
        TIFPA,
        'networks: ["203.0.113.0/24", "2001:db8:bad::/48"]',
        'networks: ["2001:db8:bad::/48"]',
        "filters",
        "inbound block list: 203.0.113.0/24 removed",
    ),
    "client certificate added": (
        TIFPA,
        "  automation_clients:\n",
        f'    ticketing: {{fingerprint: "{CERTIFICATE.lower()}"}}\n  automation_clients:\n',
        "submission",
        f"client certificate ticketing ({CERTIFICATE}) may send as tifpa.example.org",
    ),
    "captured address added": (
        LNF,
        "addresses: [direzione]",
        "addresses: [direzione, acceleratori]",
        "capture",
        "every message to acceleratori@lnf.example.org is copied to archivio.direzione@example.net",
    ),
    "capture destination changed": (
        LNF,
        "destination: archivio.direzione@example.net",
        "destination: archive@example.com",
        "capture",
        "every message to direzione@lnf.example.org is copied to archive@example.com",
    ),
    "automation client added": (
        "domains/cnaf.example.org.yaml",
        "  automation_clients:\n",
        "  automation_clients:\n    chillers: {networks: [192.0.2.8/30], destinations: [ops@example.net], "
        "messages_per_hour: 60}\n",
        "submission",
        "automation client chillers: 192.0.2.8/30 may send without a login to ops@example.net, 60 messages an hour",
    ),
    "automation network added": (
        TIFPA,
        "networks: [198.51.100.20, 198.51.100.32/28]",
        "networks: [198.51.100.20, 198.51.100.32/28, 198.51.100.40, 192.0.2.7]",
        "submission",
        "automation client lab-alarms: 192.0.2.7/32 may send without a login",
    ),
    "automation destination added": (
        TIFPA,
        "destinations: [alarms@lab.tifpa.example.org, oncall@example.net]",
        "destinations: [alarms@lab.tifpa.example.org, oncall@example.net, someone@example.net]",
        "submission",
        "automation client lab-alarms: may now also send to someone@example.net",
    ),
    "automation rate raised": (
        TIFPA,
        "messages_per_hour: 60",
        "messages_per_hour: 600",
        "submission",
        "automation client lab-alarms: rate raised from 60 to 600 messages an hour",
    ),
}

# Each edit of gateway.yaml that widens, alone.
GATEWAY_WIDENINGS = {
    "postscreen permit": (
        "    2001:db8:bad::/48: reject\n",
        "    2001:db8:bad::/48: reject\n    203.0.113.0/24: permit\n",
        "postscreen",
        "postscreen permits 203.0.113.0/24: its clients skip the DNSBL and protocol tests",
    ),
    "postscreen reject dropped": (
        "    2001:db8:bad::/48: reject\n",
        "",
        "postscreen",
        "postscreen no longer rejects 2001:db8:bad::/48",
    ),
    "DNSBL site dropped": (
        "    - {domain: bl.spamcop.net, weight: 2}\n",
        "",
        "postscreen",
        "DNSBL site bl.spamcop.net (weight 2) no longer asked",
    ),
    "DNSBL weight lowered": (
        "{domain: bl.spamcop.net, weight: 2}",
        "{domain: bl.spamcop.net, weight: 1}",
        "postscreen",
        "DNSBL site bl.spamcop.net: weight lowered from 2 to 1",
    ),
    "DNSBL allowlist added": (
        "  dnsbl_threshold: 3\n",
        "    - {domain: swl.spamhaus.org, weight: -3}\n  dnsbl_threshold: 3\n",
        "postscreen",
        "DNSBL allowlist swl.spamhaus.org (weight -3) added",
    ),
    "DNSBL threshold raised": (
        "dnsbl_threshold: 3",
        "dnsbl_threshold: 5",
        "postscreen",
        "DNSBL threshold raised from 3 to 5",
    ),
    "DNSBL action weakened": (
        "dnsbl_action: enforce",
        "dnsbl_action: ignore",
        "postscreen",
        "postscreen dnsbl_action weakened from enforce to ignore",
    ),
    "denylist action weakened": (
        "denylist_action: drop",
        "denylist_action: enforce",
        "postscreen",
        "postscreen denylist_action weakened from drop to enforce",
    ),
    "default reject raised": (
        'subject: "[SPAM] %s", reject: 15}',
        'subject: "[SPAM] %s", reject: 20}',
        "filters",
        "inbound spam reject threshold raised: 15 -> 20",
    ),
}


def test_every_kind_of_widening_has_cases():
    kinds = {case[3] for case in DOMAIN_WIDENINGS.values()} | {case[2] for case in GATEWAY_WIDENINGS.values()}
    assert kinds == {kind.name for kind in KINDS}


@pytest.mark.parametrize("case", sorted(DOMAIN_WIDENINGS))
def test_a_widening_in_a_domain_file_is_refused_until_the_gateway_team_approves_it(branch, mailgw, case):
    root, _ = branch
    path, old, new, kind, change = DOMAIN_WIDENINGS[case]
    domain = Path(path).stem
    edit(root, path, old, new)

    code, data = plan_json(mailgw, root)
    assert code == 1 and data["verdict"] == "unsafe"
    assert widened(data) == [(kind, domain, change, path, "label")]
    assert data["widenings"][0]["approvers"] == [TEAM]
    assert data["reasons"] == [f"{domain}: a widening the gateway team ({TEAM}) has not approved: {change}"]

    forced_only = mailgw(root, "plan", "--force")
    assert forced_only.code == 1, "forcing does not approve a widening"
    assert f"labels the merge request '{WIDEN_LABEL}'" in forced_only.err

    code, data = plan_json(mailgw, root, "--widen")
    assert code == 0 and data["verdict"] == "forced" and data["widened"] is True


@pytest.mark.parametrize("case", sorted(GATEWAY_WIDENINGS))
def test_a_widening_in_gateway_yaml_is_approved_by_the_gateway_teams_review(branch, mailgw, case):
    root, _ = branch
    old, new, kind, change = GATEWAY_WIDENINGS[case]
    edit(root, "gateway.yaml", old, new)

    code, data = plan_json(mailgw, root)
    assert code == 0 and data["verdict"] == "safe", data["reasons"]
    assert widened(data) == [(kind, "gateway", change, "gateway.yaml", "review")]
    # CODEOWNERS routes gateway.yaml to the team alone: that is the approval the plan counts on.
    codeowners = (REPO / ".github/CODEOWNERS").read_text().splitlines()
    assert codeowners[-1] == f"/gateway.yaml {TEAM}"


@pytest.mark.parametrize("case", ["postscreen permit", "default reject raised"])
def test_without_a_gateway_team_a_gateway_widening_needs_the_label(mailgw, repo_without_team, case):
    root = repo_without_team
    old, new, kind, change = GATEWAY_WIDENINGS[case]
    edit(root, "gateway.yaml", old, new)
    code, data = plan_json(mailgw, root)
    assert code == 1 and widened(data) == [(kind, "gateway", change, "gateway.yaml", "label")]
    assert data["reasons"] == [
        f"gateway: a widening the gateway team (gateway.yaml names no admins) has not approved: {change}"
    ]
    assert plan_json(mailgw, root, "--widen")[0] == 0


@pytest.fixture
def repo_without_team(tmp_path):
    """The bundled fleet on main with no admins in gateway.yaml: no CODEOWNERS rule gives it to a team."""
    from tests.gitrepo import commit_all

    root = tmp_path / "noteam"
    repo = fleet_repo(root)
    edit(root, "gateway.yaml", *NO_TEAM)
    commit_all(repo, "no gateway team")
    repo.git.checkout("-b", "change")
    return root


# Narrowing edits, each the opposite of a widening: never refused, never shown as widenings.
NARROWINGS = [
    (TIFPA, "  - 198.51.100.11\n", ""),  # a relay network removed
    ("domains/ge.example.org.yaml", "recipient_check: verify", "recipient_check: list"),
    (TIFPA, "spam: {quarantine: 10}", "spam: {quarantine: 8, reject: 12}"),
    (TIFPA, "virus: quarantine", "virus: reject"),
    (TIFPA, '"@infn-partner.example.net", ', ""),  # an allowed sender removed
    (TIFPA, '["offers@spam.example.com", ', '["offers@spam.example.com", "@more-spam.example.com", '),
    ("gateway.yaml", "    192.0.2.25/32: permit\n", ""),
    ("gateway.yaml", "    2001:db8:bad::/48: reject\n", "    2001:db8:bad::/48: reject\n    203.0.113.0/24: reject\n"),
    ("gateway.yaml", "{domain: bl.spamcop.net, weight: 2}", "{domain: bl.spamcop.net, weight: 3}"),
    (
        "gateway.yaml",
        "    - {domain: list.dnswl.org",
        "    - {domain: dnsbl.example.net, weight: 1}\n    - {domain: list.dnswl.org",
    ),
    ("gateway.yaml", "dnsbl_threshold: 3", "dnsbl_threshold: 2"),
    ("gateway.yaml", "dnsbl_action: enforce", "dnsbl_action: drop"),
    ("gateway.yaml", 'subject: "[SPAM] %s", reject: 15}', 'subject: "[SPAM] %s", reject: 12}'),
]


def test_narrowing_changes_are_never_refused(mailgw, repo_without_team):
    """Alone and all at once, in a repository whose gateway.yaml names no team (nobody could approve)."""
    root = repo_without_team
    for path, old, new in NARROWINGS:
        edit(root, path, old, new)
        code, data = plan_json(mailgw, root)
        assert (code, data["widenings"], data["reasons"]) == (0, [], []), (path, old, new)
        assert data["verdict"] == "safe"


# --- the views: widenings first ---------------------------------------------------------------


def test_every_view_shows_the_widenings_first_with_who_approves_them(branch, mailgw):
    root, _ = branch
    edit(root, "gateway.yaml", *GATEWAY_WIDENINGS["postscreen permit"][:2])
    edit(root, *DOMAIN_WIDENINGS["relay network"][:3])
    edit(root, TIFPA, "  paolo.conti: pconti\n", "")  # an ordinary change beside them
    text = mailgw(root, "plan").out.splitlines()
    assert text[1:7] == [
        "",
        "widenings (more mail through, or more clients in; the gateway team approves them):",
        f"    gateway (gateway.yaml; approved by the review of {TEAM}, its code owners):",
        "      ! postscreen and DNSBL: " + GATEWAY_WIDENINGS["postscreen permit"][3],
        f"    tifpa.example.org ({TIFPA}; needs the label '{WIDEN_LABEL}' from {TEAM}):",
        "      ! relay networks: " + DOMAIN_WIDENINGS["relay network"][4],
    ]
    assert text[8] == "~ tifpa.example.org", "the domains come after"
    assert text[-1].startswith("  a widening needs the gateway team")

    markdown = mailgw(root, "plan", "--format", "markdown").out.splitlines()
    headings = [line for line in markdown if line.startswith("### ")]
    assert headings[0] == "### Widenings: more mail through, or more clients in"
    assert headings[1] == "### ~ `tifpa.example.org`"
    rows = markdown[markdown.index(headings[0]) + 4 :][:2]
    assert rows == [
        "| postscreen and DNSBL | `gateway` | postscreen permits 203.0.113.0/24: its clients skip the DNSBL and "
        "protocol tests | `gateway.yaml` | approved by the review of @example/mail-gateway, its code owners |",
        "| relay networks | `tifpa.example.org` | relay network 192.0.2.128/25 of site TIFPA may send mail through "
        f"the MX to anywhere | `{TIFPA}` | needs the label 'mailgw:widen' from @example/mail-gateway |",
    ]
    assert f"one of its members adds the label `{WIDEN_LABEL}`" in "\n".join(markdown)

    _, data = plan_json(mailgw, root)
    assert [w["approval"] for w in data["widenings"]] == ["review", "label"]
    assert data["summary"].startswith("tifpa.example.org: 2 widenings, +0 -1 ~0 addresses")


def test_a_widening_and_a_guard_need_both_approvals(branch, mailgw):
    root, repo = branch
    repo.index.remove([LNF], working_tree=True)
    edit(root, *DOMAIN_WIDENINGS["relay network"][:3])
    assert mailgw(root, "plan", "--force").code == 1
    assert mailgw(root, "plan", "--widen").code == 1
    both = mailgw(root, "plan", "--force", "--widen")
    assert both.code == 0 and "verdict: forced through, although unsafe:" in both.out


@pytest.mark.parametrize("value, approved", [("1", True), ("yes", True), ("", False), ("0", False)])
def test_the_approval_from_the_environment(branch, mailgw, monkeypatch, value, approved):
    root, _ = branch
    edit(root, *DOMAIN_WIDENINGS["list to verify"][:3])
    monkeypatch.setenv(WIDEN_ENV, value)
    assert mailgw(root, "plan").code == (0 if approved else 1)


# --- the thresholds of the guards (gateway.yaml plan:) ---------------------------------------


def people(count: int) -> str:
    from tests.conftest import domain_yaml

    body = "".join(f"  user{i:02}: u{i:02}\n" for i in range(count))
    return domain_yaml("big.example.org", recipients="recipients:\n" + body)


@pytest.fixture
def big(make_repo):
    """A fleet of one domain with 10 people, committed on main with `plan` as gateway.yaml's plan: section."""
    from tests.conftest import GATEWAY
    from tests.gitrepo import commit_all, init

    def make(plan: str = ""):
        root = make_repo({"domains/big.example.org.yaml": people(10)}, gateway=GATEWAY + plan)
        repo = init(root)
        commit_all(repo, "fleet")
        return root, repo

    return make


@pytest.mark.parametrize("changed, unsafe", [(4, True), (3, False)])
def test_more_than_30_percent_of_addresses_changed_is_unsafe(big, mailgw, changed, unsafe):
    root, _ = big()
    text = people(10)
    for i in range(changed):  # another uid: the same address, someone else's now
        text = text.replace(f"  user{i:02}: u{i:02}\n", f"  user{i:02}: v{i:02}\n")
    (root / "domains/big.example.org.yaml").write_text(text)
    code, data = plan_json(mailgw, root)
    assert data["domains"][0]["addresses_changed"] == changed
    assert (code, data["reasons"]) == (
        (1, ["big.example.org: 4 of 10 addresses changed (40%; more than 30% of a domain with at least 10)"])
        if unsafe
        else (0, [])
    )


def test_the_thresholds_are_gateway_settings(big, mailgw):
    root, _ = big("plan: {max_removed_percent: 50, max_changed_percent: 10, min_addresses: 5}\n")
    text = people(10).replace("".join(f"  user{i:02}: u{i:02}\n" for i in range(4)), "")
    text = text.replace("  user09: u09\n", "  user09: v09\n")  # 1 of 10 changed: 10%, not more
    (root / "domains/big.example.org.yaml").write_text(text)
    assert plan_json(mailgw, root)[1]["reasons"] == [], "4 of 10 removed is not more than 50%"
    (root / "domains/big.example.org.yaml").write_text(text.replace("  user08: u08\n", "  user08: v08\n"))
    assert plan_json(mailgw, root)[1]["reasons"] == [
        "big.example.org: 2 of 10 addresses changed (20%; more than 10% of a domain with at least 5)"
    ]


def test_the_base_thresholds_judge_a_change_that_loosens_them(big, mailgw):
    root, _ = big()
    (root / "gateway.yaml").write_text((root / "gateway.yaml").read_text() + "plan: {max_removed_percent: 100}\n")
    (root / "domains/big.example.org.yaml").write_text(people(5))
    code, data = plan_json(mailgw, root)
    assert code == 1 and data["reasons"] == [
        "big.example.org: 5 of 10 addresses removed (50%; more than 30% of a domain with at least 10)"
    ]
    assert {"name": "plan.max_removed_percent", "status": "changed", "before": "30", "after": "100"} in data["gateway"]


# --- the pull-request workflow: who set the label ------------------------------------------------

HEAD_SHA = "1" * 40


def github(tmp_path: Path, events: list[tuple[str, str, str, str]], runs: list[str], members: set[str]) -> Path:
    """A stand-in for the GitHub API: `gh api ENDPOINT [--paginate] [--jq EXPR]` answers from these records.

    events: (event, label, actor, created_at) of the merge request; runs: created_at of the workflow runs of
    the head commit; members: logins of @example/mail-gateway. The filters the step passes with --jq are
    applied by the real jq, as gh applies them, to documents shaped like the API's.
    """
    api = tmp_path / "api"
    (api / "repos/example/mailgw/issues/7").mkdir(parents=True)
    (api / "repos/example/mailgw/issues/7/events").write_text(
        json.dumps(
            [
                {"event": e, "label": {"name": label}, "actor": {"login": actor}, "created_at": at}
                for e, label, actor, at in events
            ]
        )
    )
    (api / "repos/example/mailgw/actions").mkdir(parents=True)
    (api / "repos/example/mailgw/actions/runs").write_text(
        json.dumps({"total_count": len(runs), "workflow_runs": [{"head_sha": HEAD_SHA, "created_at": t} for t in runs]})
    )
    for login in members:
        member = api / "orgs/example/teams/mail-gateway/memberships" / login
        member.parent.mkdir(parents=True, exist_ok=True)
        member.write_text(json.dumps({"state": "active", "role": "member"}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(
        f"""#!/bin/sh
# gh api [--paginate] ENDPOINT [--jq EXPR]: the recorded document of ENDPOINT (its query dropped), filtered.
[ "$1" = api ] || exit 2
shift
filter=.
while [ $# -gt 0 ]; do
  case "$1" in
    --paginate) ;;
    --jq) filter=$2; shift ;;
    *) endpoint=${{1%%\\?*}} ;;
  esac
  shift
done
document='{api}'/"$endpoint"
[ -f "$document" ] || {{ echo 'gh: Not Found (HTTP 404)' >&2; exit 1; }}
exec jq -r "$filter" "$document"
"""
    )
    gh.chmod(0o755)
    return bin_dir


@pytest.mark.needs("jq")
@pytest.mark.parametrize(
    "events, members, approved",
    [
        ([("labeled", WIDEN_LABEL, "gwadmin", "2025-03-01T10:05:00Z")], {"gwadmin"}, True),
        ([("labeled", WIDEN_LABEL, "siteadmin", "2025-03-01T10:05:00Z")], {"gwadmin"}, False),
        # Set before the last push: it approved another head, not this one.
        ([("labeled", WIDEN_LABEL, "gwadmin", "2025-03-01T09:55:00Z")], {"gwadmin"}, False),
        # Whoever set it last counts: a site admin who removes and sets it again takes the approval away.
        (
            [
                ("labeled", WIDEN_LABEL, "gwadmin", "2025-03-01T10:05:00Z"),
                ("unlabeled", WIDEN_LABEL, "siteadmin", "2025-03-01T10:06:00Z"),
                ("labeled", WIDEN_LABEL, "siteadmin", "2025-03-01T10:07:00Z"),
            ],
            {"gwadmin"},
            False,
        ),
        ([("labeled", "mailgw:force", "gwadmin", "2025-03-01T10:05:00Z")], {"gwadmin"}, False),
    ],
)
def test_the_label_counts_only_when_a_gateway_team_member_set_it_after_the_last_push(
    branch, tmp_path, events, members, approved
):
    root, repo = branch
    repo.git.branch("origin/main", "main")  # the base branch as the runner's checkout names it
    edit(root, *DOMAIN_WIDENINGS["relay network"][:3])
    bin_dir = github(tmp_path, events, ["2025-03-01T10:00:00Z", "2025-03-01T10:03:00Z"], members)
    output = tmp_path / "github-output"
    output.write_text("")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "GITHUB_OUTPUT": str(output),
        "GH_TOKEN": "stand-in",
        "REPOSITORY": "example/mailgw",
        "PULL_REQUEST": "7",
        "HEAD_SHA": HEAD_SHA,
        "BASE_REF": "main",
    }
    (root / ".venv").symlink_to(Path(__import__("sys").prefix))
    step = run_step("pull-request.yml", "widen", root, **env)
    assert step.returncode == 0, step.stderr
    assert output.read_text() == ("approved=1\n" if approved else "")

    summary = tmp_path / "summary.md"
    plan = run_step(
        "pull-request.yml",
        "plan",
        root,
        BASE_REF="main",
        MAILGW_FORCE="",
        MAILGW_WIDEN="1" if approved else "",
        GITHUB_STEP_SUMMARY=str(summary),
    )
    assert plan.returncode == (0 if approved else 1), plan.stderr


def test_the_plan_step_takes_the_approval_from_the_label_step():
    document = yaml.safe_load((REPO / ".github/workflows/pull-request.yml").read_text())
    steps = {step.get("id"): step for step in document["jobs"]["plan"]["steps"]}
    assert steps["plan"]["env"][WIDEN_ENV] == "${{ steps.widen.outputs.approved }}"
    assert steps["widen"]["if"] == f"contains(github.event.pull_request.labels.*.name, '{WIDEN_LABEL}')"
    assert list(steps).index("widen") < list(steps).index("plan")
