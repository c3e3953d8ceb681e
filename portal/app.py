"""The portal's web application (Starlette): ingest from Rspamd, AAI sign-in, the list, a message, its actions.

Authorization is decided on every request: the session holds only the AAI
uid (and a CSRF token); the addresses the uid may act for are read from the
directory each time. A message the viewer may not act for answers exactly as
an id that does not exist (404), so ids leak nothing; ids are 192 random bits.
Every state change is a POST carrying the session's CSRF token.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hmac
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from authlib.integrations.starlette_client import OAuth, OAuthError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from portal import aliases, ingest, release, render
from portal.config import Config, read_secret
from portal.directory import Directory, DirectoryError
from portal.store import Filters, Message, Store

log = logging.getLogger("mailgw.portal")
HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "mailgw_portal"
SESSION_SECONDS = 8 * 3600
_UID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")
SECURITY_HEADERS = {
    # No script at all; styles and forms only from the portal itself.
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
NOTICES = {
    "released": "The message was released: the mail gateway is delivering it.",
    "deleted": "The message was deleted.",
    "nothing": "There was nothing left to do: it was already released or deleted.",
}


@dataclass(frozen=True)
class Viewer:
    uid: str
    operator: bool
    addresses: frozenset[str]  # what the directory says the uid may act for
    csrf: str

    @property
    def scope(self) -> frozenset[str] | None:
        """The addresses whose messages this viewer sees; None: all of them (an operator)."""
        return None if self.operator else self.addresses


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: AsgiMessage) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in names]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(config: Config, store: Store | None = None, directory: Directory | None = None) -> Starlette:
    store = store or Store.from_config(config)
    directory = directory or Directory(config.ldap)
    send = release.sender(config.release_host, config.release_port)
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    oauth = OAuth()
    oauth.register(
        "aai",
        server_metadata_url=f"{config.oidc.issuer}/.well-known/openid-configuration",
        client_id=config.oidc.client_id,
        client_secret=read_secret(config.oidc.client_secret_file),
        client_kwargs={"scope": " ".join(config.oidc.scopes)},
    )

    def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        notice = NOTICES.get(request.query_params.get("done", ""))
        body = templates.get_template(template).render(notice=notice, reason=reason, **context)
        return HTMLResponse(body, status_code=status)

    def error(request: Request, status: int, title: str, detail: str, viewer: Viewer | None = None) -> HTMLResponse:
        return page(request, "error.html", status, title=title, detail=detail, viewer=viewer)

    async def viewer_of(request: Request) -> Viewer | None:
        uid = request.session.get("uid")
        csrf = request.session.get("csrf")
        if not isinstance(uid, str) or not isinstance(csrf, str):
            return None
        operator = uid in config.operators
        addresses = await run_in_threadpool(directory.addresses, uid)
        return Viewer(uid, operator, addresses, csrf)

    def signed_in(
        handler: Callable[[Request, Viewer], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                viewer = await viewer_of(request)
            except DirectoryError as err:
                log.error("%s", err)
                return error(request, 503, "The directory is not answering", "Please try again in a few minutes.")
            if viewer is None:
                if request.method != "GET":
                    return error(request, 403, "Not signed in", "Sign in first.")
                return RedirectResponse(f"/login?{urlencode({'next': _local_path(request)})}", status_code=303)
            if request.method == "POST":
                form = await request.form()
                token = form.get("csrf")
                if not isinstance(token, str) or not hmac.compare_digest(token, viewer.csrf):
                    return error(request, 403, "Refused", "The form was not sent from this portal.", viewer)
            return await handler(request, viewer)

        return wrapped

    # --- ingest ----------------------------------------------------------------------------

    async def ingest_message(request: Request) -> Response:
        if not _basic_auth_ok(request, config):
            return PlainTextResponse(
                "authentication required\n", status_code=401, headers={"www-authenticate": 'Basic realm="quarantine"'}
            )
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > config.max_message_bytes):
            return PlainTextResponse("the message is too large\n", status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > config.max_message_bytes:
                return PlainTextResponse("the message is too large\n", status_code=413)
        try:
            held = ingest.parse(request.headers, bytes(body), config.max_message_bytes)
        except ingest.Refused as refused:
            log.warning("refused a post from %s: %s", request.client.host if request.client else "?", refused.reason)
            return PlainTextResponse(refused.reason + "\n", status_code=refused.status)
        try:
            message_id, new = await run_in_threadpool(store.ingest, held, config)
        except Exception:
            # Rspamd defers the message on anything but 200: it is retried, not lost.
            log.exception("could not store a quarantined message")
            return PlainTextResponse("the quarantine cannot store the message now\n", status_code=503)
        log.info(
            "%s message %s for %d recipient(s)", "stored" if new else "already had", message_id, len(held.recipients)
        )
        return PlainTextResponse("stored\n" if new else "already stored\n", status_code=200)

    # --- sign-in ---------------------------------------------------------------------------

    async def login(request: Request) -> Response:
        request.session["next"] = _safe_next(request.query_params.get("next", "/"))
        try:
            return await oauth.aai.authorize_redirect(request, f"{config.public_url}/auth/callback")  # type: ignore[no-any-return]
        except Exception as err:  # the provider's metadata could not be fetched
            log.error("cannot reach the OIDC provider %s: %s", config.oidc.issuer, err)
            return error(request, 503, "Sign-in is not available", "The AAI sign-in service is not answering.")

    async def callback(request: Request) -> Response:
        try:
            token = await oauth.aai.authorize_access_token(request)
            claims = token.get("userinfo") or await oauth.aai.userinfo(token=token)
        except OAuthError as err:
            log.warning("sign-in failed: %s", err.error)
            return error(request, 403, "Sign-in failed", "The AAI sign-in did not succeed. Please try again.")
        uid = claims.get(config.oidc.uid_claim)
        if not isinstance(uid, str) or not uid or not set(uid) <= _UID_CHARS or len(uid) > 64:
            return error(request, 403, "Sign-in failed", "Your AAI account does not carry a usable user id.")
        target = _safe_next(str(request.session.get("next", "/")))
        request.session.clear()
        request.session.update({"uid": uid, "csrf": secrets.token_urlsafe(32)})
        log.info("%s signed in", uid)
        return RedirectResponse(target, status_code=303)

    async def logout(request: Request, viewer: Viewer) -> Response:
        request.session.clear()
        return HTMLResponse(
            templates.get_template("error.html").render(
                viewer=None, notice=None, title="Signed out", detail="You are signed out of the quarantine portal."
            )
        )

    # --- the list and a message ------------------------------------------------------------

    async def listing(request: Request, viewer: Viewer) -> Response:
        params = request.query_params
        filters = Filters(
            address=params.get("address", "").strip()[:320],
            sender=params.get("sender", "").strip()[:320],
            subject=params.get("subject", "").strip()[:200],
            since=_date(params.get("since")),
            until=_date(params.get("until")),
            reason=params.get("reason", "").strip()[:100],
        )
        number = int(params["page"]) if params.get("page", "").isdigit() and int(params["page"]) > 0 else 1
        rows, total = await run_in_threadpool(store.page, viewer.scope, filters, number)
        pages = max(1, math.ceil(total / 50))

        def page_link(n: int) -> str:
            query = {k: v for k, v in params.items() if k != "page" and k != "done"}
            return "/?" + urlencode({**query, "page": str(n)})

        return page(
            request,
            "list.html",
            viewer=viewer,
            rows=rows,
            total=total,
            page=number,
            pages=pages,
            filters=filters,
            addresses=sorted(viewer.addresses),
            page_link=page_link,
        )

    async def show(request: Request, viewer: Viewer) -> Response:
        found = await run_in_threadpool(store.message, request.path_params["id"], viewer.scope)
        if found is None:
            return error(request, 404, "No such message", "There is no held message here for you.", viewer)
        message, recipients = found
        data = await run_in_threadpool(store.content, message.id)
        held = [r.address for r in recipients if r.released_at is None]
        return page(
            request,
            "message.html",
            viewer=viewer,
            message=message,
            recipients=recipients,
            held=held,
            can_release=bool(held) and (viewer.operator or not message.virus),
            rendering=render.render(data or b""),
        )

    async def download(request: Request, viewer: Viewer) -> Response:
        found = await run_in_threadpool(store.message, request.path_params["id"], viewer.scope)
        data = await run_in_threadpool(store.content, found[0].id) if found else None
        if found is None or data is None:
            return error(request, 404, "No such message", "There is no held message here for you.", viewer)
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"content-disposition": f'attachment; filename="quarantine-{found[0].id}.eml"'},
        )

    async def release_message(request: Request, viewer: Viewer) -> Response:
        found = await run_in_threadpool(store.message, request.path_params["id"], viewer.scope)
        if found is None:
            return error(request, 404, "No such message", "There is no held message here for you.", viewer)
        message, recipients = found
        if message.virus and not viewer.operator:
            return error(
                request, 403, "Not released", "A message with a virus can be released by operators only.", viewer
            )
        try:
            sent = await run_in_threadpool(
                store.release, message.id, [r.id for r in recipients if r.released_at is None], send
            )
        except release.ReleaseError as err:
            log.error("release of %s failed: %s", message.id, err)
            return error(request, 503, "Not released", "The mail gateway did not take the message; try again.", viewer)
        log.info("%s released %s to %s", viewer.uid, message.id, ", ".join(sent))
        return RedirectResponse(f"/messages/{message.id}?done={'released' if sent else 'nothing'}", status_code=303)

    async def delete_message(request: Request, viewer: Viewer) -> Response:
        found = await run_in_threadpool(store.message, request.path_params["id"], viewer.scope)
        if found is None:
            return error(request, 404, "No such message", "There is no held message here for you.", viewer)
        message, recipients = found
        await run_in_threadpool(store.delete, message.id, [r.id for r in recipients])
        log.info("%s deleted %s for %s", viewer.uid, message.id, ", ".join(r.address for r in recipients))
        return RedirectResponse("/?done=deleted", status_code=303)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    routes = [
        Route("/healthz", health),
        Route("/login", login),
        Route("/auth/callback", callback),
        Route("/logout", signed_in(logout), methods=["POST"]),
        Route("/", signed_in(listing)),
        Route("/messages/{id}", signed_in(show)),
        Route("/messages/{id}/eml", signed_in(download)),
        Route("/messages/{id}/release", signed_in(release_message), methods=["POST"]),
        Route("/messages/{id}/delete", signed_in(delete_message), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    # The national alias page (portal/aliases.py), when gateway.yaml names a national domain.
    routes += aliases.routes(config, signed_in, page, error)
    templates.globals["national"] = config.national is not None
    if config.ingest_path is not None:
        routes.insert(0, Route(config.ingest_path, ingest_message, methods=["POST"]))
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=read_secret(config.session_secret_file),
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_SECONDS,
            same_site="lax",
            https_only=config.public_url.startswith("https://"),
        ),
    ]
    return Starlette(routes=routes, middleware=middleware)


def reason(message: Message) -> str:
    if message.virus:
        return f"virus: {message.virus}"
    score = f"spam score {message.score:.1f}" if message.score is not None else "spam"
    return score


def _basic_auth_ok(request: Request, config: Config) -> bool:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    try:
        expected = read_secret(config.ingest_password_file)
    except Exception:
        log.error("cannot read the ingest password file %s", config.ingest_password_file)
        return False
    user_ok = hmac.compare_digest(user.encode(), config.ingest_user.encode())
    return hmac.compare_digest(password.encode(), expected.encode()) and user_ok


def _local_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _safe_next(target: str) -> str:
    """Only a path of this portal: never another site (no '//host', no scheme, no backslash)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or any(ord(c) < 32 for c in target):
        return "/"
    return target


def _date(value: str | None) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(value) if value else None
    except ValueError:
        return None
