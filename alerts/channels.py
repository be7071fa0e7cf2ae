"""Sending one message on one channel: a signed JSON webhook, the incoming-webhook robots of Slack,
Feishu/Lark, DingTalk and WeCom, and email over SMTP.

Every request carries the message's idempotency key (the `Idempotency-Key` header, `idempotency_key`
in a JSON body, the email's Message-ID), so a receiver can drop what an at-least-once outbox sends
twice. Addresses come only from the channel's configuration; secrets only from the environment, and
no error message names a URL or a secret (a Slack or WeCom URL is itself a secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import smtplib
import threading
import time
import urllib.parse
from email.message import EmailMessage
from typing import Any

import httpx

from alerts.routing import ChannelConfig, secret

SIGNATURE_HEADER = "X-Churnguard-Signature"
TIMESTAMP_HEADER = "X-Churnguard-Timestamp"
KEY_HEADER = "Idempotency-Key"


_local = threading.local()


class _RedactUrls(logging.Filter):
    """httpx logs every request's URL at INFO, and a Slack or WeCom URL embeds its token: keep the host."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                f"{arg.scheme}://{arg.host}{f':{arg.port}' if arg.port else ''}/..."
                if isinstance(arg, httpx.URL)
                else arg
                for arg in record.args
            )
        return True


_REDACT = _RedactUrls()


def _client() -> httpx.Client:
    # One client per thread: building one loads the TLS trust store (tens of ms), per message too slow.
    client = getattr(_local, "client", None)
    if client is None:
        httpx_log = logging.getLogger("httpx")
        if _REDACT not in httpx_log.filters:  # on first use, not on import
            httpx_log.addFilter(_REDACT)
        client = _local.client = httpx.Client(follow_redirects=False)
    return client


class DeliveryFailed(Exception):
    """The channel did not take the message; the outbox tries again later. The text is safe to log."""


def sign(secret_value: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over `timestamp.body`: a receiver checks it and refuses old timestamps (replays)."""
    digest = hmac.new(secret_value.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret_value: str, timestamp: str, body: bytes, signature: str, max_age: float = 300.0) -> bool:
    """What a receiver does with the two headers (used by the tests' receiver; documented for others)."""
    if abs(time.time() - float(timestamp)) > max_age:
        return False
    return hmac.compare_digest(sign(secret_value, timestamp, body), signature)


def _markdown(payload: dict[str, Any]) -> str:
    head, *rest = payload["text"].split("\n")
    return "\n".join([f"**{head}**", *rest])


def robot_body(channel: ChannelConfig, payload: dict[str, Any]) -> dict[str, Any]:
    """The JSON each robot's incoming webhook expects."""
    key = payload["idempotency_key"]
    if channel.kind == "slack":
        return {
            "text": payload["text"],
            "metadata": {"event_type": "churnguard_alert", "event_payload": {"idempotency_key": key}},
        }
    if channel.kind == "feishu":
        body: dict[str, Any] = {"msg_type": "text", "content": {"text": payload["text"]}}
        if channel.secret_env:
            # Feishu/Lark: base64(HMAC-SHA256 keyed by "timestamp\nsecret" over nothing), seconds.
            timestamp = str(int(time.time()))
            key_bytes = f"{timestamp}\n{secret(channel.secret_env)}".encode()
            body["timestamp"] = timestamp
            body["sign"] = base64.b64encode(hmac.new(key_bytes, b"", hashlib.sha256).digest()).decode()
        return body
    if channel.kind == "dingtalk":
        return {"msgtype": "markdown", "markdown": {"title": payload["subject"], "text": _markdown(payload)}}
    if channel.kind == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": _markdown(payload)}}
    return payload  # the generic webhook: the payload itself


def _url(channel: ChannelConfig) -> str:
    url = channel.url if channel.url is not None else secret(channel.url_env or "")
    if channel.kind == "dingtalk" and channel.secret_env:
        # DingTalk signs in the query: timestamp (ms) and base64(HMAC-SHA256(secret, "timestamp\nsecret")).
        timestamp = str(int(time.time() * 1000))
        signing = secret(channel.secret_env)
        digest = hmac.new(signing.encode(), f"{timestamp}\n{signing}".encode(), hashlib.sha256).digest()
        sign_value = urllib.parse.quote_plus(base64.b64encode(digest))
        url += ("&" if "?" in url else "?") + f"timestamp={timestamp}&sign={sign_value}"
    return url


def _robot_accepted(channel: ChannelConfig, response: httpx.Response) -> str | None:
    """None when the robot took the message, else why not (robots answer 200 with an error code)."""
    if channel.kind in {"feishu", "dingtalk", "wecom"}:
        try:
            answer = response.json()
        except ValueError:
            return "answer is not JSON"
        code = answer.get("code", answer.get("errcode", answer.get("StatusCode", 0)))
        if code not in (0, None):
            return f"robot error code {code}: {str(answer.get('msg') or answer.get('errmsg') or '')[:200]}"
    return None


def send_http(channel: ChannelConfig, payload: dict[str, Any], timeout: float) -> None:
    body = json.dumps(robot_body(channel, payload), ensure_ascii=False).encode()
    key = payload["idempotency_key"]
    headers = {"Content-Type": "application/json", KEY_HEADER: key, "User-Agent": "churnguard-alerts"}
    if channel.kind == "webhook" and channel.secret_env:
        timestamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = sign(secret(channel.secret_env), timestamp, body)
    try:
        # No redirects: a redirect would call an address the configuration did not name.
        response = _client().post(_url(channel), content=body, headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        raise DeliveryFailed(f"no answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"HTTP {response.status_code}")
    refused = _robot_accepted(channel, response)
    if refused:
        raise DeliveryFailed(refused)


def send_email(channel: ChannelConfig, payload: dict[str, Any], timeout: float) -> None:
    to = (payload.get("recipient") or {}).get("email")
    if not to:
        raise DeliveryFailed(
            f"no email address for {payload['recipient'].get('name')!r} in configs/alerts.yaml"
        )
    message = EmailMessage()
    message["Subject"] = payload["subject"]
    message["From"] = channel.sender
    message["To"] = to
    # The key as Message-ID: mail systems and the tests drop a second copy by it.
    message["Message-ID"] = f"<{payload['idempotency_key'].replace(':', '.')}@churnguard>"
    message[KEY_HEADER] = payload["idempotency_key"]
    message.set_content(payload["text"])
    try:
        with smtplib.SMTP(channel.smtp_host or "", channel.smtp_port, timeout=timeout) as smtp:
            if channel.starttls:
                smtp.starttls()
            if channel.username:
                smtp.login(channel.username, secret(channel.password_env or ""))
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        # The exception's text may quote the server's answer but never the password.
        raise DeliveryFailed(f"SMTP: {type(exc).__name__}") from None


def send(channel: ChannelConfig, payload: dict[str, Any], timeout: float) -> None:
    """Deliver or raise DeliveryFailed."""
    timeout = channel.timeout_seconds or timeout
    if channel.kind == "email":
        send_email(channel, payload, timeout)
    else:
        send_http(channel, payload, timeout)
