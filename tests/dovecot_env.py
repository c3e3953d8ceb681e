"""A private Dovecot auth service and a private AAI directory for the submission tests.

AaiDirectory: a slapd (tests/slapd.py) holding the AAI's test users under
ou=people, on a unix socket in its own temporary directory. Its directory is
made traversable so that Dovecot's auth process (which runs as the 'dovecot'
user) reaches the socket.

DovecotAuth: `dovecot -F` on the generated out/dovecot/dovecot.conf, never the
system service. The generated file is used as it is, through a wrapper that
includes it and then moves what a node keeps under /run and /var/lib into the
test's directory (base_dir, state_dir) and logs to a file there (log_path);
the one path rewritten is where dovecot.conf finds the LDAP settings, which
Puppet puts in /etc/dovecot on a node. The auth socket Postfix talks to is
where gateway.yaml's submission.auth_socket says, in the test's directory too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from compiler.targets import dovecot
from tests.conftest import program
from tests.slapd import Slapd

START_TIMEOUT = 30
AAI_BASE = "dc=aai,dc=example,dc=org"
AAI_PEOPLE = f"ou=people,{AAI_BASE}"
# The AAI's users' entries: the standard 'account' and 'simpleSecurityObject' classes (cosine.schema).
AAI_FILTER = "(&(objectClass=account)(uid=%u))"


class AaiDirectory:
    """The AAI's LDAP directory: uid -> password, each user an entry under ou=people."""

    def __init__(self, users: dict[str, str]):
        self.server = Slapd(AAI_BASE)
        self.server.work.chmod(0o755)
        self.url = self.server.url
        self.server.start()
        entries = [
            f"dn: {AAI_BASE}\nobjectClass: dcObject\nobjectClass: organization\no: AAI\ndc: aai\n",
            f"dn: {AAI_PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        ]
        entries += [
            f"dn: uid={uid},{AAI_PEOPLE}\nobjectClass: account\nobjectClass: simpleSecurityObject\n"
            f"uid: {uid}\nuserPassword: {password}\n"
            for uid, password in users.items()
        ]
        self.server.add("\n".join(entries).encode())

    def close(self) -> None:
        self.server.close()


def ldapi_uri(path: Path) -> str:
    return "ldapi://" + quote(str(path), safe="")


class DovecotAuth:
    """Dovecot on the generated configuration in `base` (a directory of its own, traversable by 'postfix')."""

    def __init__(self, out: Path, base: Path):
        self.base = base
        self.conf = base / "conf"
        self.log = base / "dovecot.log"
        self.process: subprocess.Popen | None = None
        self.conf.mkdir(parents=True)
        generated = (out / "dovecot" / dovecot.CONFIG).read_text()
        node_path = f"{dovecot.CONFIG_DIRECTORY}/{dovecot.LDAP_SETTINGS}"
        assert generated.count(node_path) == 1
        (self.conf / dovecot.CONFIG).write_text(generated.replace(node_path, str(self.conf / dovecot.LDAP_SETTINGS)))
        shutil.copy(out / "dovecot" / dovecot.LDAP_SETTINGS, self.conf / dovecot.LDAP_SETTINGS)
        (self.conf / "test.conf").write_text(
            f"!include {self.conf / dovecot.CONFIG}\n"
            f"base_dir = {base / 'run'}\nstate_dir = {base / 'state'}\nlog_path = {self.log}\n"
        )

    def doveconf(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [program("doveconf"), "-c", str(self.conf / "test.conf"), *args], capture_output=True, text=True, timeout=60
        )

    def start(self, auth_socket: Path) -> DovecotAuth:
        self.auth_socket = auth_socket
        self.process = subprocess.Popen(
            [program("dovecot"), "-F", "-c", str(self.conf / "test.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.base / "stderr", "wb"),  # noqa: SIM115 (the child keeps it)
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not start:\n{self.read_log()}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        """The auth socket greets a client with its version line (Dovecot's auth protocol)."""
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(str(self.auth_socket))
                sock.sendall(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
                return sock.recv(64).startswith(b"VERSION")
        except OSError:
            return False

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def private_directory(prefix: str) -> Path:
    """A temporary directory the 'postfix' and 'dovecot' users may traverse (pytest's tmp_path is private)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path
