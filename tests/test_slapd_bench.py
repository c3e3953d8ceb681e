"""A smoke run of `make bench-ldap` on a tiny fleet: the LDAP benchmark runs to its table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.slapd import NEEDS_ROOT


@pytest.mark.needs("slapd", "slapadd", "slapcat", "ldapsearch", "ldapmodify", "openssl")
@pytest.mark.needs_root(NEEDS_ROOT)
def test_the_ldap_bench_runs_and_prints_its_table(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench/ldap.py"), "--addresses", "3000", "--runs", "1"]
        + ["--fleet", str(tmp_path / "fleet")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "3,000 addresses" in done.stdout
    for row in (
        "full reload: slapadd -q of directory.ldif",
        "mailgw ldap-diff LIVE NEW",
        "ldapmodify of the changes",
        "Puppet run, one domain changed: check and apply",
        "Puppet run after it: check (ldap-diff finds nothing)",
        "Puppet run, nothing changed: check (slapcat, stamp equal)",
    ):
        assert row in done.stdout, row
