"""Submission without daemons: the tables and files compiled from the declarations, the plan's sending rights,
and explain's arguments. The end-to-end proof against Postfix, Dovecot and slapd is tests/test_submission_e2e.py.

Every expected value is written here from the YAML below (or the bundled domains/), not taken from the compiler.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from compiler.commands.plan import render_markdown, render_text
from compiler.pipeline import compile_repository
from compiler.plan import make_plan
from tests.conftest import REPO, program

GATEWAY = """\
mx_hosts: [mx1.gw.example.org]
ldap: {base_dn: "ou=mailgw,dc=example,dc=org"}
"""
SUBMISSION = """\
submission:
  aai_directory:
    uris: [ldaps://ldap1.aai.example.org, ldaps://ldap2.aai.example.org]
    base: ou=people,dc=aai,dc=example,dc=org
  automation_services: [{port: 2525, messages_per_hour: 60}]
"""
TIFPA = """\
domain: tifpa.example.org
site: TIFPA
admins: ["@example/tifpa-mail"]
delivery: {nexthop: "[smtp.tifpa.example.org]:25"}
recipients:
  mario.rossi: mrossi
  m.rossi: {kind: alias, uid: mrossi}
  laura.bianchi: lbianchi
  staff: {kind: list, owners: [mrossi, lbianchi]}
external_aliases:
  g.verdi: [giuseppe.verdi@example.net]
"""
CLIENTS = """\
submission:
  client_certificates:
    web-portal: {fingerprint: "%s", sender_domains: [tifpa.example.org]}
  automation_clients:
    lab-alarms: {networks: [198.51.100.20], destinations: [oncall@example.net], messages_per_hour: 60}
""" % ("ab" * 32)


def _compiled(make_repo, gateway: str, domain: str):
    return compile_repository(make_repo({"domains/tifpa.example.org.yaml": domain}, gateway=gateway))


def _map(data: bytes) -> dict[str, str]:
    return dict(line.split("\t") for line in data.decode().splitlines() if not line.startswith("#"))


# --- the artifacts ----------------------------------------------------------------------------------------------


def test_the_sender_map_gives_each_address_its_owners_and_external_aliases_to_nobody(make_repo):
    artifacts = _compiled(make_repo, GATEWAY + SUBMISSION, TIFPA).artifacts
    assert _map(artifacts["postfix/sender_logins"]) == {
        "mario.rossi@tifpa.example.org": "mrossi",
        "m.rossi@tifpa.example.org": "mrossi",
        "laura.bianchi@tifpa.example.org": "lbianchi",
        "staff@tifpa.example.org": "lbianchi,mrossi",
    }


def test_without_a_submission_section_nothing_is_sendable_and_no_service_runs(make_repo):
    artifacts = _compiled(make_repo, GATEWAY, TIFPA).artifacts
    assert _map(artifacts["postfix/sender_logins"]) == {} == _map(artifacts["postfix/client_certificates"])
    assert not [path for path in artifacts if path.startswith("dovecot/") or "automation_" in path]
    for line in ("smtpd_sasl", "submission", "mailgw_automation"):
        assert line not in (artifacts["postfix/main.cf"] + artifacts["postfix/master.cf"]).decode()


def test_the_bundled_fleet_s_services_and_tables(tmp_path):
    """domains/ and gateway.yaml: what the files say, read by postconf and the tables' own lines."""
    artifacts = compile_repository(REPO).artifacts
    logins = _map(artifacts["postfix/sender_logins"])
    assert logins["postmaster@tifpa.example.org"] == "mrossi,pconti"
    assert logins["helpdesk@cnaf.example.org"] == "lgallo,sromano"
    assert "g.verdi@tifpa.example.org" not in logins and "l.gallo@cnaf.example.org" not in logins
    assert "postmaster@cnaf.example.org" not in logins, "an undeclared reserved address is nobody's"
    # The national aliases (gateway.yaml national.domain) are their people's own: uid@ and name.surname@.
    assert logins["mrossi@example.it"] == "mrossi"
    assert logins["francesca.bruni@example.it"] == "fbruni"
    assert "presidenza@example.it" in logins and "ricercatori@example.it" in logins
    fingerprint = "3E:9A:51:C0:7B:22:D4:18:6F:0E:A3:95:4C:B1:28:7D:E6:50:19:C4:8A:F3:2B:6D:71:0C:94:E8:5A:3F:B2:16"
    assert list(_map(artifacts["postfix/client_certificates"])) == [fingerprint]
    conf = tmp_path / "conf"
    conf.mkdir()
    for name in ("main.cf", "master.cf"):
        (conf / name).write_bytes(artifacts[f"postfix/{name}"])
    services = subprocess.run(
        [program("postconf"), "-c", str(conf), "-M"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert {"587", "465", "2525", "2526"} <= {line.split()[0] for line in services.splitlines()}
    asked = [
        "587/inet/milter_macro_daemon_name",
        "465/inet/smtpd_tls_wrappermode",
        "2525/inet/smtpd_client_message_rate_limit",
        "2526/inet/smtpd_client_message_rate_limit",
        "587/inet/smtpd_client_event_limit_exceptions",
        "2525/inet/smtpd_client_event_limit_exceptions",
    ]
    done = subprocess.run(
        [program("postconf"), "-c", str(conf), "-P", *asked], capture_output=True, text=True, timeout=60
    )
    assert sorted(done.stdout.splitlines()) == sorted(
        [
            "587/inet/milter_macro_daemon_name = mailgw_outbound",
            "465/inet/smtpd_tls_wrappermode = yes",
            "2525/inet/smtpd_client_message_rate_limit = 60",
            "2526/inet/smtpd_client_message_rate_limit = 600",
            "587/inet/smtpd_client_event_limit_exceptions =",
            "2525/inet/smtpd_client_event_limit_exceptions =",
        ]
    ), done.stderr


def test_dovecot_binds_as_the_user_found_by_the_declared_filter(make_repo):
    artifacts = _compiled(make_repo, GATEWAY + SUBMISSION, TIFPA).artifacts
    settings = artifacts["dovecot/mailgw-aai-ldap.conf.ext"].decode()
    lines = [line for line in settings.splitlines() if not line.startswith("#")]
    assert lines == [
        "uris = ldaps://ldap1.aai.example.org ldaps://ldap2.aai.example.org",
        "ldap_version = 3",
        "tls_require_cert = hard",
        "base = ou=people,dc=aai,dc=example,dc=org",
        "scope = subtree",
        "auth_bind = yes",
        "pass_filter = (&(objectClass=inetOrgPerson)(uid=%u))",
        "pass_attrs = uid=user",
    ]


def test_a_bind_template_binds_without_a_search_and_ldap_uris_get_starttls(make_repo):
    gateway = GATEWAY + SUBMISSION.replace("ldaps://", "ldap://").replace(
        "    base:", "    bind_template: uid=%u,ou=people,dc=aai,dc=example,dc=org\n    base:"
    )
    settings = _compiled(make_repo, gateway, TIFPA).artifacts["dovecot/mailgw-aai-ldap.conf.ext"].decode()
    lines = [line for line in settings.splitlines() if not line.startswith("#")]
    assert "tls = yes" in lines and "tls_require_cert = hard" in lines
    assert lines[-1] == "auth_bind_userdn = uid=%u,ou=people,dc=aai,dc=example,dc=org"
    assert not [line for line in lines if line.startswith(("pass_filter", "dn ", "!include"))]


def test_the_generated_dovecot_conf_is_what_doveconf_reads(make_repo, tmp_path):
    conf = tmp_path / "dovecot.conf"
    conf.write_bytes(_compiled(make_repo, GATEWAY + SUBMISSION, TIFPA).artifacts["dovecot/dovecot.conf"])
    done = subprocess.run([program("doveconf"), "-n", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "unix_listener /var/spool/postfix/private/auth {" in done.stdout
    assert "auth_username_chars = abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-" in done.stdout


# --- the plan: who gains the right to send as what --------------------------------------------------------------


def _plan(make_repo, tmp_path, before: tuple[str, str], after: tuple[str, str]):
    compiled = []
    for i, (gateway, domain) in enumerate((before, after)):
        root = tmp_path / f"side{i}"
        (root / "domains").mkdir(parents=True)
        (root / "gateway.yaml").write_text(gateway)
        (root / "domains/tifpa.example.org.yaml").write_text(domain)
        compiled.append(compile_repository(root))
    old, new = compiled
    return make_plan("base", old.fleet, old.artifacts, new.fleet, new.artifacts)


def test_the_plan_shows_who_gains_and_loses_the_right_to_send_as_what(make_repo, tmp_path):
    before = (GATEWAY + SUBMISSION, TIFPA)
    after = TIFPA.replace("owners: [mrossi, lbianchi]", "owners: [mrossi]").replace(
        "  laura.bianchi: lbianchi\n", "  laura.bianchi: lbianchi\n  giulia.neri: gneri\n"
    )
    plan = _plan(make_repo, tmp_path, before, (GATEWAY + SUBMISSION, after + CLIENTS))
    [domain] = plan.domains
    shown = {c.name: (c.before, c.after) for c in domain.senders}
    assert shown == {
        "giulia.neri@tifpa.example.org": (None, "logins gneri"),
        "staff@tifpa.example.org": ("logins lbianchi, mrossi", "logins mrossi"),
        "certificate web-portal": (None, ":".join(["AB"] * 32) + " as tifpa.example.org"),
        "automation client lab-alarms": (
            None,
            "from 198.51.100.20/32 to oncall@example.net, 60 messages an hour (port 2525)",
        ),
    }
    # A new certificate and a new automation client let clients in: widenings, for the gateway team's label.
    assert [(w.kind, w.where, w.change) for w in plan.widenings] == [
        (
            "submission",
            "tifpa.example.org",
            "automation client lab-alarms: 198.51.100.20/32 may send without a login to oncall@example.net, "
            "60 messages an hour",
        ),
        (
            "submission",
            "tifpa.example.org",
            f"client certificate web-portal ({':'.join(['AB'] * 32)}) may send as tifpa.example.org",
        ),
    ]
    assert not plan.safe and plan.guard_reasons() == []
    assert "sending rights:" in render_text(plan)
    assert "| + | sending rights | `certificate web-portal` |" in render_markdown(plan)
    senders = json.loads(json.dumps(plan.to_dict()))["domains"][0]["senders"]
    assert [c["name"] for c in senders] == [
        "giulia.neri@tifpa.example.org",
        "staff@tifpa.example.org",
        "automation client lab-alarms",
        "certificate web-portal",
    ]
    assert "4 sending rights" in plan.summary()


def test_turning_submission_on_grants_every_owned_address_and_off_takes_them_back(make_repo, tmp_path):
    plan = _plan(make_repo, tmp_path / "on", (GATEWAY, TIFPA), (GATEWAY + SUBMISSION, TIFPA))
    assert {c.name: c.status for c in plan.domains[0].senders} == {
        "mario.rossi@tifpa.example.org": "added",
        "m.rossi@tifpa.example.org": "added",
        "laura.bianchi@tifpa.example.org": "added",
        "staff@tifpa.example.org": "added",
    }
    plan = _plan(make_repo, tmp_path / "off", (GATEWAY + SUBMISSION, TIFPA + CLIENTS), (GATEWAY, TIFPA))
    assert {c.status for c in plan.domains[0].senders} == {"removed"} and len(plan.domains[0].senders) == 6


def test_an_unchanged_fleet_has_no_sending_rights_to_show(make_repo, tmp_path):
    plan = _plan(make_repo, tmp_path, (GATEWAY + SUBMISSION, TIFPA + CLIENTS), (GATEWAY + SUBMISSION, TIFPA + CLIENTS))
    assert plan.domains == ()


# --- explain's arguments ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--login", "mrossi"], "explain: --login and --certificate explain a submission: give its --sender too"),
        (["--sender", "x@tifpa.example.org"], "explain: --sender needs --login UID, --certificate FINGERPRINT, or"),
        (["--sender", "not an address", "--login", "mrossi"], "explain: --sender 'not an address' is not an address"),
        (["--sender", "x@tifpa.example.org", "--certificate", "AB:CD"], "explain: --certificate: fingerprint 'AB:CD'"),
    ],
)
def test_explain_refuses_an_incomplete_submission_with_exit_2(make_repo, mailgw, args, message):
    root = make_repo({"domains/tifpa.example.org.yaml": TIFPA + CLIENTS}, gateway=GATEWAY + SUBMISSION)
    result = mailgw(root, "explain", *args)
    assert result.code == 2 and result.err.startswith(f"mailgw: {message}"), result.err


def test_explain_answers_for_a_login_without_a_recipient(make_repo, mailgw):
    root = make_repo({"domains/tifpa.example.org.yaml": TIFPA}, gateway=GATEWAY + SUBMISSION)
    allowed = mailgw(root, "explain", "--sender", "Staff+x@tifpa.example.org", "--login", "lbianchi")
    assert allowed.code == 0 and "verdict: accepted at RCPT TO: 250 2.1.5 Ok" in allowed.out
    refused = mailgw(root, "explain", "--sender", "g.verdi@tifpa.example.org", "--login", "mrossi")
    assert refused.code == 1
    assert "553 5.7.1 <g.verdi@tifpa.example.org>: Sender address rejected: not owned by user mrossi" in refused.out
    assert "nobody's: no login may send as it" in refused.out


def test_a_certificate_without_sender_domains_sends_as_the_domain_of_its_file(make_repo, tmp_path):
    clients = "submission:\n  client_certificates:\n    web-portal: {fingerprint: '%s'}\n" % ("cd" * 32)
    artifacts = _compiled(make_repo, GATEWAY + SUBMISSION, TIFPA + clients).artifacts
    assert _map(artifacts["postfix/client_certificates"]) == {
        ":".join(["CD"] * 32): "mailgw_certificate_web-portal_tifpa.example.org"
    }
    conf = tmp_path / "conf"
    conf.mkdir()
    for name in ("main.cf", "master.cf"):
        (conf / name).write_bytes(artifacts[f"postfix/{name}"])
    done = subprocess.run(
        [program("postconf"), "-c", str(conf), "-h", "mailgw_certificate_web-portal_tifpa.example.org"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert " ".join(done.stdout.split()) == (
        "check_sender_access inline:{ { <> = OK }, { tifpa.example.org = OK } }, "
        "check_sender_access static:{REJECT 5.7.1 certificate web-portal of site TIFPA sends only as tifpa.example.org}"
    ), done.stderr
