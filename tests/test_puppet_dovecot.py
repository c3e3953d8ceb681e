"""mailgw::dovecot, proven by a real `puppet apply` into a temporary root (as tests/test_puppet.py does for the rest
of the module): out/dovecot/ deployed as built and accepted by the real doveconf, the search identity's password
written root-only from the class's parameter, and Dovecot reloaded once when something changed, never otherwise.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from compiler.targets import dovecot
from tests.conftest import REPO, program
from tests.test_puppet import CHANGES, FAILURES, NO_CHANGES, Node, build_out

pytestmark = pytest.mark.needs("puppet", "postmap", "doveconf")

SEARCH_PASSWORD_FILE = "/etc/mailgw/secrets/aai-search.conf"


class DovecotNode(Node):
    """A node whose manifest also declares mailgw::dovecot, its reload logged like the others."""

    def __init__(self, base: Path):
        super().__init__(base)
        self.password = "first-search-password"

    @property
    def dovecot_dir(self) -> Path:
        return self.root / "etc/dovecot"

    @property
    def secret_path(self) -> Path:
        return self.root / SEARCH_PASSWORD_FILE.lstrip("/")

    def site_manifest(self, source: str, first: str = "") -> Path:
        path = super().site_manifest(source, first)
        self.secret_path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            path.read_text()
            + textwrap.dedent(f"""\
            class {{ 'mailgw::dovecot':
              config_dir     => '{self.dovecot_dir}',
              secrets        => {{ '{self.secret_path}' => Sensitive("dnpass = {self.password}\\n") }},
              reload_command => ['{self.base}/reload', 'dovecot'],
            }}
            """)
        )
        return path


def _repository(dest: Path, search_identity: bool) -> Path:
    """The bundled fleet, its AAI search by an identity (whose password Puppet installs) or anonymous."""
    shutil.copytree(REPO / "domains", dest / "domains")
    gateway = yaml.safe_load((REPO / "gateway.yaml").read_text())
    if search_identity:
        gateway["submission"]["aai_directory"].update(
            {
                "search_dn": "cn=mailgw,ou=services,dc=aai,dc=example,dc=org",
                "search_password_file": SEARCH_PASSWORD_FILE,
            }
        )
    (dest / "gateway.yaml").write_text(yaml.safe_dump(gateway, allow_unicode=True))
    return dest


@pytest.fixture(scope="module")
def outs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("dovecot-out")
    return {
        name: build_out(_repository(base / f"repo-{name}", name == "identity"), base / f"out-{name}")
        for name in ("identity", "anonymous")
    }


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, outs):
    node = DovecotNode(tmp_path_factory.mktemp("dovecot-node"))
    return node, node.apply(outs["identity"])


def test_dovecot_s_configuration_and_secret_are_deployed_and_dovecot_reloaded_once(deployed, outs):
    node, run = deployed
    assert run.code == CHANGES, run.out + run.err
    for name in (dovecot.CONFIG, dovecot.LDAP_SETTINGS):
        assert (node.dovecot_dir / name).read_bytes() == (outs["identity"] / "dovecot" / name).read_bytes()
    assert f"!include {SEARCH_PASSWORD_FILE}\n" in (node.dovecot_dir / dovecot.LDAP_SETTINGS).read_text()
    assert node.secret_path.read_text() == f"dnpass = {node.password}\n"
    assert stat.S_IMODE(node.secret_path.stat().st_mode) == 0o600
    assert node.password not in run.out + run.err  # Sensitive: never in Puppet's report
    assert run.reloads.count("dovecot") == 1, run.reloads


def test_the_deployed_dovecot_conf_is_what_doveconf_reads(deployed):
    node, _ = deployed
    done = subprocess.run(
        [program("doveconf"), "-n", "-c", str(node.dovecot_dir / dovecot.CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "auth_mechanisms = plain login" in done.stdout
    assert f"args = {dovecot.CONFIG_DIRECTORY}/{dovecot.LDAP_SETTINGS}" in done.stdout


def test_a_second_run_changes_nothing_and_reloads_nothing(deployed, outs):
    node, _ = deployed
    run = node.apply(outs["identity"])
    assert run.code == NO_CHANGES, run.out + run.err
    assert run.reloads == []


def test_new_ldap_settings_and_a_new_password_reload_dovecot_once_and_nothing_else(deployed, outs):
    node, _ = deployed
    node.password = "rotated-search-password"
    run = node.apply(outs["anonymous"])
    assert run.code == CHANGES and not run.code & FAILURES, run.out + run.err
    assert node.secret_path.read_text() == "dnpass = rotated-search-password\n"
    settings = (node.dovecot_dir / dovecot.LDAP_SETTINGS).read_text()
    assert settings == (outs["anonymous"] / "dovecot" / dovecot.LDAP_SETTINGS).read_text()
    assert "!include" not in settings and "\ndn = " not in settings
    assert run.reloads == ["dovecot"]
