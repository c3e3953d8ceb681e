"""mailgw::portal, proven by a real `puppet apply` into a temporary root (as tests/test_puppet.py does for the
rest of the module): out/portal/portal.json deployed as built, the secrets written from the class's
parameter, systemd units that systemd-analyze accepts, and systemctl called only when something changed.
"""

from __future__ import annotations

import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, program
from tests.test_puppet import CHANGES, FAILURES, NO_CHANGES, Node, build_out

pytestmark = pytest.mark.needs("puppet", "postmap")

PORTAL_COMMAND = Path(program("mailgw-portal") or REPO / ".venv" / "bin" / "mailgw-portal")


class PortalNode(Node):
    """A node whose manifest also declares mailgw::portal; systemctl is a script that logs its calls."""

    def __init__(self, base: Path):
        super().__init__(base)
        self.systemctl_log = base / "systemctl.log"
        self.secret_value = "first-oidc-secret"
        self._script(
            "systemctl",
            f"""\
            echo "$*" >> '{self.systemctl_log}'
            if [ "$1" = is-enabled ]; then [ -e '{base}/enabled' ]; exit; fi
            if [ "$1" = enable ]; then touch '{base}/enabled'; fi
            """,
        )
        (self.root / "etc/systemd/system").mkdir(parents=True)

    @property
    def rspamd_secret_path(self) -> Path:
        return self.root / "etc/mailgw/secrets/quarantine-ingest.ucl"

    @property
    def secret_path(self) -> Path:
        return self.root / "etc/mailgw/secrets/oidc-client.secret"

    def site_manifest(self, source: str, first: str = "") -> Path:
        path = super().site_manifest(source, first)
        text = path.read_text().replace(
            "  ldap_load_command      =>",
            f"  portal_config_dir      => '{self.root}/etc/mailgw/portal',\n  ldap_load_command      =>",
        )
        self.secret_path.parent.mkdir(parents=True, exist_ok=True)
        text += textwrap.dedent(f"""\
            class {{ 'mailgw::portal':
              command     => '{PORTAL_COMMAND}',
              user        => 'root',
              manage_user => false,
              store_dir   => '{self.root}/var/lib/mailgw-portal',
              systemd_dir => '{self.root}/etc/systemd/system',
              systemctl   => ['{self.base}/systemctl'],
              secrets     => {{ '{self.secret_path}' => Sensitive('{self.secret_value}') }},
              rspamd_secrets => {{ '{self.rspamd_secret_path}' => Sensitive('password = "{self.secret_value}";') }},
              rspamd_group   => 'root',
            }}
            """)
        path.write_text(text)
        return path

    def systemctl_calls(self) -> list[str]:
        calls = self._lines(self.systemctl_log)
        self.systemctl_log.unlink(missing_ok=True)
        return calls


@pytest.fixture(scope="module")
def portal_out(tmp_path_factory) -> Path:
    return build_out(REPO, tmp_path_factory.mktemp("out") / "out")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, portal_out):
    node = PortalNode(tmp_path_factory.mktemp("portal-node"))
    run = node.apply(portal_out)
    return node, run


def test_the_portal_is_deployed_with_its_configuration_secrets_and_units(deployed, portal_out):
    node, run = deployed
    assert run.code == CHANGES, run.out + run.err
    assert (node.root / "etc/mailgw/portal/portal.json").read_bytes() == (
        portal_out / "portal/portal.json"
    ).read_bytes()
    assert node.secret_path.read_text() == node.secret_value
    assert stat.S_IMODE(node.secret_path.stat().st_mode) == 0o640
    assert stat.S_IMODE(node.rspamd_secret_path.stat().st_mode) == 0o640
    assert node.secret_value not in run.out + run.err  # Sensitive: never in Puppet's report
    units = node.root / "etc/systemd/system"
    assert sorted(p.name for p in units.iterdir()) == [
        "mailgw-portal-digest.service",
        "mailgw-portal-digest.timer",
        "mailgw-portal-purge.service",
        "mailgw-portal-purge.timer",
        "mailgw-portal.service",
    ]
    service = (units / "mailgw-portal.service").read_text()
    assert f"--config {node.root}/etc/mailgw/portal/portal.json serve --host 0.0.0.0 --port 443" in service
    assert node.systemctl_calls() == [
        "daemon-reload",
        "is-enabled --quiet mailgw-portal.service mailgw-portal-digest.timer mailgw-portal-purge.timer",
        "enable --now mailgw-portal.service mailgw-portal-digest.timer mailgw-portal-purge.timer",
        "try-restart mailgw-portal.service",
    ]


@pytest.mark.needs("systemd-analyze")
def test_systemd_accepts_the_units(deployed):
    node, _ = deployed
    units = sorted(str(p) for p in (node.root / "etc/systemd/system").iterdir())
    done = subprocess.run(
        [program("systemd-analyze"), "verify", "--man=no", *units], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "mailgw" not in done.stderr, done.stderr


def test_a_second_run_changes_nothing_and_restarts_nothing(deployed, portal_out):
    node, _ = deployed
    node.systemctl_calls()
    run = node.apply(portal_out)
    assert run.code == NO_CHANGES, run.out + run.err
    assert node.systemctl_calls() == [
        "is-enabled --quiet mailgw-portal.service mailgw-portal-digest.timer mailgw-portal-purge.timer"
    ]


def test_a_new_secret_restarts_the_portal_once(deployed, portal_out):
    node, _ = deployed
    node.systemctl_calls()
    node.secret_value = "rotated-oidc-secret"
    run = node.apply(portal_out)
    assert run.code == CHANGES and not run.code & FAILURES, run.out + run.err
    assert node.secret_path.read_text() == "rotated-oidc-secret"
    assert node.rspamd_secret_path.read_text() == 'password = "rotated-oidc-secret";'
    assert run.reloads == ["rspamd"]  # Rspamd re-reads its include; Postfix is not touched
    assert [c for c in node.systemctl_calls() if not c.startswith("is-enabled")] == [
        "try-restart mailgw-portal.service"
    ]
