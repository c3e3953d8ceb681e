"""mailgw explain: the lookups Postfix makes, in Postfix's order, over the generated tables.

The end-to-end suite (test_mx_e2e.py) holds the verdicts against a real
Postfix; these tests pin the lookup keys and the words, without one.
"""

from __future__ import annotations

import pytest

from compiler.mx import (
    ACCEPTED,
    REJECTED,
    SITE_DECIDES,
    Tables,
    access_keys,
    address_keys,
    explain,
    split_extension,
    transport_keys,
)
from compiler.pipeline import compile_repository
from tests.conftest import REPO, run_mailgw_process


@pytest.fixture(scope="module")
def bundled():
    compiled = compile_repository(REPO)
    tables = Tables(compiled.artifacts)
    return lambda address, client=None: explain(compiled.fleet, tables, address, client)


def _lookups(explanation, table):
    return [
        (lookup.key, lookup.value) for step in explanation.steps for lookup in step.lookups if lookup.table == table
    ]


@pytest.mark.parametrize(
    "local,expected",
    [
        ("mario.rossi+news", ("mario.rossi", "news")),
        ("a+b+c", ("a", "b+c")),  # the first delimiter splits
        ("mario.rossi+", ("mario.rossi", "")),
        ("+news", ("+news", None)),  # never an empty user
        ("mario.rossi", ("mario.rossi", None)),
        ("postmaster", ("postmaster", None)),
    ],
)
def test_extensions_split_as_postfix_splits_them(local, expected):
    assert split_extension(local) == expected


def test_lookup_keys_follow_the_manual_pages():
    assert address_keys("a+x", "d.example.org") == ["a+x@d.example.org", "a@d.example.org", "@d.example.org"]
    assert address_keys("a", "d.example.org") == ["a@d.example.org", "@d.example.org"]
    assert access_keys("a+x", "d.example.org") == [
        "a+x@d.example.org",
        "a@d.example.org",
        "d.example.org",
        ".example.org",
        ".org",
        "a+x@",
        "a@",
    ]
    assert transport_keys("a", "d.example.org") == ["a@d.example.org", "d.example.org", ".example.org", ".org", "*"]


def test_a_declared_person_with_case_and_extension(bundled):
    e = bundled("Mario.Rossi+News@TIFPA.example.org")
    assert (e.verdict, e.stage, e.reply) == (ACCEPTED, "RCPT TO", "250 2.1.5 Ok")
    assert e.owner == "mrossi (person, site TIFPA)"
    assert _lookups(e, "relay_recipients") == [
        ("mario.rossi+news@tifpa.example.org", None),
        ("mario.rossi@tifpa.example.org", "person"),
    ]
    [delivery] = e.deliveries
    assert delivery.recipient == "Mario.Rossi+News@TIFPA.example.org"
    assert delivery.route == "smtp:[smtp.tifpa.example.org]:25, [smtp2.tifpa.example.org]:25 (site TIFPA)"


def test_an_unknown_address_of_a_list_domain(bundled):
    e = bundled("nobody@lnf.example.org")
    assert e.verdict == REJECTED
    assert (
        e.reply == "550 5.1.1 <nobody@lnf.example.org>: Recipient address rejected: User unknown in relay "
        "recipient table"
    )
    assert _lookups(e, "relay_recipients") == [("nobody@lnf.example.org", None), ("@lnf.example.org", None)]
    assert e.deliveries == ()


def test_roles_and_lists_name_their_owners(bundled):
    assert bundled("staff@tifpa.example.org").owner == "lbianchi, mrossi (list owners, site TIFPA)"
    assert bundled("info@tifpa.example.org").owner == "mrossi (role owners, site TIFPA)"


def test_an_external_alias_goes_to_its_targets_without_the_extension(bundled):
    e = bundled("visiting+x@tifpa.example.org")
    assert e.verdict == ACCEPTED
    assert [d.recipient for d in e.deliveries] == ["a.ferri@physics.example.edu", "anna.ferri@example.com"]
    assert all("MX hosts of" in d.route for d in e.deliveries)


def test_a_backup_domain_says_where_mail_waits(bundled):
    [delivery] = bundled("f.bruni@lnf.example.org").deliveries
    assert delivery.route == "smtp:[mx.lnf.example.org]:25 (site LNF, backup MX: held while the site is down)"


def test_a_verify_domain_leaves_the_answer_to_its_site(bundled):
    e = bundled("someone.new@ge.example.org")
    assert e.verdict == SITE_DECIDES and e.accepted
    assert e.reply_if_site_rejects.startswith(
        "550 5.1.1 <someone.new@ge.example.org>: Recipient address rejected: undeliverable address: "
    )
    assert ("ge.example.org", "reject_unverified_recipient") in _lookups(e, "recipient_verification")


def test_subdomains_and_foreign_domains_are_not_relayed(bundled):
    for address in ("x@sub.tifpa.example.org", "x@example.com", "postmaster@mx1.gw.example.org"):
        e = bundled(address)
        assert (e.verdict, e.reply) == (REJECTED, f"554 5.7.1 <{address}>: Relay access denied")
    assert _lookups(bundled("x@sub.tifpa.example.org"), "relay_domains") == [
        ("sub.tifpa.example.org", None),
        (".tifpa.example.org", None),
        (".example.org", None),
        (".org", None),
    ]


def test_clients(bundled):
    relay = bundled("x@example.com", "198.51.100.10")
    assert relay.verdict == ACCEPTED and "a relay of site TIFPA" in relay.steps[0].title
    assert bundled("x@example.com", "2001:db8:cafe::25").verdict == ACCEPTED
    assert bundled("x@example.com", "127.0.0.1").verdict == ACCEPTED, "the node itself"
    assert bundled("x@example.com", "192.0.2.25").verdict == REJECTED, "allowlisted by postscreen is not a relay"
    dropped = bundled("mario.rossi@tifpa.example.org", "192.0.2.7")
    assert (dropped.verdict, dropped.stage, dropped.reply) == (
        REJECTED,
        "connect",
        "521 5.3.2 Service currently unavailable",
    )
    assert bundled("nobody@tifpa.example.org", "198.51.100.10").verdict == REJECTED, "relays get 550 too"


def test_cli_exit_codes_and_words(mailgw):
    accepted = mailgw(REPO, "explain", "mario.rossi@tifpa.example.org")
    assert accepted.code == 0
    assert accepted.out.splitlines()[:2] == [
        "mario.rossi@tifpa.example.org",
        "  verdict: accepted at RCPT TO: 250 2.1.5 Ok",
    ]
    assert "relay_recipients  mario.rossi@tifpa.example.org -> person" in accepted.out
    assert mailgw(REPO, "explain", "nobody@tifpa.example.org").code == 1
    assert mailgw(REPO, "explain", "anyone@ge.example.org").code == 0
    assert mailgw(REPO, "explain", "x@example.com", "--client", "198.51.100.64").code == 0
    assert "sindaco@xn--citt-3na.example.org" in mailgw(REPO, "explain", "sindaco@città.example.org").out


@pytest.mark.parametrize(
    "argument", ["nobody", "@tifpa.example.org", "a@b", "a b@tifpa.example.org", "x@tifpa.example.org."]
)
def test_cli_refuses_what_is_not_an_address(mailgw, argument):
    result = mailgw(REPO, "explain", argument)
    assert result.code == 2 and "is not an address" in result.err and result.out == ""


def test_cli_refuses_a_client_that_is_not_an_ip_address():
    done = run_mailgw_process("explain", "mario.rossi@tifpa.example.org", "--client", "1.2.3", cwd=REPO)
    assert done.returncode == 2 and "'1.2.3' is not an IP address" in done.stderr
