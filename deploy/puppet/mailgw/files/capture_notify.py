#!/usr/bin/python3 -I
"""Capture and notify's notifier: one short notice about one captured message, to one person.

Postfix runs it as the pipe(8) service of master.cf (user nobody, once per
person told), with the message on standard input and

    capture-notify --service HOST:PORT --sender ADDRESS -- SENDER ORIGINAL_RECIPIENT RECIPIENT

ORIGINAL_RECIPIENT is the capture's blind-copy address (CAPTURED=DOMAIN@capture.mailgw.invalid),
RECIPIENT the person's notice address (PERSON=DOMAIN@notice.mailgw.invalid): '=' stands for the
'@' of each (compiler/capture.py). It reads the headers only, never keeps or quotes the body, and
submits the notice (sender, From, Subject, Date, Message-ID) over SMTP to the MX's notice service,
whose cleanup captures nothing. Exit 0 when the notice is submitted, 75 (EX_TEMPFAIL: Postfix tries
this person again later) when the service does not take it now, 69 when it refuses it for good.
Only the Python standard library: it runs with the system's python3 on every MX node.
REFERENCES: pipe(8), RFC 5322, RFC 2047, RFC 3834 (Auto-Submitted), sysexits(3).
"""

from __future__ import annotations

import argparse
import email.policy
import email.utils
import smtplib
import sys
import unicodedata
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import BinaryIO

EX_OK, EX_USAGE, EX_UNAVAILABLE, EX_TEMPFAIL = 0, 64, 69, 75
MAX_HEADER_BYTES = 256 * 1024
MAX_FIELD = 200
CHUNK = 64 * 1024
TIMEOUT = 60
FIELDS = ("From", "Subject", "Date", "Message-ID")


def decoded(address: str) -> str:
    """'dg=lnf.example.org@capture.mailgw.invalid' -> 'dg@lnf.example.org'."""
    local = address.rpartition("@")[0] if "@" in address else address
    return local.replace("=", "@") if "=" in local else address


def read_headers(stream: BinaryIO) -> bytes:
    """The header section (up to the first empty line, at most MAX_HEADER_BYTES); the rest is read and dropped."""
    head = bytearray()
    while len(head) < MAX_HEADER_BYTES:
        line = stream.readline(MAX_HEADER_BYTES)
        if not line or line in (b"\r\n", b"\n"):
            break
        head += line
    while stream.read(CHUNK):  # the body: read so that Postfix sees it consumed, never kept
        pass
    return bytes(head)


def field(text: str | None) -> str:
    """One line of printable text: controls, line breaks and format characters out, at most MAX_FIELD characters."""
    if not text:
        return "(none)"
    clean = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in str(text))
    clean = " ".join(clean.split())
    return clean if len(clean) <= MAX_FIELD else clean[: MAX_FIELD - 3] + "..."


def notice(sender: str, person: str, captured: str, envelope_sender: str, headers: bytes) -> EmailMessage:
    parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(headers)
    found = {}
    for name in FIELDS:
        try:
            found[name] = field(parsed.get(name))
        except (ValueError, TypeError, IndexError):  # a header malformed beyond decoding: shown as absent
            found[name] = "(unreadable)"
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = person
    message["Subject"] = f"Capture notice: a message for {captured}"
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid("capture-notice", domain=sender.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    message["X-Mailgw-Capture"] = captured
    lines = [
        f"The mail gateway received a message for {captured}",
        "and copied it to the capture's destination. This notice never carries the message itself.",
        "",
        f"  Envelope sender: {field(envelope_sender) if envelope_sender else '<>'}",
    ] + [f"  {name + ':':<16} {found[name]}" for name in FIELDS]
    message.set_content("\n".join(lines) + "\n", charset="utf-8")
    return message


def submit(service: str, sender: str, person: str, message: EmailMessage) -> int:
    host, _, port = service.rpartition(":")
    try:
        with smtplib.SMTP(host.strip("[]"), int(port), timeout=TIMEOUT) as session:
            session.send_message(message, from_addr=sender, to_addrs=[person])
    except smtplib.SMTPRecipientsRefused as err:
        code = next(iter(err.recipients.values()))[0]
        print(f"capture-notify: the notice service refused {person}: {err.recipients}", file=sys.stderr)
        return EX_UNAVAILABLE if 500 <= code < 600 else EX_TEMPFAIL
    except smtplib.SMTPResponseException as err:
        print(f"capture-notify: the notice service answered {err.smtp_code} {err.smtp_error!r}", file=sys.stderr)
        return EX_UNAVAILABLE if 500 <= err.smtp_code < 600 else EX_TEMPFAIL
    except (OSError, smtplib.SMTPException) as err:
        print(f"capture-notify: cannot submit to {service}: {err}", file=sys.stderr)
        return EX_TEMPFAIL
    return EX_OK


def main(argv: list[str] | None = None, stdin: BinaryIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="capture-notify", description=__doc__.split("\n")[0])
    parser.add_argument("--service", required=True, help="HOST:PORT of the MX's notice service")
    parser.add_argument("--sender", required=True, help="the notices' sender (the gateway team's mailbox)")
    parser.add_argument("envelope_sender", metavar="SENDER")
    parser.add_argument("original_recipient", metavar="ORIGINAL_RECIPIENT")
    parser.add_argument("recipient", metavar="RECIPIENT")
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return EX_USAGE
    person, captured = decoded(args.recipient), decoded(args.original_recipient)
    headers = read_headers(stdin if stdin is not None else sys.stdin.buffer)
    message = notice(args.sender, person, captured, args.envelope_sender, headers)
    return submit(args.service, args.sender, person, message)


if __name__ == "__main__":
    sys.exit(main())
