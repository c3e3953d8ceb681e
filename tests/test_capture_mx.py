"""Capture and notify over SMTP: a real Postfix running the generated configuration, the real notifier.

The fleet (written here; what must arrive where comes from it, not from the compiler):

    tifpa.example.org   smtp sink 'tifpa'; direttore (a person, uid dgenerale) is captured:
                        destination archivio@lnf.example.org, notify segreteria@tifpa.example.org
                        and capo.gabinetto@example.net; the external alias dg forwards to direttore
    lnf.example.org     smtp sink 'lnf'; archivio is a role
    example.it          the national domain (sink 'national'); dgenerale@ and davide.generale@ reach direttore
    gateway.yaml        postmaster mailgw-team@example.net (the notices' sender), the notice service on a
                        free loopback port; forwarding on (external aliases take the second pass, SRS by a
                        real postsrsd), as the bundled gateway.yaml has it

A message to direttore@ (or to the director's national alias, or the external alias dg@ through the
forwarding pass) is delivered to
tifpa as usual, a copy reaches archivio@lnf, and one notice (sender, subject,
date, message id; never the body) reaches each person told. A message to
anybody else causes none of that. A notifier that fails leaves its notice
deferred and nothing else: the original and the copy arrive all the same.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from compiler import capture
from compiler.main import main
from tests.conftest import REPO, program
from tests.mx_harness import (
    PostfixInstance,
    Sink,
    age,
    free_port,
    install,
    install_forward_map,
    rmtree,
    sites_on_loopback,
    start_postsrsd,
    stop_postsrsd,
    wait_for,
)

pytestmark = [
    pytest.mark.needs("postfix", "postconf", "postmap", "postqueue", "postsrsd"),
    pytest.mark.needs_root("starting Postfix, and its pipe service running the notifier as nobody"),
]

STRANGER = "127.0.0.3"
TEAM = "mailgw-team@example.net"
CAPTURED = "direttore@tifpa.example.org"
NATIONAL_ALIASES = ("dgenerale@example.it", "davide.generale@example.it")
DESTINATION = "archivio@lnf.example.org"
TOLD = ("segreteria@tifpa.example.org", "capo.gabinetto@example.net")
NOTIFIER = REPO / "deploy" / "puppet" / "mailgw" / "files" / "capture_notify.py"
FORWARDED = "dg@tifpa.example.org"  # an external alias to the captured address: forwarded, on a second pass
BODY_MARK = "the-body-stays-private"


@dataclass
class MX:
    instance: PostfixInstance
    sinks: dict[str, Sink]
    notifier: Path

    def send(self, rcpt: str, sender: str, subject: str) -> str:
        return send_message(self.instance.port, sender, rcpt, subject)

    def all_messages(self) -> list:
        return [(name, m) for name, sink in self.sinks.items() for m in sink.messages]


def send_message(port: int, sender: str, rcpt: str, subject: str) -> str:
    from tests.mx_harness import rcpt_reply, smtp_session

    session = smtp_session(port, STRANGER)
    try:
        reply = rcpt_reply(session, sender, rcpt)
        if reply.startswith("250"):
            code, _ = session.data(
                f"From: Sender <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
                f"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@sender.example.net>\r\n\r\n"
                f"{BODY_MARK}\r\n"
            )
            assert code == 250
        return reply
    finally:
        session.quit()


def _fleet(root: Path, sinks: dict[str, Sink], map_directory: Path, notice_port: int, base: Path) -> None:
    (root / "domains").mkdir(parents=True)
    (root / "gateway.yaml").write_text(f"""\
mx_hosts: [mx1.gw.example.org]
postmaster: {TEAM}
ldap: {{base_dn: "ou=mailgw,dc=example,dc=org"}}
postfix: {{map_directory: {map_directory}}}
national: {{domain: example.it}}
capture: {{notice_service: "127.0.0.1:{notice_port}"}}
forwarding:
  srs_domain: gw.example.org
  srs_secret_file: {base / "postsrsd.secret"}
  srs_forward_lookup: "127.0.0.1:{free_port()}"
  srs_reverse_lookup: "127.0.0.1:{free_port()}"
  service: "127.0.0.1:{free_port()}"
""")
    (base / "postsrsd.secret").write_text("a secret of this test run only\n")
    files = {
        "tifpa.example.org": f"""\
site: TIFPA
delivery: {{nexthop: "smtp:[127.0.0.1]:{sinks["tifpa"].port}"}}
recipients:
  direttore: {{uid: dgenerale, name: "Davide Generale"}}
  mario.rossi: mrossi
  segreteria: {{kind: role, owners: [mrossi]}}
external_aliases:
  dg: [{CAPTURED}]
capture:
  addresses: [direttore]
  destination: {DESTINATION}
  notify: [{", ".join(TOLD)}]
""",
        "lnf.example.org": f"""\
site: LNF
delivery: {{nexthop: "smtp:[127.0.0.1]:{sinks["lnf"].port}"}}
recipients:
  archivio: {{kind: role, owners: [mrossi]}}
""",
        "example.it": f"""\
site: AC
delivery: {{nexthop: "smtp:[127.0.0.1]:{sinks["national"].port}"}}
recipients:
  presidenza: {{kind: role, owners: [mrossi]}}
""",
    }
    for name, body in files.items():
        (root / "domains" / f"{name}.yaml").write_text(f"domain: {name}\nadmins: ['@example/mail']\n{body}")


@pytest.fixture(scope="module")
def mx():
    # Postfix's daemons, and the notifier as nobody, must traverse the path: not pytest's tmp_path.
    base = Path(tempfile.mkdtemp(prefix="mailgw-capture-"))
    base.chmod(0o755)
    sinks = {name: Sink(name) for name in ("tifpa", "lnf", "national", "internet")}
    instance = PostfixInstance(base)
    postsrsd = None
    try:
        repo = base / "repo"
        _fleet(repo, sinks, instance.conf / "mailgw", free_port(), base)
        with sites_on_loopback():
            assert main(["--root", str(repo), "national", "assign"]) == 0
            assert main(["--root", str(repo), "build", "--out", str(base / "out")]) == 0
        postsrsd = start_postsrsd(base / "out")
        install(instance, base / "out", internet_port=sinks["internet"].port, milter="")
        install_forward_map(instance, base / "out")
        # The notifier where Puppet puts it on a node is here a copy the test owns (docs/mx.md).
        notifier = base / "capture-notify"
        shutil.copy(NOTIFIER, notifier)
        notifier.chmod(0o755)
        master = instance.conf / "master.cf"
        master.write_text(master.read_text().replace(capture.NOTIFIER, str(notifier)))
        age(master)
        instance.start()
        yield MX(instance, sinks, notifier)
    finally:
        instance.stop()
        stop_postsrsd(postsrsd)
        for sink in sinks.values():
            sink.stop()
        rmtree(base)


def _arrived(mx: MX, sink: str, rcpt: str, subject: str) -> list:
    return wait_for(
        lambda: [m for m in mx.sinks[sink].received(rcpt) if subject.encode() in m.content],
        30,
        f"'{subject}' for {rcpt} at the {sink} sink",
    )


@pytest.mark.parametrize("rcpt", [CAPTURED, *NATIONAL_ALIASES, FORWARDED])
def test_a_captured_address_gets_its_mail_a_copy_and_one_notice_per_person(mx, rcpt):
    subject = f"capture-{rcpt.replace('@', '.')}"  # no subject a substring of another
    sender = f"{subject}@sender.example.net"
    assert mx.send(rcpt, sender, subject) == "250 2.1.5 Ok"
    [original] = _arrived(mx, "tifpa", CAPTURED, subject)
    assert BODY_MARK.encode() in original.content
    [copy] = _arrived(mx, "lnf", DESTINATION, subject)
    assert BODY_MARK.encode() in copy.content and copy.mail_from == sender
    for person in TOLD:
        sink = "tifpa" if person.endswith("tifpa.example.org") else "internet"
        [notice] = _arrived(mx, sink, person, subject)
        assert notice.mail_from == TEAM and notice.rcpt_tos == (person,)
        text = notice.content.decode()
        assert BODY_MARK not in text, "a notice never carries the body"
        for shown in (f"Subject:         {subject}", f"<{subject}@sender.example.net>", sender, CAPTURED):
            assert shown in text, text
    mx.instance.wait_for_empty_queue()
    everything = [m for _, m in mx.all_messages() if subject.encode() in m.content]
    assert len(everything) == 2 + len(TOLD), "the original, one copy, one notice each: nothing captured twice"
    assert not [m for _, m in mx.all_messages() if sender in m.rcpt_tos], "no bounce to the sender"


def test_a_message_to_anybody_else_is_neither_copied_nor_notified(mx):
    subject = "not-captured"
    assert mx.send("mario.rossi@tifpa.example.org", "plain@sender.example.net", subject) == "250 2.1.5 Ok"
    _arrived(mx, "tifpa", "mario.rossi@tifpa.example.org", subject)
    mx.instance.wait_for_empty_queue()
    assert [name for name, m in mx.all_messages() if subject.encode() in m.content] == ["tifpa"]


def _deferred_notices(mx: MX) -> int:
    """The notice recipients of messages in the deferred queue (postqueue -j): a flush sends them at once."""
    done = mx.instance.run(program("postqueue"), "-c", str(mx.instance.conf), "-j")
    entries = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return sum(
        1
        for entry in entries
        if entry["queue_name"] == "deferred"
        for rcpt in entry["recipients"]
        if rcpt["address"].endswith("@notice.mailgw.invalid")
    )


def test_a_failing_notifier_defers_its_notice_and_loses_nothing(mx):
    """The notice service down: the original and the copy arrive; the notices wait, and go once it is back."""
    kept = mx.notifier.read_bytes()
    mx.notifier.write_text("#!/bin/sh\necho 'capture-notify: the notice service is down' >&2\nexit 75\n")
    try:
        subject = "notifier-down"
        assert mx.send(CAPTURED, "down@sender.example.net", subject) == "250 2.1.5 Ok"
        _arrived(mx, "tifpa", CAPTURED, subject)
        _arrived(mx, "lnf", DESTINATION, subject)
        wait_for(lambda: _deferred_notices(mx) == len(TOLD), 60, "the notices in the deferred queue")
    finally:
        mx.notifier.write_bytes(kept)
    done = mx.instance.run(program("postqueue"), "-c", str(mx.instance.conf), "-f")
    assert done.returncode == 0, done.stderr
    for person in TOLD:
        _arrived(mx, "tifpa" if person.endswith("tifpa.example.org") else "internet", person, subject)
    assert os.path.exists(mx.notifier)
