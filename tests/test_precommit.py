"""The pre-commit hooks, run by the real pre-commit on temporary git repositories (nothing downloaded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.gitrepo import GIT_ENV, commit_all, copy_bundled, edit, init, line_of

TIFPA = "domains/tifpa.example.org.yaml"
HOOK_NAMES = {
    "mailgw-validate": "declarations are valid (mailgw validate)",
    "mailgw-schema": "schema/ is current (mailgw schema)",
    "mailgw-codeowners": ".github/CODEOWNERS is current (mailgw codeowners)",
    "mailgw-out": "out/ is current (mailgw build --check)",
}


def pre_commit(root: Path, *args: str) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).with_name("pre-commit")
    assert binary.exists(), "pre-commit is missing: it is a test dependency (make venv installs it)"
    env = {
        **os.environ,
        **GIT_ENV,
        "PRE_COMMIT_HOME": str(root.parent / "pre-commit-home"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PRE_COMMIT_COLOR": "never",
        "NO_COLOR": "1",
    }
    return subprocess.run([str(binary), *args], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def hook_results(output: str) -> dict[str, str]:
    """'name......Passed' lines -> {name: Passed | Failed | Skipped}."""
    results = {}
    for line in output.splitlines():
        for name in HOOK_NAMES.values():
            if line.startswith(name + "."):
                results[name] = line.rsplit(".", 1)[1].removeprefix("(no files to check)")
    return results


def with_venv(root: Path, repo) -> None:
    (root / ".venv").symlink_to(Path(sys.prefix))
    (Path(repo.git_dir) / "info" / "exclude").write_text(".venv\n")


@pytest.fixture
def gateway(tmp_path):
    root = tmp_path / "gw"
    repo = init(root)
    copy_bundled(
        root, ("gateway.yaml", "domains", "national", "out", "schema", ".github/CODEOWNERS", ".pre-commit-config.yaml")
    )
    with_venv(root, repo)
    commit_all(repo, "the bundled fleet")
    return root, repo


def test_every_hook_passes_on_the_bundled_fleet(gateway):
    root, _ = gateway
    done = pre_commit(root, "run", "--all-files")
    assert done.returncode == 0, done.stdout
    assert hook_results(done.stdout) == {name: "Passed" for name in HOOK_NAMES.values()}


# A broken declaration fails every hook that builds; a domain's new bytes make out/MANIFEST.json stale too.
@pytest.mark.parametrize(
    "failing, breakage, message",
    [
        (
            ["mailgw-validate", "mailgw-codeowners", "mailgw-out"],
            (TIFPA, "mario.rossi: mrossi", "mario.rossi: M Rossi"),
            f"domains/tifpa.example.org.yaml:{line_of(TIFPA, 'mario.rossi: mrossi')}:16: error[bad-uid]: "
            "recipients['mario.rossi']: uid 'M Rossi' contains a space",
        ),
        (
            ["mailgw-schema"],
            ("schema/domain.schema.json", '"title": "Recipients"', '"title": "People"'),
            "schema/domain.schema.json: stale; run 'mailgw schema' and commit the result",
        ),
        (
            ["mailgw-codeowners", "mailgw-out"],
            (TIFPA, '"@example/tifpa-mail"', '"@example/tifpa-postmasters"'),
            ".github/CODEOWNERS: stale; run 'mailgw codeowners' and commit the result",
        ),
        (
            ["mailgw-out"],
            ("out/postfix/transport", "smtp:[smtp.tifpa", "smtp:[evil.example"),
            "out is stale: 1 file(s) differ from a fresh build; run 'mailgw build'",
        ),
    ],
)
def test_each_hook_fails_on_what_it_guards(gateway, failing, breakage, message):
    root, _ = gateway
    edit(root, *breakage)
    done = pre_commit(root, "run", "--all-files")
    assert done.returncode == 1
    results = hook_results(done.stdout)
    assert {name: status for name, status in results.items() if status == "Failed"} == {
        HOOK_NAMES[hook]: "Failed" for hook in failing
    }
    assert message in done.stdout


def test_installed_hook_refuses_the_commit(gateway):
    root, repo = gateway
    assert pre_commit(root, "install").returncode == 0
    head = repo.head.commit
    edit(root, TIFPA, "  paolo.conti: pconti\n", "  paolo.conti: pconti\n  paolo.conti: pconti2\n")
    repo.git.add(TIFPA)
    done = subprocess.run(
        ["git", "commit", "-m", "a duplicate"],
        cwd=root,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            **GIT_ENV,
            "PRE_COMMIT_HOME": str(root.parent / "pre-commit-home"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
        timeout=120,
    )
    assert done.returncode == 1
    assert "error[duplicate-key]: key 'paolo.conti' is already defined" in done.stdout + done.stderr
    assert repo.head.commit == head
    edit(root, TIFPA, "  paolo.conti: pconti2\n", "  p.conti: pconti\n")
    repo.git.add(TIFPA)
    done = subprocess.run(
        ["git", "commit", "-m", "an alias"],
        cwd=root,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            **GIT_ENV,
            "PRE_COMMIT_HOME": str(root.parent / "pre-commit-home"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert repo.head.commit.parents == (head,)


def test_the_published_hook_in_another_repository(tmp_path):
    """.pre-commit-hooks.yaml as a consumer uses it; language: system stands in for the pip install."""
    [hook] = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert (hook["id"], hook["entry"], hook["language"]) == ("mailgw-validate", "mailgw validate", "python")
    root = tmp_path / "consumer"
    repo = init(root)
    copy_bundled(root, ("gateway.yaml", "domains", "national"))
    (root / "README.md").write_text("our gateway\n")
    local = {**hook, "language": "system"}
    (root / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": [local]}]}))
    commit_all(repo, "consumer")
    passed = pre_commit(root, "run", "--all-files")
    assert passed.returncode == 0 and "mailgw validate" in passed.stdout and "Passed" in passed.stdout
    skipped = pre_commit(root, "run", "--files", "README.md")
    assert skipped.returncode == 0 and "(no files to check)Skipped" in skipped.stdout
    edit(root, "domains/lnf.example.org.yaml", "role: backup", "role: secondary")
    failed = pre_commit(root, "run", "--files", "domains/lnf.example.org.yaml")
    assert failed.returncode == 1
    assert (
        "domains/lnf.example.org.yaml:7:7: error[invalid-choice]: role: 'secondary' is not one of "
        "'primary' or 'backup'" in failed.stdout
    )
