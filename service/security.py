"""Who may call the service and how much they may send: one ASGI middleware in front of every route.

- Bearer API keys (`CHURNGUARD_API_KEYS`), compared in constant time; keys are never logged.
- Without keys, only loopback clients are served unless the service sits behind an authenticating
  proxy (`server.behind_proxy`); `churnguard serve` also refuses to bind elsewhere in that case.
- `/admin/*` needs an admin key (`CHURNGUARD_ADMIN_API_KEYS`, else an API key), and is closed when
  no key is configured at all.
- Bodies above `limits.max_body_bytes` get 413 before the app reads them (chunked bodies included).
- Only the health probes (`/livez`, `/readyz`, `/healthz`) are open. `/metrics` needs a key like every
  other route (it names model versions and traffic): give Prometheus a bearer token.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from service.config import is_loopback

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz"})
ADMIN_PREFIX = "/admin/"


def key_matches(token: bytes, keys: list[bytes]) -> bool:
    """Constant-time check against every key (no early exit that would leak which one matched)."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token, key)
    return matched


def bearer_token(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: list[bytes],
        admin_keys: list[bytes],
        behind_proxy: bool,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.api_keys = api_keys
        self.admin_keys = admin_keys
        self.behind_proxy = behind_proxy
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None and _CONTROL.search(scope["path"]):
            # No route of ours takes one, and the router would answer a plain-text 404, not JSON.
            refusal = 400, "the URL path holds control characters (a newline, a tab...)", {}
        if refusal is not None:
            status, message, headers = refusal
            client = (scope.get("client") or ("?",))[0]
            log.info("refused %s %s from %s: %s", scope["method"], scope["path"], client, message)
            await _respond(send, status, message, headers)
            return
        length = _content_length(scope)
        if length == -1:
            await _respond(send, 400, "invalid Content-Length header")
            return
        if length is not None:
            if length > self.max_body_bytes:
                await _respond(send, 413, self._too_large())
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): buffer up to the limit, then replay the body to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _respond(send, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(chunks, None, receive), send)

    def _refusal(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        token = bearer_token(scope)
        challenge = {"www-authenticate": 'Bearer realm="churnguard"'}
        if scope["path"].startswith(ADMIN_PREFIX):
            if not self.admin_keys:
                return (
                    403,
                    "admin endpoints are closed: set CHURNGUARD_ADMIN_API_KEYS or CHURNGUARD_API_KEYS",
                    {},
                )
            if token is None or not key_matches(token, self.admin_keys):
                return 401, "missing or invalid admin API key (Authorization: Bearer <key>)", challenge
            return None
        if self.api_keys:
            if token is None or not key_matches(token, self.api_keys):
                return 401, "missing or invalid API key (Authorization: Bearer <key>)", challenge
            return None
        client = scope.get("client")
        if not self.behind_proxy and not (client and is_loopback(client[0])):
            return 403, "no API keys are configured: only loopback clients are served", {}
        return None

    def _too_large(self) -> str:
        return (
            f"the request body is larger than {self.max_body_bytes:,} bytes (limits.max_body_bytes); "
            "split the batch, or score files offline with `churnguard score`"
        )


def _content_length(scope: Scope) -> int | None:
    """The declared body length, None when absent, -1 when malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None


def _replay(chunks: list[bytes], pending: Message | None, receive: Receive) -> Receive:
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent, pending
        if pending is not None:
            message, pending = pending, None
            return message
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = msgspec.json.encode({"error": message})
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
