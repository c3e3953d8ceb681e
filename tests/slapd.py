"""Private slapd servers for the tests, each in a temporary directory with a unix socket; nothing else shared.

Slapd: a minimal configuration written here (the core, cosine and misc
schemas, a database whose suffix is the base DN, the equality indexes of
the portal's searches) and a root DN with a password, for tests about the
directory's content and changes.

GatewaySlapd: the gateway's own server, started from exactly the generated
configuration (out/ldap/slapd-config) with the listeners of out/ldap/slapd.yaml.
The test's gateway.yaml (gateway_yaml()) points every node path of the
ldap section (configuration and database directories, run directory, TLS
files) into the temporary directory and picks a free port, so nothing is
rewritten. It runs as root, as the configuration's writer is root on the node.

Schema checking is on, as it always is for slapd's LDAP operations and for
slapadd without -s.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import ldif
import yaml

from compiler.ldapdiff import OPERATIONAL, dn_key
from tests.conftest import program

SCHEMA_DIR = Path("/etc/ldap/schema")
SCHEMAS = ("core", "cosine", "misc")
ROOT_PASSWORD = "secret"
TIMEOUT = 30
START_TIMEOUT = 10.0

CONFIG = """\
dn: cn=config
objectClass: olcGlobal
cn: config

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}
dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {db}
olcSuffix: {suffix}
olcRootDN: cn=admin,{suffix}
olcRootPW: {password}
olcDbMaxSize: 67108864
olcDbNoSync: TRUE
olcDbIndex: objectClass eq
olcDbIndex: uid eq
olcDbIndex: mailLocalAddress eq
olcDbIndex: owner eq
olcDbIndex: member eq
olcDbIndex: associatedDomain eq
"""


class Slapd:
    """One slapd on a unix socket in a fresh temporary directory; stop() ends it and removes everything."""

    def __init__(self, suffix: str):
        self.suffix = suffix
        self.root_dn = f"cn=admin,{suffix}"
        # A short path of its own: a unix socket path must fit in 108 bytes.
        self.work = Path(tempfile.mkdtemp(prefix="mailgw-slapd-"))
        self.url = "ldapi://" + quote(str(self.work / "ldapi"), safe="")
        self.process: subprocess.Popen | None = None
        try:
            self._configure()
        except BaseException:
            shutil.rmtree(self.work, ignore_errors=True)
            raise

    def _configure(self) -> None:
        schemas = "".join((SCHEMA_DIR / f"{name}.ldif").read_text() + "\n" for name in SCHEMAS)
        (self.work / "db").mkdir()
        (self.work / "config").mkdir()
        config = CONFIG.format(schemas=schemas, db=self.work / "db", suffix=self.suffix, password=ROOT_PASSWORD)
        (self.work / "config.ldif").write_text(config)
        self._run([program("slapadd"), "-n0", "-F", str(self.work / "config"), "-l", str(self.work / "config.ldif")])

    def slapadd(self, directory: bytes) -> subprocess.CompletedProcess:
        """Load offline into the database (slapd must be stopped), schema checks on."""
        assert self.process is None, "slapadd needs slapd stopped"
        return subprocess.run(
            [program("slapadd"), "-F", str(self.work / "config"), "-b", self.suffix],
            input=directory,
            capture_output=True,
            timeout=TIMEOUT,
        )

    def start(self) -> Slapd:
        socket = self.work / "ldapi"
        with open(self.work / "slapd.log", "wb") as log:
            self.process = subprocess.Popen(
                [program("slapd"), "-F", str(self.work / "config"), "-h", self.url, "-d", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited at start: {(self.work / 'slapd.log').read_text()}")
            if socket.exists() and self.ldap("ldapsearch", "-s", "base", "-b", "", "(objectClass=*)").returncode == 0:
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("slapd did not answer within the start timeout")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def lookups(self, addresses: list[str], url: str | None = None) -> list[tuple[str, list[str]]]:
        """(address, the DNs that answer '(mailLocalAddress=ADDRESS)') for each address in order, as the reader.

        One ldapsearch process and one connection for them all (ldapsearch -f), as a service asks.
        """
        listing = Path(tempfile.mkstemp(prefix="addresses-", dir=self.config.parent)[1])
        try:
            listing.write_text("".join(f"{a}\n" for a in addresses))
            done = self.as_reader(
                "ldapsearch",
                "-b",
                self.base,
                "-o",
                "ldif-wrap=no",
                "-f",
                str(listing),
                "(mailLocalAddress=%s)",
                "1.1",
                url=url,
            )
        finally:
            listing.unlink()
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return parse_lookups(done.stdout.decode())

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def _run(self, argv: list, data: bytes | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(argv, input=data, capture_output=True, timeout=TIMEOUT)
        assert done.returncode == 0, f"{argv[0]}: {done.stderr.decode(errors='replace')}"
        return done

    def ldap(self, tool: str, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
        """Run an ldap-utils client, bound as the root DN over the socket."""
        return subprocess.run(
            [program(tool), "-H", self.url, "-x", "-D", self.root_dn, "-w", ROOT_PASSWORD, *args],
            input=data,
            capture_output=True,
            timeout=TIMEOUT,
        )

    def add(self, directory: bytes) -> None:
        done = self.ldap("ldapadd", data=directory)
        assert done.returncode == 0, done.stderr.decode(errors="replace")

    def modify(self, changes: bytes) -> None:
        done = self.ldap("ldapmodify", data=changes)
        assert done.returncode == 0, done.stderr.decode(errors="replace") + "\n" + changes.decode(errors="replace")

    def search(
        self, search_filter: str, *attributes: str, base: str | None = None, scope: str = "sub"
    ) -> dict[str, dict]:
        """DN -> {attribute (lower case): sorted values} of every entry that matches."""
        done = self.ldap(
            "ldapsearch",
            "-LLL",
            "-o",
            "ldif-wrap=no",
            "-s",
            scope,
            "-b",
            base or self.suffix,
            search_filter,
            *attributes,
        )
        assert done.returncode in (0, 32), done.stderr.decode(errors="replace")  # 32: the base is not there
        return parse_entries(done.stdout)

    def dump(self) -> dict:
        """The whole database, normalised: DN key -> {attribute: sorted values}, no operational attributes."""
        return normalise(self.search("(objectClass=*)"))

    def wipe(self) -> None:
        if self.search("(objectClass=*)", "1.1", scope="base"):
            done = self.ldap("ldapdelete", "-r", self.suffix)
            assert done.returncode == 0, done.stderr.decode(errors="replace")


def parse_entries(data: bytes) -> dict[str, dict]:
    entries = {}
    for dn, attributes in ldif.LDIFParser(io.BytesIO(data)).parse():
        if dn is not None:
            entries[dn] = {name.lower(): sorted(values) for name, values in attributes.items()}
    return entries


def normalise(entries: dict[str, dict]) -> dict:
    """Compare what was written, not how: DNs by their RFC 4514 meaning, attribute names in lower case."""
    return {
        dn_key(dn): {name: values for name, values in attributes.items() if name not in OPERATIONAL}
        for dn, attributes in entries.items()
    }


# --- the gateway's own server, from the generated configuration -----------------------------------------

READER_PASSWORD = "reader test password"
NEEDS_ROOT = "the generated configuration's only writer is root on the node (SASL EXTERNAL over the local socket)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Tls:
    ca: Path  # what clients trust
    certificate: Path  # the server's, for 127.0.0.1 and localhost
    key: Path


def make_tls(directory: Path) -> Tls:
    """A throw-away CA and a server certificate it signed, made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    tls = Tls(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    ca_key, request = directory / "ca.key", directory / "server.csr"
    openssl = program("openssl")
    steps = [
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", tls.ca, "-days", "2"]
        + ["-subj", "/CN=mailgw test CA"],
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", tls.key, "-out", request]
        + ["-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", request, "-CA", tls.ca, "-CAkey", ca_key, "-CAcreateserial"]
        + ["-out", tls.certificate, "-days", "2", "-extfile", "/dev/stdin"],
    ]
    for step in steps:
        extensions = b"subjectAltName=IP:127.0.0.1,DNS:localhost\n" if "x509" in step and "-req" in step else None
        done = subprocess.run([str(arg) for arg in step], input=extensions, capture_output=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    return tls


def gateway_yaml(source: str, work: Path, tls: Tls, port: int, **ldap: object) -> str:
    """SOURCE (a gateway.yaml) with every node path of its ldap section under WORK, the port, and LDAP overrides."""
    gateway = yaml.safe_load(source)
    gateway["ldap"] = {
        **gateway["ldap"],
        "listen": {},  # the MX nodes' own addresses are not this machine's: loopback only
        "port": port,
        "config_directory": str(work / "config"),
        "database_directory": str(work / "db"),
        "run_directory": str(work / "run"),
        "tls_certificate": str(tls.certificate),
        "tls_key": str(tls.key),
        **ldap,
    }
    return yaml.safe_dump(gateway, sort_keys=False)


def reader_hash(password: str = READER_PASSWORD) -> str:
    """An {ARGON2} hash as the operator makes one for the secret store (the argon2 module the config loads)."""
    done = subprocess.run(
        [program("slappasswd"), "-o", "module-path=/usr/lib/ldap", "-o", "module-load=argon2.so"]
        + ["-h", "{ARGON2}", "-s", password],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class GatewaySlapd:
    """The gateway's slapd for one MX host, from the out/ldap/ of a build made with gateway_yaml().

    configure() loads slapd-config with slapadd -n0 into the empty configuration
    directory; load() adds a directory offline; start() runs slapd in the
    foreground (as a child of the test) with slapd.yaml's listeners.
    """

    def __init__(self, out: Path, tls: Tls, mx_host: str = "mx1.gw.example.org"):
        self.out = out
        self.tls = tls
        self.node = yaml.safe_load((out / "ldap/slapd.yaml").read_text())
        self.base = self.node["base_dn"]
        self.reader_dn = self.node["reader_dn"]
        self.socket = self.node["socket"]
        self.listeners = self.node["listeners"][mx_host].split()
        self.tcp = next(url for url in self.listeners if url.startswith("ldap://"))
        self.config = Path(self.node["config_directory"])
        self.log = Path(self.node["run_directory"]) / "slapd.log"
        self.process: subprocess.Popen | None = None

    def configure(self) -> GatewaySlapd:
        for directory in [self.config, Path(self.node["run_directory"]), *map(Path, self.node["databases"].values())]:
            directory.mkdir(parents=True, exist_ok=True)
        done = self.tool("slapadd", "-n0", "-F", str(self.config), "-l", str(self.out / "ldap/slapd-config"))
        assert done.returncode == 0 and done.stderr == b"", done.stderr.decode(errors="replace")
        return self

    def tool(self, name: str, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([program(name), *args], input=data, capture_output=True, timeout=TIMEOUT)

    def load(self, directory: Path) -> None:
        """slapadd the directory while slapd is stopped, as a node's first deployment does."""
        assert self.process is None
        done = self.tool("slapadd", "-F", str(self.config), "-b", self.base, "-l", str(directory))
        assert done.returncode == 0 and done.stderr == b"", done.stderr.decode(errors="replace")

    def start(self, debug: str = "0") -> GatewaySlapd:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [program("slapd"), "-F", str(self.config), "-h", " ".join(self.listeners), "-d", debug],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"slapd exited at start: {self.log.read_text(errors='replace')[-3000:]}")
            if self.as_root("ldapsearch", "-s", "base", "-b", self.base, "1.1").returncode in (0, 32):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("slapd did not answer within the start timeout")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def as_root(self, tool: str, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
        """An ldap-utils client as the node's root over the local socket: the deployment's identity."""
        return self.tool(tool, "-H", self.socket, "-Q", "-Y", "EXTERNAL", *args, data=data)

    def as_reader(
        self, tool: str, *args: str, url: str | None = None, password: str = READER_PASSWORD, data: bytes | None = None
    ) -> subprocess.CompletedProcess:
        """An ldap-utils client bound as the reader: over the local socket, or StartTLS (-ZZ) at a TCP URL."""
        tls = ["-ZZ"] if url and url.startswith("ldap://") else []
        return subprocess.run(
            [program(tool), "-H", url or self.socket, *tls, "-x", "-D", self.reader_dn, "-w", password, *args],
            input=data,
            capture_output=True,
            timeout=TIMEOUT,
            env={**os.environ, "LDAPTLS_CACERT": str(self.tls.ca), "LDAPTLS_REQCERT": "demand"},
        )

    def add_reader(self, password_hash: str) -> None:
        """The reader's entry, as the Puppet class writes it: in its own database, over the local socket as root."""
        entry = (
            f"dn: {self.reader_dn}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\n"
            f"cn: reader\nuserPassword: {password_hash}\n"
        )
        done = self.as_root("ldapadd", data=entry.encode())
        assert done.returncode == 0, done.stderr.decode(errors="replace")

    def dump(self) -> dict:
        """The live directory, normalised as Slapd.dump() does (slapcat: no size limit, no access control)."""
        done = self.tool("slapcat", "-F", str(self.config), "-b", self.base)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return normalise(parse_entries(done.stdout))

    def lookups(self, addresses: list[str], url: str | None = None) -> list[tuple[str, list[str]]]:
        """(address, the DNs that answer '(mailLocalAddress=ADDRESS)') for each address in order, as the reader.

        One ldapsearch process and one connection for them all (ldapsearch -f), as a service asks.
        """
        listing = Path(tempfile.mkstemp(prefix="addresses-", dir=self.config.parent)[1])
        try:
            listing.write_text("".join(f"{a}\n" for a in addresses))
            done = self.as_reader(
                "ldapsearch",
                "-b",
                self.base,
                "-o",
                "ldif-wrap=no",
                "-f",
                str(listing),
                "(mailLocalAddress=%s)",
                "1.1",
                url=url,
            )
        finally:
            listing.unlink()
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return parse_lookups(done.stdout.decode())

    def close(self) -> None:
        self.stop()


# Changes to the bundled tifpa.example.org that move addresses between entries: to a uid whose entry sorts
# after (m.rossi) and before (l.bianchi, giulia.neri) the one it leaves, to a uid that is new (paolo.conti),
# and from a list to a person (seminari); plus one new address. Every address stays declared.
MOVES = (
    ("  m.rossi: {kind: alias, uid: mrossi}\n", "  m.rossi: {kind: alias, uid: pconti}\n"),
    ("  l.bianchi: {kind: alias, uid: lbianchi}\n", "  l.bianchi: {kind: alias, uid: gneri}\n"),
    ('  giulia.neri: {uid: gneri, name: "Giulia Neri"}\n', "  giulia.neri: mrossi\n"),
    ("  paolo.conti: pconti\n", "  paolo.conti: zconti\n"),
    ("  seminari: {kind: list, owners: [gneri]}\n", "  seminari: mseminari\n  nuovo.arrivo: narrivo\n"),
)


def repository(dest: Path, source: Path, gateway: str, edits: tuple[tuple[str, str], ...] = ()) -> Path:
    """A copy of SOURCE's domains/ with GATEWAY as gateway.yaml and EDITS applied to tifpa.example.org."""
    shutil.copytree(source / "domains", dest / "domains")
    (dest / "gateway.yaml").write_text(gateway)
    domain = dest / "domains/tifpa.example.org.yaml"
    text = domain.read_text()
    for before, after in edits:
        assert text.count(before) == 1, before
        text = text.replace(before, after)
    domain.write_text(text)
    return dest


def parse_lookups(output: str) -> list[tuple[str, list[str]]]:
    """ldapsearch -f output: each search starts with a '# filter: (mailLocalAddress=A)' comment, then its entries."""
    found = []
    for section in output.split("\n# filter: (mailLocalAddress=")[1:]:
        address, _, rest = section.partition(")\n")
        found.append((address, [line[4:] for line in rest.splitlines() if line.startswith("dn: ")]))
    return found
