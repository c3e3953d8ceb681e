"""A private slapd for the tests: its own cn=config, an mdb database, a unix socket; nothing else shared.

The configuration is what docs/ldap.md asks of the gateway's LDAP server:
the core, cosine and misc schemas from /etc/ldap/schema, a database whose
suffix is the base DN, and the equality indexes the portal's searches use.
Schema checking is on, as it always is for slapd's LDAP operations and for
slapadd without -s.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import ldif

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
