"""Benchmark the gateway's LDAP server: one domain's change applied online, against a full reload.

    python bench/ldap.py                    # 100,000 addresses, median of 5 runs (make bench-ldap)
    python bench/ldap.py --addresses 1000000 --runs 1

Runs as root, like the Puppet class: slapd is started from the generated
configuration (out/ldap/slapd-config, with every node path of gateway.yaml's
ldap section in a temporary directory) and written to as root over its local
socket. Measures, on the same fleet:

- the full reload: `slapadd -q` of the whole directory.ldif into an empty
  database (what a node's first deployment does, slapd stopped);
- one domain changed (10% of its aliases given to another uid, 100 people
  added, 10% of its external aliases removed), applied as Puppet applies
  it: `slapcat` of the live database, `mailgw ldap-diff` of that dump and
  the new directory, `ldapmodify` of the result, slapd serving throughout;
- the Puppet class's own step (deploy/puppet/mailgw/files/slapd-sync.sh) on
  the same change: the check and the apply of the run that brings it, the
  check of the run after it, and the check of a run when nothing changed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.generate import generate  # noqa: E402

SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PUPPET_FILES = HERE.parent / "deploy" / "puppet" / "mailgw" / "files"
MX_HOST = "mx1.gw.example.org"


def program(name: str) -> str:
    found = shutil.which(name, path=SBIN)
    if found is None:
        raise SystemExit(f"bench/ldap.py needs {name} (Debian: slapd, ldap-utils, openssl)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(*command: str | Path, stdin: bytes | None = None, env: dict[str, str] | None = None) -> tuple[float, bytes]:
    """Wall seconds and stdout of one command; it must succeed."""
    start = time.perf_counter()
    done = subprocess.run([str(c) for c in command], input=stdin, capture_output=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return elapsed, done.stdout


def one_domain_changed(text: str) -> str:
    """The domain's site re-exports its list: aliases move between uids, people come, external aliases go."""
    lines = text.splitlines()
    # Each person has three aliases after its address: the alias three before belongs to another person.
    aliases = [i for i, line in enumerate(lines) if "{kind: alias, uid: " in line]
    for k in range(3, len(aliases), 10):
        uid = lines[aliases[k - 3]].rsplit("uid: ", 1)[1].rstrip("}")
        lines[aliases[k]] = lines[aliases[k]].rsplit("uid: ", 1)[0] + f"uid: {uid}}}"
    externals = [i for i, line in enumerate(lines) if line.startswith("  ext.")]
    for i in reversed(externals[::10]):
        del lines[i]
    at = lines.index("recipients:") + 1
    return "\n".join(lines[:at] + [f"  bench.new.{n}: benchnew{n}" for n in range(100)] + lines[at:]) + "\n"


class Node:
    """The generated configuration of one fleet, loaded into a private slapd under WORK."""

    def __init__(self, work: Path, out: Path):
        self.work = work
        self.out = out
        self.settings = yaml.safe_load((out / "ldap/slapd.yaml").read_text())
        self.config = Path(self.settings["config_directory"])
        self.base = self.settings["base_dn"]
        self.socket = self.settings["socket"]
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "PYTHONPATH": str(HERE.parent)}

    def empty(self) -> None:
        """An empty configuration and database, the configuration loaded from slapd-config."""
        for path in [self.config, Path(self.settings["database_directory"])]:
            shutil.rmtree(path, ignore_errors=True)
        for path in [
            self.config,
            Path(self.settings["run_directory"]),
            *map(Path, self.settings["databases"].values()),
        ]:
            path.mkdir(parents=True, exist_ok=True)
        run(program("slapadd"), "-n0", "-F", self.config, "-l", self.out / "ldap/slapd-config")

    def reload(self, directory: Path) -> float:
        return run(program("slapadd"), "-q", "-F", self.config, "-b", self.base, "-l", directory)[0]

    def start(self) -> None:
        listeners = self.settings["listeners"][MX_HOST]
        self.process = subprocess.Popen([program("slapd"), "-F", str(self.config), "-h", listeners, "-d", "0"])
        for _ in range(300):
            ready = subprocess.run(
                [program("ldapsearch"), "-H", self.socket, "-Q", "-Y", "EXTERNAL", "-s", "base", "-b", "", "1.1"],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise SystemExit("slapd did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None

    def sync(self, directory: Path, mailgw: list[str]) -> dict[str, float]:
        """Dump the live server, diff against DIRECTORY, apply: the seconds of each command."""
        live, changes = self.work / "live.ldif", self.work / "changes.ldif"
        dump = [program("slapcat"), "-F", self.config, "-b", self.base, "-o", "ldif_wrap=no", "-l", live]
        times = {"slapcat": run(*dump)[0]}
        times["ldap-diff"], diff = run(*mailgw, "ldap-diff", live, directory, env=self.env)
        changes.write_bytes(diff)
        if b"\ndn: " in diff:
            apply = [program("ldapmodify"), "-H", self.socket, "-Q", "-Y", "EXTERNAL", "-f", changes]
            times["ldapmodify"] = run(*apply)[0]
        return times

    def puppet_step(self, mode: str, directory: Path) -> tuple[float, int]:
        """The Puppet class's own step (files/slapd-sync.sh): seconds and exit code (check: 0 = in sync)."""
        script = "\n".join((PUPPET_FILES / name).read_text() for name in ("slapd-lib.sh", "slapd-sync.sh"))
        ldap_diff = f"{shlex.quote(sys.executable)} -m compiler ldap-diff"
        start = time.perf_counter()
        done = subprocess.run(
            ["/bin/sh", "-c", script, "mailgw-slapd-sync", mode, str(self.config), self.base, self.socket]
            + [str(directory), str(self.work), ldap_diff, program("ldapmodify")],
            capture_output=True,
            env={**self.env, "PATH": SBIN},
        )
        if done.returncode not in (0, 1) or (mode == "apply" and done.returncode):
            raise SystemExit(f"slapd-sync.sh {mode} failed: {done.stderr.decode(errors='replace')[-2000:]}")
        return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addresses", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fleet", type=Path, help="where the generated fleet is kept (default: bench/fleet-N)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/ldap.py runs as root: the generated configuration's writer is root on the node")

    fleet = args.fleet or HERE / f"fleet-{args.addresses // 1000}k"
    if not (fleet / "gateway.yaml").exists():
        print(f"generating {args.addresses} addresses into {fleet} ...", file=sys.stderr)
        generate(args.addresses, fleet)
    mailgw = [sys.executable, "-m", "compiler"]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    work = Path(tempfile.mkdtemp(prefix="mailgw-bench-ldap-"))  # short: the socket's path must fit in 108 bytes
    node: Node | None = None
    try:
        key, certificate = work / "tls.key", work / "tls.crt"
        run(program("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", certificate,
            "-days", "1", "-subj", "/CN=localhost")  # fmt: skip
        gateway = yaml.safe_load((fleet / "gateway.yaml").read_text())
        gateway["ldap"].update(
            config_directory=str(work / "config"),
            database_directory=str(work / "db"),
            run_directory=str(work / "run"),
            tls_certificate=str(certificate),
            tls_key=str(key),
            port=free_port(),
        )
        outs = {}
        domains = sorted((fleet / "domains").glob("*.yaml"))
        changed = domains[len(domains) // 2]
        for name in ("old", "new"):
            repo = work / f"repo-{name}"
            shutil.copytree(fleet / "domains", repo / "domains")
            (repo / "gateway.yaml").write_text(yaml.safe_dump(gateway))
            if name == "new":
                target = repo / "domains" / changed.name
                target.write_text(one_domain_changed(target.read_text()))
            outs[name] = work / f"out-{name}"
            run(*mailgw, "-C", repo, "build", "--out", outs[name], env=env)
        old, new = outs["old"] / "ldap/directory.ldif", outs["new"] / "ldap/directory.ldif"
        entries = old.read_bytes().count(b"\ndn: ")
        node = Node(work, outs["old"])

        reloads = []
        for _ in range(args.runs):
            node.empty()
            reloads.append(node.reload(old))
        node.start()
        forward: list[dict[str, float]] = []
        for _ in range(args.runs):
            forward.append(node.sync(new, mailgw))
            node.sync(old, mailgw)  # back, for the next run
        # The Puppet class's step, as each run makes it: the check, then (if it found a change) the apply.
        assert node.puppet_step("check", old)[1] == 0  # in sync: the stamp is recorded
        idle, changed_runs, after = [], [], []
        for _ in range(args.runs):
            idle.append(node.puppet_step("check", old)[0])
            check, found = node.puppet_step("check", new)
            assert found == 1
            changed_runs.append(check + node.puppet_step("apply", new)[0])
            seconds, in_sync = node.puppet_step("check", new)
            assert in_sync == 0
            after.append(seconds)
            node.puppet_step("apply", old)  # back, for the next run
            assert node.puppet_step("check", old)[1] == 0
        counts = subprocess.run([*mailgw, "ldap-diff", str(old), str(new)], capture_output=True, env=env).stderr
    finally:
        if node is not None:
            node.stop()
        shutil.rmtree(work, ignore_errors=True)

    def median(values: list[float]) -> float:
        return statistics.median(values)

    print(
        f"\nmailgw LDAP benchmark: {args.addresses:,} addresses, {entries:,} entries; median of {args.runs} runs; "
        f"{os.cpu_count()} cores\nthe change: {changed.name}: {counts.decode().strip().removeprefix('ldap-diff: ')}\n"
    )
    print(f"| {'measure':<58} | {'median s':>9} |")
    print(f"|{'-' * 60}|{'-' * 11}|")
    rows = [
        ("full reload: slapadd -q of directory.ldif (slapd stopped)", median(reloads)),
        ("one domain changed, online: slapcat of the live server", median([t["slapcat"] for t in forward])),
        ("  mailgw ldap-diff LIVE NEW", median([t["ldap-diff"] for t in forward])),
        ("  ldapmodify of the changes", median([t["ldapmodify"] for t in forward])),
        ("  the three", median([sum(t.values()) for t in forward])),
        ("Puppet run, one domain changed: check and apply", median(changed_runs)),
        ("Puppet run after it: check (ldap-diff finds nothing)", median(after)),
        ("Puppet run, nothing changed: check (slapcat, stamp equal)", median(idle)),
    ]
    for name, seconds in rows:
        print(f"| {name:<58} | {seconds:>9.3f} |")


if __name__ == "__main__":
    main()
