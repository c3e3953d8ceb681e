"""Hostile and broken input: one clear located line, exit 1, never a traceback, a hang or a blow-up."""

from __future__ import annotations

import ipaddress
import os
import resource
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from compiler import values
from tests.conftest import REPO, domain_yaml, run_mailgw_process

DOMAIN = "domains/tifpa.example.org.yaml"

BILLION_LAUGHS = """\
domain: tifpa.example.org
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _run_limited(root, seconds=60, memory_mb=1024) -> subprocess.CompletedProcess:
    """The CLI in its own process with a time limit and an address-space cap: a bomb fails the test, not CI."""

    def limit():
        cap = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return subprocess.run(
        [sys.executable, "-m", "compiler", "build"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=seconds,
        preexec_fn=limit,
    )


@pytest.mark.parametrize(
    "name, content, expected",
    [
        (
            "billion-laughs",
            BILLION_LAUGHS,
            f"{DOMAIN}:3:4: error[yaml-alias]: this list holds an alias (*name); anchors and aliases are not allowed, "
            "write the value out",
        ),
        (
            "merge-key",
            domain_yaml() + "<<: {site: X}\n",
            f"{DOMAIN}:9:1: error[yaml-syntax]: mapping keys must be plain text",
        ),
        (
            "python-tag",
            domain_yaml() + "x: !!python/object/apply:os.system ['true']\n",
            f"{DOMAIN}:9:4: error[yaml-syntax]: invalid YAML: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
        (
            "control-character",
            domain_yaml().replace("TIFPA", "TIF\x07PA"),
            f"{DOMAIN}:2:10: error[control-character]: control character U+0007 is not allowed in YAML; remove it",
        ),
        (
            "two-documents",
            domain_yaml() + "---\ndomain: x\n",
            f"{DOMAIN}:9:1: error[yaml-syntax]: the file holds more than one YAML document ('---'); keep one",
        ),
        (
            "complex-key",
            domain_yaml() + "? [a, b]\n: c\n",
            f"{DOMAIN}:9:3: error[yaml-syntax]: mapping keys must be plain text",
        ),
    ],
)
def test_hostile_yaml_gets_one_located_line(name, content, expected, make_repo):
    root = make_repo({DOMAIN: content})
    done = _run_limited(root)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [expected, "1 error(s)"]
    assert not (root / "out").exists()


def test_a_50_mb_file_is_refused_without_reading_it(make_repo):
    root = make_repo({DOMAIN: domain_yaml()})
    with open(root / DOMAIN, "ab") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: the test stays fast, the size is real
    done = _run_limited(root, memory_mb=512)
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == (
        f"{DOMAIN}:1:1: error[file-too-large]: file is 52428800 bytes; the limit is 16777216 bytes "
        "(split the recipients or ask the gateway team)"
    )


def test_a_symlinked_domains_directory_entry_inside_the_repo_is_fine(make_repo):
    root = make_repo({"shared/tifpa.example.org.yaml": domain_yaml()})
    os.symlink(root / "shared/tifpa.example.org.yaml", root / DOMAIN)
    done = run_mailgw_process("validate", cwd=root)
    assert done.returncode == 0, done.stderr


def test_truncated_files_never_trace_back(make_repo):
    """Every prefix of a real declaration is either valid or gets located findings, never a traceback."""
    text = (REPO / "domains/tifpa.example.org.yaml").read_text()
    from compiler.main import main

    for cut in range(0, len(text), 37):
        root = make_repo({DOMAIN: text[:cut]})
        code = main(["--root", str(root), "validate"])
        assert code in (0, 1)


# The node itself or no single host (RFC 6890), written out here rather than taken from compiler.values.
NODE_RANGES_V4 = ("127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
NODE_RANGES_V6 = ("::1/128", "::/128", "fe80::/10", "ff00::/8")


def _in(ranges: tuple[str, ...]):
    nets = [ipaddress.ip_network(r) for r in ranges]
    return st.sampled_from(nets).flatmap(
        lambda net: st.integers(int(net.network_address), int(net.broadcast_address)).map(
            lambda n: ipaddress.ip_address(n) if net.version == 4 else ipaddress.IPv6Address(n)
        )
    )


@given(address=_in(NODE_RANGES_V4), port=st.integers(1, 65535), transport=st.sampled_from(["", "smtp:", "lmtp:"]))
def test_a_next_hop_into_the_node_itself_is_refused(address, port, transport):
    with pytest.raises(PydanticCustomError) as refused:
        values.nexthop(f"{transport}[{address}]:{port}")
    assert refused.value.type == "bad-nexthop"
    assert "the MX node itself or no host at all" in refused.value.message()


@given(address=st.one_of(_in(NODE_RANGES_V4), _in(NODE_RANGES_V6)))
def test_a_relay_on_the_node_itself_is_refused(address):
    with pytest.raises(PydanticCustomError) as refused:
        values.relay_network(str(address))
    assert refused.value.type == "bad-network"


@pytest.mark.parametrize("written", ["relay.example." + "o" * 64, "Relay.Example." + "O" * 64, "x." + "a" * 64])
def test_a_label_over_63_characters_is_refused_however_it_is_written(written):
    """The top-level label too, on the fast path that takes lower-case names as they are (RFC 1035 2.3.4)."""
    with pytest.raises(PydanticCustomError) as refused:
        values.domain_name(written)
    assert refused.value.type == "bad-domain"
    assert values.domain_name(written[:-1]) == written[:-1].lower(), "63 characters are fine"
