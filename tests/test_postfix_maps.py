"""The Postfix maps, proven by the real postmap: indexed cleanly, and every lookup answers what the YAML declares.

The expectations come from domains/*.yaml as this test reads them (PyYAML,
the rules of README's out/ table), never from the compiler's Fleet.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from compiler.pipeline import compile_repository
from compiler.targets.postfix import MAPS
from tests.conftest import REPO, program
from tests.mx_harness import age

pytestmark = pytest.mark.needs("postmap")

DEFAULT_PORTS = {"smtp": 25, "lmtp": 24}


@dataclass
class Declared:
    """One domain as its file says: A-label, recipient check, next hops, and address -> kind / alias targets."""

    name: str
    recipient_check: str
    transport: str
    kinds: dict[str, str] = field(default_factory=dict)
    targets: dict[str, list[str]] = field(default_factory=dict)

    @property
    def reserved(self) -> list[str]:
        """postmaster@ and abuse@ where the domain does not declare them and the MX itself accepts them
        (docs/mx.md, "The reserved mailboxes"): a list domain, or any domain delivered over LMTP."""
        if self.recipient_check == "verify" and not self.transport.startswith("lmtp:"):
            return []  # the site is asked, as for every address
        return [a for a in (f"postmaster@{self.name}", f"abuse@{self.name}") if a not in self.kinds]


def _alabel(domain: str) -> str:
    return domain.lower().encode("idna").decode("ascii")


def _target(address: str) -> str:
    """An alias target: the remote local part kept, the domain folded to its A-label."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{_alabel(domain)}"


def _transport(nexthop: str | list[str]) -> str:
    hops = []
    for hop in [nexthop] if isinstance(nexthop, str) else nexthop:
        kind, host, port = re.fullmatch(r"(?:(smtp|lmtp):)?\[([^\]]+)\](?::(\d+))?", hop).groups()
        hops.append((kind or "smtp", host.lower(), int(port or DEFAULT_PORTS[kind or "smtp"])))
    return f"{hops[0][0]}:" + ", ".join(f"[{host}]:{port}" for _, host, port in hops)


def declared_domains() -> list[Declared]:
    found = []
    for path in sorted((REPO / "domains").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        domain = Declared(
            _alabel(data["domain"]), data.get("recipient_check", "list"), _transport(data["delivery"]["nexthop"])
        )
        for local, value in (data.get("recipients") or {}).items():
            domain.kinds[f"{str(local).lower()}@{domain.name}"] = (
                value.get("kind", "person") if isinstance(value, dict) else "person"
            )
        for local, targets in (data.get("external_aliases") or {}).items():
            address = f"{str(local).lower()}@{domain.name}"
            domain.kinds[address] = "external"
            domain.targets[address] = sorted({_target(t) for t in targets})
        found.append(domain)
    return found


DECLARED = declared_domains()


def national_aliases() -> dict[str, str]:
    """National alias -> the person's primary address, from national/*.yaml and the domain files
    (docs/national-aliases.md): uid@ when the ledger gives the uid its own name; the extended alias the person
    chose, else the one the ledger gave after it (the bundled ledger gives each uid at most one by the rules);
    the chosen primary address, else the person's own address (the first in order)."""
    national = yaml.safe_load((REPO / "gateway.yaml").read_text())["national"]["domain"]
    ledger = yaml.safe_load((REPO / "national/aliases.yaml").read_text())["aliases"]
    choices = yaml.safe_load((REPO / "national/choices.yaml").read_text())["choices"]
    own: dict[str, list[str]] = {}
    for path in sorted((REPO / "domains").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        for local, value in (data.get("recipients") or {}).items():
            uid = value if isinstance(value, str) else value.get("uid")
            kind = "person" if isinstance(value, str) else value.get("kind", "person")
            if uid and kind == "person":
                own.setdefault(uid, []).append(f"{str(local).lower()}@{_alabel(data['domain'])}")
    expected = {}
    for uid, given in ledger.items():
        choice = choices.get(uid, {})
        primary = choice.get("primary") or sorted(own[uid])[0]
        extended = choice.get("alias") or (given[1] if len(given) > 1 else None)
        for alias in {given[0] if given[0] == uid else None, extended} - {None}:
            expected[f"{alias}@{national}"] = primary
    return expected


NATIONAL_ALIASES = national_aliases()
# The gateway team's mailbox (gateway.yaml `postmaster`): the node's own postmaster, and an LMTP domain's reserved ones.
GATEWAY_POSTMASTER = yaml.safe_load((REPO / "gateway.yaml").read_text())["postmaster"]
# gateway.yaml's forwarding (docs/mx.md): external aliases take the second pass, at this smtpd, from forward_alias.
FORWARDING = yaml.safe_load((REPO / "gateway.yaml").read_text())["forwarding"]
FORWARD_SERVICE = "mailgw_forward:[" + FORWARDING.get("service", "127.0.0.1:10027").replace(":", "]:")
MAPS_WITH_FORWARDING = (*MAPS, "forward_alias")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    """The bundled fleet's maps, indexed with postmap lmdb: in a private config directory."""
    compiled = compile_repository(REPO)
    work = tmp_path_factory.mktemp("postfix")
    (work / "main.cf").write_text("")
    age(work / "main.cf")  # Postfix waits on a main.cf changed in the last seconds
    for name in MAPS_WITH_FORWARDING:
        (work / name).write_bytes(compiled.artifacts[f"postfix/{name}"])
    done = subprocess.run(
        [program("postmap"), "-c", str(work), *[f"lmdb:{work / name}" for name in MAPS_WITH_FORWARDING]],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert all((work / f"{name}.lmdb").exists() for name in MAPS_WITH_FORWARDING)
    return work


def query(work: Path, name: str, key: str) -> str | None:
    done = subprocess.run(
        [program("postmap"), "-c", str(work), "-q", key, f"lmdb:{work / name}"], capture_output=True, text=True
    )
    assert done.stderr == ""
    return done.stdout.rstrip("\n") if done.returncode == 0 else None


def keys(work: Path, name: str) -> set[str]:
    """Every key of a map, as the indexed table lists it (postmap -s)."""
    done = subprocess.run(
        [program("postmap"), "-c", str(work), "-s", f"lmdb:{work / name}"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == ""
    return {line.split("\t", 1)[0] for line in done.stdout.splitlines()}


def test_the_bundled_fleet_is_what_this_test_reads():
    assert len(DECLARED) == 7 and sum(len(d.kinds) for d in DECLARED) == 33
    assert len(NATIONAL_ALIASES) == 16
    assert {d.recipient_check for d in DECLARED} == {"list", "verify"}


def test_every_declared_address_is_found_with_its_kind_and_nothing_else(indexed):
    expected = {address: kind for d in DECLARED for address, kind in d.kinds.items()}
    expected |= {f"@{d.name}": "verify" for d in DECLARED if d.recipient_check == "verify"}
    expected |= {address: "reserved" for d in DECLARED for address in d.reserved}
    expected |= {address: "national" for address in NATIONAL_ALIASES}
    assert keys(indexed, "relay_recipients") == set(expected)
    for address, kind in expected.items():
        assert query(indexed, "relay_recipients", address) == kind, address


def test_undeclared_addresses_of_list_domains_are_unknown(indexed):
    for domain in DECLARED:
        if domain.recipient_check == "list":
            assert query(indexed, "relay_recipients", f"nobody.here@{domain.name}") is None
            assert query(indexed, "relay_recipients", f"@{domain.name}") is None, "a list domain has no catch-all"


def test_verify_domains_ask_the_site_except_for_their_external_aliases(indexed):
    expected = {}
    for domain in DECLARED:
        if domain.recipient_check == "verify":
            expected[domain.name] = "reject_unverified_recipient"
            expected |= {address: "DUNNO" for address in domain.targets}
    assert expected, "the bundled fleet has a verify domain"
    assert keys(indexed, "recipient_verification") == set(expected)
    for key, value in expected.items():
        assert query(indexed, "recipient_verification", key) == value


def test_transport_and_relay_domains_answer_for_every_domain(indexed):
    aliases = {address for d in DECLARED for address in d.targets}
    # The SRS domain is relayed too: bounces to its SRS addresses come back (docs/mx.md).
    assert keys(indexed, "relay_domains") == {d.name for d in DECLARED} | {FORWARDING["srs_domain"]}
    # lnf.example.org captures: the notices' internal domain goes to the notifier (docs/site-admins.md).
    assert keys(indexed, "transport") == {d.name for d in DECLARED} | aliases | {"notice.mailgw.invalid"}
    assert query(indexed, "transport", "notice.mailgw.invalid") == "mailgw_notice:"
    for domain in DECLARED:
        assert query(indexed, "relay_domains", domain.name) == "OK"
        assert query(indexed, "transport", domain.name) == domain.transport
    for address in aliases:
        assert query(indexed, "transport", address) == FORWARD_SERVICE
    assert query(indexed, "relay_domains", "example.org") is None
    assert query(indexed, "transport", "example.net") is None


def test_lmtp_and_several_hops_are_in_the_transport(indexed):
    assert (
        query(indexed, "transport", "cnaf.example.org")
        == "lmtp:[mbox1.cnaf.example.org]:24, [mbox2.cnaf.example.org]:24"
    )
    assert query(indexed, "transport", "xn--citt-3na.example.org") == "smtp:[relay.ge.example.org]:25"


def test_external_aliases_resolve_to_their_targets_on_the_forwarding_pass(indexed):
    forwarded = {address: ", ".join(targets) for d in DECLARED for address, targets in d.targets.items()}
    assert forwarded
    assert keys(indexed, "forward_alias") == set(forwarded)
    for address, targets in forwarded.items():
        assert query(indexed, "forward_alias", address) == targets
    # The first pass's virtual_alias: the gateway's own postmaster and the LMTP domains' reserved addresses.
    expected = {"postmaster": GATEWAY_POSTMASTER}
    expected |= {a: GATEWAY_POSTMASTER for d in DECLARED if d.transport.startswith("lmtp:") for a in d.reserved}
    expected |= NATIONAL_ALIASES
    # lnf.example.org captures direzione@: its blind copy goes to the destination and a notice per person told.
    capture = yaml.safe_load((REPO / "domains/lnf.example.org.yaml").read_text())["capture"]
    notices = ", ".join(f"{p.replace('@', '=')}@notice.mailgw.invalid" for p in sorted(capture["notify"]))
    for local in capture["addresses"]:
        expected[f"{local}=lnf.example.org@capture.mailgw.invalid"] = f"{capture['destination']}, {notices}"
    assert keys(indexed, "virtual_alias") == set(expected)
    for address, targets in expected.items():
        assert query(indexed, "virtual_alias", address) == targets
    assert query(indexed, "virtual_alias", "mario.rossi@tifpa.example.org") is None


def test_lookups_fold_case_as_the_docs_say(indexed):
    assert query(indexed, "relay_recipients", "Mario.Rossi@TIFPA.example.org") == "person"


def test_captured_addresses_get_their_blind_copy(indexed):
    """recipient_bcc_maps: every captured address, and the national aliases that reach one, -> its copy."""
    capture = yaml.safe_load((REPO / "domains/lnf.example.org.yaml").read_text())["capture"]
    captured = {f"{local}@lnf.example.org" for local in capture["addresses"]}
    expected = {a: f"{a.replace('@', '=')}@capture.mailgw.invalid" for a in captured}
    expected |= {alias: expected[to] for alias, to in NATIONAL_ALIASES.items() if to in captured}
    assert keys(indexed, "capture_bcc") == set(expected)
    for address, copy in expected.items():
        assert query(indexed, "capture_bcc", address) == copy
