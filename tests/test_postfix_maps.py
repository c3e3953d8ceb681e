"""The Postfix maps, proven by the real postmap: indexed cleanly, and every lookup answers as declared."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from compiler.pipeline import compile_repository
from compiler.targets.postfix import MAPS
from tests.conftest import REPO, program

pytestmark = pytest.mark.needs("postmap")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> tuple[Path, object]:
    """The bundled fleet's maps, indexed with postmap lmdb: in a private config directory."""
    compiled = compile_repository(REPO)
    work = tmp_path_factory.mktemp("postfix")
    (work / "main.cf").write_text("")
    for name in MAPS:
        (work / name).write_bytes(compiled.artifacts[f"postfix/{name}"])
        done = subprocess.run(
            [program("postmap"), "-c", str(work), f"lmdb:{work / name}"], capture_output=True, text=True
        )
        assert done.returncode == 0 and done.stderr == "", f"postmap {name}: {done.stderr}"
        assert (work / f"{name}.lmdb").exists()
    return work, compiled.fleet


def query(work: Path, name: str, key: str) -> str | None:
    done = subprocess.run(
        [program("postmap"), "-c", str(work), "-q", key, f"lmdb:{work / name}"], capture_output=True, text=True
    )
    assert done.stderr == ""
    return done.stdout.rstrip("\n") if done.returncode == 0 else None


def test_every_declared_address_is_found_with_its_kind(indexed):
    work, fleet = indexed
    addresses = [a for d in fleet.domains for a in d.addresses]
    assert len(addresses) > 20
    for address in addresses:
        assert query(work, "relay_recipients", address.address) == address.kind


def test_undeclared_addresses_of_list_domains_are_unknown(indexed):
    work, fleet = indexed
    for domain in fleet.domains:
        if domain.recipient_check == "list":
            assert query(work, "relay_recipients", f"nobody.here@{domain.name}") is None
            assert query(work, "relay_recipients", f"@{domain.name}") is None, "a list domain has no catch-all"


def test_verify_domains_defer_to_recipient_verification(indexed):
    work, fleet = indexed
    verify = [d for d in fleet.domains if d.recipient_check == "verify"]
    assert verify, "the bundled fleet has a verify domain"
    for domain in verify:
        assert query(work, "relay_recipients", f"@{domain.name}") == "verify"
        assert query(work, "recipient_verification", domain.name) == "reject_unverified_recipient"
    for domain in fleet.domains:
        if domain.recipient_check == "list":
            assert query(work, "recipient_verification", domain.name) is None


def test_transport_and_relay_domains_answer_for_every_domain(indexed):
    work, fleet = indexed
    for domain in fleet.domains:
        assert query(work, "relay_domains", domain.name) == "OK"
        hops = ", ".join(f"[{h.host}]:{h.port}" for h in domain.nexthops)
        assert query(work, "transport", domain.name) == f"{domain.transport}:{hops}"
    assert query(work, "relay_domains", "example.org") is None
    assert query(work, "transport", "example.net") is None


def test_lmtp_and_several_hops_are_in_the_transport(indexed):
    work, _ = indexed
    assert (
        query(work, "transport", "cnaf.example.org") == "lmtp:[mbox1.cnaf.example.org]:24, [mbox2.cnaf.example.org]:24"
    )
    assert query(work, "transport", "xn--citt-3na.example.org") == "smtp:[relay.ge.example.org]:25"


def test_external_aliases_resolve_to_their_targets(indexed):
    work, fleet = indexed
    aliases = [a for d in fleet.domains for a in d.addresses if a.kind == "external"]
    assert aliases
    for alias in aliases:
        assert query(work, "virtual_alias", alias.address) == ", ".join(alias.targets)
    assert query(work, "virtual_alias", "mario.rossi@tifpa.example.org") is None


def test_lookups_fold_case_as_the_docs_say(indexed):
    work, _ = indexed
    assert query(work, "relay_recipients", "Mario.Rossi@TIFPA.example.org") == "person"
