"""The command line contract: verbs, exit codes, every finding at once, annotations, no tracebacks."""

from __future__ import annotations

from tests.conftest import REPO, domain_yaml, run_mailgw_process


def test_validate_the_bundled_fleet():
    done = run_mailgw_process("validate", cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    # 6 site domains and the national one (example.it: its 2 own addresses; the generated aliases are not declared).
    assert lines[0] == "ok: 7 domain(s), 33 address(es)"
    # Two domains have people without a name: a note each (docs/national-aliases.md), never an error.
    assert [line.split(":")[0] for line in lines[1:]] == [
        "domains/ge.example.org.yaml",
        "domains/tifpa.example.org.yaml",
    ]
    assert all(": note[national-no-name]: " in line for line in lines[1:])


def test_every_finding_of_every_file_in_one_run(make_repo):
    root = make_repo(
        {
            "domains/tifpa.example.org.yaml": domain_yaml(site="site: T I\n"),
            "domains/lnf.example.org.yaml": domain_yaml("lnf.example.org", admins="admins: [lnf]\n"),
            "domains/cnaf.example.org.yaml": "domain: [\n",
        }
    )
    done = run_mailgw_process("validate", cwd=root)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines == [
        "domains/cnaf.example.org.yaml:2:1: error[yaml-syntax]: invalid YAML: while parsing a flow node: "
        "did not find expected node content",
        "domains/lnf.example.org.yaml:3:10: error[bad-admin]: admins[0]: admin 'lnf' is not a GitHub user or "
        "team; write '@user' or '@org/team'",
        "domains/tifpa.example.org.yaml:2:7: error[bad-site]: site: site 'T I' is not a site code; use letters, "
        "digits, '_' or '-' (like 'TIFPA'), at most 32",
        "3 error(s)",
    ]


def test_github_actions_annotations_follow_the_full_list(make_repo):
    root = make_repo({"domains/tifpa.example.org.yaml": domain_yaml(site="site: T I\n")})
    done = run_mailgw_process("validate", cwd=root, env={"GITHUB_ACTIONS": "true"})
    assert done.returncode == 1
    assert (
        "::error file=domains/tifpa.example.org.yaml,line=2,col=7,title=bad-site::site: site 'T I' is not"
        in done.stderr
    )
    assert done.stderr.index("domains/tifpa.example.org.yaml:2:7: error[bad-site]") < done.stderr.index("::error")


def test_usage_errors_exit_2():
    assert run_mailgw_process("frobnicate", cwd=REPO).returncode == 2
    assert run_mailgw_process(cwd=REPO).returncode == 2
    assert run_mailgw_process("build", "--bogus", cwd=REPO).returncode == 2


def test_internal_error_is_one_line_and_exit_2(make_repo, monkeypatch, mailgw):
    from compiler import targets

    root = make_repo({"domains/tifpa.example.org.yaml": domain_yaml()})

    def broken(fleet):
        raise KeyError("boom")

    monkeypatch.setattr(targets, "render", broken)
    result = mailgw(root, "build")
    assert result.code == 2
    assert result.err == "mailgw: internal error: KeyError: 'boom' (set MAILGW_DEBUG=1 for the traceback)\n"
    assert not (root / "out").exists()


def test_console_script_and_module_agree():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("mailgw")
    assert script.exists() or shutil.which("mailgw")
    a = subprocess.run([str(script) if script.exists() else "mailgw", "--version"], capture_output=True, text=True)
    b = run_mailgw_process("--version", cwd=REPO)
    assert a.stdout == b.stdout == "mailgw 0.1.0\n"


def test_every_expected_failure_is_one_line_with_its_exit_code(make_repo, tmp_path):
    """What the user can fix is said in one line, exit 2; 'internal error' is kept for bugs."""
    from tests.gitrepo import commit_all, init

    root = make_repo({"domains/tifpa.example.org.yaml": domain_yaml()})
    (tmp_path / "a-file").write_text("not a directory\n")
    missing = tmp_path / "missing.ldif"
    outside_git = [
        (["publish"], f"mailgw: {root} is not inside a git repository"),
        (["explain", "nobody"], "mailgw: explain: 'nobody' is not an address like 'name@example.org'"),
        (
            ["ldap-diff", str(missing), str(missing)],
            f"mailgw: ldap-diff: cannot read {missing}: No such file or directory",
        ),
        (["build", "--out", str(tmp_path / "a-file")], f"mailgw: {tmp_path / 'a-file'} exists and is not a directory"),
    ]
    for args, line in outside_git:
        done = run_mailgw_process(*args, cwd=root)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", line + "\n"), args
    commit_all(init(root), "fleet")
    done = run_mailgw_process("plan", "--base", "no-such-ref", cwd=root)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", "mailgw: unknown revision 'no-such-ref'\n")
