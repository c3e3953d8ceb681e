"""The node's milter check (files/rollout.rb, `milter`: the milters main.cf names), run with a settings JSON.

Against a real Rspamd: its proxy worker starts on its TCP address only, and the node's main.cf names that
address (a revision from before the socket, or one put back): the check passes there. Then the deployment
is played as Puppet plays it: the new main.cf names the unix socket; Rspamd's configuration gains it (the
two bind_socket lines of the generated worker-proxy.inc) and Rspamd is reloaded (SIGHUP). The gate of the
new main.cf, started before the reload, finds no socket and retries until Rspamd has re-read its
configuration and answers there, and only then lets main.cf be deployed; the check then passes on it.
The failures are plain listeners and missing sockets: what is not a milter fails at once, what a restarting
Rspamd would do is retried until the timeout, and either way the revision is marked failed on the node,
which is what makes the next Puppet run put the last healthy one back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests import rspamd_env as env
from tests.conftest import REPO, program

pytestmark = pytest.mark.needs("ruby")

ROLLOUT = REPO / "deploy/puppet/mailgw/files/rollout.rb"
NODE, REVISION = "mx1.gw.example.org", "5b1c0de4"


def main_cf(directory: Path, milters: str) -> Path:
    """A Postfix configuration directory whose main.cf names `milters`: what the check reads, with postconf."""
    directory.mkdir(parents=True, exist_ok=True)
    # myhostname as every node's main.cf has it: without it postconf asks DNS for the host's name first.
    (directory / "main.cf").write_text(f"myhostname = mx1.gw.example.org\nsmtpd_milters = {milters}\n")
    (directory / "master.cf").write_text("")
    return directory


def settings(base: Path, live: Path, timeout: int) -> Path:
    """A node's rollout settings with the milter check only (the other checks are off when their key is absent)."""
    path = base / "rollout-settings.json"
    path.write_text(
        json.dumps(
            {
                "state": str(base / "rollout.json"),
                "node": NODE,
                "revision": REVISION,
                "postfix_config": str(live),
                "postconf": [program("postconf")],
                "milter": True,
                "timeout": timeout,
                "settle": 0,
            }
        )
    )
    return path


def rollout(mode: str, path: Path, *command: str, candidate: Path | None = None) -> subprocess.CompletedProcess:
    """rollout.rb MODE; `candidate`: the staged configuration the gate runs with (Puppet's MAIL_CONFIG)."""
    environment = {**os.environ, "MAIL_CONFIG": str(candidate)} if candidate else None
    return subprocess.run(
        [program("ruby"), str(ROLLOUT), mode, str(path), *command],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )


def state(path: Path) -> dict:
    return json.loads((path.parent / "rollout.json").read_text())


def optneg(port: int) -> bytes:
    """SMFIC_OPTNEG (milter protocol 6, every action, no step skipped) on a TCP address: the command answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(env._packet(b"O", (6).to_bytes(4, "big") + (0x1FF).to_bytes(4, "big") + bytes(4)))
        command, _ = env._read_packet(sock)
        sock.sendall(env._packet(b"Q"))
        return command


@pytest.fixture
def rspamd(hs_cache, tmp_path):
    """Rspamd with Debian's stock configuration (nothing generated: only the milter matters here) on free ports."""
    (tmp_path / "out").mkdir()
    tree = env.config_tree(tmp_path / "out", tmp_path / "rspamd", hs_cache=hs_cache)
    with env.Rspamd(tree) as daemon:
        yield daemon


@pytest.mark.needs("rspamd")
def test_the_milter_main_cf_names_is_checked_and_a_new_main_cf_waits_for_its_socket(rspamd, tmp_path):
    """The deployment of the socket, as Puppet plays it, and the revision before it (or put back) on TCP."""
    milter = rspamd.tree.root / "run" / "milter.sock"
    assert len(str(milter)) < 100, "a unix socket's path is limited to 107 bytes"
    tcp = f"inet:127.0.0.1:{rspamd.proxy_port}"
    live = main_cf(tmp_path / "live", tcp)  # the revision deployed: main.cf names the TCP address
    path = settings(tmp_path, live, timeout=60)
    healthy = rollout("healthy", path)  # Puppet's `unless`: one try, no retry
    assert "milter" not in healthy.stderr and state_absent(path), "no state yet, but the milter answered on TCP"
    check = rollout("check", path)
    assert check.returncode == 0, check.stdout + check.stderr

    # The new revision: its main.cf names the socket, which Rspamd binds only after its reload.
    candidate = main_cf(tmp_path / "staged", f"unix:{milter}")
    checked = tmp_path / "postfix-checked"
    gate = subprocess.Popen(
        [program("ruby"), str(ROLLOUT), "gate", str(path), "--", "/bin/sh", "-c", f"touch {checked}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MAIL_CONFIG": str(candidate)},
    )
    try:
        time.sleep(1.5)
        assert gate.poll() is None and checked.exists(), "main.cf passed its check, and waits for the milter"
        assert not milter.exists()
        # The generated worker-proxy.inc's two addresses; override.d replaces the stock bind_socket.
        with open(rspamd.tree.conf / "override.d" / "worker-proxy.inc", "a") as proxy:
            proxy.write(f'bind_socket = "127.0.0.1:{rspamd.proxy_port}";\nbind_socket = "{milter} mode=0666";\n')
        os.kill(rspamd.process.pid, signal.SIGHUP)  # what `systemctl reload rspamd` sends
        out, err = gate.communicate(timeout=90)
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.wait()
    assert gate.returncode == 0, out + err
    assert f"accepted milter connection from {milter}" in rspamd.tree.log.read_text(errors="replace")

    main_cf(live, f"unix:{milter}")  # Puppet deploys the new main.cf
    check = rollout("check", path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"mailgw: revision {REVISION} is healthy on {NODE}" in check.stdout
    assert (state(path)["status"], state(path)["last_healthy"]) == ("healthy", REVISION)
    assert optneg(rspamd.proxy_port) == b"O", "the TCP address stays, for a Postfix not reloaded yet"


def state_absent(path: Path) -> bool:
    return not (path.parent / "rollout.json").exists()


class Listener:
    """A unix socket that is not a milter: it reads what comes, sends `answer` (None: nothing), and closes."""

    def __init__(self, path: Path, answer: bytes | None):
        self.answer, self.connections = answer, 0
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with connection:
                connection.recv(64)
                if self.answer is not None:
                    connection.sendall(self.answer)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=10)


def stale_socket(path: Path) -> None:
    """A socket file nobody listens on any more: what a stopped daemon leaves."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


# (what is on the socket, the failure the check reports, whether it retried until the timeout)
FAILURES = {
    "no socket": (None, "No such file or directory", True),
    "a stale socket": (stale_socket, "Connection refused", True),
    "a listener that closes": (b"", "the connection closed before the option negotiation", True),
    "an SMTP server": (
        b"220 mx1.gw.example.org ESMTP\r\n",
        'answered "220 mx1.gw.example.org ESMTP\\r\\n", not the milter protocol\'s option negotiation',
        False,
    ),
    "a milter that answers tempfail": (
        b"\0\0\0\x01t",
        'answered "\\x00\\x00\\x00\\x01t", not the milter protocol\'s option negotiation',
        False,
    ),
}


@pytest.mark.parametrize("case", FAILURES)
def test_a_socket_that_is_not_a_working_milter_fails_the_revision(case, tmp_path):
    there, failure, retried = FAILURES[case]
    milter = tmp_path / "milter.sock"
    live = main_cf(tmp_path / "live", f"unix:{milter}")
    listener = None
    if callable(there):
        there(milter)
    elif there is not None:
        listener = Listener(milter, there or None)
    try:
        run = rollout("check", settings(tmp_path, live, timeout=3 if retried else 60))
    finally:
        if listener is not None:
            listener.close()
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"revision {REVISION} failed its health checks right after it was deployed" in run.stderr
    problem = f"milter: unix:{milter}: {failure}" if retried else f"milter: unix:{milter} {failure}"
    assert [line for line in run.stderr.splitlines() if line.startswith(f"  {problem}")], run.stderr
    recorded = state(tmp_path / "rollout-settings.json")
    assert (recorded["status"], recorded["bad"]) == ("failed", [REVISION])
    assert recorded["why"][0].startswith(problem)
    if listener is not None:
        assert (listener.connections > 1) == retried, "retried while Rspamd might be restarting, and only then"


def test_the_gate_refuses_a_main_cf_whose_milter_never_answers(tmp_path):
    """The new main.cf passed `postfix check`, but no milter answers at the socket it names: it is not deployed."""
    milter = tmp_path / "milter.sock"
    live = main_cf(tmp_path / "live", "")  # the running revision names no milter: only the new one matters
    candidate = main_cf(tmp_path / "staged", f"unix:{milter}")
    path = settings(tmp_path, live, timeout=1)
    run = rollout("gate", path, "--", "/bin/true", candidate=candidate)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"revision {REVISION} was refused by its check before it was deployed" in run.stderr
    problem = f"milter: unix:{milter}: No such file or directory"
    assert [line for line in run.stderr.splitlines() if line.startswith(f"  {problem}")], run.stderr
    recorded = state(path)
    assert (recorded["status"], recorded["bad"], len(recorded["why"])) == ("failed", [REVISION], 1)
    assert recorded["why"][0].startswith(problem)


def test_a_main_cf_without_milters_has_nothing_to_check(tmp_path):
    run = rollout("check", settings(tmp_path, main_cf(tmp_path / "live", ""), timeout=1))
    assert run.returncode == 0, run.stdout + run.stderr
