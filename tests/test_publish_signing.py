"""Signed publication: `mailgw publish` signs its commit with an SSH key, and a node deploys only such a commit.

Real git, real keys made here with ssh-keygen. The node's side is deploy/puppet/mailgw/files/release.sh,
the script the module runs (mailgw::signed_release) before anything moves: it is run here as the module
runs it, with the node's own allowed-signers file, on every kind of commit the node must refuse.
tests/test_rollout.py runs the same refusal, and published commits being deployed, through `puppet apply`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from compiler.commands.publish import SIGNING_KEY_ENV
from tests.conftest import REPO
from tests.gitrepo import GIT_ENV, commit_all, edit, fleet_repo
from tests.rollout_env import PRINCIPAL, commit_signed, ssh_key
from tests.test_puppet import add_artifacts

pytestmark = pytest.mark.needs("git", "ssh-keygen")

TIFPA = "domains/tifpa.example.org.yaml"
BOT = "mailgw publish <publish@gw.example.org>"
RELEASE = REPO / "deploy/puppet/mailgw/files/release.sh"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    return ssh_key(directory, "publish"), ssh_key(directory, "stranger")


@pytest.fixture
def gateway(tmp_path, keys):
    """The bundled fleet on main with a change committed, ready to publish; the node's allowed signers."""
    root = tmp_path / "gw"
    repo = fleet_repo(root)
    edit(root, TIFPA, "  paolo.conti: pconti\n", "")
    commit_all(repo, "tifpa: paolo.conti left")
    signers = tmp_path / "allowed_signers"
    signers.write_text(keys[0].allowed_signer())
    return root, repo, signers


def verify(repo, signers: Path, commit: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-C", repo.working_tree_dir, "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", commit],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **GIT_ENV},
    )


def test_publish_signs_its_commit_with_the_given_key(gateway, keys, mailgw):
    root, repo, signers = gateway
    result = mailgw(root, "publish", "--author", BOT, "--signing-key", str(keys[0].path))
    assert result.code == 0 and result.err == "", result.err
    commit = repo.head.commit
    assert result.out.startswith(f"published {commit.hexsha[:12]} (signed): publish out/: tifpa.example.org")
    assert commit.gpgsig.startswith("-----BEGIN SSH SIGNATURE-----")
    checked = verify(repo, signers, commit.hexsha)
    assert checked.returncode == 0, checked.stderr
    assert f'Good "git" signature for {PRINCIPAL} with ED25519 key' in checked.stderr
    assert sorted(commit.stats.files) == [
        "out/MANIFEST.json",
        "out/ldap/directory.ldif",
        "out/postfix/relay_recipients",
        "out/postfix/sender_logins",
    ]
    assert commit.message.startswith("publish out/: tifpa.example.org: +0 -1 ~0 addresses")


def test_the_key_from_the_environment(gateway, keys, mailgw, monkeypatch):
    root, repo, signers = gateway
    monkeypatch.setenv(SIGNING_KEY_ENV, str(keys[0].path))
    assert mailgw(root, "publish", "--author", BOT).code == 0
    assert verify(repo, signers, repo.head.commit.hexsha).returncode == 0


def test_without_a_key_the_commit_is_unsigned_and_publish_says_so(gateway, mailgw):
    root, repo, _ = gateway
    result = mailgw(root, "publish", "--author", BOT)
    assert result.code == 0
    assert not repo.head.commit.gpgsig
    assert result.err == (
        "mailgw: the publish commit is not signed (no --signing-key, no MAILGW_SIGNING_KEY, and git does not sign "
        "by itself): MX nodes that check signatures will not deploy it\n"
    )


def test_a_missing_key_publishes_nothing(gateway, mailgw, tmp_path):
    root, repo, _ = gateway
    head, out = repo.head.commit, (root / "out/postfix/relay_recipients").read_bytes()
    result = mailgw(root, "publish", "--signing-key", str(tmp_path / "nope"))
    assert (result.code, result.err) == (
        2,
        f"mailgw: signing key {tmp_path / 'nope'} is not a file; nothing published\n",
    )
    assert repo.head.commit == head and (root / "out/postfix/relay_recipients").read_bytes() == out


def test_a_key_git_cannot_sign_with_leaves_out_written_but_not_committed(gateway, mailgw, tmp_path):
    root, repo, _ = gateway
    head = repo.head.commit
    (tmp_path / "not-a-key").write_text("this is no SSH key\n")
    result = mailgw(root, "publish", "--signing-key", str(tmp_path / "not-a-key"))
    assert result.code == 2
    [line] = result.err.splitlines()
    assert line.startswith("mailgw: git could not commit out/: ")
    assert line.endswith("; out/ is written but not committed (the next publish commits it)")
    assert repo.head.commit == head


# --- the node's side: files/release.sh -------------------------------------------------------------


def release(root: Path, signers: Path, releases: Path, revision: str = "HEAD") -> subprocess.CompletedProcess:
    """The module's check and unpacking of one commit, as mailgw::signed_release runs it."""
    return subprocess.run(
        ["/bin/sh", str(RELEASE), str(root / "out"), revision, str(signers), str(releases)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **GIT_ENV},
    )


def test_a_published_commit_is_unpacked_exactly_as_committed(gateway, keys, mailgw, tmp_path):
    root, repo, signers = gateway
    assert mailgw(root, "publish", "--author", BOT, "--signing-key", str(keys[0].path)).code == 0
    commit = repo.head.commit.hexsha
    done = release(root, signers, tmp_path / "releases")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{commit}\t{tmp_path / 'releases' / commit}\n"
    unpacked = tmp_path / "releases" / commit
    committed = {
        blob.path.removeprefix("out/"): blob.data_stream.read()
        for blob in repo.head.commit.tree["out"].traverse()
        if blob.type == "blob"
    }
    assert {p.relative_to(unpacked).as_posix(): p.read_bytes() for p in unpacked.rglob("*") if p.is_file()} == committed


@pytest.mark.parametrize("forgery", ["unsigned", "unknown key", "edited after the commit", "unsigned commit on top"])
def test_the_node_refuses_every_commit_not_published_by_an_allowed_signer(gateway, keys, mailgw, tmp_path, forgery):
    """Each forgery rewrites out/ consistently (MANIFEST.json recomputed): only the signature tells."""
    root, repo, signers = gateway
    key, stranger = keys
    forged = {"postfix/relay_domains": b"evil.example.net\tOK\n"}
    if forgery == "unsigned":
        assert mailgw(root, "publish", "--author", BOT).code == 0
    elif forgery == "unknown key":
        assert mailgw(root, "publish", "--author", BOT, "--signing-key", str(stranger.path)).code == 0
    else:
        assert mailgw(root, "publish", "--author", BOT, "--signing-key", str(key.path)).code == 0
        add_artifacts(root / "out", forged)
        if forgery == "unsigned commit on top":
            commit_signed(repo, "out/: one more domain", None)
    commit = repo.head.commit.hexsha
    releases = tmp_path / "releases"

    done = release(root, signers, releases)
    assert done.returncode == 1 and done.stdout == ""
    reason = {
        "unsigned": f"commit {commit} is not signed; only a published (signed) commit is deployed",
        "unsigned commit on top": f"commit {commit} is not signed; only a published (signed) commit is deployed",
        "unknown key": f"commit {commit} is not signed by an allowed signer of this node: "
        'Good "git" signature with ED25519 key SHA256:',
        "edited after the commit": f"{root / 'out'} was changed after its commit (out/MANIFEST.json "
        "out/postfix/relay_domains); only what a signed commit holds is deployed",
    }[forgery]
    assert done.stderr.startswith(reason), done.stderr
    assert not releases.exists(), "nothing written"


def test_the_allowed_signers_come_from_the_node_not_the_repository(gateway, keys, mailgw, tmp_path):
    """A signers file committed in the repository changes nothing: the node's own list decides."""
    root, repo, signers = gateway
    _, stranger = keys
    (root / "deploy").mkdir()
    (root / "deploy/allowed_signers").write_text(stranger.allowed_signer())
    commit_all(repo, "trust the stranger too")
    assert mailgw(root, "publish", "--author", BOT, "--signing-key", str(stranger.path)).code == 0
    assert release(root, signers, tmp_path / "releases").returncode == 1


def test_the_publish_workflow_signs_with_the_key_from_the_secret_store():
    steps = yaml.safe_load((REPO / ".github/workflows/publish.yml").read_text())["jobs"]["publish"]["steps"]
    by_id = {step.get("id"): step for step in steps}
    assert by_id["key"]["env"] == {"SIGNING_KEY": "${{ secrets.MAILGW_SIGNING_KEY }}"}
    assert "umask 077" in by_id["key"]["run"] and '"$RUNNER_TEMP/publish-key"' in by_id["key"]["run"]
    assert by_id["publish"]["env"][SIGNING_KEY_ENV] == "${{ runner.temp }}/publish-key"
    assert [s.get("id") for s in steps].index("key") < [s.get("id") for s in steps].index("publish")
