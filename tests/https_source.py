"""A site's HTTPS server on loopback that serves address lists, as a site's directory would.

Certificates come from trustme: a CA that signs the server's certificate
(for 127.0.0.1) and the sync's client certificate. The server either
requires a client certificate in the TLS handshake, or a bearer token in
the Authorization header. It answers conditional requests (If-None-Match,
If-Modified-Since) with 304, and can play every failure of a real site: an
error status, a slow answer, a body cut short, a connection reset mid-body.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import trustme

LOOPBACK = "127.0.0.1"
parse_date = email.utils.parsedate_to_datetime
LAST_MODIFIED = "Mon, 30 Nov 2026 06:00:00 GMT"


@dataclass
class Served:
    """What the server answers at one path."""

    body: bytes
    content_type: str = "text/csv"
    status: int = 200
    delay: float = 0.0  # seconds before the answer
    cut_after: int | None = None  # send this many bytes of the body, then reset the connection
    short_by: int = 0  # announce this many bytes more than the body holds, then close
    last_modified: str = LAST_MODIFIED

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    status: int


@dataclass
class SiteServer:
    """One HTTPS server; `client_certificates` chooses how it authenticates the sync."""

    root: Path
    client_certificates: bool
    token: str = "s3cr3t-t0ken.for_tifpa"
    routes: dict[str, Served] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ca = trustme.CA(organization_name="Site directory CA")
        self.ca_file = self.root / "site-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        client = self.ca.issue_cert("mailgw-sync@gw.example.org", common_name="mailgw sync")
        self.client_certificate, self.client_key = self.root / "client.pem", self.root / "client.key"
        client.cert_chain_pems[0].write_to_path(str(self.client_certificate))
        client.private_key_pem.write_to_path(str(self.client_key))
        self.token_file = self.root / "site.token"
        self.token_file.write_text(self.token + "\n")
        other = trustme.CA(organization_name="Somebody else's CA")
        self.other_ca_file = self.root / "other-ca.pem"
        other.cert_pem.write_to_path(str(self.other_ca_file))

    def url(self, path: str) -> str:
        return f"https://{LOOPBACK}:{self.port}{path}"

    def serve(self, path: str, served: Served) -> str:
        self.routes[path] = served
        return self.url(path)

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def __enter__(self) -> SiteServer:
        server_state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                served = server_state.routes.get(self.path)
                status = self._status(served)
                server_state.requests.append(Request(self.path, dict(self.headers.items()), status))
                if served is not None and served.delay:
                    time.sleep(served.delay)
                if status != 200 or served is None:
                    self.send_response(status)
                    if served is not None and status == 304:
                        self.send_header("ETag", served.etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"{served.content_type}; charset=utf-8")
                self.send_header("Content-Length", str(len(served.body) + served.short_by))
                self.send_header("ETag", served.etag)
                self.send_header("Last-Modified", served.last_modified)
                self.end_headers()
                if served.cut_after is not None:
                    self.wfile.write(served.body[: served.cut_after])
                    self.wfile.flush()
                    time.sleep(0.3)  # the client reads the headers and the first bytes: then the reset
                    self._reset()
                    return
                self.wfile.write(served.body)
                if served.short_by:
                    self.wfile.flush()
                    self.close_connection = True

            def _status(self, served: Served | None) -> int:
                bearer = self.headers.get("Authorization")
                if not server_state.client_certificates and bearer != f"Bearer {server_state.token}":
                    return 401
                if served is None:
                    return 404
                if served.status != 200:
                    return served.status
                if self.headers.get("If-None-Match") == served.etag:
                    return 304
                since = self.headers.get("If-Modified-Since")
                # RFC 9110 13.1.3: If-Modified-Since counts only without If-None-Match.
                unmodified = since and "If-None-Match" not in self.headers
                if unmodified and parse_date(since) >= parse_date(served.last_modified):
                    return 304
                return 200

            def _reset(self) -> None:
                """Abort the TCP connection (RST), as a crashing server or a middlebox does."""
                raw = socket.socket(fileno=self.connection.fileno())
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw.close()
                self.connection.detach()
                self.close_connection = True
                self.wfile = open("/dev/null", "wb")  # noqa: SIM115 (the handler's finish() flushes it)

            def log_message(self, *args) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address) -> None:
                pass  # a reset connection, a refused handshake: the test asserts the client's side

        self.server = Server((LOOPBACK, 0), Handler)
        self.port = self.server.server_address[1]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert(LOOPBACK).configure_cert(context)
        if self.client_certificates:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(self.ca_file))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
