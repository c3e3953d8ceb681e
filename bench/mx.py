"""How much mail one MX node carries: the generated Postfix against a bare Postfix relay, then with filtering.

    python bench/mx.py                                   # 10k, 100k and 1M addresses, median of 3
    python bench/mx.py --sizes 100000 --runs 5
    python bench/mx.py --write-doc docs/performance.md   # also rewrite the results block of that page

Everything runs on loopback, in private directories, as root (Postfix needs
it). For each fleet size, a fleet from bench/generate.py plus one traffic
domain is built by `mailgw build` with the bundled gateway.yaml; its out/
goes onto a private Postfix as Puppet installs it (tests/mx_harness.py), and
a bare Postfix relay gets only relay_domains, relay_recipient_maps and
transport_maps over the same maps. Postfix's own smtp-source drives each in
turn; every next hop is one smtp-sink. Each run measures messages (or
rejections) per second from the first connection to the last delivery,
per-message latency from Postfix's log (`delay=`: from MAIL FROM to the
next hop's 250), and the CPU seconds of each process tree from /proc.
Then the generated configuration runs again with Rspamd's milter and clamd
on, as deployed. Prints one table; --write-doc puts it into the page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.generate import generate  # noqa: E402
from tests import rspamd_env  # noqa: E402
from tests.conftest import program  # noqa: E402
from tests.mx_harness import PostfixInstance, age, free_port, install, wait_for  # noqa: E402

LOOPBACK = "127.0.0.1"
TRAFFIC_DOMAIN = "bench.example.org"
SENDER = "newsletter@sender.example.net"
CLIENT_HELO = "client.example.net"
# A dictionary attacker's guesses per session: below smtpd_soft_error_limit (10), past which smtpd
# answers every command a second late; with it, the run would time Postfix's tarpit, not its lookups.
GUESSES_PER_SESSION = 9
# Where the results block of docs/performance.md starts and ends.
BEGIN = "<!-- bench-mx results: written by 'make bench-mx' (bench/mx.py --write-doc); do not edit by hand -->"
END = "<!-- bench-mx results: end -->"
DOC = REPO / "docs" / "performance.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# For the log the benchmark reads, on both instances: delays to 0.1 ms, and queue IDs never reused in a run.
LOGGING = ("delay_logging_resolution_limit = 4", "enable_long_queue_ids = yes")
DELIVERED = re.compile(
    r" (?P<queue_id>[0-9A-Za-z]+): to=<[^>]*>, relay=\S+, (?:conn_use=\d+, )?delay=(?P<delay>[\d.]+), "
    r"delays=(?P<a>[\d.]+)/(?P<b>[\d.]+)/(?P<c>[\d.]+)/(?P<d>[\d.]+), dsn=2\.\d+\.\d+, status=sent "
)
REJECTED = re.compile(r"NOQUEUE: reject: RCPT from \S+: 550 5\.1\.1 ")
PROCESS_LIMIT = re.compile(r"warning: service \S+ \(\S+\) has reached its process limit")
# Rspamd's log line of each scan ends with its wall time ('time: 12.345ms').
SCAN_TIME = re.compile(r"len: \d+, time: (?P<ms>[\d.]+)ms")
# The DNS-based checks of the stock Rspamd, off in the benchmark: nothing may leave loopback.
OFFLINE_MODULES = ("rbl", "surbl", "spf", "dkim", "dmarc", "arc", "asn", "mx_check", "emails", "url_redirector")
# Of those, the ones the compiler configures: turned off after their generated settings. arc.conf seals only
# forwarded mail, and the benchmark forwards nothing; its chain check asks DNS.
GENERATED_OFFLINE = ("arc",)


@dataclass(frozen=True)
class Load:
    """One way of driving the MX: smtp-source's messages, or a dictionary attack's guesses."""

    name: str
    recipients: int  # RCPT TO per message (per session in a dictionary attack)
    sessions: int  # parallel SMTP sessions
    unknown: bool = False  # every recipient unknown: a dictionary attack, counted in rejections
    scale: float = 1.0  # a run's recipients, as a share of --messages

    @property
    def unit(self) -> str:
        return "rejections" if self.unknown else "messages"

    def transactions(self, recipients: int) -> int:
        """Messages (sessions, in a dictionary attack) of one run of `recipients` recipients."""
        return max(1, int(recipients * self.scale) // self.recipients)


LOADS = (
    # One message after another: the latency each stage adds, with no queue in front of it.
    Load("1 rcpt, 1 session", 1, 1, scale=0.1),
    Load("1 rcpt, 20 sessions", 1, 20),
    Load("1 rcpt, 100 sessions", 1, 100),
    Load("10 rcpt, 20 sessions", 10, 20),
    Load("10 rcpt, 100 sessions", 10, 100),
    # The guesses are not in the traffic domain: there can be more of them than of the recipients.
    Load(f"dictionary attack, {GUESSES_PER_SESSION} rcpt/session, 100 sessions", GUESSES_PER_SESSION, 100, True, 4),
)


@dataclass
class Measured:
    """One run of one load against one instance."""

    rate: float  # messages (or rejections) per second, first connection to last delivery
    delays: list[float]  # per message: MAIL FROM to the next hop's 250 (Postfix's delay=), seconds
    stages: dict[str, float]  # median of each delays= part: before qmgr, in qmgr, connect, transmit
    cpu: dict[str, float]  # process group -> CPU seconds per message (or rejection)
    stress: int  # Postfix's warnings that a service reached its process limit (stress mode follows)
    scan_ms: float | None = None  # Rspamd's median scan time, as Rspamd logs it


@dataclass
class Row:
    """The medians over the repetitions of one load: bare (if measured) and generated."""

    load: str
    addresses: int
    unit: str
    bare: list[Measured] = field(default_factory=list)
    generated: list[Measured] = field(default_factory=list)
    filtering: str = ""  # how the generated instance filtered ('' for not at all)


# --- processes and their CPU ------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of the process and of its children it has reaped)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # proc(5): ppid is field 4, utime/stime/cutime/cstime are fields 14-17 (the list starts at field 3).
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
        table[int(entry.name)] = (int(fields[1]), ticks / CLK_TCK)
    return table


def tree_cpu(roots: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds so far of each named process tree (a root and all its descendants, live or reaped)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    totals = {}
    for name, root in roots.items():
        total, todo = 0.0, [root] if root in table else []
        while todo:
            pid = todo.pop()
            total += table[pid][1]
            todo += children.get(pid, [])
        totals[name] = total
    return totals


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --- the sink and the source --------------------------------------------------------------


@contextmanager
def smtp_sink(base: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Postfix's smtp-sink on a free loopback port: every site's relay (it accepts and discards)."""
    port = free_port()
    command = [_need("smtp-sink"), "-u", "nobody", f"{LOOPBACK}:{port}", "1024"]
    with open(base / "smtp-sink.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _listening(port) or process.poll() is not None, 10, "smtp-sink to listen")
        if process.poll() is not None:
            raise SystemExit(f"smtp-sink exited: {(base / 'smtp-sink.log').read_text()[-2000:]}")
        yield port, process
    finally:
        _stop_process(process)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def message_file(path: Path, kib: int) -> Path:
    """A plain-text message of about `kib` KiB with the headers a real one has (smtp-source -F sends it)."""
    rng = random.Random(kib)
    words = ("the", "meeting", "notes", "budget", "draft", "review", "detector", "beam", "data", "shift", "agenda")
    lines = []
    while sum(len(line) + 1 for line in lines) < kib * 1024 - 400:
        lines.append(" ".join(rng.choice(words) for _ in range(12)).capitalize() + ".")
    path.write_text(
        f"From: Newsletter <{SENDER}>\nTo: <staff@{TRAFFIC_DOMAIN}>\nSubject: Weekly notes of the detector group\n"
        "Date: Mon, 2 Sep 2024 09:30:00 +0200\nMessage-ID: <weekly-notes@sender.example.net>\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n\nHello,\n\n" + "\n".join(lines) + "\n\nRegards\n"
    )
    return path


def smtp_source(port: int, load: Load, messages: int, message: Path) -> tuple[float, float]:
    """Run smtp-source to the end; (its wall seconds, its CPU seconds).

    -N numbers the recipients 1..messages*recipients: '<n>bench@', each known.
    """
    command = [
        _need("smtp-source"),
        "-N",
        "-s",
        str(load.sessions),
        "-m",
        str(messages),
        "-r",
        str(load.recipients),
        "-f",
        SENDER,
        "-t",
        f"bench@{TRAFFIC_DOMAIN}",
        "-M",
        CLIENT_HELO,
        "-F",
        str(message),
        f"{LOOPBACK}:{port}",
    ]
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = start + max(120.0, messages * load.recipients * 0.05)
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"smtp-source did not finish in {deadline - start:.0f} s: {' '.join(command)}")
        time.sleep(0.01)
    elapsed = time.monotonic() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    err = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(f"smtp-source failed ({process.returncode}): {err[-2000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime


def guess_recipients(port: int, load: Load, sessions_total: int) -> tuple[float, list[float]]:
    """A dictionary attack: `sessions_total` sessions, `load.sessions` at a time, each guessing
    `load.recipients` unknown recipients one RCPT TO after another, then QUIT.

    Not smtp-source: after its recipients are refused it sends DATA and the message
    anyway (-A), which smtpd reads as bad commands until it tarpits the session.
    When smtpd ends a session early (421: under stress, Postfix allows one error
    per session), the attacker connects again and goes on with the same guess.
    Returns the client's CPU seconds and the latency of every refused RCPT TO.
    """
    latencies: list[float] = []
    guesses = [f"RCPT TO:<{n}nobody@{TRAFFIC_DOMAIN}>" for n in range(1, sessions_total * load.recipients + 1)]
    share, rest = divmod(sessions_total, load.sessions)

    async def reply(reader: asyncio.StreamReader) -> bytes:
        while True:
            text = await reader.readline()
            if not text:
                return b"421 closed"
            if text[3:4] != b"-":
                return text

    async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str) -> bytes:
        writer.write(line.encode() + b"\r\n")
        return await reply(reader)

    async def session(mine: list[str]) -> list[str]:
        """Guess until done or cut off; the guesses left."""
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            if not (await reply(reader)).startswith(b"220"):
                return mine
            await command(reader, writer, f"EHLO {CLIENT_HELO}")
            if not (await command(reader, writer, f"MAIL FROM:<{SENDER}>")).startswith(b"250"):
                return mine
            while mine:
                start = time.monotonic()
                answer = await command(reader, writer, mine[0])
                if answer.startswith(b"421"):
                    return mine
                if not answer.startswith(b"550"):
                    raise SystemExit(f"an unknown recipient got {answer!r}")
                latencies.append(time.monotonic() - start)
                mine = mine[1:]
            await command(reader, writer, "QUIT")
            return mine
        finally:
            writer.close()

    async def attacker(index: int) -> None:
        count = share + (index < rest)
        first = (index * share + min(index, rest)) * load.recipients
        for n in range(count):
            mine = guesses[first + n * load.recipients : first + (n + 1) * load.recipients]
            while mine:
                mine = await session(mine)

    async def attack() -> None:
        await asyncio.gather(*(attacker(i) for i in range(load.sessions)))

    before = resource.getrusage(resource.RUSAGE_SELF)
    asyncio.run(asyncio.wait_for(attack(), timeout=max(120.0, sessions_total * 0.1)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, latencies


# --- the fleet and the two Postfix instances ------------------------------------------------


def traffic_domain(addresses: int, sink_port: int) -> str:
    """The domain smtp-source writes to: '<n>bench' for n in 1..addresses, each a person."""
    lines = [
        f"domain: {TRAFFIC_DOMAIN}",
        "site: BENCH",
        'admins: ["@example/bench-mail"]',
        "delivery:",
        f"  nexthop: smtp:[{LOOPBACK}]:{sink_port}",
        "recipients:",
        *(f"  {n}bench: bench{n}" for n in range(1, addresses + 1)),
    ]
    return "\n".join(lines) + "\n"


def bench_repository(
    root: Path, addresses: int, traffic: int, sink_port: int, map_directory: Path, clamd_socket: Path
) -> None:
    """bench/generate.py's fleet and the traffic domain, under the bundled gateway.yaml.

    Only what cannot run on loopback changes: every next hop is the sink, the maps
    live in the instance's directory, postscreen asks no DNSBL, clamd is the
    benchmark's, the portal's release service and the forwarding pass (fixed ports) and the national domain
    are left out.
    """
    generate(addresses - traffic, root)
    gateway = yaml.safe_load((REPO / "gateway.yaml").read_text())
    gateway["postfix"] = {"map_directory": str(map_directory)}
    gateway["postscreen"].pop("dnsbl_sites", None)
    gateway.pop("portal", None)
    # The forwarding pass listens on a fixed loopback port too, and the benchmark forwards nothing.
    gateway.pop("forwarding", None)
    gateway.pop("national", None)  # the generated fleet has no national domain's file
    gateway["clamav"] = {"socket": str(clamd_socket)}
    # Nothing is quarantined (the message is clean); a closed port all the same.
    gateway["quarantine"] = {"url": f"https://{LOOPBACK}:{free_port()}/quarantine"}
    (root / "gateway.yaml").write_text(yaml.safe_dump(gateway, allow_unicode=True))
    nexthop = re.compile(r"^  nexthop: .*$", re.M)
    for path in (root / "domains").glob("*.yaml"):
        path.write_text(nexthop.sub(f"  nexthop: smtp:[{LOOPBACK}]:{sink_port}", path.read_text(), count=1))
    (root / "domains" / f"{TRAFFIC_DOMAIN}.yaml").write_text(traffic_domain(traffic, sink_port))


# `mailgw build` with the sites' next hops on this machine's loopback (the sink), as the tests compile their fleets.
_BUILD = (
    "import sys\n"
    "from compiler.main import main\n"
    "from tests.mx_harness import sites_on_loopback\n"
    "with sites_on_loopback():\n"
    "    sys.exit(main(sys.argv[1:]))\n"
)


def build(root: Path, out: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, "-C", str(root), "build", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"mailgw build of the benchmark fleet failed:\n{done.stderr[-4000:]}")


def postconf(instance: PostfixInstance, *settings: str) -> None:
    done = instance.postconf("-e", *settings)
    if done.returncode != 0 or done.stderr:
        raise SystemExit(f"postconf: {done.stderr}")
    age(instance.conf / "main.cf", instance.conf / "master.cf")


def generated_instance(instance: PostfixInstance, out: Path, sink_port: int) -> None:
    """out/postfix as Puppet installs it, with the test harness's overrides (docs/mx.md) and finer delays."""
    install(instance, out, internet_port=sink_port, milter="")
    postconf(
        instance,
        *LOGGING,
        # Postscreen allows one client 50 connections at once; the benchmark's 100 sessions all come from 127.0.0.1.
        "postscreen_client_connection_count_limit = 0",
    )


def bare_instance(instance: PostfixInstance, out: Path, sink_port: int) -> None:
    """Debian's stock master.cf and a main.cf that only relays to the fleet's domains and recipients."""
    maps = instance.conf / "maps"
    maps.mkdir(parents=True)
    for name in ("relay_domains", "relay_recipients", "transport"):
        shutil.copy(out / "postfix" / name, maps / name)
    for sub in (instance.queue, instance.data, instance.maillog.parent):
        sub.mkdir()
    shutil.chown(instance.data, "postfix")
    lines = []
    for line in Path("/usr/share/postfix/master.cf.dist").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 8 and not line[0].isspace() and not line.startswith("#"):
            fields[4] = "n"  # not chrooted, as the generated master.cf: the maps are outside any chroot
            if fields[:2] == ["smtp", "inet"]:
                fields[0] = f"{LOOPBACK}:{instance.port}"
            line = " ".join(fields)
        lines.append(line)
    (instance.conf / "master.cf").write_text("\n".join(lines) + "\n")
    (instance.conf / "main.cf").write_text(
        "\n".join(
            [
                "# A bare Postfix relay for the fleet: the baseline of bench/mx.py.",
                "compatibility_level = 3.6",
                f"queue_directory = {instance.queue}",
                f"data_directory = {instance.data}",
                f"inet_interfaces = {LOOPBACK}",
                "myhostname = mx1.gw.example.org",
                "mydestination =",
                f"relay_domains = lmdb:{maps}/relay_domains",
                f"relay_recipient_maps = lmdb:{maps}/relay_recipients",
                f"transport_maps = lmdb:{maps}/transport",
                f"relayhost = [{LOOPBACK}]:{sink_port}",
                "smtpd_peername_lookup = no",
                f"maillog_file = {instance.maillog}",
                f"maillog_file_prefixes = {instance.base}",
                *LOGGING,
                "",
            ]
        )
    )
    age(instance.conf / "main.cf", instance.conf / "master.cf")
    for name in ("relay_domains", "relay_recipients", "transport"):
        done = instance.run(_need("postmap"), "-c", str(instance.conf), f"lmdb:{maps / name}", timeout=600)
        if done.returncode != 0 or done.stderr:
            raise SystemExit(f"postmap {name}: {done.stderr}")


def _need(name: str) -> str:
    found = program(name)
    if found is None:
        raise SystemExit(f"{name} is not installed: run 'make test' once as root (scripts/system-packages)")
    return found


# --- Rspamd and clamd as deployed -----------------------------------------------------------


def rspamd_tree(out: Path, dest: Path, hs_cache: Path | None) -> rspamd_env.Tree:
    """The tests' tree (stock /etc/rspamd, the generated local.d/maps.d, offline) without its DNS-based modules."""
    tree = rspamd_env.config_tree(out, dest, hs_cache=hs_cache)
    for module in OFFLINE_MODULES:
        conf = tree.conf / "local.d" / f"{module}.conf"
        if module in GENERATED_OFFLINE:
            conf.write_text(conf.read_text() + "enabled = false;\n")
            continue
        assert not conf.exists(), f"the benchmark would hide a generated {conf.name}"
        conf.write_text("enabled = false;\n")
    return tree


class DeployedRspamd(rspamd_env.Rspamd):
    """Rspamd's stock worker layout: the milter proxy passes each message to the normal workers over HTTP.

    The proxy binds the generated worker-proxy.inc's unix socket in Rspamd's RUNDIR (not the stock port
    beside it, which a system Rspamd may hold); over_tcp: a free loopback port instead, as the MX had it
    before the socket.
    """

    def __init__(self, tree: rspamd_env.Tree, over_tcp: bool = False):
        super().__init__(tree)
        generated = (tree.conf / "local.d" / "worker-proxy.inc").read_text()
        [on_socket] = [line for line in generated.splitlines() if line.startswith('bind_socket = "$RUNDIR/')]
        bind = f'bind_socket = "{LOOPBACK}:{self.proxy_port}";' if over_tcp else on_socket
        socket_path = tree.root / "run" / on_socket.split('"')[1].split()[0].removeprefix("$RUNDIR/")
        self.milter = f"inet:{LOOPBACK}:{self.proxy_port}" if over_tcp else f"unix:{socket_path}"
        (tree.conf / "override.d" / "worker-proxy.inc").write_text(
            f'{bind}\nupstream "local" {{ default = yes; hosts = "{LOOPBACK}:{self.port}"; }}\n'
        )


def wait_for_hyperscan(tree: rspamd_env.Tree, timeout: float = 600) -> None:
    """Until the scanners have Rspamd's compiled Hyperscan databases (before, the rules run slower, on PCRE).

    From the cache, the main process loads them before it forks the scanners;
    otherwise hs_helper compiles them and each scanner loads them on notice.
    """
    loaded = re.compile(r"#\d+\((main|normal)\).*full hyperscan database of \d+ regexps has been loaded")
    forked = re.compile(r"#\d+\(main\).*fork process normal")

    def ready() -> bool:
        log = tree.log.read_text(errors="replace") if tree.log.exists() else ""
        first_fork = forked.search(log)
        for match in loaded.finditer(log):
            if match.group(1) == "normal" or (first_fork is not None and match.start() < first_fork.start()):
                return True
        return False

    wait_for(ready, timeout, "Rspamd's scanners to load their Hyperscan databases", interval=0.5)


# --- one run --------------------------------------------------------------------------------


class Target:
    """A running Postfix instance and the process trees whose CPU each run counts."""

    def __init__(self, name: str, instance: PostfixInstance, groups: Callable[[], dict[str, int | None]]):
        self.name, self.instance, self.groups = name, instance, groups

    def run(self, load: Load, recipients: int, message: Path, scan_log: Path | None = None) -> Measured:
        """One run of `load` with `recipients` recipients in all; waits for the last delivery (or refusal)."""
        instance = self.instance
        transactions = load.transactions(recipients)
        log_start = instance.maillog.stat().st_size if instance.maillog.exists() else 0
        scan_start = scan_log.stat().st_size if scan_log is not None and scan_log.exists() else 0
        before = tree_cpu(self.groups())
        start = time.monotonic()
        if load.unknown:
            done = transactions * load.recipients
            client_cpu, delays = guess_recipients(instance.port, load, transactions)
            elapsed = time.monotonic() - start
            wait_for(lambda: _log_lines(instance, log_start, REJECTED, done), 60, f"{done} rejections in the log")
            stages: dict[str, float] = {}
        else:
            done = transactions
            _, client_cpu = smtp_source(instance.port, load, transactions, message)
            wait_for(lambda: not _queued(instance), 600, "the queue to empty", interval=0.01)
            elapsed = time.monotonic() - start
            sent = transactions * load.recipients
            lines = wait_for(lambda: _log_lines(instance, log_start, DELIVERED, sent), 60, f"{sent} deliveries")
            delays, stages = _delays(lines)
            if len(delays) != transactions:
                raise SystemExit(f"{self.name}: {len(delays)} messages delivered, {transactions} sent")
        after = tree_cpu(self.groups())
        cpu = {name: (after[name] - before[name]) / done for name in before}
        cpu["client"] = client_cpu / done
        with open(instance.maillog, "rb") as log:
            log.seek(log_start)
            stress = len(PROCESS_LIMIT.findall(log.read().decode(errors="replace")))
        scan_ms = None
        if scan_log is not None:
            with open(scan_log, "rb") as log:
                log.seek(scan_start)
                scans = [float(m["ms"]) for m in SCAN_TIME.finditer(log.read().decode(errors="replace"))]
            scan_ms = statistics.median(scans) if scans else None
        return Measured(done / elapsed, delays, stages, cpu, stress, scan_ms)


def _queued(instance: PostfixInstance) -> bool:
    for name in instance.QUEUES:
        for _, _, files in os.walk(instance.queue / name):
            if files:
                return True
    return False


def _log_lines(instance: PostfixInstance, offset: int, pattern: re.Pattern[str], expected: int) -> list[re.Match[str]]:
    """The lines of the log past `offset` that match, once all `expected` of them are there."""
    with open(instance.maillog, "rb") as log:
        log.seek(offset)
        found = list(pattern.finditer(log.read().decode(errors="replace")))
    if len(found) > expected:
        raise SystemExit(f"{len(found)} lines in the log where {expected} were expected: {pattern.pattern}")
    return found if len(found) == expected else []


def _delays(lines: list[re.Match[str]]) -> tuple[list[float], dict[str, float]]:
    """Per message, its last recipient's delay (the message is delivered then), and the median stages."""
    by_message: dict[str, re.Match[str]] = {}
    for line in lines:
        seen = by_message.get(line["queue_id"])
        if seen is None or float(line["delay"]) > float(seen["delay"]):
            by_message[line["queue_id"]] = line
    stages = {
        stage: statistics.median(float(line[stage]) for line in by_message.values()) for stage in ("a", "b", "c", "d")
    }
    return [float(line["delay"]) for line in by_message.values()], stages


def lookups_per_second(maps: Path, conf: Path, count: int = 20_000) -> float:
    """`postmap -q -` over `count` known addresses drawn across the whole relay_recipients map."""
    keys = [line.split("\t", 1)[0] for line in (maps / "relay_recipients").read_text().splitlines()]
    sample = random.Random(2018).choices([key for key in keys if key and not key.startswith("#")], k=count)
    command = [_need("postmap"), "-c", str(conf), "-q", "-", f"lmdb:{maps / 'relay_recipients'}"]
    best = float("inf")
    for _ in range(3):  # the best of three: the lookups, not the machine's other load
        start = time.monotonic()
        done = subprocess.run(command, input="\n".join(sample) + "\n", capture_output=True, text=True, timeout=300)
        best = min(best, time.monotonic() - start)
        if done.returncode != 0 or len(done.stdout.splitlines()) != count:
            raise SystemExit(f"postmap -q: {done.stderr}")
    return count / best


# --- the whole benchmark ----------------------------------------------------------------------


@dataclass
class Options:
    sizes: list[int]
    runs: int = 3
    messages: int = 5000  # recipients of one run without filtering
    filtering_messages: int = 2000  # recipients of one run with filtering
    filtering_size: int | None = None
    message_kib: int = 4
    loads: tuple[Load, ...] = LOADS
    filtering: bool = True


@dataclass
class Results:
    rows: list[Row]
    lookups: dict[int, float]  # addresses -> postmap -q lookups/s
    machine: dict[str, str]
    options: Options


def benchmark(
    options: Options, *, clamd: rspamd_env.Clamd | None = None, hs_cache: Path | None = None, base: Path | None = None
) -> Results:
    """Every measurement of the page; clamd and hs_cache may be the caller's (the tests share theirs)."""
    if os.geteuid() != 0:
        raise SystemExit("bench/mx.py starts Postfix, which needs root (run it as root, like 'make test')")
    for name in ("postfix", "postconf", "postmap", "smtp-source", "smtp-sink"):
        _need(name)
    if options.filtering:
        for name in ("rspamd", "clamd"):
            _need(name)
    load_before = os.getloadavg()
    owned = base is None
    # Postfix's daemons run as 'postfix' and must traverse the directory: mkdtemp's is 0700.
    base = Path(tempfile.mkdtemp(prefix="mailgw-bench-mx-")) if base is None else base
    base.chmod(0o755)
    # smtp-source -N numbers a run's recipients 1..N: the traffic domain has every one of them.
    traffic = max(options.messages, options.filtering_messages)
    message = message_file(base / "message.eml", options.message_kib)
    clamd_socket = clamd.socket if clamd is not None else base / "clamd" / "clamd.sock"
    rows: list[Row] = []
    lookups: dict[int, float] = {}
    filtering_size = options.filtering_size or options.sizes[len(options.sizes) // 2]
    try:
        with ExitStack() as stack:
            sink_port, sink = stack.enter_context(smtp_sink(base))
            for size in options.sizes:
                if size <= traffic:
                    raise SystemExit(f"{size:,} addresses: the traffic domain alone has {traffic:,}")
                print(f"\n{size:,} addresses: generating, building, indexing ...", file=sys.stderr)
                work = base / f"fleet-{size}"
                work.mkdir()
                generated = PostfixInstance(work / "generated")
                bare = PostfixInstance(work / "bare")
                bench_repository(work / "repo", size, traffic, sink_port, generated.conf / "mailgw", clamd_socket)
                build(work / "repo", work / "out")
                shutil.rmtree(work / "repo")
                generated_instance(generated, work / "out", sink_port)
                bare_instance(bare, work / "out", sink_port)
                addresses = _addresses(work / "out")
                lookups[addresses] = lookups_per_second(generated.conf / "mailgw", generated.conf)
                with ExitStack() as running:
                    for instance in (generated, bare):
                        instance.start()
                        running.callback(instance.stop)
                    targets = {
                        "bare": Target("bare", bare, lambda b=bare, s=sink: {"Postfix": b.master_pid(), "sink": s.pid}),
                        "generated": Target(
                            "generated",
                            generated,
                            lambda g=generated, s=sink: {"Postfix": g.master_pid(), "sink": s.pid},
                        ),
                    }
                    rows += _compare(targets, options, addresses, message)
                    if options.filtering and size == filtering_size:
                        rows += _filtering(targets["generated"], work, options, addresses, message, clamd, hs_cache)
                shutil.rmtree(work)
    finally:
        if owned:
            shutil.rmtree(base, ignore_errors=True)
    machine = describe_machine()
    load_after = os.getloadavg()
    machine["load"] = f"{load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end"
    return Results(rows, lookups, machine, options)


def _compare(targets: dict[str, Target], options: Options, addresses: int, message: Path) -> list[Row]:
    """Every load against both instances, in turn, so that both see the same machine."""
    for target in targets.values():
        target.run(options.loads[0], 20, message)  # every daemon started, every table opened
    rows = {load: Row(load.name, addresses, load.unit) for load in options.loads}
    for repetition in range(options.runs):
        for load in options.loads:
            for name in ("bare", "generated") if repetition % 2 == 0 else ("generated", "bare"):
                measured = targets[name].run(load, options.messages, message)
                getattr(rows[load], name).append(measured)
                print(f"  {load.name:<48} {name:<9} {measured.rate:8.0f} {load.unit}/s", file=sys.stderr)
    return list(rows.values())


def _filtering(
    target: Target,
    work: Path,
    options: Options,
    addresses: int,
    message: Path,
    clamd: rspamd_env.Clamd | None,
    hs_cache: Path | None,
) -> list[Row]:
    """The generated instance again, its smtpd_milters now Rspamd's milter (with clamd behind it).

    Then once more with the milter over loopback TCP, as the MX had it before its unix socket, with
    and without a queue in front: what that one change of ours does to the latency.
    """
    with ExitStack() as stack:
        if clamd is None:
            clamd = stack.enter_context(rspamd_env.Clamd(work.parent / "clamd"))
        instance = target.instance
        stack.callback(_reload, instance)
        stack.callback(postconf, instance, "smtpd_milters =")
        loads = [load for load in options.loads if not load.unknown]  # Rspamd never sees a refused RCPT
        tcp_loads = [load for load in loads if load.recipients == 1 and load.sessions <= 20]
        rows = []
        for name, over_tcp, measured_loads in (
            ("with filtering", False, loads),
            ("with filtering, milter over loopback TCP", True, tcp_loads),
        ):
            print(f"  {name}: starting Rspamd ...", file=sys.stderr)
            tree = rspamd_tree(work / "out", work / name.replace(" ", "-").replace(",", ""), hs_cache)
            tree.root.chmod(0o755)  # smtpd, as 'postfix', reaches the milter socket there
            with DeployedRspamd(tree, over_tcp) as rspamd:
                wait_for_hyperscan(tree)
                postconf(instance, f"smtpd_milters = {rspamd.milter}")
                _reload(instance)
                pids = {
                    "Rspamd": rspamd.process.pid if rspamd.process else None,
                    "clamd": clamd.process.pid if clamd.process else None,
                }
                filtered = Target(name, instance, lambda pids=pids: {"Postfix": instance.master_pid(), **pids})
                filtered.run(options.loads[1], 20, message, tree.log)  # every worker started
                these = [Row(load.name, addresses, load.unit, filtering=name) for load in measured_loads]
                for _ in range(options.runs):
                    for row, load in zip(these, measured_loads, strict=True):
                        measured = filtered.run(load, options.filtering_messages, message, tree.log)
                        row.generated.append(measured)
                        print(f"  {name}: {load.name:<24} {measured.rate:8.1f} messages/s", file=sys.stderr)
                rows += these
        return rows


def _addresses(out: Path) -> int:
    """The declared addresses in relay_recipients (not the postmaster@ and abuse@ entries the MX adds itself)."""
    with open(out / "postfix" / "relay_recipients", "rb") as recipients:
        return sum(1 for line in recipients if not line.startswith(b"#") and not line.endswith(b"\treserved\n"))


def _reload(instance: PostfixInstance) -> None:
    done = instance.run(_need("postfix"), "-c", str(instance.conf), "reload")
    if done.returncode != 0:
        raise SystemExit(f"postfix reload: {done.stderr}")
    time.sleep(1)  # the master restarts its daemons after the signal; give the old ones time to finish


# --- the machine and the report --------------------------------------------------------------


def describe_machine() -> dict[str, str]:
    def output(*command: str) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
        except OSError:
            return ""

    lscpu = {
        key.strip(): value.strip() for key, _, value in (line.partition(":") for line in output("lscpu").splitlines())
    }
    memory = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    versions = output("dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "postfix", "rspamd", "clamav-daemon")
    debian = Path("/etc/debian_version")
    return {
        "cpu": f"{os.cpu_count()} cores ({lscpu.get('Model name', 'unknown CPU')}"
        + (f", virtualised by {lscpu['Hypervisor vendor']})" if "Hypervisor vendor" in lscpu else ")"),
        "memory": f"{int(memory.group(1)) / 1024 / 1024:.0f} GiB" if memory else "unknown memory",
        "system": f"Debian {debian.read_text().strip() if debian.exists() else '?'}, Linux {platform.release()}",
        "packages": ", ".join(line for line in versions.splitlines() if line),
    }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _rate(runs: list[Measured]) -> float:
    return _median([m.rate for m in runs])


def _percentile(delays: list[float], q: int) -> float:
    if len(delays) < 2:
        return delays[0] if delays else float("nan")
    return statistics.quantiles(delays, n=100, method="inclusive")[q - 1]


def _ms(runs: list[Measured], q: int) -> str:
    """The median over the runs of each run's q-th percentile latency, in ms."""
    values = [_percentile(m.delays, q) * 1000 for m in runs if m.delays]
    return f"{_median(values):.1f}" if values else "-"


def _cpu(runs: list[Measured], group: str) -> str:
    values = [m.cpu[group] * 1000 for m in runs if group in m.cpu]
    return f"{_median(values):.2f}" if values else "-"


def _pair(bare: str, generated: str) -> str:
    return f"{bare} / {generated}" if bare != "-" else generated


def table(results: Results) -> list[str]:
    lines = [
        "| load | addresses | bare /s | generated /s | x bare | p50 ms bare / gen | p99 ms bare / gen "
        "| Postfix CPU ms bare / gen | Rspamd CPU ms | clamd CPU ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    bare_rate = {(row.addresses, row.load): _rate(row.bare) for row in results.rows if row.bare}
    for row in results.rows:
        rate = _rate(row.generated)
        name = f"{row.filtering + ': ' if row.filtering else ''}{row.load} ({row.unit})"
        bare = f"{_rate(row.bare):.0f}" if row.bare else "-"
        lines.append(
            f"| {name} | {row.addresses:,} | {bare} | {rate:.0f} | "
            f"{rate / bare_rate[(row.addresses, row.load)]:.2f} | "
            f"{_pair(_ms(row.bare, 50), _ms(row.generated, 50))} | "
            f"{_pair(_ms(row.bare, 99), _ms(row.generated, 99))} | "
            f"{_pair(_cpu(row.bare, 'Postfix'), _cpu(row.generated, 'Postfix'))} | "
            f"{_cpu(row.generated, 'Rspamd')} | {_cpu(row.generated, 'clamd')} |"
        )
    return lines


def verdicts(results: Results) -> list[str]:
    """The targets of docs/performance.md, met or not, and what a node carries."""
    # The throughput loads; one session is there for the latency of each stage.
    compared = [row for row in results.rows if row.bare and not row.load.endswith("1 session")]
    lines = []
    if compared:
        ratio, worst = min(((_rate(r.generated) / _rate(r.bare), r) for r in compared), key=lambda pair: pair[0])
        lines.append(
            f"- generated at least 0.9x the bare Postfix (messages/s, rejections/s): "
            f"**{'met' if ratio >= 0.9 else 'missed'}**; "
            f"lowest {ratio:.2f}x ({worst.load}, {worst.addresses:,} addresses)"
        )
        # CPU time comes in ticks of 10 ms: a run too short to take one has no ratio.
        spent = [
            (_median([m.cpu["Postfix"] for m in r.generated]), _median([m.cpu["Postfix"] for m in r.bare]))
            for r in compared
        ]
        cpu = sorted(generated / bare for generated, bare in spent if bare > 0)
        if cpu:
            lines.append(
                f"- Postfix CPU per message (per refused recipient), generated / bare: median {_median(cpu):.2f}x, "
                f"from {cpu[0]:.2f}x to {cpu[-1]:.2f}x"
            )
    sizes = sorted({row.addresses for row in compared})
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        twins = [
            (_rate(r.generated) / _rate(t.generated), r.load)
            for r in compared
            if r.addresses == large
            for t in compared
            if t.addresses == small and t.load == r.load
        ]
        low, high = min(twins)[0], max(twins)[0]
        lines.append(
            f"- lookup cost flat from {small:,} to {large:,} addresses (generated rate at {large:,} at least 0.9x "
            f"the rate at {small:,}, every load): **{'met' if low >= 0.9 else 'missed'}**; {low:.2f}x to {high:.2f}x"
        )
    if results.lookups:
        each = ", ".join(f"{1e6 / rate:.1f} µs at {size:,}" for size, rate in sorted(results.lookups.items()))
        lines.append(f"- one relay_recipients lookup (`postmap -q`, random known addresses, best of 3): {each}")
    stressed = {name: sum(m.stress for r in compared for m in getattr(r, name)) for name in ("bare", "generated")}
    if any(stressed.values()):
        lines.append(
            f"- a service reached its process limit (Postfix then runs in stress mode): "
            f"{stressed['bare']} times in the bare runs, {stressed['generated']} times in the generated ones"
        )
    filtering = [row for row in results.rows if row.filtering == "with filtering"]
    one = [row for row in filtering if row.load.startswith("1 rcpt") and not row.load.endswith("1 session")]
    if one:
        best = max(one, key=lambda row: _rate(row.generated))
        rate = _rate(best.generated)
        unfiltered = next(r for r in compared if r.addresses == best.addresses and r.load == best.load)
        lines.append(
            f"- with filtering, one node carries **{rate:.0f} messages/s** of one recipient ({best.load}): "
            f"{rate * 3600:,.0f} an hour, {_rate(best.generated) / _rate(unfiltered.generated):.2f}x the same node "
            f"without filtering; the pair, both nodes up, about {2 * rate:.0f} messages/s"
        )
        scans = [m.scan_ms for row in filtering for m in row.generated if m.scan_ms is not None]
        if scans:
            lines.append(f"- Rspamd's own median time per scan (its log, `time:`): {_median(scans):.1f} ms")
    return lines


def stages_table(results: Results) -> list[str]:
    """Where a message's latency goes: medians of Postfix's delays=a/b/c/d, generated configuration."""
    lines = [
        "| load | addresses | a: receiving (MAIL FROM to queued) | b: in the queue manager "
        "| c: connecting to the next hop | d: transmission |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for row in results.rows:
        runs = [m for m in row.generated if m.stages]
        if runs:
            name = f"{row.filtering + ': ' if row.filtering else ''}{row.load}"
            cells = " | ".join(f"{_median([m.stages[s] for m in runs]) * 1000:.1f}" for s in "abcd")
            lines.append(f"| {name} | {row.addresses:,} | {cells} |")
    return lines


def report(results: Results) -> str:
    o, m = results.options, results.machine
    parts = [
        f"Machine: {m['cpu']}, {m['memory']}; {m['system']}; {m['packages']}. 1-minute load average: {m['load']}.",
        "",
        f"`make bench-mx`: {', '.join(f'{s:,}' for s in o.sizes)} addresses; median of {o.runs} runs; "
        f"{o.messages:,} recipients a run ({o.filtering_messages:,} with filtering; a tenth with 1 session, "
        f"four times as many guesses in the dictionary attack); a {o.message_kib} KiB text message.",
        "",
        *table(results),
        "",
        *verdicts(results),
        "",
        "Where the latency goes (generated configuration, milliseconds, medians of Postfix's `delays=a/b/c/d`):",
        "",
        *stages_table(results),
    ]
    return "\n".join(parts) + "\n"


def write_doc(page: Path, text: str) -> None:
    """Replace the block between BEGIN and END in `page` with `text`."""
    content = page.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{page} has no bench-mx results block ({BEGIN} ... {END})")
    head, _, rest = content.partition(BEGIN)
    _, _, tail = rest.partition(END)
    page.write_text(f"{head}{BEGIN}\n\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="relay_recipients sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="repetitions of every run (medians are reported)")
    parser.add_argument("--messages", type=int, default=5000, help="recipients of one run without filtering")
    parser.add_argument("--filtering-messages", type=int, default=2000, help="recipients of one run with filtering")
    parser.add_argument("--filtering-size", type=int, help="the fleet size of the filtering runs (default: the middle)")
    parser.add_argument("--message-kib", type=int, default=4, help="size of the test message")
    parser.add_argument("--no-filtering", action="store_true", help="skip the runs with Rspamd and clamd")
    parser.add_argument(
        "--hyperscan-cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mailgw" / "rspamd-hyperscan",
        help="Rspamd's compiled Hyperscan databases, kept between runs (the first compile takes a minute)",
    )
    parser.add_argument("--write-doc", type=Path, nargs="?", const=DOC, help="rewrite the results block of this page")
    parser.add_argument("--save", type=Path, help="also keep the measurements in this file (pickle)")
    parser.add_argument("--report-from", type=Path, help="print the report of measurements kept by --save; run nothing")
    args = parser.parse_args(argv)
    options = Options(
        sizes=[int(size) for size in args.sizes.split(",")],
        runs=args.runs,
        messages=args.messages,
        filtering_messages=args.filtering_messages,
        filtering_size=args.filtering_size,
        message_kib=args.message_kib,
        filtering=not args.no_filtering,
    )
    if args.report_from:
        results = pickle.loads(args.report_from.read_bytes())
    else:
        args.hyperscan_cache.mkdir(parents=True, exist_ok=True)
        results = benchmark(options, hs_cache=args.hyperscan_cache)
    if args.save:
        args.save.write_bytes(pickle.dumps(results))
    text = report(results)
    print(f"\n{text}")
    if args.write_doc:
        write_doc(args.write_doc, text)
        print(f"written into {args.write_doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
