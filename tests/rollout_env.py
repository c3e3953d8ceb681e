"""Signed gateway repositories and MX nodes with a running Postfix, for the signing and staged rollout tests.

A node is tests/test_puppet.py's Node (a temporary root deployed by `puppet apply` with the module)
with the module's signed mode on, and a real Postfix of its own on a loopback port. That Postfix reads
what Puppet deployed under the node's root: the node's Postfix "reload" copies the deployed main.cf and
master.cf into its private configuration directory and changes only what two nodes on one machine
cannot share (the tables' directory under the root, the listening ports, the queue, the host name, no
milter: filtering has its own suites, docs/mx.md lists the same overrides), then reloads or starts it.
Nothing else of the node is simulated: the module's health check talks SMTP to that Postfix (and checks
no Rspamd, no milter: tests/test_rollout_milter.py proves the milter check against a real Rspamd).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import git

from tests.conftest import program
from tests.gitrepo import ADMIN
from tests.mx_harness import PostfixInstance, free_port
from tests.test_puppet import MODULE_PATH, Node

PRINCIPAL = "publish@gw.example.org"


@dataclass(frozen=True)
class SigningKey:
    path: Path  # the private key, as `mailgw publish --signing-key` and git's user.signingKey take it
    public: str  # 'ssh-ed25519 AAAA... comment'

    def allowed_signer(self, principal: str = PRINCIPAL) -> str:
        """One line of an allowed-signers file (ssh-keygen(1) ALLOWED SIGNERS)."""
        return f"{principal} {self.public}\n"


def ssh_key(directory: Path, name: str) -> SigningKey:
    """A new Ed25519 key made by ssh-keygen, with no passphrase."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    done = subprocess.run(
        [program("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return SigningKey(path, (directory / f"{name}.pub").read_text().strip())


def commit_signed(repo: git.Repo, message: str, key: SigningKey | None) -> git.Commit:
    """Everything in the working tree, committed with git itself: signed with `key`, or unsigned (None)."""
    repo.git.add("--all")
    signing = ["-c", "gpg.format=ssh", "-c", f"user.signingKey={key.path}"] if key else []
    repo.git.execute(
        ["git", *signing, "commit", "--quiet", "--no-verify", "-m", message, *(["-S"] if key else ["--no-gpg-sign"])],
        env={"GIT_COMMITTER_NAME": ADMIN.name, "GIT_COMMITTER_EMAIL": ADMIN.email},
    )
    return repo.head.commit


class MxNode(Node):
    """A node deploying signed commits of `repo`'s out/, with its own Postfix listening on a loopback port."""

    def __init__(self, base: Path, name: str, records: Path, allowed_signers: str):
        base.mkdir(parents=True)
        base.chmod(0o755)  # Postfix's daemons run as 'postfix' and traverse it
        super().__init__(base)
        self.name, self.records, self.allowed_signers = name, records, allowed_signers
        self.follows: str | None = None
        self.hold = 0
        self.postfix = PostfixInstance(base / "live")
        live = self.postfix
        for directory in (live.conf / "tls", live.queue, live.data, live.maillog.parent):
            directory.mkdir(parents=True)
        shutil.chown(live.data, "postfix")
        key, cert = base / "tls.key", base / "tls.crt"
        done = subprocess.run(
            [program("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
            + ["-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        (live.conf / "tls" / "mx.pem").write_bytes(key.read_bytes() + cert.read_bytes())
        release = free_port()
        # What `systemctl reload postfix` is on this node: the deployed files are what Postfix reads.
        self._script(
            "reload",
            f"""\
            echo "$1" >> '{self.reload_log}'
            [ "$1" = postfix ] || exit 0
            set -e
            live='{live.conf}'
            cp -- '{self.config_dir}/main.cf' '{self.config_dir}/master.cf' "$live/"
            sed -i 's#/etc/postfix/mailgw/#{self.map_dir}/#g' "$live/main.cf"
            sed -i -e 's#^smtp\\( *inet \\)#127.0.0.1:{live.port}\\1#' \\
                -e 's#^127[.]0[.]0[.]1:10026 #127.0.0.1:{release} #' "$live/master.cf"
            '{program("postconf")}' -c "$live" -e 'queue_directory = {live.queue}' 'data_directory = {live.data}' \\
                'inet_interfaces = 127.0.0.1' 'inet_protocols = ipv4' 'myhostname = {name}' 'smtpd_milters =' \\
                'smtpd_peername_lookup = no' 'maillog_file = {live.maillog}' 'maillog_file_prefixes = {base}'
            touch -d '1 minute ago' "$live/main.cf" "$live/master.cf"
            if '{program("postfix")}' -c "$live" status 2>/dev/null; then
                exec '{program("postfix")}' -c "$live" reload
            fi
            exec '{program("postfix")}' -c "$live" start
            """,
        )

    def site_manifest(self, source: str, first: str = "") -> Path:
        path = self.base / "site.pp"
        follows = f"'{self.follows}'" if self.follows else "undef"
        path.write_text(
            first
            + textwrap.dedent(f"""\
            class {{ 'mailgw':
              source                 => '{source}',
              state_dir              => '{self.root}/var/lib/mailgw',
              postfix_map_dir        => '{self.map_dir}',
              postfix_config_dir     => '{self.config_dir}',
              rspamd_local_dir       => '{self.root}/etc/rspamd/local.d',
              rspamd_maps_dir        => '{self.root}/etc/rspamd/maps.d',
              ldif_dir               => '{self.root}/var/lib/mailgw/ldap',
              postmap_command        => ['{self.base}/postmap'],
              postfix_check_command  => ['{self.base}/postfix-check', 'check'],
              postfix_reload_command => ['{self.base}/reload', 'postfix'],
              rspamd_reload_command  => ['{self.base}/reload', 'rspamd'],
              ldap_load_command      => ['{self.base}/reload', 'ldap'],
              allowed_signers        => '{self.allowed_signers}',
              node_name              => '{self.name}',
              rollout_follows        => {follows},
              rollout_hold           => {self.hold},
              rollout_records        => '{self.records}',
              health_smtp            => '127.0.0.1:{self.postfix.port}',
              health_rspamd_url      => false,
              health_milter          => false,
              health_timeout         => 10,
              health_settle          => 1,
            }}
            """)
        )
        return path

    def puppet(self, *args: str, modulepath: str | None = None) -> subprocess.CompletedProcess:
        """puppet with every directory it writes under the base, and the rollout fact reading this node's state."""
        dirs = ("confdir", "vardir", "codedir", "logdir", "rundir", "ssldir", "publicdir")
        settings = [arg for name in dirs for arg in (f"--{name}", str(self.puppet_dirs / name))]
        return subprocess.run(
            [program("puppet"), *args, *settings, "--modulepath", modulepath or str(MODULE_PATH), "--color=false"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "MAILGW_STATE_DIR": str(self.root / "var/lib/mailgw")},
        )

    @property
    def state_file(self) -> Path:
        return self.root / "var/lib/mailgw/rollout.json"

    def stop(self) -> None:
        if self.postfix.master_pid() is not None:
            self.postfix.started = True
        self.postfix.stop()
