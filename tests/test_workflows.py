"""The GitHub workflows: linted by actionlint, and wired to the plan's force label and the publish step."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from compiler.plan import FORCE_ENV, FORCE_LABEL
from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"


def actionlint() -> str:
    """The binary of the pinned test dependency (pip install -e '.[test]')."""
    found = Path(sys.executable).with_name("actionlint")
    path = str(found) if found.exists() else shutil.which("actionlint")
    assert path, "actionlint is missing: it is a test dependency (make venv installs it)"
    return path


def lint(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [actionlint(), "-no-color", *map(str, files)], cwd=files[0].parent, capture_output=True, text=True, timeout=60
    )


def test_workflows_pass_actionlint():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["national.yml", "publish.yml", "pull-request.yml", "sync.yml"]
    done = lint(*files)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    text = (WORKFLOWS / "pull-request.yml").read_text()
    text = text.replace("labels.*.name,", "labels.*.name),")  # a stray parenthesis in the force expression
    text = text.replace("  plan:\n", "  plan:\n    needs: [lint]\n")  # a job that does not exist
    broken.write_text(text)
    done = lint(broken)
    assert done.returncode == 1
    assert 'job "plan" needs job "lint" which does not exist' in done.stdout
    assert "parser did not reach end of input after parsing the expression" in done.stdout


def test_pull_requests_rerun_the_plan_when_the_force_label_changes():
    document = yaml.safe_load((WORKFLOWS / "pull-request.yml").read_text())
    trigger = document[True]["pull_request"]  # PyYAML reads the key 'on' as true
    assert {"labeled", "unlabeled", "synchronize"} <= set(trigger["types"])
    [plan] = document["jobs"]["plan"]["steps"][-1:]
    assert (
        plan["env"][FORCE_ENV]
        == f"${{{{ contains(github.event.pull_request.labels.*.name, '{FORCE_LABEL}') && '1' || '' }}}}"
    )
    assert "--format markdown" in plan["run"] and '>> "$GITHUB_STEP_SUMMARY"' in plan["run"]
    assert document["permissions"] == {"contents": "read"}


def test_validate_job_checks_declarations_schema_and_codeowners():
    steps = yaml.safe_load((WORKFLOWS / "pull-request.yml").read_text())["jobs"]["validate"]["steps"]
    runs = [step.get("run") for step in steps if "run" in step]
    assert runs == [
        "make venv",
        ".venv/bin/mailgw validate",
        ".venv/bin/mailgw schema --check",
        ".venv/bin/mailgw codeowners --check",
    ]


def test_publish_runs_on_main_only_one_at_a_time():
    document = yaml.safe_load((WORKFLOWS / "publish.yml").read_text())
    assert document[True] == {"push": {"branches": ["main"]}}
    assert document["permissions"] == {"contents": "write"}
    assert document["concurrency"] == {"group": "publish", "cancel-in-progress": False}


def test_new_people_get_their_national_aliases_proposed_after_each_change_and_nightly():
    document = yaml.safe_load((WORKFLOWS / "national.yml").read_text())
    on = document[True]
    assert on["push"]["branches"] == ["main"]
    assert {"domains/**", "sources/**"} <= set(on["push"]["paths"])
    assert "schedule" in on
    script = document["jobs"]["assign"]["steps"][-1]["run"]
    assert script.index(".venv/bin/mailgw national assign") < script.index("git push --force origin national/assign")
    assert "gh pr create --base main --head national/assign" in script
