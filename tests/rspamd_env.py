"""Real Rspamd and clamd for the tests: private config trees, free loopback ports, bounded waits.

The tree is Debian's stock /etc/rspamd with the generated local.d/ and maps.d/
over it, plus a small offline overlay that keeps every request on loopback:
DNS goes to a closed local port (lookups fail at once instead of reaching the
Internet), fuzzy_check is off (it resolves its public servers while loading),
hfilter is off (it scores DNS answers, which offline vary from scan to scan),
and the workers listen on free ports. Nothing else of the stock setup changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import email.utils
import fcntl
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import program

STOCK = Path("/etc/rspamd")
START_TIMEOUT = 60
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
# Only this database is loaded: a signature for the EICAR test string, under our own name.
VIRUS_NAME = "Mailgw.Test.EICAR"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(condition, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout}s:\n{_tail(log)}")


def _tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# --- a private network: loopback of our own ----------------------------------------

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


@contextlib.contextmanager
def private_network() -> Iterator[None]:
    """Move the calling thread into a new network namespace (root only) with its own loopback, and back.

    Processes and threads started meanwhile stay in it: daemons there may use
    fixed ports (Rspamd's stock 11332-11334) that nothing outside can hold or
    reach, neither another test run nor a system Rspamd.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET): " + os.strerror(ctypes.get_errno()))
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # ip link set lo up
                flags = struct.unpack("16sh22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack("16sh22x", b"lo", 0)))[1]
                fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))
            yield
        finally:
            if libc.setns(original, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the test run's network namespace")
    finally:
        os.close(original)


# --- the configuration tree ---------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def log(self) -> Path:
        return self.root / "log" / "rspamd.log"

    def variables(self) -> list[str]:
        dirs = {
            "CONFDIR": self.conf,
            "LOCAL_CONFDIR": self.conf,
            "DBDIR": self.root / "db",
            "RUNDIR": self.root / "run",
            "LOGDIR": self.root / "log",
        }
        return [f"--var={name}={path}" for name, path in dirs.items()]


# Test only: 'X-Test-Score: N' adds N points, to place a message between two thresholds.
TEST_SCORE_RULE = """\
rspamd_config:register_symbol({
  name = 'MAILGW_TEST_SCORE', score = 1.0, group = 'mailgw_test',
  callback = function(task)
    local points = tonumber(tostring(task:get_header('X-Test-Score') or ''))
    if points then return true, points end
    return false
  end,
})
"""


def config_tree(
    out: Path, dest: Path, *, ca_file: Path | None = None, hs_cache: Path | None = None, test_score: bool = False
) -> Tree:
    """Stock /etc/rspamd + out/rspamd/{local.d,maps.d} + the offline overlay, in dest.

    hs_cache: a directory kept between runs for Rspamd's compiled Hyperscan
    databases (the public suffix list alone takes about 20 s to compile).
    test_score: add the MAILGW_TEST_SCORE rule (TEST_SCORE_RULE).
    """
    tree = Tree(dest)
    # The stock files only: whatever this machine's admin put in local.d or override.d stays out.
    shutil.copytree(
        STOCK,
        tree.conf,
        ignore=lambda path, names: (
            names if Path(path).name in ("local.d", "override.d") and Path(path).parent == STOCK else []
        ),
    )
    for sub in ("local.d", "maps.d"):
        if (out / "rspamd" / sub).is_dir():
            shutil.copytree(out / "rspamd" / sub, tree.conf / sub, dirs_exist_ok=True)
    for sub in ("db", "run", "log"):
        (dest / sub).mkdir()
    closed = free_port(socket.SOCK_DGRAM)
    options = f'dns {{ nameserver = ["127.0.0.1:{closed}"]; timeout = 0.05s; retransmits = 0; }}\n'
    if ca_file is not None:
        options += f'ssl_ca_path = "{ca_file}";\n'
    if hs_cache is not None:
        options += f'hs_cache_dir = "{hs_cache}";\n'
    assert not (tree.conf / "local.d" / "options.inc").exists(), "the overlay would hide a generated file"
    (tree.conf / "local.d" / "options.inc").write_text(options)
    (tree.conf / "local.d" / "fuzzy_check.conf").write_text("enabled = false;\n")
    # hfilter scores what DNS says about the client's names: offline, a score that varies from scan to scan.
    (tree.conf / "local.d" / "hfilter.conf").write_text("enabled = false;\n")
    if test_score:
        (tree.conf / "rspamd.local.lua").write_text(TEST_SCORE_RULE)
    return tree


def configtest(tree: Tree) -> subprocess.CompletedProcess:
    return subprocess.run(
        [program("rspamadm"), *tree.variables(), "configtest", "-s", "-c", str(tree.conf / "rspamd.conf")],
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- a scanning rspamd ----------------------------------------------------------------


@dataclass
class Scan:
    action: str
    score: float
    subject: str | None
    smtp_message: str | None
    symbols: dict
    milter: dict
    rule: str | None  # the settings rule rspamd applied (from its log)

    def options(self, symbol: str) -> list[str]:
        return self.symbols.get(symbol, {}).get("options", [])


def _start(command: list[str], root: Path, pong, name: str, log: Path) -> subprocess.Popen:
    """Start a daemon in its own session, its output in ROOT/stderr; stopped again if it never answers."""
    with open(root / "stderr", "wb") as stderr:
        process = subprocess.Popen(command, stdout=stderr, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(pong, START_TIMEOUT, name, process, log)
    except BaseException:
        _stop(process)
        raise
    return process


# Where Debian's stock rspamd.conf binds the workers (localhost): the milter proxy, the normal worker it
# passes mail to, and the controller.
STOCK_PORTS = {"proxy": 11332, "normal": 11333, "controller": 11334}


class Rspamd:
    """rspamd -f on free loopback ports (normal worker, controller, milter proxy).

    stock_ports: keep the stock workers as they are (STOCK_PORTS), as on an MX
    node; only inside private_network(), where nothing else can hold them.
    """

    def __init__(self, tree: Tree, *, stock_ports: bool = False):
        self.tree = tree
        self.process: subprocess.Popen | None = None
        if stock_ports:
            self.port, self.controller_port = STOCK_PORTS["normal"], STOCK_PORTS["controller"]
            self.proxy_port = STOCK_PORTS["proxy"]
            return
        self.port, self.controller_port, self.proxy_port = free_port(), free_port(), free_port()
        for worker, port in (("normal", self.port), ("controller", self.controller_port), ("proxy", self.proxy_port)):
            (tree.conf / "override.d" / f"worker-{worker}.inc").write_text(f'bind_socket = "127.0.0.1:{port}";\n')
        # The stock milter proxy passes mail to a normal worker on localhost:11333; this one scans itself.
        with open(tree.conf / "override.d" / "worker-proxy.inc", "a") as proxy:
            proxy.write('upstream "local" { default = yes; self_scan = yes; }\n')

    def __enter__(self) -> Rspamd:
        command = [program("rspamd"), "-f", "-c", str(self.tree.conf / "rspamd.conf"), *self.tree.variables()]
        if os.geteuid() == 0:
            command.append("-i")  # rspamd refuses to run as root otherwise
        self.process = _start(command, self.tree.root, self._pong, "rspamd", self.tree.log)
        return self

    def __exit__(self, *exc) -> None:
        _stop(self.process)

    def _pong(self) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            connection.request("GET", "/ping")
            return connection.getresponse().read().strip() == b"pong"
        except OSError:
            return False

    def scan(
        self,
        message: bytes,
        *,
        rcpt: list[str],
        sender: str,
        ip: str = "192.0.2.10",
        headers: dict[str, str] | None = None,
    ) -> Scan:
        """POST /checkv2 with the envelope as request headers, as the milter proxy does."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.putrequest("POST", "/checkv2")
        request = [
            ("From", sender),
            ("IP", ip),
            ("Helo", "mail.sender.example.net"),
            ("Hostname", "mail.sender.example.net"),
            *[("Rcpt", r) for r in rcpt],
            *(headers or {}).items(),
            ("Content-Length", str(len(message))),
        ]
        for name, value in request:
            connection.putheader(name, value)
        connection.endheaders(message)
        reply = json.loads(connection.getresponse().read())
        message_id = reply.get("message-id")
        return Scan(
            reply["action"],
            reply["score"],
            reply.get("subject"),
            reply.get("messages", {}).get("smtp_message"),
            reply.get("symbols", {}),
            reply.get("milter", {}),
            self.applied_rule(message_id) if message_id else None,
        )

    def applied_rule(self, message_id: str) -> str | None:
        pattern = re.compile(rf"<{re.escape(message_id)}> apply static settings (\S+) ")
        found = pattern.findall(self.tree.log.read_text(errors="replace"))
        return found[-1] if found else None


# --- the milter protocol, as Postfix speaks it to the proxy worker -----------------------


@dataclass
class MilterReply:
    verdict: str  # accept | discard | reject | tempfail | reply
    reply: str | None  # the SMTP reply Postfix would send ('554 5.7.1 ...')
    headers: list[tuple[str, str, str]]  # (h)add, (m)change, (i)insert: (kind, name, value)


def _packet(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + command + data


def _read_packet(sock: socket.socket) -> tuple[bytes, bytes]:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("the milter closed the connection")
            data += chunk
        return data

    length = struct.unpack("!I", exactly(4))[0]
    packet = exactly(length)
    return packet[:1], packet[1:]


def milter_check(
    port: int,
    message: bytes,
    *,
    sender: str,
    rcpt: list[str],
    ip: str = "192.0.2.10",
    daemon_name: str = "mailgw_inbound",
    user: str | None = None,
) -> MilterReply:
    """One message through Rspamd's milter (protocol version 6, as Postfix's smtpd does it)."""
    z = b"\0"
    head, _, body = message.partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(_packet(b"O", struct.pack("!III", 6, 0x1FF, 0)))
        assert _read_packet(sock)[0] == b"O"
        commands = [
            _packet(b"D", b"C" + b"{daemon_name}" + z + daemon_name.encode() + z),
            _packet(b"C", b"mail.sender.example.net" + z + b"4" + struct.pack("!H", 25000) + ip.encode() + z),
            _packet(b"H", b"mail.sender.example.net" + z),
            _packet(
                b"D", b"M" + b"i" + z + b"4ABCDEF" + z + (b"{auth_authen}" + z + user.encode() + z if user else b"")
            ),
            _packet(b"M", f"<{sender}>".encode() + z),
            *[_packet(b"R", f"<{r}>".encode() + z) for r in rcpt],
            *[
                _packet(b"L", name.encode() + z + value.strip().encode() + z)
                for name, _, value in (line.decode().partition(":") for line in head.split(b"\r\n"))
            ],
            _packet(b"N"),
            *[_packet(b"B", body[i : i + 65535]) for i in range(0, len(body), 65535)],
            _packet(b"E"),
        ]
        sock.sendall(b"".join(commands))
        headers = []
        while True:
            command, data = _read_packet(sock)
            if command == b"h":
                name, value, _ = data.split(z)
                headers.append(("add", name.decode(), value.decode()))
            elif command in (b"m", b"i"):
                name, value, _ = data[4:].split(z)
                headers.append(({b"m": "change", b"i": "insert"}[command], name.decode(), value.decode()))
            elif command == b"y":
                sock.sendall(_packet(b"Q"))
                return MilterReply("reply", data.rstrip(z).decode(), headers)
            elif command in (b"a", b"c", b"d", b"r", b"t"):
                sock.sendall(_packet(b"Q"))
                verdicts = {b"a": "accept", b"c": "accept", b"d": "discard", b"r": "reject", b"t": "tempfail"}
                return MilterReply(verdicts[command], None, headers)


# --- clamd with a one-signature database ---------------------------------------------


class Clamd:
    def __init__(self, root: Path):
        self.root = root
        self.socket = root / "clamd.sock"
        self.log = root / "clamd.log"
        self.process: subprocess.Popen | None = None
        (root / "db").mkdir(parents=True)
        # An .ndb body signature: name:target(0 = any file):offset(* = anywhere):hex of the bytes.
        (root / "db" / "mailgw-test.ndb").write_text(f"{VIRUS_NAME}:0:*:{EICAR.encode().hex()}\n")
        (root / "clamd.conf").write_text(
            f"LocalSocket {self.socket}\nDatabaseDirectory {root / 'db'}\nForeground yes\n"
            f"LogFile {self.log}\nPidFile {root / 'clamd.pid'}\nTemporaryDirectory {root}\n"
        )

    def __enter__(self) -> Clamd:
        self.process = _start(
            [program("clamd"), "-c", str(self.root / "clamd.conf")], self.root, self._pong, "clamd", self.log
        )
        return self

    def __exit__(self, *exc) -> None:
        _stop(self.process)

    def _pong(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket))
                sock.sendall(b"zPING\0")
                return sock.recv(16).startswith(b"PONG")
        except OSError:
            return False


# --- the quarantine service: an HTTPS sink ---------------------------------------------


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def recipients(self) -> list[str]:
        return json.loads(self.headers["X-Rspamd-rcpt"])


@dataclass
class QuarantineSink:
    """Records every POST; answers `status` (200, or 503 to play a service that is down)."""

    root: Path
    status: int = 200
    received: list[Delivery] = field(default_factory=list)

    def __post_init__(self):
        self.cert, self.key = self.root / "cert.pem", self.root / "key.pem"
        subprocess.run(
            [
                program("openssl"),
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/quarantine"

    def __enter__(self) -> QuarantineSink:
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.received.append(Delivery(self.path, dict(self.headers.items()), body))
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def take(self) -> list[Delivery]:
        taken, self.received[:] = list(self.received), []
        return taken


# --- test messages ------------------------------------------------------------------


def message(
    *,
    sender: str,
    to: list[str],
    subject: str = "meeting notes",
    body: str = "",
    attachment: str | None = None,
    score: float | None = None,
) -> bytes:
    """A well-formed message (Date, Message-ID, MIME) so that only what the test puts in it scores.

    score: an X-Test-Score header (see TEST_SCORE_RULE).
    """
    message_id = f"{uuid.uuid4().hex}@sender.example.net"
    head = "" if score is None else f"X-Test-Score: {score:.2f}\r\n"
    head += (
        f"From: Sender <{sender}>\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\n"
        f"Date: {email.utils.formatdate(localtime=False)}\r\nMessage-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
    )
    text = body or "Hello,\r\nhere are the notes of this morning's meeting.\r\nRegards\r\n"
    if attachment is None:
        return (head + "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text).encode()
    return (
        head + 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        + text
        + "\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="notes.txt"\r\n\r\n' + attachment + "\r\n--b1--\r\n"
    ).encode()


def gtube(*, sender: str, to: list[str], subject: str = "test message") -> bytes:
    """GTUBE in a text part over 8 KiB: Rspamd 3.4's own GTUBE check (an unconditional reject) skips it."""
    filler = "This paragraph only makes the text part long enough. " * 180
    return message(sender=sender, to=to, subject=subject, body=filler + "\r\n" + GTUBE + "\r\n")


def virus(*, sender: str, to: list[str]) -> bytes:
    return message(sender=sender, to=to, subject="the file", attachment=EICAR)
