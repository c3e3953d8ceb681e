"""The staged rollout across the MX pair, with `puppet apply` on two nodes, each with its own running Postfix.

mx1 leads: it deploys the newest signed publish. mx2 follows mx1: it deploys what mx1 has run
healthily for its hold time, by the record mx1 writes in a directory both nodes share here (in
production the operator copies it across, docs/operators.md). The gateway repository is real git,
published by `mailgw publish` with an SSH key made here, and the bad revisions are signed commits of
a tampered out/, so that only the node's checks can catch them. Mail keeps flowing through mx2 at
every step: an SMTP session to it delivers a message.

The nodes are made once per module (tests/rollout_env.py); each test goes on from the state the one
before left, as a real pair would, and says so.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from compiler.main import main
from tests.gitrepo import commit_all, init
from tests.mx_harness import Sink, rcpt_reply, rmtree, send, sites_on_loopback, smtp_session, wait_for
from tests.rollout_env import MxNode, commit_signed, ssh_key
from tests.test_puppet import CHANGES, COMPILE_FAILED, FAILURES, NO_CHANGES, add_artifacts

pytestmark = [
    pytest.mark.needs("puppet", "postmap", "postfix", "postconf", "git", "ssh-keygen", "openssl"),
    pytest.mark.skipif(os.geteuid() != 0, reason="each node starts its own Postfix, as root (CI runs as root)"),
]

TIFPA = "domains/tifpa.example.org.yaml"
SENDER = "someone@example.net"
NEWCOMER = "nuovo.arrivo@tifpa.example.org"
FACT = "mailgw_rollout"


def fleet(root: Path, sink_port: int) -> None:
    (root / "domains").mkdir(parents=True)
    (root / "gateway.yaml").write_text(
        "mx_hosts: [mx1.gw.example.org, mx2.gw.example.org]\n"
        'admins: ["@example/mail-gateway"]\n'
        'ldap: {base_dn: "ou=mailgw,dc=example,dc=org"}\n'
    )
    (root / TIFPA).write_text(
        "domain: tifpa.example.org\nsite: TIFPA\nadmins: ['@example/tifpa-mail']\n"
        f"delivery:\n  nexthop: smtp:[127.0.0.1]:{sink_port}\n"
        "recipients:\n  mario.rossi: mrossi\n  info: {kind: role, owners: [mrossi]}\n"
    )


class Pair:
    def __init__(self, base: Path):
        self.base = base
        self.sink = Sink("tifpa")
        self.root = base / "gateway"
        fleet(self.root, self.sink.port)
        self.repo = init(self.root)
        self.key = ssh_key(base / "keys", "publish")
        records = base / "records"  # what each node publishes for the nodes that follow it
        signers = self.key.allowed_signer()
        self.mx1 = MxNode(base / "mx1", "mx1.gw.example.org", records, signers)
        self.mx2 = MxNode(base / "mx2", "mx2.gw.example.org", records, signers)
        self.mx2.follows = self.mx1.name

    def publish(self, message: str) -> str:
        """Commit the declarations, then `mailgw publish` signs and commits out/: the new revision."""
        commit_all(self.repo, message)
        with sites_on_loopback():
            assert main(["--root", str(self.root), "publish", "--signing-key", str(self.key.path)]) == 0
        return self.repo.head.commit.hexsha

    def apply(self, node: MxNode, first: str = "", **settings):
        for name, value in settings.items():
            setattr(node, name, value)
        return node.apply(self.root / "out", first=first)

    def mail_flows(self, node: MxNode, rcpt: str = "mario.rossi@tifpa.example.org") -> None:
        before = len(self.sink.received(rcpt))
        assert send(node.postfix.port, "127.0.0.1", SENDER, rcpt).startswith("250 "), node.postfix.log()
        wait_for(lambda: len(self.sink.received(rcpt)) > before, 30, f"{node.name} to relay the message")

    def stop(self) -> None:
        for node in (self.mx1, self.mx2):
            node.stop()
        self.sink.stop()


def rcpt(node: MxNode, address: str) -> str:
    session = smtp_session(node.postfix.port, "127.0.0.1")
    try:
        return rcpt_reply(session, SENDER, address)
    finally:
        session.quit()


def state(node: MxNode) -> dict:
    return json.loads(node.state_file.read_text())


@pytest.fixture(scope="module")
def pair():
    """Both nodes running the first publish, P0; mx2 took it from mx1's record (hold 0)."""
    base = Path(tempfile.mkdtemp(prefix="mailgw-rollout-"))
    base.chmod(0o755)
    pair = Pair(base)
    try:
        pair.first = pair.publish("the first fleet")
        for node in (pair.mx1, pair.mx2):
            run = pair.apply(node)
            assert run.code == CHANGES, run.out + run.err
        yield pair
    finally:
        pair.stop()
        rmtree(base)


def test_both_nodes_run_the_first_publish_and_record_it(pair):
    for node in (pair.mx1, pair.mx2):
        recorded = state(node)
        assert (recorded["revision"], recorded["status"], recorded["last_healthy"]) == (
            pair.first,
            "healthy",
            pair.first,
        )
        assert json.loads((node.records / f"{node.name}.json").read_text()) == recorded
        assert rcpt(node, "nobody@tifpa.example.org").startswith("550 5.1.1 ")
        pair.mail_flows(node)


def test_a_good_change_reaches_mx1_then_mx2_after_the_hold(pair):
    """Goes on from both nodes at P0: R1 adds a recipient."""
    path = pair.root / TIFPA
    path.write_text(path.read_text() + f"  {NEWCOMER.split('@')[0]}: narrivo\n")
    good = pair.publish("tifpa: a newcomer")

    first = pair.apply(pair.mx1)
    assert first.code == CHANGES, first.out + first.err
    assert state(pair.mx1)["revision"] == good and state(pair.mx1)["status"] == "healthy"
    assert rcpt(pair.mx1, NEWCOMER).startswith("250 ")

    # mx1 has run it for seconds, not an hour; the run changes nothing (and the fact says what mx2 runs).
    early = pair.apply(pair.mx2, hold=3600, first=f"notice(\"{FACT}: ${{facts['{FACT}']}}\")\n")
    assert early.code == NO_CHANGES, early.out + early.err
    assert f"{FACT}: {{node => mx2.gw.example.org, revision => {pair.first}, status => healthy" in early.out
    assert state(pair.mx2)["revision"] == pair.first
    assert rcpt(pair.mx2, NEWCOMER).startswith("550 5.1.1 "), "mx2 still runs P0"
    pair.mail_flows(pair.mx2)

    time.sleep(max(0.0, state(pair.mx1)["since"] + 2 - time.time()))
    after = pair.apply(pair.mx2, hold=2)
    assert after.code == CHANGES, after.out + after.err
    assert state(pair.mx2)["revision"] == good and state(pair.mx2)["status"] == "healthy"
    assert rcpt(pair.mx2, NEWCOMER).startswith("250 ")
    pair.mail_flows(pair.mx2, NEWCOMER)


def tamper(pair: Pair, base: str, files: dict[str, bytes], message: str) -> str:
    """A signed commit of `base`'s out/ with `files` changed and MANIFEST.json recomputed: only the checks tell."""
    pair.repo.git.checkout(base, "--", "out")
    add_artifacts(pair.root / "out", files)
    return commit_signed(pair.repo, message, pair.key).hexsha


def test_bad_changes_are_rolled_back_on_mx1_and_never_reach_mx2(pair):
    """Goes on from both nodes at one healthy revision, R1.

    R2's main.cf refuses every recipient: Postfix's own check passes it, the health check after the
    deployment does not. R3, published before mx1's next run, has a main.cf that Postfix's check
    refuses before it is deployed (and a new Rspamd file, which is). Both count as failed on mx1, whose
    next run puts R1 back whole; mx2 never leaves R1, and mail flows through it all along.
    """
    good = state(pair.mx1)["revision"]
    assert state(pair.mx2)["revision"] == good
    main_cf = (pair.root / "out/postfix/main.cf").read_bytes()
    refusing = main_cf.replace(b"smtpd_recipient_restrictions =\n", b"smtpd_recipient_restrictions =\n    reject,\n")
    assert refusing != main_cf
    r2 = tamper(pair, good, {"postfix/main.cf": refusing}, "a main.cf that refuses all mail")

    failed = pair.apply(pair.mx1)
    assert failed.code & FAILURES, failed.out + failed.err
    assert f"revision {r2} failed its health checks right after it was deployed" in failed.out
    assert "smtp: RCPT TO:<" in failed.out
    assert (state(pair.mx1)["status"], state(pair.mx1)["bad"]) == ("failed", [r2])
    assert rcpt(pair.mx1, "mario.rossi@tifpa.example.org").startswith("554 "), "mx1 did run R2"
    pair.mail_flows(pair.mx2)

    held = pair.apply(pair.mx2, hold=0)
    assert held.code == NO_CHANGES, held.out + held.err
    assert state(pair.mx2)["revision"] == good, "mx2 never takes a revision mx1 found bad"
    pair.mail_flows(pair.mx2)

    extra = "rspamd/local.d/rollout_test.conf"
    r3 = tamper(pair, good, {extra: b"# came with R3\n", "postfix/main.cf": main_cf + b"not a parameter\n"}, "R3")
    refused = pair.apply(pair.mx1)
    assert refused.code & FAILURES, refused.out + refused.err
    assert f"revision {r3} was refused by its check before it was deployed" in refused.out + refused.err
    assert state(pair.mx1)["bad"] == [r2, r3]
    assert (pair.mx1.root / "etc/rspamd/local.d/rollout_test.conf").exists(), "the rest of R3 went out"

    back = pair.apply(pair.mx1)
    assert back.code == CHANGES, back.out + back.err
    assert f"revision {r3} failed its checks; this node deploys {good}" in back.out + back.err
    assert (pair.mx1.config_dir / "main.cf").read_bytes() == main_cf, "R1's main.cf is back"
    assert not (pair.mx1.root / "etc/rspamd/local.d/rollout_test.conf").exists(), "R3's file is gone"
    assert (state(pair.mx1)["revision"], state(pair.mx1)["status"]) == (good, "healthy")
    assert rcpt(pair.mx1, NEWCOMER).startswith("250 ")
    pair.mail_flows(pair.mx1)
    pair.mail_flows(pair.mx2)


def test_an_unsigned_commit_is_refused_and_nothing_moves(pair):
    """Goes on from mx1 healthy at R1: someone with write access to the repository commits out/ unsigned."""
    before = pair.mx1.snapshot()
    pair.repo.git.checkout(state(pair.mx1)["revision"], "--", "out")
    add_artifacts(pair.root / "out", {"postfix/relay_domains": b"evil.example.net\tOK\n"})
    unsigned = commit_signed(pair.repo, "out/ by hand", None).hexsha
    run = pair.apply(pair.mx1)
    assert run.code == COMPILE_FAILED, run.out + run.err
    assert f"commit {unsigned} is not signed; only a published (signed) commit is deployed" in run.err
    assert pair.mx1.snapshot() == before
    pair.mail_flows(pair.mx1)
