"""The service's configuration (`configs/service.yaml`, `CHURNGUARD_SERVICE__*` overrides) and the
process environment that `churnguard serve` hands to the BentoML workers.

Secrets never live in the YAML: API keys come only from `CHURNGUARD_API_KEYS` (comma-separated) and,
for the admin endpoints, `CHURNGUARD_ADMIN_API_KEYS` (falls back to the API keys).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Literal

from pydantic import Field

from churnguard.config import StrictModel, load_named
from churnguard.inputs import DEFAULT_RANGE_TOLERANCE

MODEL_URI_ENV = "CHURNGUARD_MODEL_URI"
# Set by `churnguard serve` after it resolved and checked the model, so workers do not race to download.
MODEL_DIR_ENV = "CHURNGUARD_MODEL_DIR"
MODEL_VERSION_ENV = "CHURNGUARD_MODEL_VERSION"
API_KEYS_ENV = "CHURNGUARD_API_KEYS"
ADMIN_KEYS_ENV = "CHURNGUARD_ADMIN_API_KEYS"


class ModelSettings(StrictModel):
    name: str = Field(
        "churn-crm", description="registered model name; the default URI is models:/<name>@<alias>"
    )
    alias: str = "champion"
    uri: str | None = Field(None, description="any MLflow model URI or artifact folder; overrides name/alias")
    threads: int = Field(-1, description="CatBoost threads for large batches (-1: all cores)")
    on_registry_error: Literal["fail", "serve_cached"] = Field(
        "fail",
        description="registry unreachable at start: fail saying why, or serve the last model this host "
        "served for the URI (kept under <state>/model-cache)",
    )


class ServerSettings(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    behind_proxy: bool = Field(
        False, description="listen without API keys on any address (a proxy authenticates)"
    )
    timeout_seconds: int = Field(120, ge=1)
    max_concurrency: int | None = Field(None, ge=1, description="requests in flight per service before 503")
    access_log: bool = True


class LimitSettings(StrictModel):
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_batch_rows: int = Field(50_000, ge=1)
    range_tolerance: float = Field(DEFAULT_RANGE_TOLERANCE, ge=0)


class ReloadSettings(StrictModel):
    poll_seconds: float = Field(30.0, ge=0, description="how often to check the alias; 0 turns polling off")


class PredictionLogSettings(StrictModel):
    enabled: bool = True
    url: str | None = Field(None, description="sqlite:///PATH or postgresql://...; null: the default log")
    synchronous: Literal["normal", "full"] = "normal"
    batch_rows: int = Field(1_000, ge=1, description="batches this large are stored as one columnar record")


class EventStoreSettings(StrictModel):
    enabled: bool = True
    url: str | None = Field(
        None,
        description="sqlite:///PATH or postgresql://...; null: $CHURNGUARD_EVENT_STORE or <state>/events.db",
    )
    max_events: int = Field(100_000, ge=1, description="events per POST /events request (413 beyond)")


class OutboxSettings(StrictModel):
    deliver_seconds: float = Field(
        0.0,
        ge=0,
        description="each worker delivers the alert outbox this often; 0: off (`churnguard alerts deliver`)",
    )


class ServiceConfig(StrictModel):
    model: ModelSettings = ModelSettings()
    server: ServerSettings = ServerSettings()
    limits: LimitSettings = LimitSettings()
    reload: ReloadSettings = ReloadSettings()
    prediction_log: PredictionLogSettings = PredictionLogSettings()
    event_store: EventStoreSettings = EventStoreSettings()
    outbox: OutboxSettings = OutboxSettings()

    def model_uri(self, override: str | None = None) -> str:
        """--model, else CHURNGUARD_MODEL_URI, else model.uri, else models:/<name>@<alias>."""
        return (
            override
            or os.environ.get(MODEL_URI_ENV)
            or self.model.uri
            or f"models:/{self.model.name}@{self.model.alias}"
        )


def load_service_config() -> ServiceConfig:
    return load_named(ServiceConfig, "service")


def api_keys(variable: str = API_KEYS_ENV) -> list[bytes]:
    return [key.strip().encode() for key in os.environ.get(variable, "").split(",") if key.strip()]


def admin_keys() -> list[bytes]:
    return api_keys(ADMIN_KEYS_ENV) or api_keys()


def is_loopback(host: str) -> bool:
    if host in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
