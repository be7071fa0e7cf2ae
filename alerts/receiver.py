"""A webhook receiver on loopback, as an owner's system should be: it checks the signature and keeps
one copy of each message by its idempotency key. The demo, the tests and benchmarks/alerts.py run it;
`fault` lets them make it fail or hang, as a real receiver sometimes does.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from alerts.channels import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

# What the receiver does with a request: take it, answer 500, or hang (then take it, too late).
Fault = Callable[[], Literal["ok", "fail", "hang"]]


class WebhookReceiver:
    def __init__(
        self, secret: str | None = None, fault: Fault | None = None, hang_seconds: float = 2.0
    ) -> None:
        self.secret = secret
        self.fault = fault
        self.hang_seconds = hang_seconds
        self.lock = threading.Lock()
        self.messages: dict[str, dict[str, Any]] = {}  # by idempotency key: one copy each
        self.bodies: dict[str, bytes] = {}  # the same, as the bytes that arrived
        self.alerts: Counter[int] = Counter()  # alert id -> messages kept that carry it (kind "alert")
        self.requests = 0
        self.duplicates = 0  # copies dropped by key
        self.failed = 0
        self.hung = 0
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet: tests count, not read logs
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.take(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alert_ids(self) -> set[int]:
        """Every alert the kept messages announced (one by one, in a digest or as an update)."""
        with self.lock:
            return {int(i) for message in self.messages.values() for i in message.get("alert_ids") or []}

    def take(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        import time

        with self.lock:
            self.requests += 1
        action = self.fault() if self.fault else "ok"
        if action == "fail":
            with self.lock:
                self.failed += 1
            self._answer(handler, 500, {"error": "receiver down"})
            return
        if action == "hang":
            with self.lock:
                self.hung += 1
            time.sleep(self.hang_seconds)  # past the sender's timeout; the message is still kept
        if self.secret is not None and not verify(
            self.secret,
            handler.headers.get(TIMESTAMP_HEADER, "0"),
            body,
            handler.headers.get(SIGNATURE_HEADER, ""),
        ):
            with self.lock:
                self.bad_signatures += 1
            self._answer(handler, 401, {"error": "bad signature"})
            return
        payload = json.loads(body)
        key = handler.headers.get(KEY_HEADER) or payload.get("idempotency_key")
        with self.lock:
            if key in self.messages:
                self.duplicates += 1
            else:
                self.messages[key] = payload
                self.bodies[key] = body
                if payload.get("kind") == "alert":
                    self.alerts[payload["alert_id"]] += 1
        self._answer(handler, 200, {"ok": True})

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the sender gave up waiting
            pass
