"""The quarantine portal's test helpers: the portal as a real uvicorn process, a real OpenID provider,
the gateway's directory in a real slapd, a real PostgreSQL, and signing in over HTTP.

Everything listens on loopback (or a unix socket) in a private temporary
directory, and is stopped by the fixture that started it, by its pid.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tests.conftest import REPO, program
from tests.slapd import Slapd

# The server's own programs (initdb, pg_ctl) are not on PATH in Debian: the newest installed version's.
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), default=Path("/nonexistent"))
READER_PASSWORD = "reader-secret"
INGEST_USER = "rspamd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: exited with {process.returncode}\n{_tail(log)}")
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not ready after {timeout}s\n{_tail(log)}")


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop_process(process: subprocess.Popen | None) -> None:
    """SIGTERM to the process group we started, SIGKILL if it does not go."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 (its own CA)."""

    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path, name: str = "tls") -> Certificate:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        subprocess.run(
            [
                program("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout", str(key), "-out", str(cert),
            ],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return cls(cert, key)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


# --- the OpenID provider ------------------------------------------------------------------


class OidcProvider:
    """oidc-provider-mock over HTTPS on loopback, in a thread: sign-in with any 'sub', claims set per user."""

    def __init__(self, root: Path):
        import oidc_provider_mock
        import werkzeug.serving

        self.tls = Certificate.make(root, "oidc")
        self.port = free_port()
        self.server = werkzeug.serving.make_server(
            "127.0.0.1",
            self.port,
            oidc_provider_mock.app(require_nonce=False),
            threaded=True,
            ssl_context=(str(self.tls.cert), str(self.tls.key)),
        )
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def add_user(self, sub: str, **claims: Any) -> None:
        reply = httpx.put(f"{self.issuer}/users/{quote(sub)}", json=claims, verify=self.tls.context())
        assert reply.status_code == 204, reply.text

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


# --- the directory --------------------------------------------------------------------------


class Directory:
    """A real slapd (tests/slapd.py) with a directory.ldif and the portal's reader identity."""

    def __init__(self, directory: bytes, base_dn: str):
        self.slapd = Slapd(base_dn)
        self.base_dn = base_dn
        try:
            loaded = self.slapd.slapadd(directory)
            assert loaded.returncode == 0, loaded.stderr.decode(errors="replace")
            self.slapd.start()
            self.slapd.add(
                f"dn: cn=reader,{base_dn}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
                f"cn: reader\nuserPassword: {READER_PASSWORD}\n".encode()
            )
        except BaseException:
            self.slapd.close()
            raise

    @property
    def uri(self) -> str:
        return self.slapd.url

    def close(self) -> None:
        self.slapd.close()


# --- PostgreSQL -----------------------------------------------------------------------------


class Postgres:
    """A PostgreSQL cluster of its own (Debian's binaries), as the user 'postgres', on a unix socket."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="mailgw-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        self.log = self.root / "postgres.log"
        self.started = False
        self._as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"])
        self.start()

    def start(self) -> None:
        options = f"-k {self.root} -p {self.port} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                           "start"])  # fmt: skip
        self.started = True

    def stop(self) -> None:
        if self.started:
            self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
            self.started = False

    def _as_postgres(self, argv: list[str]) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}{_tail(self.log)}"
        return done

    def create_database(self, name: str) -> str:
        self._as_postgres([str(PG_BIN / "createdb"), "-h", str(self.root), "-p", str(self.port), "-U", "postgres",
                           name])  # fmt: skip
        return f"postgresql+psycopg://postgres@/{name}?host={self.root}&port={self.port}"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# --- the portal -------------------------------------------------------------------------------


@dataclass
class Portal:
    """`mailgw-portal serve` as a real uvicorn process over TLS, with a configuration of out/portal/portal.json."""

    root: Path
    document: dict[str, Any]  # portal.json as `mailgw build` wrote it
    oidc: OidcProvider
    directory: Directory
    release: tuple[str, int]
    database_url: str | None = None  # None: SQLite in the store directory
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.tls = Certificate.make(self.root, "portal")
        secrets_dir = self.root / "secrets"
        secrets_dir.mkdir(exist_ok=True)
        self.ingest_password = base64.urlsafe_b64encode(os.urandom(18)).decode()
        files = {
            "ingest": self.ingest_password,
            "oidc": "any-client-secret",
            "ldap": READER_PASSWORD,
            "session": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        }
        for name, value in files.items():
            (secrets_dir / name).write_text(value + "\n")
        if self.database_url is not None:
            (secrets_dir / "database").write_text(self.database_url + "\n")
        document = json.loads(json.dumps(self.document))
        document["public_url"] = self.url
        document["oidc"].update(issuer=self.oidc.issuer, client_secret_file=str(secrets_dir / "oidc"))
        document["ldap"].update(uri=self.directory.uri, reader_password_file=str(secrets_dir / "ldap"))
        document["ingest"]["password_file"] = str(secrets_dir / "ingest")
        document["release"] = {"host": self.release[0], "port": self.release[1]}
        document.update(
            store_directory=str(self.root / "store"),
            database_url_file=str(secrets_dir / "database"),
            session_secret_file=str(secrets_dir / "session"),
        )
        (self.root / "store").mkdir(exist_ok=True)
        self.config = self.root / "portal.json"
        self.config.write_text(json.dumps(document, indent=2))
        # The shared session key: a second portal on the same files accepts this one's sessions.

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ingest_url(self) -> str:
        return self.url + self.document["ingest"]["path"]

    def command(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "portal", "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=120, env=self.env, cwd=REPO,
        )  # fmt: skip

    @property
    def env(self) -> dict[str, str]:
        # The OIDC provider's certificate is the CA the portal's HTTP client trusts.
        return {**os.environ, "SSL_CERT_FILE": str(self.oidc.tls.cert)}

    def start(self) -> Portal:
        log = self.root / "portal.log"
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "portal", "--config", str(self.config), "serve", "--host", "127.0.0.1",
                    "--port", str(self.port), "--certfile", str(self.tls.cert), "--keyfile", str(self.tls.key),
                ],
                stdout=output, stderr=subprocess.STDOUT, env=self.env, cwd=REPO, start_new_session=True,
            )  # fmt: skip
        wait_until(self._healthy, 60, "the portal", self.process, log)
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", verify=self.tls.context(), timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def log(self) -> str:
        return _tail(self.root / "portal.log", 200)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.tls.context(), timeout=30)

    def post(
        self,
        message: bytes,
        rcpt: list[str],
        sender: str,
        *,
        auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST as Rspamd's metadata_exporter does (see templates/rspamd/metadata_exporter.conf.j2)."""
        sent = {
            "Content-Type": "message/rfc822",
            "X-Rspamd-rcpt": json.dumps(rcpt),
            "X-Rspamd-from": sender,
            "X-Rspamd-score": "1000.00",
            "X-Rspamd-symbols": json.dumps([{"name": "GTUBE", "score": 1000}]),
            "X-Rspamd-ip": "192.0.2.10",
            **(headers or {}),
        }
        with self.client() as client:
            return client.post(
                self.document["ingest"]["path"],
                content=message,
                headers=sent,
                auth=auth if auth is not None else (INGEST_USER, self.ingest_password),
            )

    @contextlib.contextmanager
    def sign_in(self, sub: str) -> Iterator[httpx.Client]:
        """A client signed in as `sub` through the OpenID provider's form (the user types their name)."""
        with self.client() as client:
            self._sign_in(client, sub)
            yield client

    def _sign_in(self, client: httpx.Client, sub: str) -> None:
        reply = client.get("/login")
        assert reply.status_code in (302, 303), reply.text
        authorize = reply.headers["location"]
        assert authorize.startswith(self.oidc.issuer), authorize
        answer = httpx.post(authorize, data={"sub": sub}, verify=self.oidc.tls.context(), follow_redirects=False)
        assert answer.status_code in (302, 303), answer.text
        back = client.get(answer.headers["location"])
        assert back.status_code == 303 and back.headers["location"] == "/", back.text


def held_message(
    sender: str, to: list[str], subject: str = "test message", body: str = "spam, spam, spam\r\n"
) -> bytes:
    message_id = base64.b32encode(os.urandom(10)).decode().lower()
    return (
        "Received: from mail.sender.example.net (mail.sender.example.net [192.0.2.10])\r\n"
        "\tby mx1.gw.example.org\r\n"
        f"From: <{sender}>\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{message_id}@sender.example.net>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


def prefixed(message: bytes, days: int = 30, direction: str = "inbound", virus: str | None = None) -> bytes:
    """The lines the exporter's formatter puts in front of the message."""
    head = f"X-Quarantine-Retention-Days: {days}\r\nX-Quarantine-Direction: {direction}\r\n"
    if virus:
        head += f"X-Virus: infected, {virus}\r\n"
    return head.encode() + message
