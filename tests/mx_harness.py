"""A private Postfix instance on loopback and the SMTP/LMTP sinks it delivers to, for the end-to-end tests.

Every wait is bounded; everything started here is stopped by the caller's
fixture through stop().
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from compiler import values
from compiler.targets.postfix import FORWARD_MAP, MAPS
from compiler.targets.postfix_config import CIDR_TABLES
from tests.conftest import program

LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def sites_on_loopback():
    """While compiling a test fleet: its sites' next hops and relays may be this machine's loopback.

    A real fleet never may (values.NODE_NETWORKS: loopback is the MX node itself); a test fleet's
    sites are sinks and clients on 127.0.0.x. Only the grammar's refusal changes: every artifact is
    what the compiler writes for these declarations.
    """
    kept = {kind: tuple(net for net in nets if not net.is_loopback) for kind, nets in values.NODE_NETWORKS.items()}
    with mock.patch.dict(values.NODE_NETWORKS, kept):
        yield


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll until predicate() is true (returns its value) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class Message:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes = b""


@dataclass(frozen=True)
class RcptAttempt:
    mail_from: str
    rcpt: str
    accepted: bool


class Sink:
    """An SMTP (or LMTP) server on 127.0.0.1 standing in for a site's relay or the internet.

    It records every RCPT TO and every message; with `known`, it refuses
    every other recipient with 550 5.1.1, as a site's relay does.
    """

    def __init__(self, name: str, *, lmtp: bool = False, known: set[str] | None = None):
        self.name, self.lmtp, self.known = name, lmtp, known
        self.data_delay = 0.0  # seconds before the answer to DATA: a slow site, to hold a client mid-send
        self.messages: list[Message] = []
        self.rcpts: list[RcptAttempt] = []
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"sink-{name}", daemon=True)
        self._thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(timeout=10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _listen(self):
        protocol = LMTP if self.lmtp else SMTP
        # A fixed host name: the default would ask the resolver for this machine's name.
        return await self.loop.create_server(lambda: protocol(self, hostname=f"{self.name}.sink.test"), LOOPBACK, 0)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        accepted = self.known is None or address.lower() in self.known
        with self._lock:
            self.rcpts.append(RcptAttempt(envelope.mail_from, address, accepted))
        if not accepted:
            return f"550 5.1.1 <{address}>: no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(self.data_delay)
        with self._lock:
            self.messages.append(Message(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.original_content))
        # LMTP answers DATA once per recipient (RFC 2033 4.2).
        return "\r\n".join(["250 2.0.0 OK"] * (len(envelope.rcpt_tos) if self.lmtp else 1))

    def received(self, rcpt: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if rcpt in m.rcpt_tos]

    def saw_rcpt(self, rcpt: str) -> list[RcptAttempt]:
        with self._lock:
            return [a for a in self.rcpts if a.rcpt.lower() == rcpt.lower()]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


class PostfixInstance:
    """A Postfix with its own config, queue and data directories under `base`, listening on one loopback port."""

    QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

    def __init__(self, base: Path):
        self.base = base
        self.conf, self.queue, self.data = base / "conf", base / "queue", base / "data"
        self.maillog = base / "log" / "maillog"
        self.port = free_port()
        self.started = False

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)

    def postconf(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(program("postconf"), "-c", str(self.conf), *args)

    def log(self) -> str:
        return self.maillog.read_text() if self.maillog.exists() else ""

    def start(self) -> None:
        done = self.run(program("postfix"), "-c", str(self.conf), "start")
        assert done.returncode == 0, f"postfix start failed:\n{done.stderr}\n{self.log()}"
        self.started = True
        wait_for(self._listening, 30, f"Postfix to listen on {LOOPBACK}:{self.port}")

    def _listening(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1):
                return True
        except OSError:
            return False

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """postfix stop, waited for; the master we started is killed only if it does not stop."""
        if not self.started:
            return
        pid = self.master_pid()
        self.run(program("postfix"), "-c", str(self.conf), "stop")
        if pid is not None:
            try:
                wait_for(lambda: not _alive(pid), 20, "the Postfix master to exit")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)
        self.started = False

    def queue_files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.queue))
            for name in self.QUEUES
            for p in (self.queue / name).rglob("*")
            if p.is_file()
        )

    def queue_listing(self) -> str:
        return self.run(program("postqueue"), "-c", str(self.conf), "-p").stdout

    def wait_for_empty_queue(self, timeout: float = 30) -> None:
        wait_for(lambda: not self.queue_files(), timeout, "the Postfix queue to empty")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def install(instance: PostfixInstance, out: Path, *, internet_port: int, milter: str | None) -> None:
    """Copy out/postfix onto the instance as Puppet does on a node, then apply the test-only overrides.

    The overrides, and why, are listed in docs/mx.md. `milter` is smtpd_milters
    for this instance: empty for no filtering, the test Rspamd's milter, or None
    to keep the generated one (Rspamd's socket in /run/rspamd).
    """
    maps = instance.conf / "mailgw"
    maps.mkdir(parents=True)
    for name in ("main.cf", "master.cf"):
        shutil.copy(out / "postfix" / name, instance.conf / name)
    for name in MAPS + CIDR_TABLES:
        shutil.copy(out / "postfix" / name, maps / name)
    instance.queue.mkdir()
    instance.data.mkdir()
    instance.maillog.parent.mkdir()
    shutil.chown(instance.data, "postfix")
    master = (instance.conf / "master.cf").read_text()
    assert len(re.findall(r"^smtp +inet ", master, flags=re.M)) == 1
    (instance.conf / "master.cf").write_text(
        re.sub(r"^smtp( +inet )", rf"127.0.0.1:{instance.port}\1", master, flags=re.M)
    )
    done = instance.postconf(
        "-e",
        f"queue_directory = {instance.queue}",
        f"data_directory = {instance.data}",
        "inet_interfaces = 127.0.0.1",
        "myhostname = mx1.gw.example.org",
        f"relayhost = [127.0.0.1]:{internet_port}",
        "smtpd_peername_lookup = no",
        f"maillog_file = {instance.maillog}",
        f"maillog_file_prefixes = {instance.base}",
        *([] if milter is None else [f"smtpd_milters = {milter}"]),
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    age(instance.conf / "main.cf", instance.conf / "master.cf")
    for name in MAPS:
        done = instance.run(program("postmap"), "-c", str(instance.conf), f"lmdb:{maps / name}")
        assert done.returncode == 0 and done.stderr == "", done.stderr
    # The node's key and certificate, which Puppet installs in production (main.cf names tls/mx.pem).
    (instance.conf / "tls").mkdir()
    key, cert = instance.base / "key.pem", instance.base / "cert.pem"
    done = instance.run(
        program("openssl"),
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=mx1.gw.example.org",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    )
    assert done.returncode == 0, done.stderr
    (instance.conf / "tls" / "mx.pem").write_bytes(key.read_bytes() + cert.read_bytes())


def smtp_session(port: int, client_ip: str, helo: str = "client.example.net") -> smtplib.SMTP:
    """An SMTP session to the instance from `client_ip` (a 127.0.0.x address), after EHLO."""
    session = smtplib.SMTP(timeout=30, source_address=(client_ip, 0))
    session._host = LOOPBACK  # for STARTTLS's server_hostname
    code, banner = session.connect(LOOPBACK, port)
    if code != 220:
        session.close()
        raise smtplib.SMTPConnectError(code, banner)
    session.ehlo(helo)
    return session


def rcpt_reply(session: smtplib.SMTP, sender: str, rcpt: str) -> str:
    """The server's whole reply to RCPT TO, as one line: '550 5.1.1 <...>: ...'."""
    code, _ = session.mail(sender)
    assert code == 250, f"MAIL FROM:<{sender}> refused with {code}"
    code, text = session.rcpt(rcpt)
    return f"{code} {text.decode()}"


def send(port: int, client_ip: str, sender: str, rcpt: str, helo: str = "client.example.net") -> str:
    """One message to one recipient; returns the RCPT TO reply (and sends the data when accepted)."""
    session = smtp_session(port, client_ip, helo)
    try:
        reply = rcpt_reply(session, sender, rcpt)
        if reply.startswith("250"):
            code, text = session.data(f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: test\r\n\r\nhello\r\n")
            assert code == 250, f"DATA refused: {code} {text!r}"
        return reply
    finally:
        session.quit()


def age(*paths: Path) -> None:
    """Date files a minute back: Postfix re-reads (and waits on) a main.cf changed in the last seconds."""
    then = time.time() - 60
    for path in paths:
        os.utime(path, (then, then))


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --- forwarded mail: postsrsd and the forwarding pass's own map (docs/mx.md) -------------------------------


def start_postsrsd(out: Path) -> subprocess.Popen:
    """postsrsd as Debian's init script starts it from /etc/default/postsrsd (out/srs/postsrsd).

    In the foreground and without its chroot and user (the package creates those on a node).
    """
    settings = dict(line.split("=", 1) for line in (out / "srs/postsrsd").read_text().splitlines() if line[:1] != "#")
    return subprocess.Popen(
        [
            program("postsrsd"),
            f"-s{settings['SRS_SECRET']}",
            f"-d{settings['SRS_DOMAIN']}",
            f"-a{settings['SRS_SEPARATOR']}",
            f"-n{settings['SRS_HASHLENGTH']}",
            f"-N{settings['SRS_HASHMIN']}",
            f"-l{settings['SRS_LISTEN_ADDR']}",
            f"-f{settings['SRS_FORWARD_PORT']}",
            f"-r{settings['SRS_REVERSE_PORT']}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_postsrsd(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def install_forward_map(instance: PostfixInstance, out: Path) -> None:
    """install() places the maps every fleet has; the forwarding pass's own is placed the same way."""
    shutil.copy(out / "postfix" / FORWARD_MAP, instance.conf / "mailgw" / FORWARD_MAP)
    done = instance.run(program("postmap"), "-c", str(instance.conf), f"lmdb:{instance.conf / 'mailgw' / FORWARD_MAP}")
    assert done.returncode == 0 and done.stderr == "", done.stderr
