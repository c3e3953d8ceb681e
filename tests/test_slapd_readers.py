"""Readers never see a half-applied change lose an address: a real slapd, from the generated configuration.

The change moves addresses between uids (tests/slapd.py MOVES): to an entry
that sorts after the one it leaves and before, to a new uid, from a list to
a person. It is what Puppet applies: `mailgw ldap-diff` of the live server's
dump and the new directory.ldif, fed to ldapmodify. Every address declared
on both sides must have an owner at every moment, as the reader sees it.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from compiler.pipeline import compile_repository
from tests.conftest import REPO
from tests.slapd import (
    MOVES,
    NEEDS_ROOT,
    GatewaySlapd,
    free_port,
    gateway_yaml,
    make_tls,
    normalise,
    parse_entries,
    reader_hash,
    repository,
)

pytestmark = [
    pytest.mark.needs("slapd", "slapadd", "slapcat", "slappasswd", "ldapsearch", "ldapadd", "ldapmodify", "openssl"),
    pytest.mark.needs_root(NEEDS_ROOT),
]

# How many times each of the reader's processes looks up every address; how many times, at least, the change
# is applied (forward or back) while it reads.
READER_PASSES = 100
APPLIED = 20


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mailgw-readers-"))  # short: the socket's path must fit in 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def directories(work) -> dict[str, object]:
    """directory.ldif before and after the moves (same node paths), and the addresses declared in both."""
    tls = make_tls(work / "tls")
    gateway = gateway_yaml((REPO / "gateway.yaml").read_text(), work, tls, free_port())
    built = {}
    for name, edits in (("old", ()), ("new", MOVES)):
        compiled = compile_repository(repository(work / f"repo-{name}", REPO, gateway, edits))
        out = work / f"out-{name}"
        for rel, data in compiled.artifacts.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
        built[name] = (out, {a.address for d in compiled.fleet.domains for a in d.addresses})
    (old, old_addresses), (new, new_addresses) = built["old"], built["new"]
    return {"tls": tls, "old": old, "new": new, "both": sorted(old_addresses & new_addresses)}


@pytest.fixture(scope="module")
def server(directories):
    slapd = GatewaySlapd(directories["old"], directories["tls"]).configure()
    try:
        slapd.load(directories["old"] / "ldap/directory.ldif")
        slapd.start()
        slapd.add_reader(reader_hash())
        yield slapd
    finally:
        slapd.close()


def changes_to(server: GatewaySlapd, directory: Path, mailgw, work: Path) -> str:
    """What Puppet applies: ldap-diff of the live server's dump (slapcat) and DIRECTORY."""
    live = work / "live.ldif"
    dump = server.tool("slapcat", "-F", str(server.config), "-b", server.base)
    assert dump.returncode == 0
    live.write_bytes(dump.stdout)
    result = mailgw(work, "ldap-diff", str(live), str(directory))
    assert result.code == 0, result.err
    return result.out


def records(changes: str) -> list[str]:
    """The change records of an ldap-diff output, in order (the header and 'version: 1' left out)."""
    header, _, body = changes.partition("version: 1\n")
    assert header.startswith("# ") and "\n\n" not in header
    return [record for record in body.split("\n\n") if record.strip()]


def ownerless(server: GatewaySlapd, addresses: list[str]) -> list[str]:
    return [address for address, owners in server.lookups(addresses) if not owners]


def apply_step_by_step(server: GatewaySlapd, steps: list[str], addresses: list[str]) -> list[tuple[int, list[str]]]:
    """Apply each change record alone, and after each, look every address up: (step, addresses without owner)."""
    missing = []
    for number, record in enumerate(steps):
        done = server.as_root("ldapmodify", data=f"version: 1\n\n{record}\n".encode())
        assert done.returncode == 0, done.stderr.decode(errors="replace") + record
        lost = ownerless(server, addresses)
        if lost:
            missing.append((number, lost))
    return missing


def test_the_change_moves_addresses_between_entries(directories):
    """The fixture means what it says: addresses in both directories whose owning entry changes."""
    old, new = (normalise(parse_entries((directories[n] / "ldap/directory.ldif").read_bytes())) for n in ("old", "new"))

    def owners(entries: dict) -> dict[str, tuple]:
        return {a: dn for dn, attributes in entries.items() for a in attributes.get("maillocaladdress", [])}

    before, after = owners(old), owners(new)
    moved = sorted(a for a in directories["both"] if before[a] != after[a])
    assert moved == [
        "giulia.neri@tifpa.example.org",
        "l.bianchi@tifpa.example.org",
        "m.rossi@tifpa.example.org",
        "paolo.conti@tifpa.example.org",
        "seminari@tifpa.example.org",
    ]


def test_after_every_single_operation_each_address_still_has_an_owner(server, directories, mailgw, work):
    both = directories["both"]
    assert ownerless(server, both) == []
    for target in ("new", "old"):
        steps = records(changes_to(server, directories[target] / "ldap/directory.ldif", mailgw, work))
        assert len(steps) >= 8
        assert apply_step_by_step(server, steps, both) == [], target
        assert server.dump() == normalise(parse_entries((directories[target] / "ldap/directory.ldif").read_bytes()))


def test_the_check_sees_an_address_go_missing_when_an_entry_loses_it_before_another_gains_it(
    server, directories, mailgw, work
):
    """Control: the same operations with each entry's losses before every gain lose addresses on the way."""
    steps = records(changes_to(server, directories["new"] / "ldap/directory.ldif", mailgw, work))
    gains = [s for s in steps if "changetype: modify" in s and "\nadd:" in s and "\ndelete:" not in s]
    losses = [s for s in steps if "changetype: modify" in s and "\ndelete:" in s and "\nadd:" not in s]
    assert gains and losses
    reordered = [s for s in steps if s not in gains and s not in losses and "changetype: delete" not in s]
    reordered += losses + gains + [s for s in steps if "changetype: delete" in s]
    missing = apply_step_by_step(server, reordered, directories["both"])
    try:
        lost = {address for _, addresses in missing for address in addresses}
        assert {"m.rossi@tifpa.example.org", "l.bianchi@tifpa.example.org"} <= lost, missing
    finally:
        back = changes_to(server, directories["old"] / "ldap/directory.ldif", mailgw, work)
        assert server.as_root("ldapmodify", data=back.encode()).returncode == 0


def test_a_reader_looking_up_every_address_in_a_loop_always_finds_an_owner(server, directories, mailgw, work):
    """A reader looks every address up, over and over (READER_PASSES times on one connection per ldapsearch
    process, one process after another), while ldapmodify applies the change forward and back, as Puppet does,
    at least APPLIED times and until the reader has finished a few rounds meanwhile."""
    both = directories["both"]
    forward = changes_to(server, directories["new"] / "ldap/directory.ldif", mailgw, work).encode()
    assert server.as_root("ldapmodify", data=forward).returncode == 0
    back = changes_to(server, directories["old"] / "ldap/directory.ldif", mailgw, work).encode()
    assert server.as_root("ldapmodify", data=back).returncode == 0
    rounds: list[list[tuple[str, list[str]]]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            rounds.append(server.lookups(both * READER_PASSES))

    reader = threading.Thread(target=read)
    applied = 0
    reader.start()
    try:
        while applied < APPLIED or len(rounds) < 3:
            for changes in (forward, back):
                done = server.as_root("ldapmodify", data=changes)
                assert done.returncode == 0, done.stderr.decode(errors="replace")
                applied += 1
    finally:
        stop.set()
        reader.join(timeout=120)
    lookups = [lookup for found in rounds for lookup in found]
    assert len(lookups) >= 3 * len(both) * READER_PASSES
    assert [address for address, owners in lookups if not owners] == []
    assert server.dump() == normalise(parse_entries((directories["old"] / "ldap/directory.ldif").read_bytes()))
