"""mailgw plan: the working tree against a revision, read through git; every guard, every view, every refusal."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from compiler.commands.plan import render_markdown, render_text
from compiler.pipeline import compile_repository
from compiler.plan import Change, directory_changes, make_plan, parse_ldif
from tests.conftest import GATEWAY, REPO, domain_yaml
from tests.gitrepo import bundled_dns, commit_all, copy_bundled, edit, fleet_repo, init, line_of

TIFPA = "domains/tifpa.example.org.yaml"
# Counted by hand in the bundled fleet (domains/*.yaml, out/): a change there changes these.
BUNDLED_DOMAINS = [
    "cnaf.example.org",
    "example.it",
    "ge.example.org",
    "lab.tifpa.example.org",
    "lnf.example.org",
    "tifpa.example.org",
    "xn--citt-3na.example.org",
]
LNF_ADDRESSES = 5  # francesca.bruni, f.bruni, carlo.esposito, direzione, acceleratori
TIFPA_ADDRESSES = 13  # 11 recipients and 2 external aliases
# The whole bundled fleet planned against nothing: 49 addresses (cnaf 6, example.it 18: its role and list, the
# uid@ aliases of the 10 people in national/aliases.yaml and the name.surname@ of the 6 with a name, ge 2,
# lab.tifpa 3, lnf 5, tifpa 13, città 2); 41 directory entries (the base and its 5 containers, 10 people, 6 lists,
# 9 roles, 3 external aliases, 7 domains); 46 DNS record sets (tifpa 9: MX, SPF, 2 DKIM keys, DMARC, MTA-STS TXT
# and CNAME, TLS-RPT and cnaf's report consent; cnaf 8, its consent being tifpa's; ge, lab.tifpa, città and
# example.it 5 each: MX, SPF, MTA-STS twice, TLS-RPT; lnf 1, the backup MX; the gateway's own 8: SPF, A and AAAA
# of mx1 and mx2, the SRS domain's MX and SPF, the ARC key); 15 policy files (10 in rspamd/local.d, 5 in
# rspamd/maps.d); 96 gateway settings (the fields of gateway.yaml's model, set or left at their defaults: 31,
# national.domain and capture.notice_service, the 19 of its portal section, 10 more of its ldap section: the
# listen addresses of mx1 and mx2, port, size_limit, time_limit, config_directory, database_directory,
# run_directory, tls_certificate, tls_key; the 3 of its plan section; 16 of DKIM, DNS and forwarding:
# dkim.key_directory, dns.spf_record, its 2 mx_addresses, ttl, the 3 of mta_sts and tls_reports, the 5 of
# forwarding and the 2 of its arc key; and the 15 of its submission section: the 7 of aai_directory, the 2 ports,
# tls_chain_file, message_size_limit, recipient_limit, auth_rate_limit, automation_services, auth_socket); 48 out/
# files beside MANIFEST.json (25 with postfix/capture_bcc, out/portal/portal.json, out/ldap/slapd-config,
# out/ldap/slapd.yaml, 14 more: 8 zone snippets, the MTA-STS policy, postfix/forward_alias, rspamd's
# dkim_signing.conf, arc.conf and worker-proxy.inc, srs/postsrsd; and for submission out/dovecot/'s 2 files,
# postfix/sender_logins, postfix/client_certificates and the 2 automation services' cidr tables).
# 49 sending rights: the 30 declared addresses that are not external aliases (example.it's role and list
# among them), the 16 generated national aliases (10 uid@ and 6 name.surname@, each its person's own),
# tifpa's certificate web-portal, and the automation clients lab-alarms (tifpa) and ups-monitors (cnaf).
# 19 widenings against nothing (tests/test_plan_widening.py lists them): the 6 relay networks of the sites'
# domain files, ge's verify, cnaf's inbound reject turned off, tifpa's 3 allowed senders and networks and its
# quarantined viruses, gateway.yaml's postscreen permit and DNSBL allowlist, and its submission services, tifpa's
# certificate web-portal and automation client lab-alarms, cnaf's automation client ups-monitors, and lnf's
# capture of direzione.
BUNDLED_WIDENINGS = 19
BUNDLED_SUMMARY = (
    f"7 domains (7 added): {BUNDLED_WIDENINGS} widenings, +49 -0 ~0 addresses, 49 sending rights, "
    "41 directory entries, 46 DNS record changes, 15 policy files, 96 gateway settings, 48 out/ files"
)
# The MTA-STS policy of gateway.yaml's dns.mta_sts and mx_hosts, written out by hand (RFC 8461 3.2), and the
# record's id: the first 20 hex digits of its sha256 (docs/dns.md).
_GATEWAY = yaml.safe_load((REPO / "gateway.yaml").read_text())
_POLICY = (
    "version: STSv1\ngenerated: by 'mailgw build' from gateway.yaml; do not edit\n"
    f"mode: {_GATEWAY['dns']['mta_sts']['mode']}\n"
    + "".join(f"mx: {host}\n" for host in sorted(_GATEWAY["mx_hosts"]))
    + f"max_age: {_GATEWAY['dns']['mta_sts']['max_age']}\n"
)
MTA_STS_ID = hashlib.sha256(_POLICY.encode()).hexdigest()[:20]
HINT = (
    "  to go ahead anyway, label the merge request 'mailgw:force' (CI then sets MAILGW_FORCE=1) "
    "or run 'mailgw plan --force'"
)


@pytest.fixture
def branch(tmp_path):
    """The bundled fleet on main, and a checked-out branch to edit: -> (root, repo)."""
    root = tmp_path / "gw"
    repo = fleet_repo(root)
    repo.git.checkout("-b", "change")
    return root, repo


def people(count: int, domain: str = "big.example.org") -> str:
    body = "".join(f"  user{i:02}: u{i:02}\n" for i in range(count))
    return domain_yaml(domain, recipients="recipients:\n" + body)


@pytest.fixture
def small_repo(make_repo):
    """A one-domain fleet committed on main: make(files) -> (root, repo)."""

    def make(files: dict[str, str]):
        root = make_repo(files)
        repo = init(root)
        commit_all(repo, "fleet")
        return root, repo

    return make


def refusals(err: str) -> list[str]:
    """stderr without the notes (the bundled fleet has people without a name: docs/national-aliases.md)."""
    return [line for line in err.splitlines() if ": note[" not in line]


def lnf_removed() -> str:
    """The reason a plan without lnf.example.org is unsafe, with as many addresses as the bundled domain has."""
    return f"lnf.example.org: domain removed; the MX would reject all of its mail ({LNF_ADDRESSES} address(es))"


def verdict(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("verdict:")) :]


def test_no_change_is_an_empty_safe_plan(branch, mailgw):
    root, repo = branch
    result = mailgw(root, "plan")
    assert result.code == 0
    base = repo.commit("main").hexsha[:12]
    assert result.out == (
        f"mailgw plan: the working tree against the merge base with main ({base})\n\n"
        "summary: no changes\nverdict: safe\n"
    )


def test_every_kind_of_domain_change(branch, mailgw):
    root, _ = branch
    edit(root, TIFPA, "  paolo.conti: pconti\n", "  giulia.verdi: gverdi\n")
    edit(root, TIFPA, "info: {kind: role, owners: [mrossi]}", "info: {kind: list, owners: [mrossi, gneri]}")
    edit(root, "domains/cnaf.example.org.yaml", "luca.gallo@example.net", "luca.gallo@example.com")
    edit(
        root,
        "domains/cnaf.example.org.yaml",
        "external_aliases:\n",
        "external_aliases:\n  sara: [sara.romano@example.net]\n",
    )
    edit(root, "domains/lnf.example.org.yaml", "role: backup", "role: primary")
    edit(root, "domains/lnf.example.org.yaml", 'admins: ["@example/lnf-mail", "@fbruni"]', 'admins: ["@fbruni"]')
    (root / "domains/new.example.org.yaml").write_text(
        domain_yaml("new.example.org", site="site: NEW\n", recipients="recipients:\n  anna.neri: aneri\n")
    )
    result = mailgw(root, "plan")
    assert result.code == 0, result.err
    body = result.out.splitlines()[2:]
    assert body == [
        "~ cnaf.example.org",
        "    external aliases:",
        "      ~ l.gallo@cnaf.example.org: forwarded to luca.gallo@example.net -> forwarded to luca.gallo@example.com",
        "      + sara@cnaf.example.org: forwarded to sara.romano@example.net",
        "    directory entries:",
        "      ~ cn=l.gallo@cnaf.example.org,ou=external-aliases,ou=mailgw,dc=example,dc=org",
        "      + cn=sara@cnaf.example.org,ou=external-aliases,ou=mailgw,dc=example,dc=org",
        "",
        "~ lnf.example.org",
        "    settings:",
        "      ~ admins: @example/lnf-mail, @fbruni -> @fbruni",
        "      ~ role: backup -> primary",
        "    directory entries:",
        "      ~ associatedDomain=lnf.example.org,ou=domains,ou=mailgw,dc=example,dc=org",
        # A primary domain: the gateway's MX at preference 10, not 20, and the records of a domain that sends
        # through the gateway (SPF, MTA-STS, TLS-RPT, as gateway.yaml's dns section has them).
        "    DNS records:",
        f'      + _mta-sts.lnf.example.org. TXT: "v=STSv1; id={MTA_STS_ID}"',
        '      + _smtp._tls.lnf.example.org. TXT: "v=TLSRPTv1; rua=mailto:tls-reports@gw.example.org"',
        "      ~ lnf.example.org. MX: 20 mx1.gw.example.org., 20 mx2.gw.example.org. -> "
        "10 mx1.gw.example.org., 10 mx2.gw.example.org.",
        '      + lnf.example.org. TXT: "v=spf1 include:_spf.gw.example.org -all"',
        "      + mta-sts.lnf.example.org. CNAME: mta-sts.gw.example.org.",
        "",
        "+ new.example.org (added)",
        "    recipients:",
        "      + anna.neri@new.example.org: person aneri",
        "    routing:",
        "      + next hop: smtp:[smtp.tifpa.example.org]:25",
        "    directory entries:",
        "      + associatedDomain=new.example.org,ou=domains,ou=mailgw,dc=example,dc=org",
        "      + uid=aneri,ou=people,ou=mailgw,dc=example,dc=org",
        # gateway.yaml's submission section: each address a login may send as.
        "    sending rights:",
        "      + anna.neri@new.example.org: logins aneri",
        "    DNS records:",
        f'      + _mta-sts.new.example.org. TXT: "v=STSv1; id={MTA_STS_ID}"',
        '      + _smtp._tls.new.example.org. TXT: "v=TLSRPTv1; rua=mailto:tls-reports@gw.example.org"',
        "      + mta-sts.new.example.org. CNAME: mta-sts.gw.example.org.",
        "      + new.example.org. MX: 10 mx1.gw.example.org., 10 mx2.gw.example.org.",
        '      + new.example.org. TXT: "v=spf1 include:_spf.gw.example.org -all"',
        "",
        "~ tifpa.example.org",
        "    recipients:",
        "      + giulia.verdi@tifpa.example.org: person gverdi",
        "      ~ info@tifpa.example.org: role owned by mrossi -> list owned by gneri, mrossi",
        "      - paolo.conti@tifpa.example.org: person pconti",
        "    directory entries:",
        "      + cn=info@tifpa.example.org,ou=lists,ou=mailgw,dc=example,dc=org",
        "      - cn=info@tifpa.example.org,ou=roles,ou=mailgw,dc=example,dc=org",
        "      + uid=gverdi,ou=people,ou=mailgw,dc=example,dc=org",
        "      ~ uid=pconti,ou=people,ou=mailgw,dc=example,dc=org",
        "    sending rights:",
        "      + giulia.verdi@tifpa.example.org: logins gverdi",
        "      ~ info@tifpa.example.org: logins mrossi -> logins gneri, mrossi",
        "      - paolo.conti@tifpa.example.org: logins pconti",
        "",
        "policy (out/rspamd):",
        # new.example.org joins the default classes: each names it in a comment and in its rule, inbound
        # and outbound (4 lines, each replaced).
        "    ~ rspamd/local.d/settings.conf (+4 -4 lines)",
        "",
        "directory (out/ldap):",
        # Counted in the diff, as a multiset (a line that moves counts for nothing): added, the entries of
        # aneri (8 lines, with the blank one), gverdi (8), info's list (12), sara (9), new.example.org (7),
        # luca.gallo's new target (1); removed, paolo.conti's address, info's role DN, luca.gallo's old target,
        # lnf's old admin (4); the 10 lines info's role and list entries share count on neither side.
        "    ~ ldap/directory.ldif (+35 -4 lines)",
        "",
        "DNS records (out/dns, out/mta-sts):",
        # lnf's snippet, as a multiset: added, the primary MX's comment and its 2 lines, and the comment and
        # line of SPF, MTA-STS (TXT and CNAME) and TLS-RPT with a blank line before each (4 x 3); removed, the
        # backup MX's comment and its 2 lines.
        "    ~ dns/lnf.example.org.zone (+15 -3 lines)",
        # The header (3 lines), then a blank line, a comment and the records: MX (2), SPF, MTA-STS (2), TLS-RPT.
        "    + dns/new.example.org.zone (+19 -0 lines)",
        "",
        "other out/ files:",
        # The quarantine portal's configuration lists every domain with its retention.
        "    ~ portal/portal.json (+4 -0 lines)",
        # With gateway.yaml's forwarding the external aliases are here, not in virtual_alias: ~l.gallo, +sara.
        "    ~ postfix/forward_alias (+2 -1 lines)",
        "    ~ postfix/relay_domains (+1 -0 lines)",
        # +anna.neri, +giulia.verdi, +sara, ~info and the new domain's postmaster@ and abuse@, -paolo.conti
        "    ~ postfix/relay_recipients (+6 -2 lines)",
        # +anna.neri, +giulia.verdi, ~info (its owners), -paolo.conti; the new domain's postmaster@ and abuse@
        # are nobody's.
        "    ~ postfix/sender_logins (+3 -2 lines)",
        "    ~ postfix/sender_sites (+1 -0 lines)",
        # The new domain's next hop, and sara's way to the forwarding pass.
        "    ~ postfix/transport (+2 -0 lines)",
        "",
        "summary: 4 domains (1 added): +3 -1 ~2 addresses, 2 setting changes, 4 sending rights, 9 directory entries, "
        "10 DNS record changes, 1 policy file, 11 out/ files",
        "verdict: safe",
    ]


def test_the_three_views_show_one_plan(branch, mailgw):
    root, _ = branch
    edit(root, TIFPA, "  paolo.conti: pconti\n", "")
    text = mailgw(root, "plan").out
    markdown = mailgw(root, "plan", "--format", "markdown").out
    document = mailgw(root, "plan", "--format", "json").out
    data = json.loads(document)
    assert document == json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    summary = "tifpa.example.org: +0 -1 ~0 addresses, 1 sending right, 1 directory entry, 3 out/ files"
    assert data["summary"] == summary and f"summary: {summary}" in text
    assert f"**{summary}**" in markdown
    assert data["verdict"] == "safe" and data["reasons"] == [] and data["forced"] is False
    # pconti's entry also holds his lab.tifpa.example.org address: that domain did not change, and is not shown.
    [tifpa] = data["domains"]
    assert tifpa["recipients"] == [
        {"name": "paolo.conti@tifpa.example.org", "status": "removed", "before": "person pconti", "after": None}
    ]
    assert tifpa["addresses_before"] == TIFPA_ADDRESSES and tifpa["addresses_removed"] == 1
    [entry] = tifpa["directory"]
    assert (entry["name"], entry["status"]) == ("uid=pconti,ou=people,ou=mailgw,dc=example,dc=org", "changed")
    before, after = set(entry["before"].splitlines()), set(entry["after"].splitlines())
    assert before - after == {"associatedDomain: tifpa.example.org", "mailLocalAddress: paolo.conti@tifpa.example.org"}
    assert after - before == set() and "mailLocalAddress: pconti@lab.tifpa.example.org" in after
    assert "| - | recipients | `paolo.conti@tifpa.example.org` | `person pconti` |  |" in markdown
    assert "| ~ | directory entries | `uid=pconti,ou=people,ou=mailgw,dc=example,dc=org` |  |  |" in markdown
    assert "      ~ uid=pconti,ou=people,ou=mailgw,dc=example,dc=org" in text.splitlines()
    assert data["files"] == [
        {
            "path": "ldap/directory.ldif",
            "status": "changed",
            "section": "directory",
            "lines_added": 0,
            "lines_removed": 2,
        },
        {
            "path": "postfix/relay_recipients",
            "status": "changed",
            "section": "artifacts",
            "lines_added": 0,
            "lines_removed": 1,
        },
        {
            "path": "postfix/sender_logins",
            "status": "changed",
            "section": "artifacts",
            "lines_added": 0,
            "lines_removed": 1,
        },
    ]


def test_directory_entries_show_under_the_domain_whose_part_changed(branch, mailgw):
    root, _ = branch
    # pconti has addresses in tifpa and lab.tifpa; his entry changes for tifpa only.
    edit(root, TIFPA, "  paolo.conti: pconti\n", "  paolo.conti: pconti\n  p.conti: {kind: alias, uid: pconti}\n")
    # A tifpa alias that forwards into cnaf is tifpa's entry, not cnaf's.
    edit(root, TIFPA, "g.verdi: [giuseppe.verdi@example.net]", "g.verdi: [luca.gallo@cnaf.example.org]")
    # A list whose owners change names no address that changed: it shows under its own domain.
    edit(
        root,
        "domains/lab.tifpa.example.org.yaml",
        "detector: {kind: list, owners: [pconti]}",
        "detector: {kind: list, owners: [pconti, mrossi]}",
    )
    data = json.loads(mailgw(root, "plan", "--format", "json").out)
    assert {d["name"]: [c["name"] for c in d["directory"]] for d in data["domains"]} == {
        "lab.tifpa.example.org": ["cn=detector@lab.tifpa.example.org,ou=lists,ou=mailgw,dc=example,dc=org"],
        "tifpa.example.org": [
            "cn=g.verdi@tifpa.example.org,ou=external-aliases,ou=mailgw,dc=example,dc=org",
            "uid=pconti,ou=people,ou=mailgw,dc=example,dc=org",
        ],
    }
    assert data["directory"] == []
    # Sending rights: p.conti is pconti's, detector's owners changed (g.verdi forwards: nobody's, before and after).
    assert data["summary"] == "2 domains: +1 -0 ~2 addresses, 2 sending rights, 3 directory entries, 4 out/ files"


def test_an_entry_of_two_domains_shows_under_both_and_counts_once(branch, mailgw):
    root, _ = branch
    edit(root, TIFPA, "  paolo.conti: pconti\n", "  paolo.conti: pconti\n  anna.neri: aneri\n")
    edit(
        root,
        "domains/lab.tifpa.example.org.yaml",
        "  pconti: {kind: alias, uid: pconti}\n",
        "  pconti: {kind: alias, uid: pconti}\n  aneri: aneri\n",
    )
    data = json.loads(mailgw(root, "plan", "--format", "json").out)
    assert {d["name"]: [(c["name"], c["status"]) for c in d["directory"]] for d in data["domains"]} == {
        name: [("uid=aneri,ou=people,ou=mailgw,dc=example,dc=org", "added")]
        for name in ("lab.tifpa.example.org", "tifpa.example.org")
    }
    assert data["summary"] == "2 domains: +2 -0 ~0 addresses, 2 sending rights, 1 directory entry, 3 out/ files"


# --- the guards -----------------------------------------------------------------------------------


def test_a_removed_domain_is_unsafe_unless_forced(branch, mailgw):
    root, repo = branch
    repo.index.remove(["domains/lnf.example.org.yaml"], working_tree=True)
    result = mailgw(root, "plan")
    assert result.code == 1
    reason = lnf_removed()
    assert verdict(result.out) == ["verdict: UNSAFE:", f"  - {reason}", HINT]
    assert "- lnf.example.org (removed)" in result.out
    assert refusals(result.err) == ["mailgw: the plan is unsafe:", f"  {reason}", "mailgw: " + HINT.strip()]
    forced = mailgw(root, "plan", "--force")
    assert forced.code == 0 and refusals(forced.err) == []
    assert verdict(forced.out) == ["verdict: forced through, although unsafe:", f"  - {reason}"]


@pytest.mark.parametrize("removed, unsafe", [(4, True), (3, False)])
def test_more_than_30_percent_of_ten_addresses_removed_is_unsafe(small_repo, mailgw, removed, unsafe):
    root, _ = small_repo({"domains/big.example.org.yaml": people(10)})
    (root / "domains/big.example.org.yaml").write_text(
        people(10).replace("".join(f"  user{i:02}: u{i:02}\n" for i in range(removed)), "")
    )
    result = mailgw(root, "plan")
    assert result.code == (1 if unsafe else 0)
    reasons = [line for line in result.out.splitlines() if line.startswith("  - ")]
    assert reasons == (
        ["  - big.example.org: 4 of 10 addresses removed (40%; more than 30% of a domain with at least 10)"]
        if unsafe
        else []
    )


def test_a_domain_with_fewer_than_ten_addresses_may_lose_most(small_repo, mailgw):
    root, _ = small_repo({"domains/big.example.org.yaml": people(9)})
    (root / "domains/big.example.org.yaml").write_text(people(1))
    result = mailgw(root, "plan")
    assert result.code == 0 and "+0 -8 ~0 addresses" in result.out


def test_an_external_alias_counts_as_an_address(small_repo, mailgw):
    aliases = "external_aliases:\n" + "".join(f"  fwd{i}: [x{i}@example.net]\n" for i in range(6))
    before = people(4) + aliases
    root, _ = small_repo({"domains/big.example.org.yaml": before})
    (root / "domains/big.example.org.yaml").write_text(people(4) + "external_aliases:\n  fwd0: [x0@example.net]\n")
    result = mailgw(root, "plan")
    assert result.code == 1
    assert "big.example.org: 5 of 10 addresses removed (50%" in result.out


@pytest.mark.parametrize(
    "new",
    [
        "    - smtp:[smtp2.tifpa.example.org]:25\n    - smtp:[smtp.tifpa.example.org]:25\n",  # order
        "    - smtp:[smtp.tifpa.example.org]:25\n    - smtp:[smtp3.tifpa.example.org]:25\n",  # host
        "    - lmtp:[smtp.tifpa.example.org]:24\n",  # transport
    ],
)
def test_a_next_hop_change_is_unsafe(branch, mailgw, new):
    root, _ = branch
    edit(root, TIFPA, "    - smtp:[smtp.tifpa.example.org]:25\n    - smtp:[smtp2.tifpa.example.org]:25\n", new)
    result = mailgw(root, "plan")
    assert result.code == 1
    after = (
        "smtp:" + ", ".join(hop.partition(":")[2] for hop in new.split()[1::2])
        if "lmtp" not in new
        else "lmtp:[smtp.tifpa.example.org]:24"
    )
    assert verdict(result.out)[1] == (
        "  - tifpa.example.org: next hop changed from smtp:[smtp.tifpa.example.org]:25, "
        f"[smtp2.tifpa.example.org]:25 to {after}"
    )
    assert (
        f"      ~ next hop: smtp:[smtp.tifpa.example.org]:25, [smtp2.tifpa.example.org]:25 -> {after}"
        in result.out.splitlines()
    )


def test_a_base_dn_change_is_unsafe(branch, mailgw):
    root, _ = branch
    edit(root, "gateway.yaml", "base_dn: ou=mailgw,dc=example,dc=org", "base_dn: ou=mail,dc=example,dc=org")
    result = mailgw(root, "plan")
    assert result.code == 1
    assert "\ngateway:\n    ~ ldap.base_dn: ou=mailgw,dc=example,dc=org -> ou=mail,dc=example,dc=org\n\n" in result.out
    assert verdict(result.out)[1] == (
        "  - gateway: LDAP base DN changed from ou=mailgw,dc=example,dc=org to "
        "ou=mail,dc=example,dc=org; every directory entry moves"
    )
    # Every entry moves: removed at its old DN, added at its new one, under the domains it serves.
    data = json.loads(mailgw(root, "plan", "--format", "json").out)
    shown = {(c["name"], c["status"]) for d in data["domains"] for c in d["directory"]}
    shown |= {(c["name"], c["status"]) for c in data["directory"]}
    old = bundled_dns()
    assert shown == {(dn, "removed") for dn in old} | {(dn.replace("ou=mailgw,", "ou=mail,"), "added") for dn in old}
    assert [d["name"] for d in data["domains"]] == BUNDLED_DOMAINS
    assert all(
        d["recipients"] == d["aliases"] == d["settings"] == [] and d["routing"] is None for d in data["domains"]
    ), "only the directory moves"
    assert f"{2 * len(old)} directory entries" in data["summary"]


def test_other_gateway_settings_are_shown_but_safe(branch, mailgw):
    root, _ = branch
    edit(root, "gateway.yaml", "  - mx2.gw.example.org\n", "  - mx2.gw.example.org\n  - mx3.gw.example.org\n")
    # A new node has its addresses in the DNS records (the gateway's SPF record lists them).
    edit(root, "gateway.yaml", "  mx_addresses:\n", "  mx_addresses:\n    mx3.gw.example.org: [192.0.2.13]\n")
    result = mailgw(root, "plan")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert (
        "    ~ mx_hosts: mx1.gw.example.org, mx2.gw.example.org -> mx1.gw.example.org, mx2.gw.example.org, "
        "mx3.gw.example.org"
    ) in lines
    # The records that change with it: every primary domain's MX, the gateway's SPF record and the node's A.
    assert (
        "      ~ tifpa.example.org. MX: 10 mx1.gw.example.org., 10 mx2.gw.example.org. -> "
        "10 mx1.gw.example.org., 10 mx2.gw.example.org., 10 mx3.gw.example.org."
    ) in lines
    assert "    + mx3.gw.example.org. A: 192.0.2.13" in lines
    assert any(line.startswith("    ~ _spf.gw.example.org. TXT: ") and "ip4:192.0.2.13" in line for line in lines)


def test_every_guard_at_once_lists_every_reason(branch, mailgw):
    root, repo = branch
    repo.index.remove(["domains/lnf.example.org.yaml"], working_tree=True)
    edit(root, "gateway.yaml", "dc=example,dc=org", "dc=example,dc=net")
    edit(root, "domains/ge.example.org.yaml", "[relay.ge.example.org]:25", "[relay2.ge.example.org]:25")
    result = mailgw(root, "plan", "--format", "json")
    assert result.code == 1
    assert json.loads(result.out)["reasons"] == [
        "ge.example.org: next hop changed from smtp:[relay.ge.example.org]:25 to smtp:[relay2.ge.example.org]:25",
        lnf_removed(),
        "gateway: LDAP base DN changed from ou=mailgw,dc=example,dc=org to ou=mailgw,dc=example,dc=net; "
        "every directory entry moves",
    ]


@pytest.mark.parametrize("value, forced", [("1", True), ("true", True), ("0", False), ("", False)])
def test_force_from_the_environment(branch, mailgw, monkeypatch, value, forced):
    root, repo = branch
    repo.index.remove(["domains/lnf.example.org.yaml"], working_tree=True)
    monkeypatch.setenv("MAILGW_FORCE", value)
    result = mailgw(root, "plan", "--format", "json")
    assert result.code == (0 if forced else 1)
    assert json.loads(result.out)["verdict"] == ("forced" if forced else "unsafe")


def test_unsafe_plan_annotates_under_github_actions(branch, mailgw, monkeypatch):
    root, repo = branch
    repo.index.remove(["domains/lnf.example.org.yaml"], working_tree=True)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = mailgw(root, "plan", "--format", "markdown")
    assert result.code == 1
    assert f"::error title=unsafe plan::{lnf_removed()}" in result.err.splitlines()
    assert "> [!CAUTION]" in result.out and "add the label `mailgw:force`" in result.out


# --- which base ---------------------------------------------------------------------------------


def test_default_base_is_the_merge_base_with_main(branch, mailgw):
    root, repo = branch
    edit(root, TIFPA, "  paolo.conti: pconti\n", "")
    commit_all(repo, "branch: remove paolo.conti")
    repo.git.checkout("main")
    edit(root, "domains/ge.example.org.yaml", "  marco.ricci: mricci\n", "  marco.ricci: mricci\n  new: mricci\n")
    commit_all(repo, "main moves on")
    repo.git.checkout("change")
    result = mailgw(root, "plan")
    assert "tifpa.example.org: +0 -1 ~0 addresses" in result.out
    assert "ge.example.org" not in result.out, "main's own later changes are not the branch's"
    against_main = mailgw(root, "plan", "--base", "main")
    assert "ge.example.org" in against_main.out and "against main (" in against_main.out


def test_base_without_declarations_is_empty(tmp_path, mailgw):
    root = tmp_path / "gw"
    repo = init(root)
    (root / "README.md").write_text("the gateway\n")
    commit_all(repo, "first commit: no declarations yet")
    repo.git.checkout("-b", "fleet")
    copy_bundled(root, ("gateway.yaml", "domains", "national"))
    result = mailgw(root, "plan", "--format", "json")
    data = json.loads(result.out)
    assert [(d["name"], d["status"]) for d in data["domains"]] == [(name, "added") for name in BUNDLED_DOMAINS]
    assert data["summary"] == BUNDLED_SUMMARY
    # Nothing was let through before: the sites' relays and the like are widenings, and nothing else is unsafe.
    assert result.code == 1 and data["verdict"] == "unsafe"
    assert len(data["widenings"]) == BUNDLED_WIDENINGS
    assert all("a widening the gateway team" in reason for reason in data["reasons"])
    approved = mailgw(root, "plan", "--format", "json", "--widen")
    assert approved.code == 0 and json.loads(approved.out)["verdict"] == "forced"


def test_repository_without_commits_plans_against_nothing(make_repo, mailgw):
    root = make_repo({TIFPA: domain_yaml()})
    init(root)
    result = mailgw(root, "plan")
    assert result.code == 0
    assert result.out.startswith("mailgw plan: the working tree against nothing (no declarations yet)\n")
    assert "+ tifpa.example.org (added)" in result.out


def test_gateway_root_in_a_subdirectory(tmp_path, make_repo, mailgw):
    root = make_repo({TIFPA: domain_yaml()})
    repo = init(tmp_path)  # the git repository is make_repo's parent
    commit_all(repo, "fleet under repo/")
    edit(root, TIFPA, "  mario.rossi: mrossi\n", "  mario.rossi: mrossi\n  m.rossi: mrossi\n")
    result = mailgw(root, "plan")
    assert result.code == 0
    assert "      + m.rossi@tifpa.example.org: person mrossi" in result.out.splitlines()


def test_base_failing_a_newer_cross_file_rule_still_plans(small_repo, mailgw):
    # An owner that is nobody's uid: suppose that rule came after the base was written.
    bad = domain_yaml(recipients="recipients:\n  mario.rossi: mrossi\n  info: {kind: role, owners: [ghost]}\n")
    root, _ = small_repo({TIFPA: bad})
    (root / TIFPA).write_text(domain_yaml())
    result = mailgw(root, "plan", "--base", "main")
    assert result.code == 0
    assert "      ~ info@tifpa.example.org: role owned by ghost -> role owned by mrossi" in result.out.splitlines()


@pytest.mark.parametrize(
    "setup, message",
    [
        ("unknown", "mailgw: unknown revision 'no-such-branch'\n"),
        ("bare-directory", "is not inside a git repository\n"),
        ("no-main", "mailgw: there is no branch 'main' to compare with; pass --base REF\n"),
        (
            "base-does-not-load",
            "do not load with this compiler (1 finding(s); first: domains/tifpa.example.org.yaml:"
            "9:1: error[unknown-field]: unknown field 'colour'); compare with another --base\n",
        ),
    ],
)
def test_bases_that_cannot_be_read_exit_2(make_repo, mailgw, setup, message):
    root = make_repo({TIFPA: domain_yaml() + ("colour: blue\n" if setup == "base-does-not-load" else "")})
    if setup != "bare-directory":
        repo = init(root)
        commit_all(repo, "fleet")
        if setup == "no-main":
            repo.git.branch("-m", "main", "trunk")
        (root / TIFPA).write_text(domain_yaml())
    result = mailgw(root, "plan", *(["--base", "no-such-branch"] if setup == "unknown" else []))
    assert result.code == 2
    assert result.err.endswith(message) and "Traceback" not in result.err
    assert result.out == ""


def test_invalid_working_tree_gives_findings(branch, mailgw):
    root, _ = branch
    edit(root, TIFPA, "mario.rossi: mrossi", "mario.rossi: M Rossi")
    result = mailgw(root, "plan")
    assert result.code == 1 and result.out == ""
    line = line_of(TIFPA, "mario.rossi: mrossi")
    assert result.lines[0].startswith(f"domains/tifpa.example.org.yaml:{line}:16: error[bad-uid]")


# --- out/ files the Fleet does not show: LDAP entries and policy files --------------------------

LDIF_BEFORE = """\
# generated by 'mailgw build'; do not edit
version: 1

dn: ou=mailgw,dc=example,dc=org
objectClass: organizationalUnit
ou: mailgw

dn: uid=mrossi,ou=people,ou=mailgw,dc=example,dc=org
objectClass: account
uid: mrossi
mailLocalAddress: mario.rossi@tifpa.example.org
associatedDomain: tifpa.example.org

dn: uid=pconti,ou=people,ou=mailgw,dc=example,dc=org
objectClass: account
uid: pconti
mailLocalAddress: paolo.conti@tifpa.example.org
associatedDomain: tifpa.example.org
"""
LDIF_AFTER = """\
# generated by 'mailgw build'; do not edit
version: 1

dn: ou=mailgw,dc=example,dc=org
objectClass: organizationalUnit
ou: mailgw
description: the gateway's directory

dn: uid=mrossi,ou=people,ou=mailgw,dc=example,dc=org
objectClass: account
uid: mrossi
mailLocalAddress: mario.rossi@tifpa.example.org
mailLocalAddress: m.rossi@tifpa.example.org
associatedDomain: tifpa.example.org

dn:: dWlkPWduZXJpLG91PXBlb3BsZSxvdT1tYWlsZ3csZGM9ZXhhbXBsZSxkYz1vcmc=
objectClass: account
uid: gneri
mailLocalAddress: giulia.neri@tifpa.exam
 ple.org
"""


def test_directory_entries_and_policy_files(make_repo):
    fleet = compile_repository(make_repo({TIFPA: domain_yaml()})).fleet
    old = {
        "ldap/directory.ldif": LDIF_BEFORE.encode(),
        "rspamd/local.d/actions.conf": b"reject = 15;\n",
        "rspamd/maps.d/old.map": b"x\n",
        "postfix/transport": b"a\n",
    }
    new = {
        "ldap/directory.ldif": LDIF_AFTER.encode(),
        "rspamd/local.d/actions.conf": b"reject = 12;\n",
        "rspamd/local.d/new.conf": b"x = 1;\ny = 2;\n",
        "postfix/transport": b"a\n",
    }
    plan = make_plan("base", fleet, old, fleet, new)
    [tifpa] = plan.domains
    assert [(c.name, c.status) for c in tifpa.directory] == [
        ("uid=gneri,ou=people,ou=mailgw,dc=example,dc=org", "added"),
        ("uid=mrossi,ou=people,ou=mailgw,dc=example,dc=org", "changed"),
        ("uid=pconti,ou=people,ou=mailgw,dc=example,dc=org", "removed"),
    ]
    assert [(c.name, c.status) for c in plan.directory] == [("ou=mailgw,dc=example,dc=org", "changed")]
    assert [(f.path, f.status, f.section, f.lines_added, f.lines_removed) for f in plan.files] == [
        ("ldap/directory.ldif", "changed", "directory", 6, 4),
        ("rspamd/local.d/actions.conf", "changed", "policy", 1, 1),
        ("rspamd/local.d/new.conf", "added", "policy", 2, 0),
        ("rspamd/maps.d/old.map", "removed", "policy", 0, 1),
    ]
    assert plan.summary() == "tifpa.example.org: 4 directory entries, 3 policy files, 4 out/ files"
    text = render_text(plan).splitlines()
    assert text[2:14] == [
        "~ tifpa.example.org",
        "    directory entries:",
        "      + uid=gneri,ou=people,ou=mailgw,dc=example,dc=org",
        "      ~ uid=mrossi,ou=people,ou=mailgw,dc=example,dc=org",
        "      - uid=pconti,ou=people,ou=mailgw,dc=example,dc=org",
        "",
        "directory entries of no domain:",
        "    ~ ou=mailgw,dc=example,dc=org",
        "",
        "policy (out/rspamd):",
        "    ~ rspamd/local.d/actions.conf (+1 -1 lines)",
        "    + rspamd/local.d/new.conf (+2 -0 lines)",
    ]
    assert "| ~ | `rspamd/local.d/actions.conf` | policy | +1 -1 |" in render_markdown(plan)


def test_directory_changes_compare_entries_not_bytes():
    old = {"ldap/directory.ldif": LDIF_BEFORE.encode()}
    refolded = LDIF_BEFORE.replace(
        "mailLocalAddress: mario.rossi@tifpa.example.org", "mailLocalAddress: mario.rossi@tifpa.ex\n ample.org"
    )
    head, _, pconti = LDIF_BEFORE.partition("dn: uid=pconti")
    same = [
        {"ldap/directory.ldif": refolded.encode()},
        {"ldap/directory.ldif": LDIF_BEFORE.replace("\n", "\r\n").encode()},
        {"ldap/directory.ldif": head.encode(), "ldap/pconti.ldif": ("dn: uid=pconti" + pconti).encode()},
        {**old, "postfix/transport": b"x\n", "ldap/notes.txt": b"dn: cn=not,dc=ldif\n"},
    ]
    assert [directory_changes(old, new) for new in same] == [[]] * len(same)
    moved = {"ldap/directory.ldif": LDIF_BEFORE.replace("uid=pconti,ou=people", "uid=pconti,ou=staff").encode()}
    assert [(c.name, c.status) for c in directory_changes(old, moved)] == [
        ("uid=pconti,ou=people,ou=mailgw,dc=example,dc=org", "removed"),
        ("uid=pconti,ou=staff,ou=mailgw,dc=example,dc=org", "added"),
    ]


def test_ldif_reading_unfolds_decodes_and_skips_comments():
    entries = parse_ldif(LDIF_AFTER)
    assert entries["uid=gneri,ou=people,ou=mailgw,dc=example,dc=org"] == (
        "mailLocalAddress: giulia.neri@tifpa.example.org",
        "objectClass: account",
        "uid: gneri",
    )
    assert len(entries) == 3
    folded_comment = "# a comment that goes\n on\ndn: cn=a,dc=example,dc=org\ncn: a\n"
    assert parse_ldif(folded_comment) == {"cn=a,dc=example,dc=org": ("cn: a",)}
    assert parse_ldif("") == {} and parse_ldif("version: 1\n") == {}


def test_long_sections_are_cut_in_text_but_not_in_json(small_repo, mailgw):
    root, _ = small_repo({"domains/big.example.org.yaml": people(2)})
    (root / "domains/big.example.org.yaml").write_text(people(80))
    text = mailgw(root, "plan").out.splitlines()
    assert "      ... and 28 more (see --format json)" in text
    data = json.loads(mailgw(root, "plan", "--format", "json").out)
    assert len(data["domains"][0]["recipients"]) == 78


def test_change_status():
    assert [Change("a", None, "x").status, Change("a", "x", None).status, Change("a", "x", "y").status] == [
        "added",
        "removed",
        "changed",
    ]


def test_gateway_fixture_has_no_admins_and_still_plans(small_repo, mailgw):
    assert "admins" not in GATEWAY
    root, _ = small_repo({TIFPA: domain_yaml()})
    assert mailgw(root, "plan").code == 0
