"""A held message shown safely: its header fields and its text, never its HTML as HTML.

Everything here is plain text; the templates escape it (Jinja2 autoescape),
so markup in a subject, a sender or a body is shown as the characters it is.
An HTML-only message is shown as the text of its HTML (tags dropped).
"""

from __future__ import annotations

import email
import email.message
import email.policy
import html.parser
from dataclasses import dataclass

MAX_TEXT = 200_000  # characters of text shown; the rest is in the .eml
SHOWN_FIELDS = ("from", "to", "cc", "reply-to", "subject", "date", "message-id")


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    size: int


@dataclass(frozen=True)
class Rendering:
    fields: list[tuple[str, str]]  # every header field, as text
    text: str
    attachments: list[Attachment]
    truncated: bool


class _TextOfHtml(html.parser.HTMLParser):
    SKIP = frozenset({"script", "style", "head", "title"})
    BREAK = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BREAK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def text_of_html(markup: str) -> str:
    parser = _TextOfHtml()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() or c in "\n\t" else " " for c in text)


def render(data: bytes) -> Rendering:
    message = email.message_from_bytes(data, policy=email.policy.default)
    fields = []
    for name, value in message.raw_items():
        try:
            shown = str(email.policy.default.header_factory(name, value))
        except Exception:  # a malformed field is shown as it came
            shown = str(value)
        fields.append((name, _printable(shown.replace("\r", " ").replace("\n", " "))))
    plain: list[str] = []
    html_parts: list[str] = []
    attachments: list[Attachment] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        disposition = part.get_content_disposition()
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        if disposition == "attachment" or content_type not in ("text/plain", "text/html"):
            attachments.append(Attachment(_printable(part.get_filename() or ""), content_type, size))
            continue
        text = _decode(part, payload)
        (plain if content_type == "text/plain" else html_parts).append(text)
    text = "\n\n".join(plain) if plain else "\n\n".join(text_of_html(markup) for markup in html_parts)
    text = _printable(text.replace("\r\n", "\n"))
    return Rendering(fields, text[:MAX_TEXT], attachments, len(text) > MAX_TEXT)


def _decode(part: email.message.Message, payload: object) -> str:
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")
