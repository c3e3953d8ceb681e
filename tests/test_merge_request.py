"""A merge request from branch to publish, with real git repositories and the workflows' own step scripts.

origin is a bare repository holding main (the bundled fleet and its out/). A
site admin clones it, edits one domain on a branch; the pull-request
workflow's plan step runs on that checkout; the branch is merged and pushed;
the publish workflow's steps run in a fresh clone and push one publish
commit to origin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import git
import pytest
import yaml

from tests.conftest import REPO
from tests.gitrepo import ADMIN, GIT_ENV, commit_all, edit, fleet_repo, init

TIFPA = "domains/tifpa.example.org.yaml"
WORKFLOWS = REPO / ".github" / "workflows"
SUMMARY = "tifpa.example.org: +1 -1 ~1 addresses, 2 sending rights, 3 directory entries, 4 out/ files"


def workflow_step(workflow: str, step_id: str) -> dict:
    document = yaml.safe_load((WORKFLOWS / workflow).read_text())
    [step] = [s for job in document["jobs"].values() for s in job["steps"] if s.get("id") == step_id]
    return step


def run_step(workflow: str, step_id: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run a workflow step's script as the runner does (bash -e -o pipefail), with the step's plain env."""
    step = workflow_step(workflow, step_id)
    assert "${{" not in step["run"], "expressions belong in env:, where the tests can set them"
    plain = {k: str(v) for k, v in step.get("env", {}).items() if "${{" not in str(v)}
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=cwd,
        env={**os.environ, **GIT_ENV, **plain, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def clone(origin: Path, path: Path) -> git.Repo:
    """A checkout as CI or a site admin has it, with the test's virtual environment as .venv."""
    repo = git.Repo.clone_from(str(origin), str(path))
    with repo.config_writer() as config:
        config.set_value("user", "name", ADMIN.name)
        config.set_value("user", "email", ADMIN.email)
    (path / ".venv").symlink_to(Path(sys.prefix))
    (Path(repo.git_dir) / "info" / "exclude").write_text(".venv\n")
    return repo


@pytest.fixture
def origin(tmp_path) -> Path:
    bare = tmp_path / "origin.git"
    init(bare, bare=True)
    seed = fleet_repo(tmp_path / "seed")
    seed.create_remote("origin", str(bare))
    seed.git.push("origin", "main")
    return bare


def site_admin_branch(origin: Path, path: Path) -> git.Repo:
    repo = clone(origin, path)
    repo.git.checkout("-b", "tifpa-staff")
    edit(path, TIFPA, "  paolo.conti: pconti\n", "  giulia.verdi: gverdi\n")
    edit(
        path,
        TIFPA,
        "visiting: [anna.ferri@example.com, a.ferri@physics.example.edu]",
        "visiting: [anna.ferri@example.com]",
    )
    commit_all(repo, "tifpa: giulia.verdi arrives, paolo.conti leaves, visiting forwards to one address")
    return repo


def test_merge_request_plan_then_merge_then_one_publish_commit(origin, tmp_path, mailgw):
    admin = site_admin_branch(origin, tmp_path / "admin")
    root = Path(admin.working_tree_dir)
    main_sha = admin.commit("origin/main").hexsha[:12]

    # The plan the reviewer reads.
    plan = mailgw(root, "plan")
    assert plan.code == 0
    assert plan.out.splitlines() == [
        f"mailgw plan: the working tree against the merge base with main ({main_sha})",
        "",
        "~ tifpa.example.org",
        "    recipients:",
        "      + giulia.verdi@tifpa.example.org: person gverdi",
        "      - paolo.conti@tifpa.example.org: person pconti",
        "    external aliases:",
        "      ~ visiting@tifpa.example.org: forwarded to a.ferri@physics.example.edu, anna.ferri@example.com "
        "-> forwarded to anna.ferri@example.com",
        "    directory entries:",
        "      ~ cn=visiting@tifpa.example.org,ou=external-aliases,ou=mailgw,dc=example,dc=org",
        "      + uid=gverdi,ou=people,ou=mailgw,dc=example,dc=org",
        "      ~ uid=pconti,ou=people,ou=mailgw,dc=example,dc=org",
        # gateway.yaml's submission section: who may send as the addresses (visiting forwards: nobody's).
        "    sending rights:",
        "      + giulia.verdi@tifpa.example.org: logins gverdi",
        "      - paolo.conti@tifpa.example.org: logins pconti",
        "",
        "directory (out/ldap):",
        "    ~ ldap/directory.ldif (+7 -2 lines)",
        "",
        "other out/ files:",
        # With gateway.yaml's forwarding, external aliases are in forward_alias (docs/mx.md).
        "    ~ postfix/forward_alias (+1 -1 lines)",
        "    ~ postfix/relay_recipients (+1 -1 lines)",
        "    ~ postfix/sender_logins (+1 -1 lines)",
        "",
        f"summary: {SUMMARY}",
        "verdict: safe",
    ]

    docs = (REPO / "docs" / "site-admins.md").read_text()
    assert "\n".join(plan.out.splitlines()[2:]) in docs, "docs/site-admins.md shows this very plan"

    # The pull-request workflow's plan step, as the runner runs it.
    summary = tmp_path / "step-summary.md"
    step = run_step(
        "pull-request.yml", "plan", root, BASE_REF="main", MAILGW_FORCE="", GITHUB_STEP_SUMMARY=str(summary)
    )
    assert step.returncode == 0, step.stderr
    markdown = summary.read_text()
    assert markdown.splitlines()[:5] == [
        "## mailgw plan",
        "",
        f"**{SUMMARY}**",
        "",
        f"Compared with origin/main ({main_sha}). Verdict: safe.",
    ]
    assert "| + | recipients | `giulia.verdi@tifpa.example.org` |  | `person gverdi` |" in markdown

    # Merge and push, as the merge button does.
    admin.git.checkout("main")
    admin.git.merge("--no-ff", "-m", "Merge branch 'tifpa-staff'", "tifpa-staff")
    admin.git.push("origin", "main")
    merge = admin.head.commit

    # The publish workflow on main.
    ci = clone(origin, tmp_path / "ci")
    for step_id in ("publish", "push"):
        done = run_step("publish.yml", step_id, Path(ci.working_tree_dir))
        assert done.returncode == 0, done.stderr
    published = git.Repo(origin).commit("main")
    assert published.parents == (merge,), "exactly one commit after the merge"
    assert published.message.splitlines()[0] == f"publish out/: {SUMMARY}"
    assert (
        f"mailgw plan: the working tree against the last publish ({merge.parents[0].hexsha[:12]})" in published.message
    )
    assert published.author.name == "github-actions[bot]"
    assert sorted(published.stats.files) == [
        "out/MANIFEST.json",
        "out/ldap/directory.ldif",
        "out/postfix/forward_alias",
        "out/postfix/relay_recipients",
        "out/postfix/sender_logins",
    ]

    # main now holds the out/ its declarations build, and a second run publishes nothing.
    check = clone(origin, tmp_path / "check")
    assert mailgw(Path(check.working_tree_dir), "build", "--check").code == 0
    for step_id in ("publish", "push"):
        assert run_step("publish.yml", step_id, Path(ci.working_tree_dir)).returncode == 0
    assert git.Repo(origin).commit("main") == published


def test_unsafe_merge_request_fails_the_plan_step_until_labelled(origin, tmp_path):
    admin = clone(origin, tmp_path / "admin")
    admin.git.checkout("-b", "tifpa-relay")
    root = Path(admin.working_tree_dir)
    edit(root, TIFPA, "smtp:[smtp2.tifpa.example.org]:25", "smtp:[smtp3.tifpa.example.org]:25")
    commit_all(admin, "tifpa: new fallback relay")
    summary = tmp_path / "step-summary.md"

    refused = run_step(
        "pull-request.yml",
        "plan",
        root,
        BASE_REF="main",
        MAILGW_FORCE="",
        GITHUB_STEP_SUMMARY=str(summary),
        GITHUB_ACTIONS="true",
    )
    assert refused.returncode == 1
    reason = (
        "tifpa.example.org: next hop changed from smtp:[smtp.tifpa.example.org]:25, "
        "[smtp2.tifpa.example.org]:25 to smtp:[smtp.tifpa.example.org]:25, [smtp3.tifpa.example.org]:25"
    )
    assert f"::error title=unsafe plan::{reason}" in refused.stderr.splitlines()
    assert f"> - {reason}".replace("[", "\\[").replace("]", "\\]") in summary.read_text().splitlines()
    assert "Verdict: **UNSAFE**." in summary.read_text()

    summary.unlink()
    labelled = run_step(
        "pull-request.yml", "plan", root, BASE_REF="main", MAILGW_FORCE="1", GITHUB_STEP_SUMMARY=str(summary)
    )
    assert labelled.returncode == 0, labelled.stderr
    assert "Verdict: **unsafe, forced through**." in summary.read_text()
