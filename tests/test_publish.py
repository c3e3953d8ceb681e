"""mailgw publish: out/ committed with gitpython when, and only when, it changed; refusals leave git alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gitrepo import ADMIN, commit_all, edit, fleet_repo
from tests.test_plan import BUNDLED_SUMMARY

TIFPA = "domains/tifpa.example.org.yaml"
BOT = "mailgw publish <publish@gw.example.org>"


@pytest.fixture
def gateway(tmp_path):
    root = tmp_path / "gw"
    return root, fleet_repo(root)


def test_nothing_changed_no_commit(gateway, mailgw):
    root, repo = gateway
    head = repo.head.commit
    result = mailgw(root, "publish", "--author", BOT)
    assert result.code == 0
    assert result.err == "out/ is current: nothing to publish\n" and result.out == ""
    assert repo.head.commit == head


def test_changed_declarations_give_one_commit_of_out_only(gateway, mailgw):
    root, repo = gateway
    edit(root, TIFPA, "  paolo.conti: pconti\n", "")
    declared = commit_all(repo, "tifpa: paolo.conti left")
    result = mailgw(root, "publish", "--author", BOT)
    assert result.code == 0, result.err
    commit = repo.head.commit
    assert commit.parents == (declared,)
    summary = "tifpa.example.org: +0 -1 ~0 addresses, 1 sending right, 1 directory entry, 3 out/ files"
    assert result.out == f"published {commit.hexsha[:12]}: publish out/: {summary}\n"
    assert sorted(commit.stats.files) == [
        "out/MANIFEST.json",
        "out/ldap/directory.ldif",
        "out/postfix/relay_recipients",
        "out/postfix/sender_logins",
    ]
    assert (commit.author.name, commit.author.email) == ("mailgw publish", "publish@gw.example.org")
    assert (commit.committer.name, commit.committer.email) == ("mailgw publish", "publish@gw.example.org")
    assert commit.message.splitlines()[:12] == [
        f"publish out/: {summary}",
        "",
        f"mailgw plan: the working tree against the last publish ({declared.parents[0].hexsha[:12]})",
        "",
        "~ tifpa.example.org",
        "    recipients:",
        "      - paolo.conti@tifpa.example.org: person pconti",
        "    directory entries:",
        "      ~ uid=pconti,ou=people,ou=mailgw,dc=example,dc=org",
        "    sending rights:",
        "      - paolo.conti@tifpa.example.org: logins pconti",
        "",
    ]
    assert not repo.is_dirty(untracked_files=True), "the working tree is clean after publish"
    assert b"paolo.conti" not in (root / "out/postfix/relay_recipients").read_bytes()
    again = mailgw(root, "publish", "--author", BOT)
    assert again.code == 0 and repo.head.commit == commit


def test_author_from_the_environment_and_from_git_config(gateway, mailgw, monkeypatch):
    root, repo = gateway
    edit(root, TIFPA, "  paolo.conti: pconti\n", "")
    commit_all(repo, "edit")
    monkeypatch.setenv("MAILGW_AUTHOR", "CI Bot <ci@gw.example.org>")
    assert mailgw(root, "publish").code == 0
    assert repo.head.commit.author.email == "ci@gw.example.org"
    edit(
        root,
        TIFPA,
        "  l.bianchi: {kind: alias, uid: lbianchi}\n",
        "  l.bianchi: {kind: alias, uid: lbianchi}\n  g.neri: gneri\n",
    )
    commit_all(repo, "edit again")
    monkeypatch.delenv("MAILGW_AUTHOR")
    assert mailgw(root, "publish").code == 0
    assert repo.head.commit.author.email == ADMIN.email, "git's own configuration when none is given"


def test_a_removed_artifact_is_removed_in_the_commit(gateway, mailgw):
    root, repo = gateway
    (root / "out/postfix/obsolete").write_text("from an older compiler\n")
    commit_all(repo, "an artifact the compiler no longer writes")
    assert mailgw(root, "publish", "--author", BOT).code == 0
    assert repo.head.commit.stats.files["out/postfix/obsolete"]["deletions"] == 1
    assert not (root / "out/postfix/obsolete").exists()
    assert "out/postfix/obsolete" not in [b.path for b in repo.head.commit.tree.traverse()]


def test_first_publish_of_a_repository_without_out(tmp_path, mailgw):
    from tests.gitrepo import copy_bundled, init

    root = tmp_path / "gw"
    repo = init(root)
    copy_bundled(root, ("gateway.yaml", "domains", "national"))
    commit_all(repo, "declarations only")
    result = mailgw(root, "publish", "--author", BOT)
    assert result.code == 0
    assert repo.head.commit.message.startswith(
        f"publish out/: {BUNDLED_SUMMARY}\n\nmailgw plan: the working tree against nothing (no declarations yet)\n"
    )


@pytest.mark.parametrize(
    "mess, message",
    [
        (
            "uncommitted",
            "mailgw: declarations differ from the last commit (domains/tifpa.example.org.yaml); publish "
            "builds what is committed: commit them first\n",
        ),
        (
            "untracked",
            "mailgw: declarations differ from the last commit (domains/new.example.org.yaml); publish "
            "builds what is committed: commit them first\n",
        ),
        (
            "staged",
            "mailgw: files outside out/ are staged (README.md); the publish commit holds out/ only: commit or "
            "unstage them first\n",
        ),
        ("author", "mailgw: author 'publish-bot' is not 'Name <email@example.org>'\n"),
    ],
)
def test_refusals_leave_out_and_git_untouched(gateway, mailgw, mess, message):
    root, repo = gateway
    edit(root, TIFPA, "  paolo.conti: pconti\n", "")
    commit_all(repo, "edit")
    head, out_before = repo.head.commit, (root / "out/postfix/relay_recipients").read_bytes()
    if mess == "uncommitted":
        edit(root, TIFPA, "  l.bianchi: {kind: alias, uid: lbianchi}\n", "")
    elif mess == "untracked":
        (root / "domains/new.example.org.yaml").write_text("domain: new.example.org\n")
    elif mess == "staged":
        (root / "README.md").write_text("hello\n")
        repo.index.add(["README.md"])
    result = mailgw(root, "publish", "--author", "publish-bot" if mess == "author" else BOT)
    assert result.code == 2 and result.err == message
    assert repo.head.commit == head
    assert (root / "out/postfix/relay_recipients").read_bytes() == out_before


def test_invalid_declarations_publish_nothing(gateway, mailgw):
    root, repo = gateway
    edit(root, TIFPA, "mario.rossi: mrossi", "mario.rossi: M Rossi")
    commit_all(repo, "a bad uid")
    head = repo.head.commit
    result = mailgw(root, "publish", "--author", BOT)
    assert result.code == 1 and "error[bad-uid]" in result.err
    assert repo.head.commit == head and not repo.is_dirty()


def test_not_a_repository(make_repo, mailgw):
    from tests.conftest import domain_yaml

    root = make_repo({TIFPA: domain_yaml()})
    result = mailgw(root, "publish")
    assert result.code == 2 and result.err.endswith("is not inside a git repository\n")
    assert not (root / "out").exists()


def test_gateway_root_in_a_subdirectory(tmp_path, mailgw):
    from tests.gitrepo import copy_bundled, init

    repo = init(tmp_path / "monorepo")
    root = tmp_path / "monorepo" / "mail"
    root.mkdir()
    copy_bundled(root)
    commit_all(repo, "the gateway lives in mail/")
    edit(root, TIFPA, "  paolo.conti: pconti\n", "")
    commit_all(repo, "edit")
    result = mailgw(root, "publish", "--author", BOT)
    assert result.code == 0, result.err
    assert sorted(repo.head.commit.stats.files) == [
        "mail/out/MANIFEST.json",
        "mail/out/ldap/directory.ldif",
        "mail/out/postfix/relay_recipients",
        "mail/out/postfix/sender_logins",
    ]
    assert not repo.is_dirty(untracked_files=True)


def test_git_refusing_the_commit_is_one_line_and_the_next_publish_commits(gateway, mailgw):
    """Another git command holds the index (index.lock): publish says so; out/ is written, nothing committed."""
    root, repo = gateway
    edit(root, TIFPA, "  paolo.conti: pconti\n", "")
    commit_all(repo, "tifpa: paolo.conti left")
    head = repo.head.commit
    lock = Path(repo.git_dir) / "index.lock"
    lock.write_text("")
    try:
        result = mailgw(root, "publish", "--author", BOT)
    finally:
        lock.unlink()
    assert (result.code, result.out) == (2, "")
    [line] = result.err.splitlines()
    assert line.startswith(f"mailgw: git could not stage out/: fatal: Unable to create '{lock}': File exists.")
    assert line.endswith("; out/ is written but not committed (the next publish commits it)")
    assert repo.head.commit == head
    assert b"paolo.conti" not in (root / "out/postfix/relay_recipients").read_bytes()
    again = mailgw(root, "publish", "--author", BOT)
    assert again.code == 0, again.err
    assert sorted(repo.head.commit.stats.files) == [
        "out/MANIFEST.json",
        "out/ldap/directory.ldif",
        "out/postfix/relay_recipients",
        "out/postfix/sender_logins",
    ]
