"""The served model and how it changes: load, check, warm up, swap; poll the registry for a new champion.

A swap is one reference assignment. A request takes the current `ServedModel` once, when its body
is parsed, and scores with that one, so requests in flight finish on the old model while new ones
get the new model: no request fails because of a reload. A new version that fails its contract
check, its SHAP check or its warm-up is refused; the old one keeps serving, and the refused version
is not retried until the alias moves again (or an admin asks).

Each worker process polls on its own; `POST /admin/reload` reloads the worker that receives it, and
the others follow on their next poll.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from churnguard.artifact import ContractError
from churnguard.live import LiveFeatures
from churnguard.predict import Predictor
from churnguard.settings import state_dir
from churnguard.tracking import ResolvedModel, registry_errors, remember_model, resolve_model
from service.config import ServiceConfig
from service.payloads import RequestCodec

log = logging.getLogger(__name__)

ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")


@dataclass(frozen=True)
class ServedModel:
    predictor: Predictor
    codec: RequestCodec
    uri: str
    name: str | None
    version: str
    local_dir: Path
    live: LiveFeatures | None = None  # features from the event store; None for a snapshot model
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


@dataclass(frozen=True)
class ReloadOutcome:
    status: Literal["reloaded", "unchanged", "refused", "not_polled"]
    model_version: str
    previous_version: str | None = None
    message: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "model_version": self.model_version,
            "previous_version": self.previous_version,
            "message": self.message,
        }


def build_served(config: ServiceConfig, resolved: ResolvedModel, top_reasons: int) -> ServedModel:
    """Load, check and warm up a model (raises ContractError and friends when it cannot be served)."""
    predictor = Predictor.load(
        resolved.local_dir,
        resolved.version,
        top_reasons=top_reasons,
        range_tolerance=config.limits.range_tolerance,
        thread_count=config.model.threads,
    )
    predictor.warm_up()
    codec = RequestCodec(predictor.rules, config.limits.max_batch_rows)
    try:
        live = LiveFeatures(predictor.schema)
    except ValueError:  # a snapshot model scores the feature vectors callers send
        live = None
    return ServedModel(
        predictor, codec, resolved.uri, resolved.name, resolved.version, resolved.local_dir, live
    )


class ModelHolder:
    """Holds the current ServedModel of this worker and replaces it when the alias moves."""

    def __init__(self, config: ServiceConfig, served: ServedModel, top_reasons: int) -> None:
        self.config = config
        self.current = served
        self.top_reasons = top_reasons
        match = ALIAS_URI.match(served.uri)
        self.alias = (match["name"], match["alias"]) if match else None
        self.refused: dict[str, str] = {}
        self.last_check: str | None = None
        self.last_error: str | None = None
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Each worker downloads into its own folder: workers must not race on one download.
        self.cache_dir = state_dir() / "model-cache" / f"worker-{os.getpid()}"

    # ---------------------------------------------------------------------------------- polling

    def start_polling(self) -> None:
        interval = self.config.reload.poll_seconds
        if not interval or self.alias is None:
            log.info(
                "model reload polling is off (%s)", "poll_seconds is 0" if self.alias else "pinned model URI"
            )
            return
        self._thread = threading.Thread(
            target=self._poll_loop, args=(interval,), name="model-reload", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _poll_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.check(force=False)
            except Exception:  # the poller must outlive any one failed check; the next one may work
                log.exception("model reload check failed; still serving version %s", self.current.version)

    # ----------------------------------------------------------------------------------- checks

    def registry_version(self) -> str:
        from mlflow import MlflowClient

        from churnguard.tracking import configure_mlflow

        assert self.alias is not None
        configure_mlflow()
        name, alias = self.alias
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)

    def check(self, force: bool = True) -> ReloadOutcome:
        """Swap in the alias's version if it moved; `force` retries a version refused before.

        A registry that is down or unreachable is not the new version's fault: the old model keeps
        serving and the next poll asks again."""
        current = self.current
        if self.alias is None:
            return ReloadOutcome(
                "not_polled", current.version, message=f"{current.uri} is pinned; nothing to reload"
            )
        with self._reload_lock:
            self.last_check = datetime.now(UTC).isoformat(timespec="seconds")
            try:
                version = self.registry_version()
            except registry_errors() as exc:
                self.last_error = f"registry lookup failed: {_first_line(exc)}"
                log.warning("%s; still serving version %s", self.last_error, current.version)
                return ReloadOutcome("refused", current.version, current.version, self.last_error)
            if version == current.version:
                self.last_error = None  # the registry answers again, and nothing is pending
                return ReloadOutcome("unchanged", version, current.version)
            if version in self.refused and not force:
                return ReloadOutcome("refused", current.version, current.version, self.refused[version])
            return self._swap_to(version)

    def _swap_to(self, version: str) -> ReloadOutcome:
        previous = self.current
        name, alias = self.alias  # type: ignore[misc]
        started = time.perf_counter()
        try:
            resolved = resolve_model(f"models:/{name}/{version}", cache_dir=self.cache_dir)
        except registry_errors() as exc:  # a failed download says nothing about the version: retry
            self.last_error = f"version {version} of {name} could not be fetched: {_first_line(exc)}"
            log.warning("%s; still serving version %s", self.last_error, previous.version)
            return ReloadOutcome("refused", previous.version, previous.version, self.last_error)
        resolved = ResolvedModel(previous.uri, resolved.local_dir, name, version)
        try:
            served = build_served(self.config, resolved, self.top_reasons)
        except (ContractError, OSError, ValueError, KeyError) as exc:
            message = f"version {version} of {name} cannot be served: {exc}"
            self.refused[version] = message
            self.last_error = message
            log.error("%s; still serving version %s", message, previous.version)
            return ReloadOutcome("refused", previous.version, previous.version, message)
        self._report_schema_change(previous, served)
        self.current = served  # the swap: in-flight requests keep the model they started with
        self.last_error = None
        log.info(
            "now serving %s@%s version %s (was %s), loaded in %.1fs",
            name,
            alias,
            version,
            previous.version,
            time.perf_counter() - started,
        )
        self._drop_old_downloads(served.local_dir)
        try:
            remember_model(resolved)  # the model to fall back on when the registry is down at start
        except OSError as exc:
            log.warning("could not record version %s as the last served model: %s", version, exc)
        return ReloadOutcome("reloaded", version, previous.version)

    def _report_schema_change(self, previous: ServedModel, served: ServedModel) -> None:
        before, after = set(previous.predictor.schema.names), set(served.predictor.schema.names)
        if before != after:
            log.warning(
                "the new model's inputs differ: added %s, removed %s; clients must follow",
                sorted(after - before),
                sorted(before - after),
            )

    def _drop_old_downloads(self, keep: Path) -> None:
        if not self.cache_dir.is_dir():
            return
        for folder in self.cache_dir.iterdir():
            if folder.is_dir() and not keep.is_relative_to(folder):
                shutil.rmtree(folder, ignore_errors=True)

    def status(self) -> dict[str, object]:
        return {
            "poll_seconds": self.config.reload.poll_seconds if self.alias else 0,
            "alias": f"{self.alias[0]}@{self.alias[1]}" if self.alias else None,
            "last_check": self.last_check,
            "last_error": self.last_error,
            "refused_versions": sorted(self.refused),
        }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
