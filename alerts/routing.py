"""Who hears about an alert, how, in which language and by when: configs/alerts.yaml. When an alert is
raised (triggers, cool-down, daily cap) is the scoring policy's: configs/scoring.yaml `alerts:`.

An owner (the customer's `account_owner`) may have an entry of their own and may belong to a team;
what the owner's entry does not say comes from the team, then from the top level. A manager is routed
like an owner. Channels are named once under `channels:` and referred to by name, so the service only
ever calls an address the file names. Secrets (webhook and signing secrets, SMTP passwords, URLs that
embed a token) are never in the file: it names the environment variable that holds them.

`CHURNGUARD_ALERTS_CONFIG` points at another file; `CHURNGUARD_ALERTS__<KEY>` overrides one key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from churnguard.alerting import POLICY_KEYS, AlertPolicy
from churnguard.config import ConfigError, StrictModel, deep_merge, env_overrides, read_yaml, validate
from churnguard.settings import config_dir

CONFIG_ENV = "CHURNGUARD_ALERTS_CONFIG"
Language = Literal["en", "zh"]
ChannelKind = Literal["webhook", "slack", "feishu", "dingtalk", "wecom", "email"]
HTTP_KINDS = ("webhook", "slack", "feishu", "dingtalk", "wecom")


class ChannelConfig(StrictModel):
    kind: ChannelKind
    url: str | None = Field(None, description="the incoming-webhook address (http or https)")
    url_env: str | None = Field(None, description="environment variable holding a URL that embeds a token")
    secret_env: str | None = Field(
        None, description="environment variable with the signing secret (webhook HMAC, Feishu, DingTalk)"
    )
    smtp_host: str | None = None
    smtp_port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    username: str | None = None
    password_env: str | None = Field(None, description="environment variable with the SMTP password")
    sender: str | None = Field(None, description="From: address of alert email")
    timeout_seconds: float | None = Field(None, gt=0, description="overrides delivery.timeout_seconds")

    @model_validator(mode="after")
    def _complete(self) -> ChannelConfig:
        if self.kind in HTTP_KINDS:
            if (self.url is None) == (self.url_env is None):
                raise ValueError(f"a {self.kind} channel needs exactly one of url or url_env")
            if self.url is not None and urlsplit(self.url).scheme not in {"http", "https"}:
                raise ValueError(f"url must be http:// or https://, got {self.url!r}")
        elif self.smtp_host is None or self.sender is None:
            raise ValueError("an email channel needs smtp_host and sender")
        return self


class RecipientConfig(StrictModel):
    """An owner's or a team's routing; unset fields fall back (owner -> team -> top level)."""

    team: str | None = Field(None, description="owners only: the team they belong to")
    members: list[str] = Field([], description="teams only: owners in the team")
    channels: list[str] | None = None
    language: Language | None = None
    manager: str | None = Field(None, description="escalations go to this person, routed like an owner")
    email: str | None = Field(None, description="address for email channels")
    sla_hours: float | None = Field(None, gt=0)
    daily_cap: int | None = Field(None, ge=0)


class DeliveryConfig(StrictModel):
    timeout_seconds: float = Field(5.0, gt=0)
    max_attempts: int = Field(8, ge=1, description="tries before a delivery is a dead letter")
    backoff_seconds: float = Field(30.0, ge=0, description="wait after the first failure; doubles each time")
    backoff_max_seconds: float = Field(3600.0, ge=0)
    lease_seconds: float = Field(
        120.0, gt=0, description="a delivery claimed this long ago by a process that died is tried again"
    )


class AlertsConfig(StrictModel):
    enabled: bool = True
    # Not read from this file: the triggers, cool-down and daily cap of configs/scoring.yaml `alerts:`,
    # filled in by load_alerts_config.
    policy: AlertPolicy = AlertPolicy()
    sla_hours: float = Field(24.0, gt=0, description="acknowledge within this, or the manager hears")
    language: Language = "en"
    top_reasons: int = Field(3, ge=1, le=10)
    link: str | None = Field(None, description="where to act, e.g. https://cs.example/alerts/{alert_id}")
    delivery: DeliveryConfig = DeliveryConfig()
    channels: dict[str, ChannelConfig] = {}
    default_channels: list[str] = Field([], description="channels of owners with no entry or team")
    teams: dict[str, RecipientConfig] = {}
    owners: dict[str, RecipientConfig] = {}

    @model_validator(mode="after")
    def _names_resolve(self) -> AlertsConfig:
        lists = [("default_channels", self.default_channels)]
        for kind, entries in (("teams", self.teams), ("owners", self.owners)):
            lists += [(f"{kind}.{name}.channels", entry.channels or []) for name, entry in entries.items()]
            for name, entry in entries.items():
                if entry.team is not None and entry.team not in self.teams:
                    raise ValueError(f"{kind}.{name}.team: no team {entry.team!r} under teams")
        for where, names in lists:
            unknown = [name for name in names if name not in self.channels]
            if unknown:
                raise ValueError(f"{where}: unknown channel(s) {unknown}; channels: {sorted(self.channels)}")
        if self.link is not None and "{alert_id}" not in self.link:
            raise ValueError("link must contain {alert_id}")
        return self

    def route(self, person: str | None) -> Route:
        """The routing of an owner (or manager) by name; an unknown or missing name gets the defaults."""
        own = self.owners.get(person or "")
        team_name = own.team if own is not None and own.team else None
        if team_name is None:
            team_name = next((name for name, team in self.teams.items() if person in team.members), None)
        team = self.teams.get(team_name) if team_name else None

        def pick(field: str, default: object) -> object:
            for entry in (own, team):
                value = getattr(entry, field) if entry is not None else None
                if value is not None:
                    return value
            return default

        return Route(
            person=person or "",
            team=team_name,
            channels=list(pick("channels", self.default_channels)),  # type: ignore[arg-type]
            language=pick("language", self.language),  # type: ignore[arg-type]
            manager=pick("manager", None),  # type: ignore[arg-type]
            email=pick("email", None),  # type: ignore[arg-type]
            sla_hours=float(pick("sla_hours", self.sla_hours)),  # type: ignore[arg-type]
            daily_cap=int(pick("daily_cap", self.policy.daily_cap)),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Route:
    person: str
    team: str | None
    channels: list[str]
    language: Language
    manager: str | None
    email: str | None
    sla_hours: float
    daily_cap: int


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or config_dir() / "alerts.yaml")


def load_alerts_config(path: Path | None = None, policy: AlertPolicy | None = None) -> AlertsConfig:
    """Routing from `path` (configs/alerts.yaml); the triggers from `policy`, else configs/scoring.yaml."""
    path = path or config_path()
    # Overrides are CHURNGUARD_ALERTS__* whatever the file is called.
    data = deep_merge(read_yaml(path), env_overrides("CHURNGUARD_ALERTS"))
    moved = [key for key in (*POLICY_KEYS, "triggers", "policy") if key in data]
    if moved:
        raise ConfigError(
            f"{path}: {', '.join(moved)} moved to configs/scoring.yaml under `alerts:` "
            f"({', '.join(POLICY_KEYS)}; override with CHURNGUARD_SCORING__ALERTS__<KEY>); "
            "this file keeps the routing and channels (an owner or team may still set daily_cap)"
        )
    if policy is None:
        from churnguard.scoring import load_scoring_config

        policy = load_scoring_config().alerts
    return validate(AlertsConfig, {**data, "policy": policy.model_dump()}, str(path))


def secret(variable: str) -> str:
    """A secret from the environment; the message names the variable, never a value."""
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"environment variable {variable} is not set (configs/alerts.yaml names it)")
    return value
