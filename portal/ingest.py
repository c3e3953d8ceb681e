"""What Rspamd's metadata_exporter POSTs, checked and taken apart (templates/rspamd/metadata_exporter.conf.j2).

The body is the message as the MX received it, after the lines the
exporter's formatter puts in front: X-Quarantine-Retention-Days,
X-Quarantine-Direction and, for a virus, X-Virus. The envelope is in request
headers: X-Rspamd-rcpt (a JSON list), X-Rspamd-from, X-Rspamd-score,
X-Rspamd-symbols (JSON), X-Rspamd-ip, X-Rspamd-qid.

Anything that does not fit is refused with a 4xx and stored nowhere; Rspamd
then defers the message (only 200 means taken).
"""

from __future__ import annotations

import contextlib
import email.header
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_RECIPIENTS = 1000
MAX_TEXT = 998  # a header line's limit (RFC 5322 2.1.1): what the list shows of a subject or sender
_ADDRESS = re.compile(r"[^\s@<>\"(),;:\\\[\]]{1,64}@[A-Za-z0-9.-]{1,253}")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
_TRACE_FIELDS = (b"received", b"return-path", b"x-quarantine-retention-days", b"x-quarantine-direction", b"x-virus")
_PREFIX_FIELDS = {b"x-quarantine-retention-days", b"x-quarantine-direction", b"x-virus"}


class Refused(Exception):
    """The post is not a quarantined message: the HTTP status and why."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Held:
    """One quarantined message, ready to store."""

    fingerprint: str
    envelope_from: str
    recipients: tuple[str, ...]
    content: bytes  # the message as received, without the exporter's lines in front
    subject: str
    header_from: str
    score: float | None
    symbols: tuple[str, ...]
    virus: str | None
    direction: str  # inbound | outbound
    retention_days: int | None
    client_ip: str


def parse(headers: Mapping[str, str], body: bytes, max_bytes: int) -> Held:
    if len(body) > max_bytes:
        raise Refused(413, f"the message is larger than {max_bytes} bytes")
    if headers.get("content-type", "").split(";")[0].strip().lower() != "message/rfc822":
        raise Refused(415, "the body must be message/rfc822")
    recipients = _recipients(headers.get("x-rspamd-rcpt"))
    envelope_from = _sender(headers.get("x-rspamd-from", ""))
    prefix, content = _split_prefix(body)
    if not content or not _FIELD_NAME.match(content):
        raise Refused(400, "the body is not a message: it must start with a header field")
    head = _head(content)
    retention = prefix.get(b"x-quarantine-retention-days")
    if retention is not None and not (retention.isdigit() and 1 <= int(retention) <= 3650):
        raise Refused(400, "X-Quarantine-Retention-Days must be a number of days")
    direction = (prefix.get(b"x-quarantine-direction") or b"inbound").decode("ascii", "replace")
    if direction not in ("inbound", "outbound"):
        raise Refused(400, "X-Quarantine-Direction must be inbound or outbound")
    virus = prefix.get(b"x-virus")
    return Held(
        fingerprint=fingerprint(envelope_from, recipients, content),
        envelope_from=envelope_from,
        recipients=recipients,
        content=content,
        subject=_decoded(head.get(b"subject", b"")),
        header_from=_decoded(head.get(b"from", b"")),
        score=_score(headers.get("x-rspamd-score")),
        symbols=_symbols(headers.get("x-rspamd-symbols")),
        virus=_virus(virus),
        direction=direction,
        retention_days=int(retention) if retention is not None else None,
        client_ip=headers.get("x-rspamd-ip", "")[:64],
    )


def _recipients(value: str | None) -> tuple[str, ...]:
    try:
        listed = json.loads(value or "")
    except ValueError:
        raise Refused(400, "X-Rspamd-rcpt must be a JSON list of addresses") from None
    if not isinstance(listed, list) or not 1 <= len(listed) <= MAX_RECIPIENTS:
        raise Refused(400, f"X-Rspamd-rcpt must list 1 to {MAX_RECIPIENTS} addresses")
    addresses = []
    for rcpt in listed:
        if not isinstance(rcpt, str) or not _ADDRESS.fullmatch(rcpt):
            raise Refused(400, "X-Rspamd-rcpt has something that is not a mail address")
        addresses.append(rcpt.lower())
    return tuple(sorted(set(addresses)))


def _sender(value: str) -> str:
    value = value.strip()
    if value in ("", "unknown", "<>"):
        return ""  # the null sender (a bounce)
    if not _ADDRESS.fullmatch(value):
        raise Refused(400, "X-Rspamd-from is not a mail address")
    return value


def _split_prefix(body: bytes) -> tuple[dict[bytes, bytes], bytes]:
    """The exporter's lines in front of the message, and the message."""
    prefix: dict[bytes, bytes] = {}
    rest = body
    while True:
        line, newline, after = rest.partition(b"\n")
        name, colon, value = line.partition(b":")
        if not newline or not colon or name.lower() not in _PREFIX_FIELDS or name.lower() in prefix:
            return prefix, rest
        prefix[name.lower()] = value.strip()
        rest = after


def _fields(content: bytes) -> list[tuple[bytes, bytes]]:
    """The top-level header fields (name, raw field with its continuation lines), up to the first empty line."""
    fields: list[tuple[bytes, bytes]] = []
    for line in content.split(b"\n"):
        if line in (b"", b"\r"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + b"\n" + line)
        else:
            fields.append((line.partition(b":")[0].strip().lower(), line))
    return fields


def _head(content: bytes) -> dict[bytes, bytes]:
    head: dict[bytes, bytes] = {}
    for name, field in _fields(content):
        value = field.partition(b":")[2]
        head.setdefault(name, b" ".join(part.strip() for part in value.split(b"\n")))
    return head


def fingerprint(envelope_from: str, recipients: tuple[str, ...], content: bytes) -> str:
    """The same message to the same recipients, whichever MX node or attempt brought it.

    Trace fields (Received, Return-Path) differ between two deliveries of one
    message (each names its queue id and time), so they are left out.
    """
    digest = hashlib.sha256()
    digest.update(envelope_from.lower().encode() + b"\0" + "\0".join(recipients).encode() + b"\0")
    header, _, body = content.replace(b"\r\n", b"\n").partition(b"\n\n")
    for name, field in _fields(header + b"\n"):
        if name not in _TRACE_FIELDS:
            digest.update(field + b"\n")
    digest.update(b"\n" + body)
    return digest.hexdigest()


def _decoded(raw: bytes) -> str:
    """A header value for display: RFC 2047 words decoded, control characters dropped, at most MAX_TEXT."""
    text = raw.decode("utf-8", "replace")
    with contextlib.suppress(ValueError, LookupError, UnicodeError):
        text = str(email.header.make_header(email.header.decode_header(text)))
    return "".join(c if c.isprintable() else " " for c in text)[:MAX_TEXT]


def _score(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _symbols(value: str | None) -> tuple[str, ...]:
    try:
        listed = json.loads(value or "[]")
    except ValueError:
        return ()
    names = [entry.get("name") for entry in listed if isinstance(entry, dict)] if isinstance(listed, list) else []
    return tuple(sorted(str(name)[:128] for name in names if name))[:200]


def _virus(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("ascii", "replace")
    return text.removeprefix("infected,").strip()[:MAX_TEXT] or "unknown"
