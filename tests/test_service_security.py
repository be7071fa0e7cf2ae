"""Who may call and how much: the security middleware (in-process ASGI) and the launcher's refusals."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

import pytest
from model_fixtures import telco_artifact_dir

from service.config import is_loopback
from service.run import EXIT_REFUSED, prepare_environment, serve
from service.security import SecurityMiddleware


async def _echo_app(scope, receive, send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok:%d" % len(body)})


def call(
    middleware: SecurityMiddleware,
    path: str = "/predict",
    *,
    token: str | None = None,
    client: str = "127.0.0.1",
    body: bytes = b"{}",
    declare_length: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    headers = [(b"content-type", b"application/json")]
    if declare_length:
        headers.append((b"content-length", str(len(body)).encode()))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "client": (client, 5000)}
    chunks = [body[i : i + 100] for i in range(0, len(body), 100)] or [b""]
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    start = sent[0]
    response_headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return start["status"], response_headers, b"".join(m.get("body", b"") for m in sent[1:])


def secured(**overrides) -> SecurityMiddleware:
    options = {"api_keys": [b"key-one", b"key-two"], "admin_keys": [b"admin"], "behind_proxy": False}
    options.update(overrides)
    return SecurityMiddleware(_echo_app, max_body_bytes=1000, **options)


def test_api_keys_are_required_and_compared(caplog: pytest.LogCaptureFixture) -> None:
    middleware = secured()
    with caplog.at_level(logging.INFO, logger="service.security"):
        status, headers, body = call(middleware, token=None)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert json.loads(body)["error"].startswith("missing or invalid API key")
        assert call(middleware, token="key-three")[0] == 401
    assert call(middleware, token="key-two")[0] == 200
    assert call(middleware, token="key-one", client="10.1.2.3")[0] == 200  # keys work from anywhere
    assert "key-three" not in caplog.text  # a refused key is never logged


def test_only_the_health_probes_stay_open() -> None:
    middleware = secured()
    for path in ("/livez", "/readyz", "/healthz"):
        assert call(middleware, path)[0] == 200
    assert call(middleware, "/metrics")[0] == 401


def test_the_live_loop_and_alert_routes_sit_under_the_same_keys() -> None:
    middleware = secured()
    for path in (
        "/events",
        "/customers",
        "/alerts",
        "/alerts/7",
        "/alerts/7/acknowledge",
        "/alerts/7/resolve",
    ):
        status, _, body = call(middleware, path)
        assert status == 401 and json.loads(body)["error"].startswith("missing or invalid API key"), path
        assert call(middleware, path, token="key-one")[0] == 200, path


def test_a_path_with_control_characters_gets_a_json_400() -> None:
    """No route takes one; without this the router answered a plain-text 404 (fuzzed alert ids)."""
    status, _, body = call(secured(), "/alerts/\n7/start", token="key-one")
    assert status == 400 and "control characters" in json.loads(body)["error"]
    assert call(secured(), "/alerts/\n7/start")[0] == 401  # the key is checked first


def test_admin_endpoints_need_an_admin_key() -> None:
    assert call(secured(), "/admin/reload", token="key-one")[0] == 401
    assert call(secured(), "/admin/reload", token="admin")[0] == 200
    closed = secured(api_keys=[], admin_keys=[])
    status, _, body = call(closed, "/admin/reload")
    assert status == 403 and b"CHURNGUARD_ADMIN_API_KEYS" in body


def test_without_keys_only_loopback_unless_behind_a_proxy() -> None:
    open_local = secured(api_keys=[], admin_keys=[])
    assert call(open_local, client="127.0.0.1")[0] == 200
    assert call(open_local, client="::1")[0] == 200
    status, _, body = call(open_local, client="192.0.2.10")
    assert status == 403 and b"only loopback" in body
    assert call(secured(api_keys=[], admin_keys=[], behind_proxy=True), client="192.0.2.10")[0] == 200


def test_body_limit_with_and_without_content_length() -> None:
    middleware = secured(api_keys=[], admin_keys=[])
    assert call(middleware, body=b"x" * 1000) == (200, {}, b"ok:1000")
    assert call(middleware, body=b"x" * 1001)[0] == 413
    assert call(middleware, body=b"x" * 999, declare_length=False)[2] == b"ok:999"  # replayed to the app
    status, _, body = call(middleware, body=b"x" * 5000, declare_length=False)
    assert status == 413 and b"max_body_bytes" in body


def test_loopback_addresses() -> None:
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("localhost")
        and is_loopback("::1")
        and is_loopback("127.8.0.1")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.com")


def test_serve_refuses_a_public_address_without_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHURNGUARD_API_KEYS", raising=False)
    monkeypatch.setenv("CHURNGUARD_STATE_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match=r"refusing to listen on 0\.0\.0\.0 without API keys"):
        prepare_environment(str(telco_artifact_dir()), "0.0.0.0", 3999, 1, False)
    assert serve(str(telco_artifact_dir()), "0.0.0.0", 3999, 1, False) == EXIT_REFUSED
    # Keys, or an authenticating proxy in front, make a public address acceptable.
    env, host, _, resolved = prepare_environment(str(telco_artifact_dir()), "0.0.0.0", 3999, 2, True)
    assert host == "0.0.0.0" and env["CHURNGUARD_SERVICE__SERVER__WORKERS"] == "2"
    assert env["CHURNGUARD_MODEL_DIR"] == str(resolved.local_dir)
    monkeypatch.setenv("CHURNGUARD_API_KEYS", "k")
    prepare_environment(str(telco_artifact_dir()), "0.0.0.0", 3999, 1, False)


def test_serve_refuses_a_model_that_breaks_its_contract(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHURNGUARD_STATE_DIR", str(tmp_path))
    broken = shutil.copytree(telco_artifact_dir(), tmp_path / "broken")
    (broken / "reference.parquet").unlink()
    with pytest.raises(SystemExit, match=r"refusing to serve .*broken.*missing reference\.parquet"):
        prepare_environment(str(broken), "127.0.0.1", 3999, 1, False)
    contract = json.loads((broken.parent / "broken" / "contract.json").read_text())
    contract["artifact_version"] = 99
    shutil.copy(telco_artifact_dir() / "reference.parquet", broken / "reference.parquet")
    (broken / "contract.json").write_text(json.dumps(contract))
    with pytest.raises(SystemExit, match="artifact version 99 is not supported"):
        prepare_environment(str(broken), "127.0.0.1", 3999, 1, False)
    with pytest.raises(SystemExit, match=r"not a churnguard model artifact, missing model\.cbm"):
        prepare_environment(str(tmp_path / "no-such-model"), "127.0.0.1", 3999, 1, False)
