"""Properties over generated declarations and bytes.

- Whatever the validator accepts compiles into maps that the real postmap
  indexes silently and that answer exactly the declared value for every key.
- Whatever it rejects gets findings inside the file, naming the field.
- Arbitrary bytes never make the loader trace back (the fuzz target).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import values
from compiler.findings import FindingsError
from compiler.main import main
from compiler.pipeline import compile_repository, load_domain
from compiler.targets.postfix import MAPS
from tests.conftest import GATEWAY, REPO, program

local_part = st.from_regex(
    values.LOCAL_PART_PATTERN.replace("a-z", "A-Za-z").replace("+", "{1,6}", 1).replace(")*", "){0,2}"), fullmatch=True
).filter(lambda s: len(s) <= 64)
uid = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}", fullmatch=True)
# Anything at all, to probe the grammars: spaces, controls, quotes, separators, non-ASCII.
anything = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12)
domain_names = st.sampled_from(["tifpa.example.org", "lnf.example.org", "città.example.org", "Lab.TIFPA.example.org"])


@st.composite
def recipient(draw, value_text):
    form = draw(st.integers(0, 3))
    if form == 0:
        return draw(value_text)
    if form == 1:
        return {"kind": "alias", "uid": draw(value_text)}
    return {
        "kind": draw(st.sampled_from(["role", "list"])),
        "owners": draw(st.lists(value_text, min_size=1, max_size=2)),
    }


@st.composite
def domain(draw, name, keys, value_text):
    people = draw(st.dictionaries(keys, recipient(value_text), min_size=1, max_size=6))
    # owners must be known uids: make the first uid of each domain a person everywhere
    people["owner0"] = "owner0"
    data = {
        "domain": name,
        "site": "TIFPA",
        "admins": ["@example/mail"],
        "delivery": {"nexthop": draw(st.sampled_from(["smtp:[relay.example.net]:25", "lmtp:[192.0.2.1]"]))},
        "recipient_check": draw(st.sampled_from(["list", "verify"])),
        "recipients": people,
    }
    if draw(st.booleans()):
        data["external_aliases"] = draw(
            st.dictionaries(
                keys.filter(lambda k: k.lower() not in {p.lower() for p in people}),
                st.lists(
                    st.builds(lambda a, d: f"{a}@{d}", local_part, st.sampled_from(["example.net", "Ex.COM"])),
                    min_size=1,
                    max_size=2,
                ),
                max_size=3,
            )
        )
    return data


def _write_fleet(root: Path, domains: list[dict]) -> None:
    (root / "domains").mkdir(parents=True, exist_ok=True)
    (root / "gateway.yaml").write_text(GATEWAY)
    for data in domains:
        name = values.domain_name(data["domain"])
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
        (root / "domains" / f"{name}.yaml").write_text(text)


def _owners_known(data: dict) -> dict:
    for r in data["recipients"].values():
        if isinstance(r, dict) and "owners" in r:
            r["owners"] = ["owner0"]
    return data


@pytest.mark.needs("postmap")
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(domain_names, min_size=1, max_size=3, unique_by=values.domain_name).flatmap(
        lambda names: st.tuples(*[domain(n, local_part, uid) for n in names])
    )
)
def test_accepted_declarations_index_cleanly_and_answer_exactly(tmp_path_factory, domains):
    root = tmp_path_factory.mktemp("fleet")
    _write_fleet(root, [_owners_known(d) for d in domains])
    try:
        compiled = compile_repository(root)
    except FindingsError:
        return  # a generated case the checks refuse (e.g. two keys differing only in case)
    config = root / "postfix"
    config.mkdir()
    (config / "main.cf").write_text("")
    for name in MAPS:
        source = config / name
        source.write_bytes(compiled.artifacts[f"postfix/{name}"])
        done = subprocess.run([program("postmap"), "-c", str(config), f"lmdb:{source}"], capture_output=True, text=True)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        declared = dict(line.split("\t", 1) for line in source.read_text().splitlines()[1:])
        queried = subprocess.run(
            [program("postmap"), "-c", str(config), "-q", "-", f"lmdb:{source}"],
            input="".join(f"{key}\n" for key in declared),
            capture_output=True,
            text=True,
        )
        assert queried.stderr == ""
        answered = dict(line.split("\t", 1) for line in queried.stdout.splitlines())
        assert answered == declared


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(domain("tifpa.example.org", st.one_of(local_part, anything), st.one_of(uid, anything)))
def test_rejected_values_are_located_and_name_their_field(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("fleet")
    _write_fleet(root, [data])
    path = root / "domains/tifpa.example.org.yaml"
    lines = path.read_text().splitlines()
    _source, findings = load_domain(path, "domains/tifpa.example.org.yaml")
    for finding in findings:
        assert finding.path == "domains/tifpa.example.org.yaml"
        assert 1 <= finding.line <= len(lines)
        assert 1 <= finding.col <= len(lines[finding.line - 1]) + 1
        field = finding.message.split(":", 1)[0]
        assert field.split("[")[0].split(".")[0] in data, finding.message
        assert "Traceback" not in finding.message


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
    root = tmp_path_factory.mktemp("fuzz")
    (root / "domains").mkdir()
    (root / "gateway.yaml").write_text(GATEWAY)
    (root / "domains/tifpa.example.org.yaml").write_bytes(blob)
    assert main(["--root", str(root), "validate"]) in (0, 1)
