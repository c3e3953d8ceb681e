"""Properties over generated declarations and bytes.

The generators write the grammars of docs/declarations.md out by hand (never
taken from the compiler), so that a file is valid or invalid by construction:

- A valid fleet always compiles; its maps index silently with the real
  postmap, hold exactly the keys the test derives from the YAML it wrote,
  and postmap answers each with the value derived from that YAML.
- A valid file with one forbidden value put in (a local part, a uid, an
  alias target) gets that value's error code at that value's line.
- Arbitrary bytes never make the loader trace back (the fuzz target).

Every example reaches the assertions; tests/conftest.py counts them
(`reached`) and fails the run if a test's share falls under 80%.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml.nodes import MappingNode, SequenceNode

from compiler.main import main
from compiler.pipeline import compile_repository, load_domain
from compiler.targets.postfix import MAPS
from tests.conftest import GATEWAY, REPO, example, program, reached
from tests.mx_harness import age

# docs/declarations.md: a local part is a dot-atom of a-z 0-9 _ + - (any case), at most 64.
ATOM = st.from_regex(r"[A-Za-z0-9_+-]{1,8}", fullmatch=True)
LOCAL_PART = st.lists(ATOM, min_size=1, max_size=3).map(".".join)
# An AAI uid: a-z 0-9 . _ -, starting with a letter or digit, lower case, at most 64.
UID = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}", fullmatch=True)
# The served domains and their A-labels, written out by hand.
DOMAINS = {
    "tifpa.example.org": "tifpa.example.org",
    "lnf.example.org": "lnf.example.org",
    "città.example.org": "xn--citt-3na.example.org",
    "Lab.TIFPA.example.org": "lab.tifpa.example.org",
}
# Alias targets' domains (never served ones: a target there must be declared), folded to A-labels.
ELSEWHERE = {"example.net": "example.net", "Ex.COM": "ex.com", "bücher.example": "xn--bcher-kva.example"}
GATEWAY_POSTMASTER = "postmaster@gw.example.org"  # GATEWAY's first MX host is mx1.gw.example.org
NEXTHOPS = {"smtp:[relay.example.net]:25": "smtp:[relay.example.net]:25", "lmtp:[192.0.2.1]": "lmtp:[192.0.2.1]:24"}
OWNER = "owner0"  # a person of every domain, so that every role and list has a known owner


# What a recipient is written as, and its kind in relay_recipients.
FORMS = {"person": "person", "explicit person": "person", "alias": "alias", "role": "role", "list": "list"}


@st.composite
def valid_domain(draw, name):
    """(the declaration, the addresses it declares: address -> (kind, sorted targets))."""
    alabel = DOMAINS[name]
    keys = draw(st.lists(LOCAL_PART.filter(lambda k: k.lower() != OWNER), min_size=1, max_size=8, unique_by=str.lower))
    split = draw(st.integers(1, len(keys)))
    recipients, addresses = {OWNER: OWNER}, {f"{OWNER}@{alabel}": ("person", ())}
    forms = draw(st.lists(st.sampled_from(sorted(FORMS)), min_size=split, max_size=split))
    uids = {key: draw(UID) for key, form in zip(keys, forms, strict=False) if FORMS[form] in ("person", "alias")}
    known = sorted({OWNER, *uids.values()})  # owners are uids of people of the fleet (unknown-owner)
    for key, form in zip(keys, forms, strict=False):
        if form == "person":
            recipients[key] = uids[key]
        elif form in ("explicit person", "alias"):
            recipients[key] = {"kind": FORMS[form], "uid": uids[key]}
        else:
            recipients[key] = {
                "kind": form,
                "owners": draw(st.lists(st.sampled_from(known), min_size=1, max_size=3, unique=True)),
            }
        addresses[f"{key.lower()}@{alabel}"] = (FORMS[form], ())
    aliases = {}
    for key in keys[split:]:
        targets = draw(
            st.lists(st.tuples(LOCAL_PART, st.sampled_from(sorted(ELSEWHERE))), min_size=1, max_size=3, unique=True)
        )
        aliases[key] = [f"{local}@{domain}" for local, domain in targets]
        folded = sorted({f"{local}@{ELSEWHERE[domain]}" for local, domain in targets})
        addresses[f"{key.lower()}@{alabel}"] = ("external", tuple(folded))
    data = {
        "domain": name,
        "site": "TIFPA",
        "admins": ["@example/mail"],
        "delivery": {"nexthop": draw(st.sampled_from(sorted(NEXTHOPS)))},
        "recipient_check": draw(st.sampled_from(["list", "verify"])),
        "recipients": recipients,
    }
    if aliases:
        data["external_aliases"] = aliases
    return data, addresses


def valid_fleet():
    names = st.lists(st.sampled_from(sorted(DOMAINS)), min_size=1, max_size=3, unique=True)
    return names.flatmap(lambda chosen: st.tuples(*[valid_domain(name) for name in chosen]))


def _write_fleet(root: Path, domains: list[dict]) -> None:
    (root / "domains").mkdir(parents=True, exist_ok=True)
    (root / "gateway.yaml").write_text(GATEWAY)
    for data in domains:
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
        (root / "domains" / f"{DOMAINS[data['domain']]}.yaml").write_text(text)


def expected_maps(fleet: tuple) -> dict[str, dict[str, str]]:
    """Every map's keys and values, from the declarations as written (README: what out/ holds)."""
    maps: dict[str, dict[str, str]] = {name: {} for name in MAPS}
    for data, addresses in fleet:
        alabel, verify = DOMAINS[data["domain"]], data["recipient_check"] == "verify"
        maps["relay_domains"][alabel] = "OK"
        maps["transport"][alabel] = NEXTHOPS[data["delivery"]["nexthop"]]
        maps["sender_sites"][alabel] = f"REJECT {alabel} is a domain of site TIFPA, not of this relay's site"
        if verify:
            maps["relay_recipients"][f"@{alabel}"] = "verify"
            maps["recipient_verification"][alabel] = "reject_unverified_recipient"
        for address, (kind, targets) in addresses.items():
            maps["relay_recipients"][address] = kind
            if targets:
                maps["virtual_alias"][address] = ", ".join(targets)
                if verify:
                    maps["recipient_verification"][address] = "DUNNO"
        # docs/mx.md, "The reserved mailboxes": postmaster@ and abuse@ when the file does not declare them.
        lmtp = NEXTHOPS[data["delivery"]["nexthop"]].startswith("lmtp:")
        for address in (f"{local}@{alabel}" for local in ("postmaster", "abuse")):
            if address in addresses or (verify and not lmtp):
                continue  # declared, or a verify domain's site is asked about it like any address
            maps["relay_recipients"][address] = "reserved"
            if lmtp:  # a mailbox server has no postmaster: the gateway team's mailbox, never probed
                maps["virtual_alias"][address] = GATEWAY_POSTMASTER
                if verify:
                    maps["recipient_verification"][address] = "DUNNO"
    # The node's own postmaster; gateway.yaml names none here: postmaster@ the first MX host's domain.
    maps["virtual_alias"]["postmaster"] = GATEWAY_POSTMASTER
    return maps


@pytest.mark.needs("postmap")
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(valid_fleet())
def test_valid_fleets_compile_and_every_map_answers_what_the_yaml_declares(tmp_path_factory, fleet):
    example("accepted fleets: postmap answers")
    root = tmp_path_factory.mktemp("fleet")
    _write_fleet(root, [data for data, _ in fleet])
    compiled = compile_repository(root)  # valid by construction: a finding here fails the test
    reached("accepted fleets: postmap answers", f"{len(fleet)} domain(s)")
    expected = expected_maps(fleet)
    assert set(MAPS) == set(expected), "a new map: say here what it holds"
    config = tmp_path_factory.getbasetemp() / "postmap-properties"
    if not config.exists():
        config.mkdir()
        (config / "main.cf").write_text("")
        age(config / "main.cf")  # Postfix waits on a main.cf changed in the last seconds
    for name in MAPS:
        (config / name).write_bytes(compiled.artifacts[f"postfix/{name}"])
        lines = (config / name).read_text().splitlines()[1:]
        assert lines == sorted(lines)
        assert {line.split("\t", 1)[0] for line in lines} == set(expected[name]), name
    tables = [f"lmdb:{config / name}" for name in MAPS]
    done = subprocess.run([program("postmap"), "-c", str(config), *tables], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    for name in MAPS:
        source = config / name
        keys = sorted(expected[name])
        queried = subprocess.run(
            [program("postmap"), "-c", str(config), "-q", "-", f"lmdb:{source}"],
            input="".join(f"{key}\n" for key in keys),
            capture_output=True,
            text=True,
        )
        assert queried.stderr == ""
        assert dict(line.split("\t", 1) for line in queried.stdout.splitlines()) == expected[name], name


# --- one forbidden value in an otherwise valid file ------------------------------------------

# docs/declarations.md forbids these in a local part (beside the dot rules and the length).
NOT_IN_LOCAL_PART = list(" \t,:;\"'<>()[]\\#!*/=?^`{|}~$%&@é") + ["\x07"]
NOT_IN_UID = NOT_IN_LOCAL_PART + list("+ABZ")


@st.composite
def bad_local_part(draw):
    good = draw(LOCAL_PART)
    how = draw(st.sampled_from(["char", "char", "char", "leading dot", "trailing dot", "double dot", "long", "empty"]))
    if how == "char":
        at = draw(st.integers(0, len(good)))
        return good[:at] + draw(st.sampled_from(NOT_IN_LOCAL_PART)) + good[at:]
    return {
        "leading dot": "." + good,
        "trailing dot": good + ".",
        "double dot": good + ".." + good,
        "long": (good + "x" * 65)[:65],
        "empty": "",
    }[how]


@st.composite
def bad_uid(draw):
    good = draw(UID)
    how = draw(st.sampled_from(["char", "char", "char", "leading", "long", "empty"]))
    if how == "char":
        at = draw(st.integers(0, len(good)))
        return good[:at] + draw(st.sampled_from(NOT_IN_UID)) + good[at:]
    if how == "leading":
        return draw(st.sampled_from(".-_")) + good
    return {"long": (good + "x" * 65)[:65], "empty": ""}[how]


def _node(root, path: tuple):
    """The YAML node at path (a mapping key as ('key', k)), as PyYAML composes the file."""
    node = root
    for part in path:
        if isinstance(part, tuple):  # the key node itself
            return next(k for k, _ in node.value if k.value == part[1])
        if isinstance(node, MappingNode):
            node = next(v for k, v in node.value if k.value == part)
        else:
            assert isinstance(node, SequenceNode)
            node = node.value[part]
    return node


@st.composite
def one_bad_value(draw):
    """(a domain declaration with one forbidden value, where it is, the code it must get)."""
    data, _ = draw(valid_domain("tifpa.example.org"))
    recipients = data["recipients"]
    where = draw(st.sampled_from(["key", "person uid", "alias uid", "owner", "alias target"]))
    if where == "key":
        bad = draw(bad_local_part().filter(lambda k: k.lower() not in {r.lower() for r in recipients}))
        recipients[bad] = OWNER
        return data, ("recipients", ("key", bad)), "bad-local-part"
    if where == "person uid":
        recipients["someone"] = draw(bad_uid())
        return data, ("recipients", "someone"), "bad-uid"
    if where == "alias uid":
        recipients["someone"] = {"kind": "alias", "uid": draw(bad_uid())}
        return data, ("recipients", "someone", "uid"), "bad-uid"
    if where == "owner":
        recipients["someone"] = {"kind": "list", "owners": [OWNER, draw(bad_uid())]}
        return data, ("recipients", "someone", "owners", 1), "bad-uid"
    target = f"{draw(bad_local_part().filter(lambda k: '@' not in k))}@example.net"
    data.setdefault("external_aliases", {})["someone.else"] = [target]
    return data, ("external_aliases", "someone.else", 0), "bad-address"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(one_bad_value())
def test_a_forbidden_value_gets_its_code_at_its_line(tmp_path_factory, case):
    example("refused values: located")
    data, path, code = case
    root = tmp_path_factory.mktemp("fleet")
    _write_fleet(root, [data])
    file = root / "domains/tifpa.example.org.yaml"
    text = file.read_text()
    line = _node(yaml.compose(text), path).start_mark.line + 1
    _source, findings = load_domain(file, "domains/tifpa.example.org.yaml")
    reached("refused values: located", code)
    assert (code, line) in {(f.code, f.line) for f in findings}, findings
    lines = text.splitlines()
    for finding in findings:
        assert finding.path == "domains/tifpa.example.org.yaml"
        assert 1 <= finding.line <= len(lines)
        assert 1 <= finding.col <= len(lines[finding.line - 1]) + 1
        assert finding.message.split(":", 1)[0].split("[")[0].split(".")[0] in data, finding.message


VALID = (REPO / "domains/tifpa.example.org.yaml").read_bytes()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.tuples(st.integers(0, len(VALID)), st.integers(0, len(VALID)), st.binary(max_size=8)).map(
            lambda cut: VALID[: cut[0]] + cut[2] + VALID[cut[1] :]
        ),
    )
)
def test_fuzz_loader_never_traces_back(tmp_path_factory, blob):
    example("fuzz: validate ends cleanly")
    root = tmp_path_factory.mktemp("fuzz")
    (root / "domains").mkdir()
    (root / "gateway.yaml").write_text(GATEWAY)
    (root / "domains/tifpa.example.org.yaml").write_bytes(blob)
    code = main(["--root", str(root), "validate"])
    reached("fuzz: validate ends cleanly", f"exit {code}")
    assert code in (0, 1)
