"""Early-warning rules: the thresholds a CRM team thinks in, next to the model's score.

A rule is YAML only (configs/scoring.yaml, `rules:`): a stable code, a severity, the conditions that
must all hold, and a message in English and Simplified Chinese. A condition reads one number:
- `event` + `measure` (+ `window_days`): an event feature of the model, e.g. order count over 90 days
  (`order__count_90d`); windowed: count, sum, mean, max; without a window: `trend` (the last 30 days'
  rate against the 90 days before, as a ratio), `mom` (the last 30 days against the 30 before),
  `days_since_last`, `last` and `previous` (the values of the latest event and of the one before);
- `feature`: any numeric feature by name (static attributes, snapshot models);
- `history: health_drop` + `window_days`: the customer's health score at the start of the window
  (the oldest score logged in it) minus the health score now, from the prediction log.
A rule whose features the served model does not have is inactive (GET /model lists why), so one
rule set serves the event models and the snapshot models alike.

Escalation: a hit rule raises the alert tier to at least its `escalate_to`, or to the minimum that
`escalation:` gives its severity (by default any `critical` rule means at least `medium`). The
answer keeps the model's own tier as `model_tier` and names the rules that raised it.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np
from pydantic import Field, model_validator

from churnguard.config import StrictModel
from churnguard.features import MOM_DAYS, TREND_BASELINE_DAYS, TREND_RECENT_DAYS
from churnguard.messages import Language
from churnguard.schema import FeatureSchema, SignalGroup
from churnguard.tiers import TIER_RANK, Tier, tier_ranks

_JSON = msgspec.json.Encoder()

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"critical": 0, "warning": 1, "info": 2}
Measure = Literal["count", "sum", "mean", "max", "trend", "mom", "days_since_last", "last", "previous"]
WINDOWED_MEASURES = frozenset({"count", "sum", "mean", "max"})
Operator = Literal["<", "<=", "==", "!=", ">=", ">"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")
RULE_CODE_PREFIX = "rule:"
HEALTH_DROP = "health_drop"

_OPERATORS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "<": np.less,
    "<=": np.less_equal,
    "==": np.equal,
    "!=": np.not_equal,
    ">=": np.greater_equal,
    ">": np.greater,
}
# (window_days, row positions) -> the health at the start of the window for those rows, NaN if unknown.
ReferenceHealth = Callable[[int, np.ndarray], np.ndarray]
_TIER_OF_RANK = np.array(sorted(TIER_RANK, key=TIER_RANK.__getitem__))  # rank 0 -> "low"
# The window a change measure's {window} names: the recent period it compares.
_CHANGE_WINDOWS = {"trend": TREND_RECENT_DAYS, "mom": MOM_DAYS}
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_PLACEHOLDERS = ("value", "threshold", "window", "percent", "times")


# ---------------------------------------------------------------------------------------------- config


class Condition(StrictModel):
    """One number compared with a threshold; exactly one of `event`, `feature` or `history`."""

    event: str | None = Field(None, description="event type, e.g. order; with `measure`")
    measure: Measure | None = None
    window_days: int | None = Field(None, gt=0, description="window of count/sum/mean and history")
    feature: str | None = Field(None, description="a numeric feature of the model, by name")
    history: Literal["health_drop"] | None = Field(None, description="from the prediction log")
    op: Operator
    value: float = Field(description="the threshold")
    if_missing: bool = Field(False, description="whether a missing value counts as a hit")

    @model_validator(mode="after")
    def _one_source(self) -> Condition:
        sources = [name for name in ("event", "feature", "history") if getattr(self, name) is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of `event` (with `measure`), `feature` or `history`")
        if self.event is not None:
            if self.measure is None:
                raise ValueError(
                    "`event` needs a `measure`: count, sum, mean, max, trend, mom, days_since_last, last "
                    "or previous"
                )
            windowed = self.measure in WINDOWED_MEASURES
            if windowed and self.window_days is None:
                raise ValueError(f"measure `{self.measure}` needs `window_days` (e.g. 30 or 90)")
            if not windowed and self.window_days is not None:
                raise ValueError(
                    f"measure `{self.measure}` has no window: leave out `window_days` (the trend always "
                    f"compares the last {TREND_RECENT_DAYS} days with the {TREND_BASELINE_DAYS} before, "
                    f"mom the last {MOM_DAYS} with the {MOM_DAYS} before)"
                )
        elif self.measure is not None:
            raise ValueError("`measure` goes with `event`")
        if self.history is not None and self.window_days is None:
            raise ValueError("`history` needs `window_days`, e.g. 90")
        if self.feature is not None and self.window_days is not None:
            raise ValueError("`window_days` goes with `event` or `history`, not with `feature`")
        return self

    @property
    def feature_name(self) -> str | None:
        """The model feature this condition reads (None for history)."""
        if self.feature is not None:
            return self.feature
        if self.event is None:
            return None
        if self.measure == "trend":
            return f"{self.event}__trend_{TREND_RECENT_DAYS}_{TREND_BASELINE_DAYS}"
        if self.measure in WINDOWED_MEASURES:
            return f"{self.event}__{self.measure}_{self.window_days}d"
        return f"{self.event}__{self.measure}"


class Messages(StrictModel):
    """The rule's message in each language; placeholders: see `placeholders`."""

    en: str = Field(min_length=1)
    zh: str = Field(min_length=1)


def placeholders(conditions: int) -> list[str]:
    """Names a message may use: {value}, {threshold}, {window}, {percent} (|1 - value| as a whole
    percentage, for trends), {times} (the value as a multiple); `_2`, `_3`... for later conditions."""
    return [f"{name}{_suffix(i)}" for i in range(conditions) for name in _PLACEHOLDERS]


def _suffix(position: int) -> str:
    return "" if position == 0 else f"_{position + 1}"


class RuleConfig(StrictModel):
    severity: Severity = "warning"
    when: list[Condition] = Field(min_length=1, description="all must hold")
    message: Messages
    escalate_to: Tier | None = Field(None, description="minimum tier when hit (default: by severity)")
    group: SignalGroup | None = Field(None, description="signal group (default: the first feature's)")

    @model_validator(mode="after")
    def _messages_use_known_placeholders(self) -> RuleConfig:
        allowed = placeholders(len(self.when))
        for language in LANGUAGES:
            template = getattr(self.message, language)
            try:
                fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
            except ValueError as exc:
                raise ValueError(f"message.{language}: not a valid template ({exc})") from None
            unknown = [name for name in fields if name not in allowed]
            if unknown:
                raise ValueError(
                    f"message.{language}: unknown placeholder {{{unknown[0]}}}; expected one of "
                    + ", ".join(f"{{{name}}}" for name in allowed)
                )
        return self


class EscalationConfig(StrictModel):
    """Minimum alert tier a hit rule of each severity sets (a rule's `escalate_to` overrides it)."""

    critical: Tier | None = "medium"
    warning: Tier | None = None
    info: Tier | None = None


def check_rule_names(rules: Mapping[str, RuleConfig]) -> None:
    bad = [name for name in rules if not _CODE.match(name)]
    if bad:
        raise ValueError(
            f"rule code {bad[0]!r}: expected lower-case letters, digits and underscores, "
            "starting with a letter (it becomes the stable reason code rule:<code>)"
        )


# ------------------------------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class Rule:
    """An active rule, compiled against one model's schema."""

    code: str  # rule:<name>
    name: str
    config: RuleConfig
    features: tuple[str | None, ...]  # per condition; None for history
    group: str
    min_tier: Tier | None

    @property
    def severity(self) -> str:
        return self.config.severity


class RuleBook:
    """The configured rules, split into the ones this model can evaluate and the ones it cannot."""

    def __init__(
        self, rules: Mapping[str, RuleConfig], escalation: EscalationConfig, schema: FeatureSchema
    ) -> None:
        specs = {spec.name: spec for spec in schema.features}
        self.active: list[Rule] = []
        self.inactive: dict[str, str] = {}
        for name, config in rules.items():
            features = tuple(condition.feature_name for condition in config.when)
            missing = [f for f in features if f is not None and f not in specs]
            categorical = [f for f in features if f is not None and f in specs and specs[f].categorical]
            if missing:
                self.inactive[name] = f"the model has no feature {', '.join(missing)}"
                continue
            if categorical:
                self.inactive[name] = f"feature {', '.join(categorical)} is categorical, not a number"
                continue
            first = next((f for f in features if f is not None), None)
            group = config.group or (specs[first].group if first else "relationship")
            min_tier = config.escalate_to or getattr(escalation, config.severity)
            self.active.append(Rule(RULE_CODE_PREFIX + name, name, config, features, group, min_tier))
        # Most severe first: that is the order their reasons are listed in.
        self.active.sort(key=lambda rule: SEVERITY_RANK[rule.severity])

    def describe(self) -> dict[str, object]:
        """What GET /model says about the rules."""
        return {
            "active": [
                {
                    "code": rule.code,
                    "severity": rule.severity,
                    "escalates_to": rule.min_tier,
                    "reads": [f if f is not None else HEALTH_DROP for f in rule.features],
                }
                for rule in self.active
            ],
            "inactive": [
                {"code": RULE_CODE_PREFIX + name, "why": why} for name, why in self.inactive.items()
            ],
        }

    def evaluate(
        self,
        column: Callable[[str], np.ndarray],
        health: np.ndarray,
        model_tier: np.ndarray,
        reference_health: ReferenceHealth | None = None,
    ) -> RuleHits:
        """Hits of every active rule for a batch. `column(name)` gives a numeric feature as floats;
        `reference_health(window, rows)` the health at the start of a history window for those rows
        (NaN if unknown), asked only for the rows where the answer can change a hit."""
        rows = len(health)
        hits = np.zeros((rows, len(self.active)), dtype=bool)
        observed: list[np.ndarray] = []
        for position, rule in enumerate(self.active):
            values = np.full((rows, len(rule.features)), np.nan)
            hit = np.ones(rows, dtype=bool)
            # Feature conditions first, so the history is read only for the rows they leave standing.
            for k in sorted(range(len(rule.features)), key=lambda k: rule.features[k] is None):
                condition, feature = rule.config.when[k], rule.features[k]
                if feature is not None:
                    value = np.asarray(column(feature), dtype=float)
                else:
                    value = _health_drop(condition, health, hit, reference_health)
                values[:, k] = value
                holds = _OPERATORS[condition.op](value, condition.value)  # False where NaN
                hit &= (holds | np.isnan(value)) if condition.if_missing else holds
            hits[:, position] = hit
            observed.append(values)
        return RuleHits(self.active, hits, observed, np.asarray(model_tier, dtype=object))


def _health_drop(
    condition: Condition, health: np.ndarray, standing: np.ndarray, reference_health: ReferenceHealth | None
) -> np.ndarray:
    """The health lost since the start of the condition's window (NaN where not looked up or unknown).

    A past health is 0-100, so the drop lies in [-health, 100 - health]: a row where no drop in that
    range meets the condition (and a missing history is no hit) needs no lookup in the log."""
    drop = np.full(len(health), np.nan)
    if reference_health is None:
        return drop
    health = np.asarray(health, dtype=float)
    wanted = standing if condition.if_missing else standing & _may_hold(condition, -health, 100 - health)
    rows = np.flatnonzero(wanted)
    if rows.size:
        past = np.asarray(reference_health(int(condition.window_days), rows), dtype=float)  # type: ignore[arg-type]
        drop[rows] = past - health[rows]
    return drop


def _may_hold(condition: Condition, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Where `value <op> threshold` holds for some value in [low, high]."""
    op, threshold = condition.op, condition.value
    if op in (">=", ">"):
        return _OPERATORS[op](high, threshold)
    if op in ("<=", "<"):
        return _OPERATORS[op](low, threshold)
    if op == "==":
        return (low <= threshold) & (threshold <= high)
    return np.ones(len(low), dtype=bool)  # "!=": some value in any range differs


class RuleHits:
    """The rules each customer hit, the tier after escalation, and the reasons in either language."""

    def __init__(
        self, rules: list[Rule], hits: np.ndarray, observed: list[np.ndarray], model_tier: np.ndarray
    ) -> None:
        self.rules = rules
        self.hits = hits  # (rows, rules)
        self.observed = observed  # per rule: (rows, conditions) the values compared
        self.model_tier = model_tier
        rank = tier_ranks(model_tier)
        if rules:
            floor = np.array([TIER_RANK[r.min_tier] if r.min_tier else -1 for r in rules], dtype=np.int64)
            # A rule escalates a customer when it is hit and asks for more than the model gave.
            self.escalating = hits & (floor > rank[:, None])
            rank = np.maximum(rank, np.where(hits, floor, -1).max(axis=1, initial=-1))
        else:
            self.escalating = hits
        self.tier = _TIER_OF_RANK[rank]

    def __len__(self) -> int:
        return len(self.hits)

    def escalated_by(self) -> list[list[str]]:
        return self._codes(self.escalating)

    def hit_codes(self) -> list[list[str]]:
        return self._codes(self.hits)

    def _codes(self, mask: np.ndarray) -> list[list[str]]:
        """Per customer, the codes of the rules set in `mask`, in rule order (no numpy call per row)."""
        out: list[list[str]] = [[] for _ in range(len(self))]
        codes = [rule.code for rule in self.rules]
        for row, position in zip(*np.nonzero(mask), strict=True):
            out[row].append(codes[position])
        return out

    def reasons(self, language: Language = "en") -> list[list[dict]]:
        """Per customer, one reason per hit rule (most severe first)."""
        out: list[list[dict]] = [[] for _ in range(len(self))]
        for rows, distinct, which in self._by_rule(language):
            for row, k in zip(rows.tolist(), which.tolist(), strict=True):
                out[row].append(dict(distinct[k]))  # a dict per row: callers may change theirs
        return out

    def reasons_json(self, language: Language = "en") -> list[str | None]:
        """Per customer, the JSON objects of `reasons`, comma-joined (None for none): each distinct
        reason is encoded once, and the rows that share it take its text."""
        out = np.full(len(self), None, dtype=object)
        for rows, distinct, which in self._by_rule(language):
            encoded = np.empty(len(distinct), dtype=object)
            encoded[:] = [_JSON.encode(reason).decode() for reason in distinct]
            texts = encoded[which]
            earlier = out[rows]
            later = ~np.equal(earlier, None)  # rows that already hit a more severe rule
            texts[later] = earlier[later] + "," + texts[later]
            out[rows] = texts
        return out.tolist()

    def _by_rule(self, language: Language) -> Iterator[tuple[np.ndarray, list[dict], np.ndarray]]:
        """Rule by rule (rules are in severity order, so each row's reasons stay most severe first):
        the rows that hit it, its distinct reasons (one per distinct observed values and escalation),
        and which of them each of those rows has."""
        for position, rule in enumerate(self.rules):
            rows = np.flatnonzero(self.hits[:, position])
            if not rows.size:
                continue
            keys = np.column_stack([self.observed[position][rows], self.escalating[rows, position]])
            _, first, which = np.unique(keys, axis=0, return_index=True, return_inverse=True)
            distinct = [
                self._reason(rule, values, escalates, language)
                for values, escalates in zip(
                    self.observed[position][rows[first]].tolist(),
                    self.escalating[rows[first], position].tolist(),
                    strict=True,
                )
            ]
            yield rows, distinct, which.ravel()

    def _reason(self, rule: Rule, values: list[float], escalates: bool, language: Language) -> dict:
        first = values[0]
        return {
            "code": rule.code,
            "feature": rule.features[0] if rule.features[0] is not None else HEALTH_DROP,
            "group": rule.group,
            "value": None if math.isnan(first) else _plain(first),
            "impact": None,
            "message": render(rule.config, values, language),
            "severity": rule.severity,
            "escalated": escalates,
        }


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 4)


def _number(value: float) -> str:
    if math.isnan(value):
        return "?"
    if abs(value) >= 10 or float(value).is_integer():
        return f"{round(value):,}"
    return f"{value:.1f}".rstrip("0").rstrip(".")


def render(config: RuleConfig, values: Sequence[float], language: Language) -> str:
    """The rule's message with the observed values filled in."""
    fields: dict[str, str] = {}
    for position, (condition, value) in enumerate(zip(config.when, values, strict=True)):
        suffix = _suffix(position)
        value = float(value)
        window = condition.window_days or _CHANGE_WINDOWS.get(condition.measure or "")
        fields[f"value{suffix}"] = _number(value)
        fields[f"threshold{suffix}"] = _number(condition.value)
        fields[f"window{suffix}"] = str(window) if window else ""
        fields[f"percent{suffix}"] = "?" if math.isnan(value) else f"{round(abs(1 - value) * 100)}"
        fields[f"times{suffix}"] = "?" if math.isnan(value) else f"{value:.1f}".rstrip("0").rstrip(".")
    return getattr(config.message, language).format(**fields)
