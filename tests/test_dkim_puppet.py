"""mailgw::mail_auth, proven by a real `puppet apply` into a temporary root (as tests/test_puppet.py does for the
rest of the module): the DKIM and ARC private keys and postsrsd's secret written from the class's parameters
(never from out/), out/srs/postsrsd deployed as built, and Rspamd reloaded and postsrsd restarted only when
something they read changed.
"""

from __future__ import annotations

import stat
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.test_puppet import CHANGES, Node, build_out

pytestmark = pytest.mark.needs("puppet", "postmap")

GATEWAY = yaml.safe_load((REPO / "gateway.yaml").read_text())
# The key files gateway.yaml's and the domains' selectors name: <domain>.<selector>.key.
KEY_FILES = sorted(
    [f"{GATEWAY['forwarding']['srs_domain']}.{GATEWAY['forwarding']['arc']['name']}.key"]
    + [
        f"{data['domain']}.{key['name']}.key"
        for data in (yaml.safe_load(p.read_text()) for p in sorted((REPO / "domains").glob("*.yaml")))
        for key in (data.get("dkim") or {}).get("selectors", [])
    ]
)


class AuthNode(Node):
    """A node whose manifest also declares mailgw::mail_auth; the restart command logs its calls."""

    def __init__(self, base: Path):
        super().__init__(base)
        self.keys = {
            name: f"-----BEGIN PRIVATE KEY-----\nkey of {name}\n-----END PRIVATE KEY-----\n" for name in KEY_FILES
        }
        self.srs_secret = "the first SRS secret"
        self.key_dir = self.root / "var/lib/rspamd/dkim"
        self.secret_file = self.root / "etc/postsrsd.secret"
        self.default_file = self.root / "etc/default/postsrsd"
        self.default_file.parent.mkdir(parents=True)
        self.key_dir.parent.mkdir(parents=True)  # Debian's rspamd package creates /var/lib/rspamd

    def site_manifest(self, source: str, first: str = "") -> Path:
        path = super().site_manifest(source, first)
        keys = ", ".join(f"'{name}' => Sensitive('{key}')" for name, key in self.keys.items())
        path.write_text(
            path.read_text()
            + textwrap.dedent(f"""\
            class {{ 'mailgw::mail_auth':
              dkim_keys                => {{ {keys} }},
              dkim_key_dir             => '{self.key_dir}',
              rspamd_group             => 'root',
              srs_secret               => Sensitive('{self.srs_secret}'),
              srs_secret_file          => '{self.secret_file}',
              postsrsd_default         => '{self.default_file}',
              postsrsd_restart_command => ['{self.base}/reload', 'postsrsd'],
            }}
            """)
        )
        return path


@pytest.fixture(scope="module")
def auth_out(tmp_path_factory) -> Path:
    return build_out(REPO, tmp_path_factory.mktemp("out") / "out")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, auth_out):
    node = AuthNode(tmp_path_factory.mktemp("auth-node"))
    return node, node.apply(auth_out)


def test_keys_and_the_srs_secret_come_from_the_parameters_and_postsrsd_s_settings_from_out(deployed, auth_out):
    node, run = deployed
    assert run.code == CHANGES, run.out + run.err
    assert sorted(p.name for p in node.key_dir.iterdir()) == KEY_FILES
    for name, key in node.keys.items():
        assert (node.key_dir / name).read_text() == key
        assert stat.S_IMODE((node.key_dir / name).stat().st_mode) == 0o640
    assert node.secret_file.read_text() == node.srs_secret
    assert stat.S_IMODE(node.secret_file.stat().st_mode) == 0o600
    assert node.default_file.read_bytes() == (auth_out / "srs/postsrsd").read_bytes()
    assert f"SRS_SECRET={GATEWAY['forwarding'].get('srs_secret_file', '/etc/postsrsd.secret')}" in (
        node.default_file.read_text()
    )
    assert "key of" not in run.out + run.err and node.srs_secret not in run.out + run.err  # Sensitive
    assert run.reloads.count("postsrsd") == 1 and run.reloads.count("rspamd") == 1
    assert run.reloads.index("postsrsd") < run.reloads.index("postfix")  # main.cf asks it: up first
    # out/ itself holds no key and no secret.
    for path in auth_out.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes() and b"SRS secret" not in path.read_bytes()


def test_a_retired_key_leaves_the_node_and_a_new_secret_restarts_postsrsd_nothing_else_changes(deployed, auth_out):
    node, _ = deployed
    retired = KEY_FILES[0]
    del node.keys[retired]
    node.srs_secret = "the rotated SRS secret"
    run = node.apply(auth_out)
    assert run.code == CHANGES, run.out + run.err
    assert not (node.key_dir / retired).exists()
    assert sorted(p.name for p in node.key_dir.iterdir()) == sorted(node.keys)
    assert node.secret_file.read_text() == "the rotated SRS secret"
    assert sorted(run.reloads) == ["postsrsd", "rspamd"]
    # Only the retired key and the secret changed: the rest of the node is as the first run left it.
    notices = [line.split(": ", 1)[1] for line in run.out.splitlines() if line.startswith("Notice: /Stage[main]/")]
    assert sorted(notices) == [
        "/Stage[main]/Mailgw::Mail_auth/Exec[mailgw postsrsd restart]: Triggered 'refresh' from 1 event",
        f"/Stage[main]/Mailgw::Mail_auth/File[{node.secret_file}]/content: changed [redacted] to [redacted]",
        f"/Stage[main]/Mailgw::Mail_auth/File[{node.key_dir / retired}]/ensure: removed",
        "/Stage[main]/Mailgw::Rspamd/Exec[mailgw rspamd reload]: Triggered 'refresh' from 1 event",
    ]
