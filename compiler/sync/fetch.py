"""The HTTPS client of mailgw sync: one GET of a site's list, verified, bounded, conditional.

TLS verification always (the system's CAs, or the source's ca_file); a
client certificate and/or a bearer token read from files on the machine that
runs the sync; one deadline for the whole transfer; the body streamed and
cut at a size limit; a body shorter than its Content-Length, or a connection
broken mid-body, is an error (urllib3's enforce_content_length). Redirects
are not followed: the site's list is at the URL the domain file names.
REFERENCES: RFC 9110 (status codes, conditional requests), RFC 6750 (bearer tokens), RFC 8446 (TLS 1.3).
"""

from __future__ import annotations

import http
import re
import time
from dataclasses import dataclass
from pathlib import Path

import urllib3
from urllib3.exceptions import HTTPError

from compiler import __version__
from compiler.model import Source
from compiler.sync.synced import Validators

REFERENCES = ("RFC 9110", "RFC 6750", "RFC 8446")

ACCEPT = {"csv": "text/csv", "json": "application/json"}
CHUNK = 64 * 1024
# RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")


class FetchError(Exception):
    """The list could not be fetched whole; the message says why, in one line."""


@dataclass(frozen=True)
class Fetched:
    """A fetch's result: None as the body means 'not modified' (HTTP 304)."""

    body: bytes | None
    validators: Validators


@dataclass(frozen=True)
class Limits:
    timeout: float  # seconds for the whole transfer: connect, every read, all of it
    max_bytes: int


def fetch(source: Source, credentials: Path | None, known: Validators | None, limits: Limits) -> Fetched:
    """GET the source's list; raises FetchError for anything but a whole 200 body or a 304."""
    headers = {"Accept": ACCEPT[source.format], "User-Agent": f"mailgw-sync/{__version__}"}
    if source.token_file:
        headers["Authorization"] = f"Bearer {_token(_path(source.token_file, credentials))}"
    if known and known.etag:
        headers["If-None-Match"] = known.etag
    if known and known.last_modified:
        headers["If-Modified-Since"] = known.last_modified
    pool = urllib3.PoolManager(
        cert_reqs="CERT_REQUIRED",
        ca_certs=str(_path(source.ca_file, credentials)) if source.ca_file else None,
        cert_file=str(_path(source.client_certificate, credentials)) if source.client_certificate else None,
        key_file=str(_path(source.client_key, credentials)) if source.client_key else None,
        retries=False,
    )
    deadline = time.monotonic() + limits.timeout
    try:
        response = pool.request(
            "GET",
            source.url,
            headers=headers,
            redirect=False,
            preload_content=False,
            timeout=urllib3.Timeout(total=limits.timeout),
            enforce_content_length=True,
        )
        try:
            return _read(response, limits, deadline)
        finally:
            response.release_conn()
    except HTTPError as err:
        raise FetchError(_describe(err, limits)) from None
    except OSError as err:  # a credential file that cannot be read by ssl, and the like
        raise FetchError(f"{err.strerror or err}") from None
    finally:
        pool.clear()


def _read(response: urllib3.BaseHTTPResponse, limits: Limits, deadline: float) -> Fetched:
    status = response.status
    validators = Validators.checked(response.headers.get("ETag"), response.headers.get("Last-Modified"))
    if status == 304:
        return Fetched(None, validators)
    if status != 200:
        raise FetchError(_status_message(status, response.headers.get("Location")))
    length = response.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limits.max_bytes:
        raise FetchError(f"the list is {int(length)} bytes, over the limit of {limits.max_bytes} bytes (--max-bytes)")
    body = bytearray()
    for chunk in response.stream(CHUNK):
        body += chunk
        if len(body) > limits.max_bytes:
            raise FetchError(f"the list is over the limit of {limits.max_bytes} bytes (--max-bytes); stopped reading")
        if time.monotonic() > deadline:
            raise FetchError(f"the transfer took longer than {limits.timeout:g} s (--timeout); stopped reading")
    return Fetched(bytes(body), validators)


def _status_message(status: int, location: str | None) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "unknown status"
    if status in (401, 403):
        return f"the site refused the credentials (HTTP {status} {phrase}); check the source's certificate or token"
    if 300 <= status < 400:
        moved = f" to {location}" if location and location.isprintable() and len(location) < 300 else ""
        return f"HTTP {status} {phrase}{moved}: redirects are not followed; put the list's own URL in source.url"
    return f"HTTP {status} {phrase}"


def _describe(err: HTTPError, limits: Limits) -> str:
    """One line for what urllib3 raised: a timeout, TLS, a broken connection, a short body."""
    if isinstance(err, urllib3.exceptions.TimeoutError):
        return f"no answer within {limits.timeout:g} s (--timeout)"
    if isinstance(err, urllib3.exceptions.SSLError):
        return f"TLS failed: {_reason(err)}"
    if isinstance(err, urllib3.exceptions.ProtocolError):
        return f"the connection broke before the whole list arrived: {_reason(err)}"
    if isinstance(err, urllib3.exceptions.NewConnectionError):
        return f"cannot connect: {_reason(err)}"
    return _reason(err)


def _reason(err: BaseException) -> str:
    # urllib3 wraps the socket's or ssl's error; the innermost says what happened.
    while err.__context__ is not None and isinstance(err.args[-1] if err.args else None, BaseException):
        err = err.args[-1]
    text = " ".join(str(err).split())
    return text[:300]


def _path(name: str, credentials: Path | None) -> Path:
    path = Path(name)
    if path.is_absolute():
        return path
    if credentials is None:
        raise FetchError(f"'{name}' is relative to the credentials directory, and none is given (--credentials)")
    return credentials / path


def _token(path: Path) -> str:
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise FetchError(f"cannot read the token file {path}: {getattr(err, 'strerror', None) or err}") from None
    if not _TOKEN.fullmatch(token):
        raise FetchError(f"the token file {path} does not hold one bearer token (RFC 6750: letters, digits, -._~+/)")
    return token
