"""The GitOps loop of a synced domain, on real git repositories and the workflows' own step scripts.

origin is a bare repository holding main, where tifpa.example.org takes its
addresses from the site's list (a source, synced once). The site changes its
list; the sync workflow's step runs in a fresh clone: it proposes the change
as one commit on sync/tifpa.example.org (the plan as its message), pushes the
branch and opens a pull request (GitHub's 'gh' is a stand-in that records
what it is asked). A reviewer reads the plan, the branch is merged, the
publish workflow commits out/, and out/ holds the site's new list.
"""

from __future__ import annotations

import base64
import io
import os
import stat
import tarfile
from pathlib import Path

import git
import pytest

from tests.gitrepo import commit_all, fleet_repo, init
from tests.https_source import Served, SiteServer
from tests.test_merge_request import clone, run_step

TIFPA = "domains/tifpa.example.org.yaml"
SYNCED = "sources/tifpa.example.org.yaml"
BRANCH = "sync/tifpa.example.org"
# The bundled tifpa.example.org's addresses, as the site's directory exports them.
SITE_LIST = """\
address,kind,uid,owners
mario.rossi@tifpa.example.org,person,mrossi,
m.rossi@tifpa.example.org,alias,mrossi,
laura.bianchi@tifpa.example.org,person,lbianchi,
l.bianchi@tifpa.example.org,alias,lbianchi,
giulia.neri@tifpa.example.org,person,gneri,
paolo.conti@tifpa.example.org,person,pconti,
info@tifpa.example.org,role,,mrossi
segreteria@tifpa.example.org,role,,lbianchi gneri
postmaster@tifpa.example.org,role,,mrossi pconti
staff@tifpa.example.org,list,,mrossi lbianchi
seminari@tifpa.example.org,list,,gneri

address,target
g.verdi@tifpa.example.org,giuseppe.verdi@example.net
visiting@tifpa.example.org,anna.ferri@example.com a.ferri@physics.example.edu
"""
# What the site changes: giulia.verdi arrives, laura.bianchi's second address goes.
CHANGED_LIST = SITE_LIST.replace(
    "l.bianchi@tifpa.example.org,alias,lbianchi,\n", "giulia.verdi@tifpa.example.org,person,gverdi,\n"
)
FAKE_GH = """#!/bin/sh
# A stand-in for GitHub's CLI: records each call; no pull request is open yet.
printf '%s\\n' "$*" >> "$GH_LOG"
if [ "$1 $2" = "pr create" ]; then
  for a in "$@"; do
    [ -n "$body" ] && { cp "$a" "$GH_LOG.body"; body=; }
    [ "$a" = --body-file ] && body=1
  done
fi
exit 0
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with SiteServer(tmp_path_factory.mktemp("tifpa-site"), client_certificates=False) as server:
        yield server


def credentials_archive(site: SiteServer) -> str:
    """The sync's credentials as the operator stores them in the secret: base64 of a tar.gz."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(site.token_file, arcname="tifpa.token")
        archive.add(site.ca_file, arcname="tifpa-ca.pem")
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_changed_site_list_goes_through_a_pull_request_to_out(site, tmp_path, mailgw):
    url = site.serve("/mailgw/tifpa.csv", Served(SITE_LIST.encode()))
    credentials = tmp_path / "operator-credentials"
    credentials.mkdir()
    for name, source in (("tifpa.token", site.token_file), ("tifpa-ca.pem", site.ca_file)):
        (credentials / name).write_bytes(source.read_bytes())

    # main: tifpa.example.org's addresses come from the site, synced once by hand.
    origin = tmp_path / "origin.git"
    init(origin, bare=True)
    seed_root = tmp_path / "seed"
    seed = fleet_repo(seed_root)
    domain = (seed_root / TIFPA).read_text()
    start, end = domain.index("recipients:\n"), domain.index("filters:\n")
    source = (
        f"source:                              # the site's directory exports the list\n  url: {url}\n"
        "  format: csv\n  token_file: tifpa.token\n  ca_file: tifpa-ca.pem\n"
    )
    (seed_root / TIFPA).write_text(domain[:start] + source + domain[end:])
    first = mailgw(seed_root, "sync", "--credentials", str(credentials))
    assert first.code == 0, first.err
    assert first.err == f"mailgw sync: wrote {SYNCED}: tifpa.example.org: +13 -0 ~0 addresses, 11 sending rights\n"
    assert mailgw(seed_root, "codeowners").code == 0
    assert mailgw(seed_root, "build").code == 0
    assert (seed_root / "out/postfix/relay_recipients").read_bytes() == (
        Path(__file__).parent.parent / "out/postfix/relay_recipients"
    ).read_bytes(), "the same addresses, now from the site's list"
    commit_all(seed, "tifpa.example.org: addresses from the site's directory")
    seed.create_remote("origin", str(origin))
    seed.git.push("origin", "main")
    main_before = git.Repo(origin).commit("main")

    # The site's list changes; the nightly sync workflow runs.
    site.serve("/mailgw/tifpa.csv", Served(CHANGED_LIST.encode(), last_modified="Tue, 01 Dec 2026 06:00:00 GMT"))
    runner = tmp_path / "runner"
    runner.mkdir()
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "gh").write_text(FAKE_GH)
    (fake_bin / "gh").chmod(stat.S_IRWXU)
    gh_log = tmp_path / "gh.log"
    env = {"RUNNER_TEMP": str(runner), "GH_LOG": str(gh_log), "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    ci = clone(origin, tmp_path / "ci")
    ci_root = Path(ci.working_tree_dir)
    unpacked = run_step("sync.yml", "credentials", ci_root, SYNC_CREDENTIALS=credentials_archive(site), **env)
    assert unpacked.returncode == 0, unpacked.stderr
    synced = run_step("sync.yml", "sync", ci_root, **env)
    assert synced.returncode == 0, synced.stderr

    # One branch, one commit on main, holding the synced file only, with the plan as its message.
    proposal = git.Repo(origin).commit(BRANCH)
    assert proposal.parents == (main_before,)
    assert list(proposal.stats.files) == [SYNCED]
    subject = "sync tifpa.example.org: +1 -1 ~0 addresses, 2 sending rights"
    assert proposal.message.splitlines()[:12] == [
        subject,
        "",
        "mailgw plan: the working tree against the repository before this sync",
        "",
        "~ tifpa.example.org",
        "    recipients:",
        "      + giulia.verdi@tifpa.example.org: person gverdi",
        "      - l.bianchi@tifpa.example.org: alias of lbianchi",
        "    sending rights:",
        "      + giulia.verdi@tifpa.example.org: logins gverdi",
        "      - l.bianchi@tifpa.example.org: logins lbianchi",
        "",
    ]
    assert proposal.author.name == "mailgw sync"
    docs = (Path(__file__).parent.parent / "docs/site-admins.md").read_text()
    assert "\n".join(proposal.message.splitlines()[:8]) in docs, "docs/site-admins.md shows this very proposal"
    calls = gh_log.read_text().splitlines()
    assert calls == [
        f"pr list --head {BRANCH} --state open --json number --jq .[].number",
        f"pr create --base main --head {BRANCH} --title {subject} --body-file {runner}/body.md",
    ]
    body = Path(str(gh_log) + ".body").read_text()
    assert body.startswith("```text\nmailgw plan:") and body.rstrip().endswith("```")

    # Review: the pull request's plan, and who reviews it.
    reviewer = clone(origin, tmp_path / "reviewer")
    reviewer.git.checkout(BRANCH)
    review_root = Path(reviewer.working_tree_dir)
    plan = mailgw(review_root, "plan")
    assert plan.code == 0, plan.err
    assert "      + giulia.verdi@tifpa.example.org: person gverdi" in plan.out.splitlines()
    assert "      + uid=gverdi,ou=people,ou=mailgw,dc=example,dc=org" in plan.out.splitlines()
    assert "/sources/tifpa.example.org.yaml @example/tifpa-mail" in (review_root / ".github/CODEOWNERS").read_text()
    assert mailgw(review_root, "validate").code == 0

    # Merge, then the publish workflow.
    reviewer.git.checkout("main")
    reviewer.git.merge("--no-ff", "-m", f"Merge branch '{BRANCH}'", BRANCH)
    reviewer.git.push("origin", "main")
    publisher = clone(origin, tmp_path / "publisher")
    for step_id in ("publish", "push"):
        done = run_step("publish.yml", step_id, Path(publisher.working_tree_dir))
        assert done.returncode == 0, done.stderr
    published = git.Repo(origin).commit("main")
    assert published.message.startswith("publish out/: tifpa.example.org: +1 -1 ~0 addresses")
    check = clone(origin, tmp_path / "check")
    recipients = (Path(check.working_tree_dir) / "out/postfix/relay_recipients").read_text()
    assert "giulia.verdi@tifpa.example.org\tperson\n" in recipients
    assert "l.bianchi@tifpa.example.org" not in recipients
    assert mailgw(Path(check.working_tree_dir), "build", "--check").code == 0

    # The next night: the list is unchanged, one conditional request, nothing proposed.
    again = clone(origin, tmp_path / "again")
    rerun = run_step("sync.yml", "sync", Path(again.working_tree_dir), **env)
    assert rerun.returncode == 0, rerun.stderr
    assert "unchanged: not modified since the last sync (HTTP 304)" in rerun.stderr
    assert gh_log.read_text().splitlines() == calls
    assert git.Repo(origin).commit("main") == published
