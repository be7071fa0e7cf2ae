"""`churnguard serve`: check everything that can be checked before listening, then run `bentoml serve`.

The launcher resolves the model once (so workers do not race to download it), checks its contract,
and refuses to start, saying why, when the model cannot be served or when it would listen on a
non-loopback address without API keys (unless told an authenticating proxy sits in front).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from churnguard.artifact import ContractError, ModelArtifact
from churnguard.settings import PROJECT_ROOT
from churnguard.tracking import RegistryUnavailable, ResolvedModel, resolve_model_for_serving
from service.config import (
    API_KEYS_ENV,
    MODEL_DIR_ENV,
    MODEL_URI_ENV,
    MODEL_VERSION_ENV,
    api_keys,
    is_loopback,
    load_service_config,
)

log = logging.getLogger(__name__)

SERVICE_TARGET = "service.app:ChurnService"
EXIT_REFUSED = 2


def bentoml_command(host: str, port: int) -> list[str]:
    executable = Path(sys.executable).with_name("bentoml")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "bentoml"]
    return [
        *command,
        "serve",
        SERVICE_TARGET,
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(PROJECT_ROOT),
    ]


def prepare_environment(
    model_uri: str | None, host: str | None, port: int | None, workers: int | None, behind_proxy: bool | None
) -> tuple[dict[str, str], str, int, ResolvedModel]:
    """The workers' environment, host and port; raises SystemExit with the reason when refusing."""
    config = load_service_config()
    host = host or config.server.host
    port = port or config.server.port
    workers = workers or config.server.workers
    behind_proxy = config.server.behind_proxy if behind_proxy is None else behind_proxy
    if not api_keys() and not behind_proxy and not is_loopback(host):
        raise SystemExit(
            f"refusing to listen on {host} without API keys: set {API_KEYS_ENV}=key1,key2, "
            "or pass --behind-proxy when an authenticating proxy sits in front of the service"
        )
    uri = config.model_uri(model_uri)
    try:
        resolved = resolve_model_for_serving(uri, config.model.on_registry_error == "serve_cached")
    except RegistryUnavailable as exc:  # registry down or unreachable, missing alias, no cached copy
        raise SystemExit(str(exc)) from None
    try:
        artifact = ModelArtifact.load(resolved.local_dir)
    except ContractError as exc:
        raise SystemExit(f"refusing to serve {uri} (version {resolved.version}): {exc}") from None
    log.info(
        "serving %s version %s (%s, trained on %s) on %s:%s with %s worker(s)",
        uri,
        resolved.version,
        artifact.contract.model_name,
        artifact.contract.dataset,
        host,
        port,
        workers,
    )
    env = dict(os.environ)
    env.update(
        {
            MODEL_URI_ENV: uri,
            MODEL_DIR_ENV: str(resolved.local_dir),
            MODEL_VERSION_ENV: resolved.version,
            "CHURNGUARD_SERVICE__SERVER__WORKERS": str(workers),
            "CHURNGUARD_SERVICE__SERVER__BEHIND_PROXY": "true" if behind_proxy else "false",
            "CHURNGUARD_SERVICE__SERVER__HOST": host,
            "CHURNGUARD_SERVICE__SERVER__PORT": str(port),
            "BENTOML_DO_NOT_TRACK": "true",
        }
    )
    return env, host, port, resolved


def serve(
    model_uri: str | None = None,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    behind_proxy: bool | None = None,
) -> int:
    """Run the service until interrupted; returns the server's exit code (2 when it refused to start)."""
    try:
        env, host, port, _ = prepare_environment(model_uri, host, port, workers, behind_proxy)
    except SystemExit as refusal:
        log.error("%s", refusal)
        return EXIT_REFUSED
    process = subprocess.Popen(bentoml_command(host, port), env=env, cwd=PROJECT_ROOT)

    def forward(signum: int, _frame: object) -> None:
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """`python -m service.run`: the container's entry point (the same as `churnguard serve`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m service.run", description="run the churnguard service")
    parser.add_argument(
        "--model", help="model URI (default: CHURNGUARD_MODEL_URI, else configs/service.yaml)"
    )
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--behind-proxy", action="store_true", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(args.model, args.host, args.port, args.workers, args.behind_proxy)


if __name__ == "__main__":
    sys.exit(main())
