"""Authenticated submission and the automation relay on the wire: real Postfix, Dovecot, slapd, Rspamd and clamd.

One instance of each serves the whole module. The test fleet is compiled by
`mailgw build` like any other (inside sites_on_loopback(), since its sites,
devices and sinks are on 127.0.0.x); its gateway.yaml gives the submission
services free loopback ports of their own, so master.cf is used as written but
for port 25 (tests/mx_harness.py). Dovecot runs the generated out/dovecot/
(tests/dovecot_env.py) against a private slapd holding the AAI's test users,
Rspamd the generated out/rspamd/ on free ports (smtpd_milters points there:
the one main.cf override besides those of docs/mx.md), clamd a one-signature
database, and the quarantine service is an HTTPS sink.

What each case must get is written here from the declarations below, not from
the compiler:

    mrossi      owns mario.rossi@ and m.rossi@ (alias), the list staff@, the role alarms@ of tifpa
    lbianchi    owns laura.bianchi@ and the role info@ of tifpa (and staff@ too)
    lgallo      owns luca.gallo@cnaf
    lgone       owns leaving@tifpa, which the rebuild removes
    g.verdi@tifpa is an external alias: nobody's
    web-portal  a client certificate of TIFPA that may send as tifpa.example.org only
    lab-alarms  TIFPA's devices 127.0.0.32/29, to alarms@tifpa and oncall@example.net, 3 messages an hour
    cnaf-ups    CNAF's device 127.0.0.40, to the domain example.org, 3 messages an hour
    cnaf-pdu    CNAF's device 127.0.0.41, to example.org, 1000 messages an hour (the other service)
    outbound    tifpa: spam quarantined, the sender not told; cnaf: spam refused (the sender told)
    DKIM        tifpa signs with selector sub1 (its key in the test's key directory); cnaf has no key

Client addresses: each case that counts against a per-address limit has an
address of its own, so the cases do not share anvil's counters.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import email
import email.policy
import re
import shutil
import smtplib
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest

from compiler import dkim as keys
from compiler.main import main
from compiler.mx import Tables, explain_submission
from compiler.pipeline import Compiled, compile_repository
from compiler.targets.submission import automation_table_name
from tests import dovecot_env
from tests import rspamd_env as env
from tests.conftest import program
from tests.mx_harness import PostfixInstance, Sink, free_port, install, rmtree, sites_on_loopback, wait_for

pytestmark = [
    pytest.mark.needs("postfix", "postconf", "postmap", "dovecot", "doveconf", "slapd", "slapadd", "openssl"),
    pytest.mark.needs("rspamd", "clamd"),
    pytest.mark.needs_root("starting Postfix and Dovecot"),
]

PASSWORDS = {"mrossi": "mario-aai-password", "lbianchi": "laura-aai-password", "lgallo": "luca-aai-password"}
PASSWORDS["lgone"] = "leaving-aai-password"
AUTH_RATE_LIMIT = 4
AUTOMATION_RATE = 3
EXTERNAL = "friend@example.net"
# tifpa's DKIM key, made once for the module (the YAML declares its public half as selector sub1).
SIGNING = keys.generate("rsa")
SPAM_REJECTED = "554 5.7.1 Spam message rejected"


@dataclass
class Gateway:
    postfix: PostfixInstance
    dovecot: dovecot_env.DovecotAuth
    rspamd: env.Rspamd
    quarantine: env.QuarantineSink
    sinks: dict[str, Sink]
    ports: dict[str, int]
    base: Path
    compiled: Compiled
    certificates: dict[str, tuple[Path, Path, str]]  # name -> (certificate, key, SHA-256 fingerprint)

    def delivered(self, sink: str, rcpt: str, sender: str) -> list:
        return wait_for(
            lambda: [m for m in self.sinks[sink].received(rcpt) if m.mail_from == sender],
            20,
            f"mail from {sender} to {rcpt} at the {sink} sink",
        )

    def nowhere(self, sender: str) -> None:
        """Nothing from `sender` is in the queue or at any sink."""
        self.postfix.wait_for_empty_queue()
        for name, sink in self.sinks.items():
            assert not [m for m in sink.messages if m.mail_from == sender], f"{sender} reached the {name} sink"


def _certificate(directory: Path, name: str) -> tuple[Path, Path, str]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    done = subprocess.run(
        [program("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}"]
        + ["-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [program("openssl"), "x509", "-noout", "-fingerprint", "-sha256", "-in", str(cert)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return cert, key, done.stdout.strip().partition("=")[2]


def _gateway_yaml(gw: dict) -> str:
    return f"""\
mx_hosts: [mx1.gw.example.org, mx2.gw.example.org]
ldap: {{base_dn: "ou=mailgw,dc=example,dc=org"}}
postfix: {{map_directory: {gw["maps"]}}}
quarantine: {{url: "{gw["quarantine"]}"}}
clamav: {{socket: {gw["clamd"]}}}
dkim: {{key_directory: {gw["keys"]}}}
submission:
  aai_directory:
    uris: ["{gw["aai"]}"]
    base: {dovecot_env.AAI_PEOPLE}
    user_filter: "{dovecot_env.AAI_FILTER}"
  starttls_port: {gw["starttls"]}
  implicit_tls_port: {gw["implicit_tls"]}
  tls_chain_file: {gw["tls"]}
  auth_rate_limit: {AUTH_RATE_LIMIT}
  auth_socket: {gw["socket"]}
  automation_services:
    - {{port: {gw["automation"]}, messages_per_hour: {AUTOMATION_RATE}}}
    - {{port: {gw["automation_fast"]}, messages_per_hour: 1000}}
"""


def _domains(sinks: dict[str, Sink], fingerprint: str, leaving: bool = True) -> dict[str, str]:
    return {
        "tifpa.example.org": f"""\
site: TIFPA
delivery: {{nexthop: "smtp:[127.0.0.1]:{sinks["tifpa"].port}"}}
recipients:
  mario.rossi: mrossi
  m.rossi: {{kind: alias, uid: mrossi}}
  laura.bianchi: lbianchi
  staff: {{kind: list, owners: [mrossi, lbianchi]}}
  info: {{kind: role, owners: [lbianchi]}}
  alarms: {{kind: role, owners: [mrossi]}}
{"  leaving: lgone" if leaving else ""}
external_aliases:
  g.verdi: [giuseppe.verdi@example.net]
filters:
  outbound: {{notify_sender: false, quarantine: {{enabled: true, retention_days: 14}}}}
dkim:
  selectors:
    - {{name: sub1, algorithm: rsa, public_key: "{SIGNING.public_key}"}}
submission:
  client_certificates:
    web-portal: {{fingerprint: "{fingerprint}", sender_domains: [tifpa.example.org]}}
  automation_clients:
    lab-alarms:
      networks: [127.0.0.32/29]
      destinations: [alarms@tifpa.example.org, oncall@example.net]
      messages_per_hour: {AUTOMATION_RATE}
""",
        "cnaf.example.org": f"""\
site: CNAF
delivery: {{nexthop: "smtp:[127.0.0.1]:{sinks["cnaf"].port}"}}
recipients:
  luca.gallo: lgallo
submission:
  automation_clients:
    cnaf-ups: {{networks: [127.0.0.40], destinations: [example.org], messages_per_hour: {AUTOMATION_RATE}}}
    cnaf-pdu: {{networks: [127.0.0.41], destinations: [example.org], messages_per_hour: 1000}}
""",
    }


def _write_fleet(root: Path, gateway: str, domains: dict[str, str]) -> None:
    (root / "domains").mkdir(parents=True, exist_ok=True)
    (root / "gateway.yaml").write_text(gateway)
    for name, body in domains.items():
        (root / "domains" / f"{name}.yaml").write_text(f"domain: {name}\nadmins: ['@example/mail']\n{body}")


def _compile(root: Path, out: Path) -> Compiled:
    with sites_on_loopback():
        assert main(["--root", str(root), "build", "--out", str(out)]) == 0
        return compile_repository(root)


def _deploy_tables(instance: PostfixInstance, out: Path, compiled: Compiled) -> None:
    """What install() does not know of: the automation services' cidr tables (Puppet copies them as they are)."""
    assert compiled.fleet.gateway.submission is not None
    for service in compiled.fleet.gateway.submission.automation_services:
        name = automation_table_name(service.port)
        shutil.copy(out / "postfix" / name, instance.conf / "mailgw" / name)


@pytest.fixture(scope="module")
def gw(clamd, quarantine_sink, hs_cache):
    base = dovecot_env.private_directory("mailgw-submission-")
    sinks = {"tifpa": Sink("tifpa"), "cnaf": Sink("cnaf"), "internet": Sink("internet")}
    instance = PostfixInstance(base / "mx")
    aai = dovecot = rspamd = None
    try:
        aai = dovecot_env.AaiDirectory(PASSWORDS)
        certificates = {name: _certificate(base, name) for name in ("web-portal", "stranger")}
        ports = {name: free_port() for name in ("starttls", "implicit_tls", "automation", "automation_fast")}
        settings = {
            **ports,
            "maps": instance.conf / "mailgw",
            "quarantine": quarantine_sink.url,
            "clamd": clamd.socket,
            "aai": dovecot_env.ldapi_uri(Path(aai.server.work) / "ldapi"),
            "tls": instance.conf / "tls" / "mx.pem",
            "socket": base / "dovecot" / "auth-mailgw",
            "keys": base / "keys",
        }
        # The private key Puppet installs from the secret store: KEY_DIRECTORY/<domain>.<selector>.key.
        (base / "keys").mkdir()
        (base / "keys" / "tifpa.example.org.sub1.key").write_bytes(SIGNING.private_key)
        root = base / "repo"
        _write_fleet(root, _gateway_yaml(settings), _domains(sinks, certificates["web-portal"][2]))
        compiled = _compile(root, base / "out")
        tree = env.config_tree(base / "out", base / "rspamd", ca_file=quarantine_sink.cert, hs_cache=hs_cache)
        rspamd = env.Rspamd(tree).__enter__()
        install(
            instance,
            base / "out",
            internet_port=sinks["internet"].port,
            milter=f"inet:127.0.0.1:{rspamd.proxy_port}",
        )
        _deploy_tables(instance, base / "out", compiled)
        dovecot = dovecot_env.DovecotAuth(base / "out", base / "dovecot").start(settings["socket"])
        instance.start()
        for port in ports.values():
            wait_for(lambda port=port: _listening(port), 30, f"Postfix to listen on port {port}")
        yield Gateway(instance, dovecot, rspamd, quarantine_sink, sinks, ports, base, compiled, certificates)
    finally:
        instance.stop()
        if dovecot is not None:
            dovecot.stop()
        if rspamd is not None:
            rspamd.__exit__(None, None, None)
        if aai is not None:
            aai.close()
        for sink in sinks.values():
            sink.stop()
        rmtree(base)


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _context(certificate: tuple[Path, Path, str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if certificate is not None:
        context.load_cert_chain(certificate[0], certificate[1])
    return context


def submission(gw: Gateway, client: str, *, implicit: bool = False, certificate=None, tls: bool = True) -> smtplib.SMTP:
    """A session on 587 (after STARTTLS, unless tls=False) or 465, from `client`, after EHLO."""
    context = _context(certificate)
    if implicit:
        session: smtplib.SMTP = smtplib.SMTP_SSL(timeout=30, source_address=(client, 0), context=context)
        session._host = "127.0.0.1"
        session.connect("127.0.0.1", gw.ports["implicit_tls"])
    else:
        session = smtplib.SMTP(timeout=30, source_address=(client, 0))
        session._host = "127.0.0.1"
        session.connect("127.0.0.1", gw.ports["starttls"])
    session.ehlo("laptop.example.net")
    if tls and not implicit:
        session.starttls(context=context)
        session.ehlo("laptop.example.net")
    return session


def transaction(session: smtplib.SMTP, sender: str, rcpts: list[str], body: bytes | None = None) -> str:
    """MAIL, RCPT..., DATA: the first reply that is not 2xx, or the reply to DATA."""
    code, text = session.mail(sender)
    for rcpt in rcpts if code == 250 else []:
        code, text = session.rcpt(rcpt)
        if code != 250:
            break
    if code == 250:
        message = body or env.message(sender=sender, to=rcpts, subject=f"from {sender}")
        code, text = session.data(message)
    if code != 250:
        with contextlib.suppress(smtplib.SMTPServerDisconnected):
            session.rset()
    return f"{code} {text.decode()}"


def send_as(gw: Gateway, login: str, sender: str, rcpts: list[str], client: str, **kwargs) -> str:
    session = submission(gw, client, **kwargs)
    try:
        session.login(login, PASSWORDS[login])
        return transaction(session, sender, rcpts)
    finally:
        session.quit()


def _quit(session: smtplib.SMTP) -> None:
    try:
        session.quit()
    except smtplib.SMTPServerDisconnected:
        session.close()


# --- the services start from the generated files ----------------------------------------------------


def test_postfix_and_dovecot_start_cleanly_on_the_generated_configuration(gw):
    done = gw.postfix.run(program("postfix"), "-c", str(gw.postfix.conf), "check")
    assert done.returncode == 0 and done.stderr == ""
    problems = [line for line in gw.postfix.log().splitlines() if re.search(r"\b(warning|error|fatal|panic):", line)]
    assert problems == []
    done = gw.dovecot.doveconf("-n")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert not re.search(r"(Warning|Error|Fatal):", gw.dovecot.read_log()), gw.dovecot.read_log()


# --- AUTH: only over TLS, right passwords only, and not too often -------------------------------------


def test_auth_is_not_offered_before_starttls(gw):
    session = submission(gw, "127.0.0.3", tls=False)
    try:
        assert session.has_extn("starttls")
        assert not session.has_extn("auth")
        code, text = session.docmd("AUTH", "PLAIN AG1yb3NzaQBtYXJpby1hYWktcGFzc3dvcmQ=")
        assert (code, text.decode()) == (530, "5.7.0 Must issue a STARTTLS command first")
        code, text = session.mail("mario.rossi@tifpa.example.org")
        assert (code, text.decode()) == (530, "5.7.0 Must issue a STARTTLS command first")
    finally:
        _quit(session)


@pytest.mark.parametrize("implicit", [False, True], ids=["587-starttls", "465-tls"])
def test_auth_over_tls_succeeds_with_the_aai_password(gw, implicit):
    session = submission(gw, "127.0.0.4", implicit=implicit)
    try:
        assert session.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert session.login("mrossi", PASSWORDS["mrossi"])[0] == 235
    finally:
        _quit(session)
    session = submission(gw, "127.0.0.4", implicit=implicit)
    try:
        assert session.login("MRossi", PASSWORDS["mrossi"])[0] == 235, "a uid in any case is the uid"
    finally:
        _quit(session)


def _auth(gw: Gateway, client: str, login: str, password: str) -> str:
    """One session, one AUTH PLAIN: the reply."""
    session = submission(gw, client)
    try:
        code, text = session.docmd("AUTH", "PLAIN " + _plain(login, password))
        return f"{code} {text.decode()}"
    finally:
        _quit(session)


def _in_parallel(calls: list) -> list[str]:
    """Dovecot answers a wrong password after auth_failure_delay: the sessions wait side by side."""
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def test_a_wrong_password_gets_535(gw):
    replies = _in_parallel(
        [
            lambda: _auth(gw, "127.0.0.5", "mrossi", "not-the-password"),
            lambda: _auth(gw, "127.0.3.5", "nobody", "whatever"),
            lambda: _auth(gw, "127.0.4.5", "mrossi)(uid=*", "x"),
        ]
    )
    assert all(reply.startswith("535 5.7.8 Error: authentication failed: ") for reply in replies), replies


def test_repeated_auth_from_one_address_is_rate_limited_and_other_addresses_are_not(gw):
    """auth_rate_limit AUTH commands an hour per client address, right or wrong; the next one is refused.

    (Dovecot also answers each further wrong password from one address later than the last.)
    """
    wrong, right = AUTH_RATE_LIMIT // 2, AUTH_RATE_LIMIT - AUTH_RATE_LIMIT // 2
    replies = _in_parallel(
        [lambda: _auth(gw, "127.0.0.6", "lbianchi", "wrong")] * wrong
        + [lambda: _auth(gw, "127.0.0.6", "lbianchi", PASSWORDS["lbianchi"])] * right
    )
    assert [reply[:3] for reply in replies] == ["535"] * wrong + ["235"] * right, replies
    reply = _auth(gw, "127.0.0.6", "lbianchi", PASSWORDS["lbianchi"])
    assert reply == "450 4.7.1 Error: too many AUTH commands from 127.0.0.6"
    assert _auth(gw, "127.0.0.7", "lbianchi", PASSWORDS["lbianchi"]).startswith("235 ")


def _plain(login: str, password: str) -> str:
    import base64

    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()


# --- who may send as what ---------------------------------------------------------------------------------

# (login, sender, reply): from the ownership table at the top.
SENDERS = [
    ("mrossi", "mario.rossi@tifpa.example.org", "250"),
    ("mrossi", "Mario.Rossi+talks@TIFPA.example.org", "250"),
    ("mrossi", "m.rossi@tifpa.example.org", "250"),
    ("mrossi", "staff@tifpa.example.org", "250"),
    ("lbianchi", "staff@tifpa.example.org", "250"),
    ("lbianchi", "info@tifpa.example.org", "250"),
    ("mrossi", "info@tifpa.example.org", "553"),
    ("mrossi", "laura.bianchi@tifpa.example.org", "553"),
    ("mrossi", "g.verdi@tifpa.example.org", "553"),
    ("mrossi", "nobody@tifpa.example.org", "553"),
    ("mrossi", "luca.gallo@cnaf.example.org", "553"),
    ("mrossi", "mario.rossi@gmail.example.com", "553"),
    ("lgallo", "luca.gallo@cnaf.example.org", "250"),
    ("lgallo", "", "250"),
]


@pytest.mark.parametrize("login, sender, reply", SENDERS, ids=[f"{a}-as-{b}" for a, b, _ in SENDERS])
def test_a_login_sends_as_what_it_owns_and_nothing_else(gw, login, sender, reply):
    index = SENDERS.index((login, sender, reply))
    rcpt = f"sender-case-{index}@example.net"
    answer = send_as(gw, login, sender, [rcpt], client=f"127.0.1.{index + 1}")
    if reply == "250":
        assert answer.startswith("250 2.0.0 Ok: queued as "), answer
        [message] = gw.delivered("internet", rcpt, sender or "<>")  # the sink writes the null sender as '<>'

        assert message.rcpt_tos == (rcpt,)
    else:
        assert answer == f"553 5.7.1 <{sender}>: Sender address rejected: not owned by user {login}"
        gw.postfix.wait_for_empty_queue()
        assert not gw.sinks["internet"].received(rcpt)


def test_a_login_reaches_served_domains_too_and_unknown_recipients_get_550(gw):
    assert send_as(
        gw, "mrossi", "mario.rossi@tifpa.example.org", ["luca.gallo@cnaf.example.org"], "127.0.0.12"
    ).startswith("250")
    gw.delivered("cnaf", "luca.gallo@cnaf.example.org", "mario.rossi@tifpa.example.org")
    reply = send_as(gw, "mrossi", "mario.rossi@tifpa.example.org", ["nobody@cnaf.example.org"], "127.0.0.12")
    assert (
        reply
        == "550 5.1.1 <nobody@cnaf.example.org>: Recipient address rejected: User unknown in relay recipient table"
    )


def test_without_login_or_certificate_nothing_is_relayed(gw):
    session = submission(gw, "127.0.0.3")
    try:
        reply = transaction(session, "mario.rossi@tifpa.example.org", [EXTERNAL])
        assert reply == (
            "554 5.7.1 <unknown[127.0.0.3]>: Client host rejected: log in with your AAI account first "
            "(or use a declared client certificate)"
        )
        reply = transaction(session, "someone@example.net", ["mario.rossi@tifpa.example.org"])
        assert reply.startswith("554 5.7.1 <unknown[127.0.0.3]>: Client host rejected: "), "not even to a served domain"
    finally:
        _quit(session)


def test_an_address_removed_from_the_declarations_is_refused_after_the_rebuild(gw):
    assert send_as(gw, "lgone", "leaving@tifpa.example.org", ["farewell-1@example.net"], "127.0.0.13").startswith("250")
    root = gw.base / "repo"
    fingerprint = gw.certificates["web-portal"][2]
    _write_fleet(root, (root / "gateway.yaml").read_text(), _domains(gw.sinks, fingerprint, leaving=False))
    try:
        _redeploy(gw, gw.base / "out-removed")
        reply = send_as(gw, "lgone", "leaving@tifpa.example.org", ["farewell-2@example.net"], "127.0.0.13")
        assert reply == "553 5.7.1 <leaving@tifpa.example.org>: Sender address rejected: not owned by user lgone"
    finally:
        _write_fleet(root, (root / "gateway.yaml").read_text(), _domains(gw.sinks, fingerprint))
        _redeploy(gw, gw.base / "out-restored")
    assert send_as(gw, "lgone", "leaving@tifpa.example.org", ["farewell-3@example.net"], "127.0.0.13").startswith("250")


def _redeploy(gw: Gateway, out: Path) -> None:
    """As Puppet does: the new map indexed with postmap, then one reload."""
    _compile(gw.base / "repo", out)
    (gw.postfix.conf / "mailgw" / "sender_logins").write_bytes((out / "postfix" / "sender_logins").read_bytes())
    done = gw.postfix.run(
        program("postmap"), "-c", str(gw.postfix.conf), f"lmdb:{gw.postfix.conf}/mailgw/sender_logins"
    )
    assert done.returncode == 0, done.stderr
    done = gw.postfix.run(program("postfix"), "-c", str(gw.postfix.conf), "reload")
    assert done.returncode == 0, done.stderr


# --- client certificates -------------------------------------------------------------------------------------


def test_a_declared_certificate_sends_without_a_password_for_its_domain_only(gw):
    session = submission(gw, "127.0.0.8", certificate=gw.certificates["web-portal"])
    try:
        assert transaction(session, "noreply@tifpa.example.org", ["portal-user@example.net"]).startswith("250 ")
        assert transaction(session, "Mario.Rossi@tifpa.example.org", ["portal-user2@example.net"]).startswith("250 ")
        assert transaction(session, "", ["portal-bounce@example.net"]).startswith("250 "), "a bounce is nobody's"
        reply = transaction(session, "noreply@cnaf.example.org", ["portal-user3@example.net"])
        assert reply == (
            "554 5.7.1 <noreply@cnaf.example.org>: Sender address rejected: certificate web-portal of site TIFPA "
            "sends only as tifpa.example.org"
        )
    finally:
        _quit(session)
    gw.delivered("internet", "portal-user@example.net", "noreply@tifpa.example.org")
    gw.delivered("internet", "portal-user2@example.net", "Mario.Rossi@tifpa.example.org")
    gw.nowhere("noreply@cnaf.example.org")


@pytest.mark.parametrize("implicit", [False, True], ids=["587", "465"])
def test_an_unknown_certificate_gets_nothing(gw, implicit):
    session = submission(gw, "127.0.0.8", certificate=gw.certificates["stranger"], implicit=implicit)
    try:
        reply = transaction(
            session, "noreply@tifpa.example.org", ["stranger-cert@example.net", "luca.gallo@cnaf.example.org"]
        )
        assert reply.startswith("554 5.7.1 <unknown[127.0.0.8]>: Client host rejected: "), reply
    finally:
        _quit(session)


# --- the automation relay ---------------------------------------------------------------------------------


def automation(gw: Gateway, client: str, sender: str, rcpts: list[str], port: str = "automation") -> str:
    session = smtplib.SMTP(timeout=30, source_address=(client, 0))
    try:
        session.connect("127.0.0.1", gw.ports[port])
        session.ehlo("alarm-panel.example.net")
        return transaction(session, sender, rcpts)
    finally:
        _quit(session)


def test_an_automation_client_reaches_its_destinations(gw):
    sender = "panel-1@tifpa.example.org"
    assert automation(gw, "127.0.0.32", sender, ["alarms@tifpa.example.org"]).startswith("250 ")
    assert automation(gw, "127.0.0.32", sender, ["oncall@example.net"]).startswith("250 ")
    gw.delivered("tifpa", "alarms@tifpa.example.org", sender)
    gw.delivered("internet", "oncall@example.net", sender)


def test_an_automation_client_is_refused_any_other_destination_or_sender_at_rcpt_to(gw):
    reply = automation(gw, "127.0.0.34", "panel-2@tifpa.example.org", ["someone@example.net"])
    assert reply == (
        "554 5.7.1 <someone@example.net>: Recipient address rejected: not a destination of automation client "
        "lab-alarms of site TIFPA"
    )
    reply = automation(gw, "127.0.0.34", "panel-2@cnaf.example.org", ["oncall@example.net"])
    assert reply == (
        "554 5.7.1 <panel-2@cnaf.example.org>: Sender address rejected: automation client lab-alarms of site TIFPA "
        "sends only as a domain of its site"
    )
    gw.nowhere("panel-2@tifpa.example.org")
    gw.nowhere("panel-2@cnaf.example.org")


def test_a_host_outside_the_declared_networks_gets_nothing(gw):
    for client, port in (("127.0.0.3", "automation"), ("127.0.0.44", "automation"), ("127.0.0.41", "automation")):
        reply = automation(gw, client, "x@tifpa.example.org", ["oncall@example.net"], port=port)
        assert reply == f"554 5.7.1 <unknown[{client}]>: Client host rejected: Access denied", (client, port)
    # cnaf-pdu's rate has a service of its own: there, and only there, it is served.
    assert automation(gw, "127.0.0.41", "pdu@cnaf.example.org", ["ops@example.org"], port="automation_fast").startswith(
        "250 "
    )
    assert automation(gw, "127.0.0.32", "x@tifpa.example.org", ["oncall@example.net"], port="automation_fast") == (
        "554 5.7.1 <unknown[127.0.0.32]>: Client host rejected: Access denied"
    )


def test_an_automation_client_past_its_rate_is_deferred_and_another_client_is_not(gw):
    sender = "panel-3@tifpa.example.org"
    for i in range(AUTOMATION_RATE):
        assert automation(gw, "127.0.0.33", sender, ["oncall@example.net"]).startswith("250 "), i
    reply = automation(gw, "127.0.0.33", sender, ["oncall@example.net"])
    assert reply == "450 4.7.1 Error: too much mail from 127.0.0.33"
    assert automation(gw, "127.0.0.40", "ups@cnaf.example.org", ["ops@example.org"]).startswith("250 ")
    assert automation(gw, "127.0.0.35", "panel-4@tifpa.example.org", ["oncall@example.net"]).startswith("250 ")
    assert len(gw.delivered("internet", "oncall@example.net", sender)) == AUTOMATION_RATE


# --- outbound filtering --------------------------------------------------------------------------------------


def test_outbound_spam_from_a_login_gets_its_domain_s_outbound_policy(gw):
    # cnaf: refused, so the user's own mail client tells them.
    session = submission(gw, "127.0.0.9")
    try:
        session.login("lgallo", PASSWORDS["lgallo"])
        spam = env.gtube(sender="luca.gallo@cnaf.example.org", to=["spam-1@example.net"])
        assert transaction(session, "luca.gallo@cnaf.example.org", ["spam-1@example.net"], spam) == SPAM_REJECTED
    finally:
        _quit(session)
    # tifpa: quarantined without a word to the sender (notify_sender: false), kept 14 days.
    session = submission(gw, "127.0.0.9")
    try:
        session.login("mrossi", PASSWORDS["mrossi"])
        spam = env.gtube(sender="mario.rossi@tifpa.example.org", to=["spam-2@example.net"])
        reply = transaction(session, "mario.rossi@tifpa.example.org", ["spam-2@example.net"], spam)
    finally:
        _quit(session)
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    queue_id = reply.rsplit(" ", 1)[1]
    wait_for(lambda: f"{queue_id}: milter-discard" in gw.postfix.log(), 20, "the discard")
    message_id = re.search(rb"^Message-ID: <([^>]+)>", spam, re.M).group(1)
    posts = wait_for(lambda: [p for p in gw.quarantine.received if message_id in p.body], 20, "the quarantine POST")
    assert [post.recipients for post in posts] == [["spam-2@example.net"]]
    assert posts[0].body.startswith(b"X-Quarantine-Retention-Days: 14\r\n")
    assert b"\r\nX-Quarantine-Direction: outbound\r\n" in posts[0].body.partition(b"\r\n\r\n")[0]
    assert not gw.sinks["internet"].received("spam-1@example.net") + gw.sinks["internet"].received("spam-2@example.net")


def test_automation_mail_gets_its_domain_s_outbound_policy(gw):
    spam = env.gtube(sender="panel-5@tifpa.example.org", to=["oncall@example.net"])
    session = smtplib.SMTP(timeout=30, source_address=("127.0.0.35", 0))
    try:
        session.connect("127.0.0.1", gw.ports["automation"])
        session.ehlo("alarm-panel.example.net")
        reply = transaction(session, "panel-5@tifpa.example.org", ["oncall@example.net"], spam)
    finally:
        _quit(session)
    assert reply.startswith("250 2.0.0 Ok: queued as "), "tifpa's outbound policy: quarantined"
    message_id = re.search(rb"^Message-ID: <([^>]+)>", spam, re.M).group(1)
    wait_for(lambda: [p for p in gw.quarantine.received if message_id in p.body], 20, "the quarantine POST")


# --- DKIM: what leaves through submission and the automation relay is signed ------------------------------------


def _dkim_record(name: bytes, timeout: int = 5) -> bytes | None:
    """The DNS answer tifpa publishes for sub1, written from the declaration above (not from out/dns/)."""
    if name == b"sub1._domainkey.tifpa.example.org.":
        return f"v=DKIM1; k=rsa; p={SIGNING.public_key}".encode()
    return None


def _signatures(message) -> list[str]:
    parsed = email.message_from_bytes(message.content, policy=email.policy.default)
    return [str(value).replace(" ", "") for value in parsed.get_all("DKIM-Signature") or []]


def test_mail_of_a_login_a_certificate_and_an_automation_client_is_signed_and_verifies(gw):
    """Outbound through each kind of client: one signature of tifpa's key (d=, s=sub1) that dkimpy verifies."""
    assert (
        send_as(gw, "mrossi", "mario.rossi@tifpa.example.org", ["signed-login@example.net"], "127.0.0.12")[:4] == "250 "
    )
    session = submission(gw, "127.0.0.12", certificate=gw.certificates["web-portal"])
    try:
        assert transaction(session, "noreply@tifpa.example.org", ["signed-cert@example.net"]).startswith("250 ")
    finally:
        _quit(session)
    assert automation(gw, "127.0.0.36", "panel-6@tifpa.example.org", ["oncall@example.net"]).startswith("250 ")
    for rcpt, sender in (
        ("signed-login@example.net", "mario.rossi@tifpa.example.org"),
        ("signed-cert@example.net", "noreply@tifpa.example.org"),
        ("oncall@example.net", "panel-6@tifpa.example.org"),
    ):
        [message] = gw.delivered("internet", rcpt, sender)
        [signature] = _signatures(message)
        assert "d=tifpa.example.org;" in signature and "s=sub1;" in signature, signature
        assert dkim.DKIM(message.content).verify(dnsfunc=_dkim_record), f"{sender}'s signature verifies"


def test_mail_of_a_domain_without_a_key_leaves_unsigned(gw):
    assert send_as(gw, "lgallo", "luca.gallo@cnaf.example.org", ["unsigned@example.net"], "127.0.0.12")[:4] == "250 "
    [message] = gw.delivered("internet", "unsigned@example.net", "luca.gallo@cnaf.example.org")
    assert _signatures(message) == []


# --- mailgw explain agrees with Postfix --------------------------------------------------------------------------

EXPLAINED = [
    ("login", "mrossi", "mario.rossi@tifpa.example.org", EXTERNAL),
    ("login", "mrossi", "staff@tifpa.example.org", EXTERNAL),
    ("login", "mrossi", "info@tifpa.example.org", EXTERNAL),
    ("login", "mrossi", "g.verdi@tifpa.example.org", EXTERNAL),
    ("login", "lbianchi", "Info+x@TIFPA.example.org", EXTERNAL),
    ("certificate", "web-portal", "noreply@tifpa.example.org", EXTERNAL),
    ("certificate", "web-portal", "noreply@cnaf.example.org", EXTERNAL),
    ("certificate", "stranger", "noreply@tifpa.example.org", EXTERNAL),
    ("certificate", "web-portal", "", EXTERNAL),
    ("login", "mrossi", "", EXTERNAL),
    ("client", "127.0.0.32", "panel@tifpa.example.org", "alarms@tifpa.example.org"),
    ("client", "127.0.0.32", "panel@tifpa.example.org", "someone@example.net"),
    ("client", "127.0.0.32", "panel@cnaf.example.org", "oncall@example.net"),
    ("client", "127.0.0.3", "panel@tifpa.example.org", "oncall@example.net"),
]


@pytest.mark.parametrize("mode, who, sender, rcpt", EXPLAINED, ids=[f"{m}-{w}-{s}-{r}" for m, w, s, r in EXPLAINED])
def test_explain_agrees_with_postfix(gw, mailgw, mode, who, sender, rcpt):
    artifacts = gw.compiled.artifacts
    index = EXPLAINED.index((mode, who, sender, rcpt))
    option: list[str] = []
    if mode == "login":
        client, asked, option = f"127.0.2.{index + 1}", {"login": who}, ["--login", who]
        reply = send_as(gw, who, sender, [rcpt], client=client)
    elif mode == "certificate":
        fingerprint = gw.certificates[who][2]
        client, asked, option = f"127.0.2.{index + 1}", {"certificate": fingerprint}, ["--certificate", fingerprint]
        session = submission(gw, client, certificate=gw.certificates[who])
        try:
            reply = transaction(session, sender, [rcpt])
        finally:
            _quit(session)
    else:
        # Addresses of lab-alarms no other case sends from (anvil counts per address).
        client, asked = (f"127.0.0.{36 + index % 4}" if who == "127.0.0.32" else who), {}
        reply = automation(gw, client, sender, [rcpt])
    explanation = explain_submission(
        gw.compiled.fleet, Tables(artifacts), artifacts, sender, rcpt, client=client, **asked
    )
    if explanation.accepted:
        assert reply.startswith("250 2.0.0 Ok: queued as "), (reply, explanation.reply)
    else:
        assert reply == explanation.reply
    with sites_on_loopback():
        cli = mailgw(gw.base / "repo", "explain", rcpt, "--sender", sender, "--client", client, *option)
    assert cli.code == (0 if explanation.accepted else 1), cli.out + cli.err
    assert explanation.reply in cli.out
