"""mailgw sync against a real HTTPS server on loopback: a site's list in, sources/<domain>.yaml out, guarded.

The servers (tests/https_source.py) are shared by the module: one requires a
client certificate, one a bearer token. Each test serves its lists at paths
of its own. Every refusal leaves the repository byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.conftest import GATEWAY, domain_yaml
from tests.error_cases import SYNC_CASES
from tests.https_source import Served, SiteServer

TIFPA = "domains/tifpa.example.org.yaml"
SYNCED = "sources/tifpa.example.org.yaml"
# The site's list: ten addresses (eight recipients, two external aliases).
RECIPIENTS = """\
address,kind,uid,owners
mario.rossi@tifpa.example.org,person,mrossi,
m.rossi@tifpa.example.org,alias,mrossi,
laura.bianchi@tifpa.example.org,person,lbianchi,
giulia.neri@tifpa.example.org,person,gneri,
paolo.conti@tifpa.example.org,person,pconti,
Anna.Ferri@TIFPA.example.org,person,aferri,
info@tifpa.example.org,role,,mrossi
staff@tifpa.example.org,list,,mrossi lbianchi
"""
ALIASES = """\
address,target
g.verdi@tifpa.example.org,giuseppe.verdi@example.net
visiting@tifpa.example.org,anna.ferri@example.com a.ferri@physics.example.edu
"""
LIST_CSV = RECIPIENTS + "\n" + ALIASES
# The same list as sources/tifpa.example.org.yaml holds it: sorted by address, lower case.
SYNCED_SECTIONS = """\
recipients:
  anna.ferri: aferri
  giulia.neri: gneri
  info: {kind: role, owners: [mrossi]}
  laura.bianchi: lbianchi
  m.rossi: {kind: alias, uid: mrossi}
  mario.rossi: mrossi
  paolo.conti: pconti
  staff: {kind: list, owners: [lbianchi, mrossi]}
external_aliases:
  g.verdi: [giuseppe.verdi@example.net]
  visiting: [a.ferri@physics.example.edu, anna.ferri@example.com]
"""
LIST_JSON = {
    "recipients": [
        {"address": "mario.rossi@tifpa.example.org", "kind": "person", "uid": "mrossi"},
        {"address": "m.rossi@tifpa.example.org", "kind": "alias", "uid": "mrossi"},
        {"address": "info@tifpa.example.org", "kind": "role", "owners": ["mrossi"]},
    ],
    "external_aliases": [{"address": "g.verdi@tifpa.example.org", "targets": ["giuseppe.verdi@example.net"]}],
}
# Another site's domain whose list is owned by a person of tifpa.example.org.
LNF = domain_yaml(
    "lnf.example.org",
    site="site: LNF\n",
    admins='admins: ["@example/lnf-mail"]\n',
    recipients="recipients:\n  fabio.bruni: fbruni\n  seminari: {kind: list, owners: [mrossi, fbruni]}\n",
)


@pytest.fixture(scope="module")
def cert_site(tmp_path_factory):
    with SiteServer(tmp_path_factory.mktemp("cert-site"), client_certificates=True) as server:
        yield server


@pytest.fixture(scope="module")
def token_site(tmp_path_factory):
    with SiteServer(tmp_path_factory.mktemp("token-site"), client_certificates=False) as server:
        yield server


def source_block(server: SiteServer, url: str, fmt: str = "csv", *, auth: str = "cert", ca: Path | None = None) -> str:
    lines = ["source:", f"  url: {url}", f"  format: {fmt}"]
    if auth == "cert":
        lines += [f"  client_certificate: {server.client_certificate}", f"  client_key: {server.client_key}"]
    else:
        lines.append(f"  token_file: {auth if auth.startswith('/') else server.token_file}")
    lines.append(f"  ca_file: {ca or server.ca_file}")
    return "\n".join(lines) + "\n"


def gateway_repo(root: Path, source: str, **domains: str) -> Path:
    (root / "domains").mkdir(parents=True)
    (root / "gateway.yaml").write_text(GATEWAY)
    (root / TIFPA).write_text(domain_yaml(recipients="") + source)
    (root / "domains/lnf.example.org.yaml").write_text(LNF)
    for name, text in domains.items():
        (root / f"domains/{name}.yaml").write_text(text)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the checkout (git's own directory aside), by path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != ".git"
    }


def route(request, suffix: str = "csv") -> str:
    """A path of the test's own on the shared servers."""
    return f"/{hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]}/addresses.{suffix}"


def header_and_body(text: str) -> tuple[str, list[str], str]:
    first, _, rest = text.partition("\n")
    validators = [line for line in rest.splitlines() if line.startswith("# ")]
    return first, validators, rest[sum(len(v) + 1 for v in validators) :]


def test_first_sync_with_a_client_certificate_then_a_conditional_request_changes_nothing(
    cert_site, tmp_path, request, mailgw
):
    served = Served(LIST_CSV.encode())
    url = cert_site.serve(route(request), served)
    root = gateway_repo(tmp_path / "gw", source_block(cert_site, url))

    before = mailgw(root, "validate")
    assert before.code == 1 and any("error[not-synced]" in line for line in before.lines)

    result = mailgw(root, "sync")
    assert result.code == 0, result.err
    assert result.err == (f"mailgw sync: wrote {SYNCED}: tifpa.example.org: +10 -0 ~0 addresses\n")
    assert result.out.splitlines()[:5] == [
        "mailgw plan: the working tree against the repository before this sync",
        "",
        "~ tifpa.example.org",
        "    recipients:",
        "      + anna.ferri@tifpa.example.org: person aferri",
    ]
    assert "      + visiting@tifpa.example.org: forwarded to a.ferri@physics.example.edu, anna.ferri@example.com" in (
        result.out.splitlines()
    )
    assert "verdict: safe" in result.out

    first, validators, body = header_and_body((root / SYNCED).read_text())
    assert first == (
        f"# generated by 'mailgw sync' from {url}; do not edit, change the site's list "
        f"(sha256:{hashlib.sha256(first and (root / SYNCED).read_text().partition(chr(10))[2].encode()).hexdigest()})"
    )
    assert validators == [f"# ETag: {served.etag}", f"# Last-Modified: {served.last_modified}"]
    assert body == SYNCED_SECTIONS

    assert mailgw(root, "validate").err == "ok: 2 domain(s), 12 address(es)\n"
    assert mailgw(root, "build").code == 0
    maps = (root / "out/postfix/relay_recipients").read_text()
    assert "anna.ferri@tifpa.example.org\tperson\n" in maps and "staff@tifpa.example.org\tlist\n" in maps
    assert SYNCED in json.loads((root / "out/MANIFEST.json").read_text())["inputs"]

    unchanged = snapshot(root)
    again = mailgw(root, "sync")
    assert (again.code, again.out) == (0, "")
    assert again.err == "mailgw sync: tifpa.example.org: unchanged: not modified since the last sync (HTTP 304)\n"
    first_request, second_request = cert_site.requests_for(route(request))
    assert "If-None-Match" not in first_request.headers
    assert second_request.headers["If-None-Match"] == served.etag
    assert second_request.status == 304
    assert snapshot(root) == unchanged


def test_json_with_a_bearer_token_and_a_changed_list(token_site, tmp_path, request, mailgw):
    path = route(request, "json")
    url = token_site.serve(path, Served(json.dumps(LIST_JSON, indent=1).encode(), content_type="application/json"))
    root = gateway_repo(tmp_path / "gw", source_block(token_site, url, "json", auth="token"))
    assert mailgw(root, "sync").code == 0
    assert header_and_body((root / SYNCED).read_text())[2] == (
        "recipients:\n  info: {kind: role, owners: [mrossi]}\n  m.rossi: {kind: alias, uid: mrossi}\n"
        "  mario.rossi: mrossi\nexternal_aliases:\n  g.verdi: [giuseppe.verdi@example.net]\n"
    )
    assert token_site.requests_for(path)[0].headers["Authorization"] == f"Bearer {token_site.token}"

    unchanged = snapshot(root)
    assert mailgw(root, "sync").code == 0
    conditional = token_site.requests_for(path)[1]
    assert conditional.status == 304 and conditional.headers["If-Modified-Since"] == "Mon, 30 Nov 2026 06:00:00 GMT"
    assert snapshot(root) == unchanged

    grown = {
        **LIST_JSON,
        "recipients": LIST_JSON["recipients"]
        + [{"address": "giulia.verdi@tifpa.example.org", "kind": "person", "uid": "gverdi"}],
    }
    token_site.serve(
        path,
        Served(
            json.dumps(grown).encode(), content_type="application/json", last_modified="Tue, 01 Dec 2026 06:00:00 GMT"
        ),
    )
    result = mailgw(root, "sync")
    assert result.code == 0, result.err
    assert "      + giulia.verdi@tifpa.example.org: person gverdi" in result.out.splitlines()
    assert "  giulia.verdi: gverdi\n" in (root / SYNCED).read_text()
    assert "# Last-Modified: Tue, 01 Dec 2026 06:00:00 GMT" in (root / SYNCED).read_text()


def test_the_same_list_in_another_order_changes_nothing(cert_site, tmp_path, request, mailgw):
    path = route(request)
    url = cert_site.serve(path, Served(LIST_CSV.encode()))
    root = gateway_repo(tmp_path / "gw", source_block(cert_site, url))
    assert mailgw(root, "sync").code == 0
    unchanged = snapshot(root)
    lines = RECIPIENTS.splitlines()
    cert_site.serve(path, Served(("\n".join([lines[0]] + lines[:0:-1]) + "\n\n" + ALIASES).encode()))
    result = mailgw(root, "sync")
    assert (result.code, result.out) == (0, "")
    assert result.err == "mailgw sync: tifpa.example.org: unchanged: the list is the same as the last sync\n"
    assert snapshot(root) == unchanged


def _without(*locals_: str) -> bytes:
    return "".join(line + "\n" for line in LIST_CSV.splitlines() if line.split("@")[0] not in locals_).encode()


# Each: what the site's server does (or what the domain file says), the sync's options, what the line says.
FAILURES = {
    # TLS 1.3: the server refuses after the client's handshake; the client reads the alert, or the closed socket.
    "no client certificate": ("token-on-cert-site", Served(b"x"), (), ("TLS failed", "the connection broke")),
    "wrong token": ("wrong-token", Served(b"x"), (), "the site refused the credentials (HTTP 401 Unauthorized)"),
    "forbidden": ("token", Served(b"x", status=403), (), "the site refused the credentials (HTTP 403 Forbidden)"),
    "server error": ("cert", Served(b"x", status=500), (), "HTTP 500 Internal Server Error"),
    "a redirect": ("cert", Served(b"x", status=302), (), "HTTP 302 Found: redirects are not followed"),
    "timeout": ("cert", Served(LIST_CSV.encode() + b"\n", delay=2.5), ("--timeout", "1"), "no answer within 1 s"),
    "reset mid-body": (
        "cert",
        Served(LIST_CSV.encode() * 40, cut_after=300),
        (),
        "the connection broke before the whole list arrived",
    ),
    "body shorter than announced": (
        "cert",
        Served(_without("paolo.conti"), short_by=50),
        (),
        "the connection broke before the whole list arrived",
    ),
    "over the size limit": ("cert", Served(_without("paolo.conti")), ("--max-bytes", "200"), "over the limit of 200"),
    "not UTF-8": ("cert", Served(LIST_CSV.encode().replace(b"Anna", b"Ann\xe0")), (), "is not UTF-8"),
    "a row for another domain": (
        "cert",
        Served(LIST_CSV.replace("giulia.neri@tifpa", "giulia.neri@lnf").encode()),
        (),
        "1 problem(s) in",
    ),
    "a duplicate address": (
        "cert",
        Served(LIST_CSV.replace("m.rossi@tifpa", "Mario.Rossi@tifpa").encode()),
        (),
        "1 problem(s) in",
    ),
    "an empty list": ("cert", Served(RECIPIENTS.splitlines()[0].encode() + b"\n"), (), "lists no address"),
    "60% removed": (
        "cert",
        Served(_without("giulia.neri", "paolo.conti", "Anna.Ferri", "info", "g.verdi", "visiting")),
        (),
        "tifpa.example.org: 6 of 10 addresses removed (60%; more than 30% of a domain with at least 10) "
        "(--force to sync anyway)",
    ),
    "a server certificate the CA does not sign": ("other-ca", Served(b"x"), (), "certificate verify failed"),
    "an owner who is nobody": (
        "cert",
        Served(LIST_CSV.replace("role,,mrossi", "role,,nobody").encode()),
        (),
        "the list does not validate (1 finding(s))",
    ),
}
ROW_FINDINGS = {
    "not UTF-8": "{url}:7: error[not-utf8]: byte 0xe0 is not valid UTF-8; the list must be UTF-8",
    "a row for another domain": "{url}:5: error[wrong-domain]: address 'giulia.neri@lnf.example.org' is not in "
    "tifpa.example.org; this list is the source of tifpa.example.org only",
    "a duplicate address": "{url}:3: error[duplicate-address]: address 'mario.rossi@tifpa.example.org' is already "
    "listed at {url}:2",
    "an owner who is nobody": "{url}:8: error[unknown-owner]: owner 'nobody' of 'info' is not the uid of any person "
    "or alias in the fleet",
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_refused_sync_leaves_the_repository_byte_for_byte(failure, cert_site, token_site, tmp_path, request, mailgw):
    how, served, options, says = FAILURES[failure]
    site = token_site if how in ("token", "wrong-token") else cert_site
    path = route(request)
    url = site.serve(path, Served(LIST_CSV.encode()))
    auth = "token" if how in ("token", "wrong-token") else "cert"
    root = gateway_repo(tmp_path / "gw", source_block(site, url, auth=auth))
    assert mailgw(root, "sync").code == 0, "the first sync, from a good list"
    domain_file = root / TIFPA
    if how == "token-on-cert-site":  # the server wants a certificate; the source names a token only
        domain_file.write_text(domain_yaml(recipients="") + source_block(site, url, auth="token"))
    elif how == "wrong-token":
        wrong = tmp_path / "wrong.token"
        wrong.write_text("not-the-token\n")
        domain_file.write_text(domain_yaml(recipients="") + source_block(site, url, auth=str(wrong)))
    elif how == "other-ca":
        domain_file.write_text(domain_yaml(recipients="") + source_block(site, url, ca=site.other_ca_file))
    site.serve(path, served)
    before = snapshot(root)

    result = mailgw(root, "sync", *options)
    assert result.code == 1
    *findings, line = result.err.splitlines()
    assert line.startswith("mailgw sync: tifpa.example.org: not synced: "), line
    assert any(text in line for text in ((says,) if isinstance(says, str) else says)), line
    if failure in ROW_FINDINGS:
        assert findings == ["  " + ROW_FINDINGS[failure].format(url=url)]
    assert result.out == ""
    assert snapshot(root) == before

    if failure == "60% removed":  # the intended mass change goes through with --force
        forced = mailgw(root, "sync", "--force")
        assert forced.code == 0, forced.err
        assert "verdict: forced through, although unsafe:" in forced.out
        assert header_and_body((root / SYNCED).read_text())[2] == (
            "recipients:\n  laura.bianchi: lbianchi\n  m.rossi: {kind: alias, uid: mrossi}\n  mario.rossi: mrossi\n"
            "  staff: {kind: list, owners: [lbianchi, mrossi]}\n"
        )


def test_a_list_that_breaks_another_domain_names_it(cert_site, tmp_path, request, mailgw):
    path = route(request)
    url = cert_site.serve(path, Served(LIST_CSV.encode()))
    root = gateway_repo(tmp_path / "gw", source_block(cert_site, url))
    assert mailgw(root, "sync").code == 0
    without_mrossi = (
        LIST_CSV.replace("mario.rossi@tifpa.example.org,person,mrossi,\n", "")
        .replace("m.rossi@tifpa.example.org,alias,mrossi,\n", "")
        .replace("mrossi", "lbianchi")
    )
    cert_site.serve(path, Served(without_mrossi.encode()))
    before = snapshot(root)
    result = mailgw(root, "sync")
    assert result.code == 1
    assert result.err.splitlines() == [
        "  domains/lnf.example.org.yaml:8:35: error[unknown-owner]: owner 'mrossi' of 'seminari' is not the uid "
        "of any person or alias in the fleet",
        "mailgw sync: tifpa.example.org: not synced: the list does not validate (1 finding(s))",
    ]
    assert snapshot(root) == before


def test_other_domains_still_sync_when_one_is_refused(cert_site, tmp_path, request, mailgw):
    broken = cert_site.serve(route(request) + "-tifpa", Served(b"", status=500))
    ge_list = "address,kind,uid,owners\nmarco.gialli@ge.example.org,person,mgialli,\n"
    ge_url = cert_site.serve(route(request) + "-ge", Served(ge_list.encode()))
    ge = domain_yaml("ge.example.org", site="site: GE\n", recipients="") + source_block(cert_site, ge_url)
    root = gateway_repo(tmp_path / "gw", source_block(cert_site, broken), **{"ge.example.org": ge})
    result = mailgw(root, "sync")
    assert result.code == 1
    assert result.err.splitlines() == [
        "mailgw sync: wrote sources/ge.example.org.yaml: ge.example.org: +1 -0 ~0 addresses",
        f"mailgw sync: tifpa.example.org: not synced: fetching {broken} failed: HTTP 500 Internal Server Error",
    ]
    assert not (root / SYNCED).exists()
    assert "  marco.gialli: mgialli\n" in (root / "sources/ge.example.org.yaml").read_text()
    only = mailgw(root, "sync", "ge.example.org")
    assert only.code == 0 and "unchanged" in only.err
    unknown = mailgw(root, "sync", "lnf.example.org")
    assert unknown.code == 2
    assert unknown.err == "mailgw: lnf.example.org: no domain of this repository with a source has that name\n"


@pytest.mark.parametrize("case", SYNC_CASES, ids=[f"{c.code}-{i}" for i, c in enumerate(SYNC_CASES)])
def test_sync_error_case(case, cert_site, tmp_path, request, mailgw):
    """docs/errors.md's rows for a site's list: the exact finding, against the real server."""
    url = cert_site.serve(route(request, case.format), Served(case.body.encode()))
    root = gateway_repo(tmp_path / "gw", source_block(cert_site, url, case.format))
    before = snapshot(root)
    result = mailgw(root, "sync")
    assert result.code == 1
    assert "  " + case.expected.format(url=url) in result.err.splitlines()
    assert snapshot(root) == before


def test_validate_refuses_a_hand_edit_of_the_synced_file(cert_site, tmp_path, request, mailgw):
    url = cert_site.serve(route(request), Served(LIST_CSV.encode()))
    root = gateway_repo(tmp_path / "gw", source_block(cert_site, url))
    assert mailgw(root, "sync").code == 0
    synced = root / SYNCED
    synced.write_text(synced.read_text().replace("  paolo.conti: pconti\n", "  paolo.conti: pconti\n  x: pconti\n"))
    result = mailgw(root, "validate")
    assert result.code == 1
    assert result.lines == [
        f"{SYNCED}:1:1: error[synced-file-edited]: {SYNCED} is not as 'mailgw sync' wrote it (its sha256 does not "
        f"match its content): change the list at its source ({url}) and run 'mailgw sync tifpa.example.org'; "
        "a hand edit would be lost at the next sync"
    ]
    # The sync replaces the edited file with the list as the site has it.
    repaired = mailgw(root, "sync")
    assert repaired.code == 0, repaired.err
    assert "      - x@tifpa.example.org: alias of pconti" not in repaired.out
    assert "      - x@tifpa.example.org: person pconti" in repaired.out
    assert mailgw(root, "validate").code == 0


def test_codeowners_gives_the_synced_file_to_the_domain_admins(cert_site, tmp_path, request, mailgw):
    url = cert_site.serve(route(request), Served(LIST_CSV.encode()))
    root = gateway_repo(tmp_path / "gw", source_block(cert_site, url))
    assert mailgw(root, "sync").code == 0
    assert mailgw(root, "codeowners").code == 0
    assert (root / ".github/CODEOWNERS").read_text().splitlines()[2:] == [
        "/domains/lnf.example.org.yaml @example/lnf-mail",
        "/domains/tifpa.example.org.yaml @example/tifpa-mail",
        "/sources/tifpa.example.org.yaml @example/tifpa-mail",
    ]


def test_credentials_relative_to_the_credentials_directory(cert_site, tmp_path, request, mailgw, monkeypatch):
    url = cert_site.serve(route(request), Served(LIST_CSV.encode()))
    source = (
        f"source:\n  url: {url}\n  format: csv\n  client_certificate: {cert_site.client_certificate.name}\n"
        f"  client_key: {cert_site.client_key.name}\n  ca_file: {cert_site.ca_file.name}\n"
    )
    root = gateway_repo(tmp_path / "gw", source)
    without = mailgw(root, "sync")
    assert without.code == 1
    assert re.search(r"is relative to the credentials directory, and none is given \(--credentials\)$", without.err)
    monkeypatch.setenv("MAILGW_SYNC_CREDENTIALS", str(cert_site.root))
    assert mailgw(root, "sync").code == 0


def test_propose_commits_on_a_branch_and_leaves_the_checkout_alone(cert_site, tmp_path, request, mailgw):
    from tests.gitrepo import commit_all, init

    path = route(request)
    url = cert_site.serve(path, Served(LIST_CSV.encode()))
    root = gateway_repo(tmp_path / "gw", source_block(cert_site, url))
    repo = init(root)
    assert mailgw(root, "sync").code == 0
    head = commit_all(repo, "tifpa.example.org from the site's list")

    cert_site.serve(path, Served(LIST_CSV.replace("paolo.conti", "paola.conti").encode()))
    before = snapshot(root)
    proposed = mailgw(root, "sync", "--propose", "--author", "Sync Bot <sync@gw.example.org>")
    assert proposed.code == 0, proposed.err
    commit = repo.commit("sync/tifpa.example.org")
    assert (
        proposed.err == f"mailgw sync: tifpa.example.org: proposed on sync/tifpa.example.org ({commit.hexsha[:12]})\n"
    )
    assert commit.parents == (head,) and list(commit.stats.files) == [SYNCED]
    assert commit.message.startswith("sync tifpa.example.org: +1 -1 ~0 addresses\n\nmailgw plan:")
    assert (commit.author.email, commit.committer.email) == ("sync@gw.example.org", "sync@gw.example.org")
    assert "  paola.conti: pconti\n" in (commit.tree / SYNCED).data_stream.read().decode()
    assert snapshot(root) == before and repo.head.commit == head and not repo.is_dirty(untracked_files=True)

    again = mailgw(root, "sync", "--propose")
    assert again.code == 0
    assert again.err == (
        f"mailgw sync: tifpa.example.org: already proposed on sync/tifpa.example.org ({commit.hexsha[:12]})\n"
    )
    assert repo.commit("sync/tifpa.example.org") == commit

    (root / TIFPA).write_text((root / TIFPA).read_text() + "role: backup\n")
    dirty = mailgw(root, "sync", "--propose")
    assert dirty.code == 2
    assert dirty.err == (
        f"mailgw: declarations differ from the last commit ({TIFPA}); proposals branch off HEAD: commit them first\n"
    )


def test_a_moved_source_rewrites_the_header_only(cert_site, tmp_path, request, mailgw):
    url = cert_site.serve(route(request), Served(LIST_CSV.encode()))
    root = gateway_repo(tmp_path / "gw", source_block(cert_site, url))
    assert mailgw(root, "sync").code == 0
    sections = header_and_body((root / SYNCED).read_text())[2]
    moved = cert_site.serve(route(request) + "-moved", Served(LIST_CSV.encode()))
    (root / TIFPA).write_text(domain_yaml(recipients="") + source_block(cert_site, moved))
    result = mailgw(root, "sync")
    assert result.code == 0, result.err
    assert result.err == f"mailgw sync: wrote {SYNCED}: tifpa.example.org: the same addresses, from {moved}\n"
    assert (root / SYNCED).read_text().startswith(f"# generated by 'mailgw sync' from {moved};")
    assert header_and_body((root / SYNCED).read_text())[2] == sections
    assert mailgw(root, "validate").code == 0
