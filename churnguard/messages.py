"""Short human messages about one feature's value, in English and Simplified Chinese.

A message is phrased from the feature's FeatureSpec (its kind, event label and window), so every
dataset gets readable reasons without writing any. One template table per language: adding a language
is adding a table, and both languages always cover the same cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from churnguard.features import MOM_DAYS, TREND_BASELINE_DAYS
from churnguard.schema import FeatureSchema, FeatureSpec

Language = Literal["en", "zh"]
MISSING_CATEGORY = "__missing__"  # FeatureSchema.coerce's spelling of a missing category

# Placeholders: {name} feature name, {label} event label, {n} the number, {window} a window phrase,
# {days} compared days, {percent} a change, {value} a category, {context} where a value sits,
# {source} the date column a days-since or age feature counts from (the file's own name).
TEMPLATES: dict[Language, dict[str, str]] = {
    "en": {
        "window": "the last {days} days",
        "no_window": "the period",
        "categorical": "{name} is {value}",
        "missing": "{name} is missing",
        "days_since_last": "no {label} for {n} days",
        "days_since_last_missing": "no {label} on record",
        "change_missing": "no {label} in the previous {days} days to compare with",
        "change_steady": "{label} steady against the previous {days} days",
        "change_down": "{label} down {percent} against the previous {days} days",
        "change_up": "{label} up {percent} against the previous {days} days",
        "tenure": "customer for {n} days",
        "days_since": "{source} {n} days ago",
        "age_years": "{source} {n} years ago",
        "date_missing": "no {source} on record",
        "count": "{n} {label} in {window}",
        "count_zero": "no {label} in {window}",
        "sum": "{label} totalling {n} in {window}",
        "sum_zero": "no {label} in {window}",
        "mean": "{label} averaging {n} over {window}",
        "max": "{label} peaking at {n} in {window}",
        "max_missing": "no {label} with a value in {window}",
        "last": "latest of the {label}: {n}",
        "previous": "the one before the latest of the {label}: {n}",
        "last_missing": "no {label} on record",
        "number": "{name} is {n}{context}",
        "contract": "{label}: {n}",
        "contract_change": "{label}: {percent}",
        "contract_missing": "{label}: no contract on record",
        "lower_than": " (lower than {share} of customers)",
        "higher_than": " (higher than {share} of customers)",
    },
    "zh": {
        "window": "近 {days} 天",
        "no_window": "统计期内",
        "categorical": "{name} 为 {value}",
        "missing": "{name} 缺失",
        "days_since_last": "已 {n} 天没有{label}",
        "days_since_last_missing": "没有{label}记录",
        "change_missing": "此前 {days} 天没有{label}，无从比较",
        "change_steady": "{label}与此前 {days} 天持平",
        "change_down": "{label}较此前 {days} 天下降 {percent}",
        "change_up": "{label}较此前 {days} 天上升 {percent}",
        "tenure": "已合作 {n} 天",
        "days_since": "{source} 距今 {n} 天",
        "age_years": "{source} 距今 {n} 年",
        "date_missing": "没有 {source} 记录",
        "count": "{window}{label} {n} 次",
        "count_zero": "{window}没有{label}",
        "sum": "{window}{label}合计 {n}",
        "sum_zero": "{window}没有{label}",
        "mean": "{window}{label}平均 {n}",
        "max": "{window}{label}最高 {n}",
        "max_missing": "{window}没有带数值的{label}",
        "last": "最近一次{label}：{n}",
        "previous": "上一次{label}：{n}",
        "last_missing": "没有{label}记录",
        "number": "{name} 为 {n}{context}",
        "contract": "{label}：{n}",
        "contract_change": "{label}：{percent}",
        "contract_missing": "{label}：没有合同记录",
        "lower_than": "（低于 {share} 的客户）",
        "higher_than": "（高于 {share} 的客户）",
    },
}

# Chinese names of the event types the CRM data uses; other types keep their own label.
EVENT_LABELS_ZH = {
    "login": "登录",
    "feature_use": "功能使用",
    "order": "订单",
    "payment": "付款",
    "ticket": "支持工单",
    "complaint": "投诉",
    "csat": "满意度评分",
    "nps": "NPS 评分",
    "email_open": "邮件打开",
    "webinar": "网络研讨会参与",
    "contact_change": "关键联系人变更",
}

# Compared days of the change measures: trend against the 90 days before, month over month the 30.
_CHANGE_DAYS = {"trend": TREND_BASELINE_DAYS, "mom": MOM_DAYS}


@dataclass(frozen=True)
class ReferenceRanks:
    """Sorted reference values of numeric static features, to say where a value sits among customers."""

    sorted_values: dict[str, np.ndarray]

    @classmethod
    def from_frame(cls, schema: FeatureSchema, reference: pd.DataFrame) -> ReferenceRanks:
        ranks = {}
        for spec in schema.features:
            if spec.categorical or spec.kind != "static" or spec.name not in reference.columns:
                continue
            values = pd.to_numeric(reference[spec.name], errors="coerce").to_numpy(dtype=float)
            values = np.sort(values[np.isfinite(values)])
            if values.size >= 20:  # too few customers to speak of shares
                ranks[spec.name] = values
        return cls(ranks)

    def context(self, name: str, value: float, language: Language = "en") -> str:
        values = self.sorted_values.get(name)
        if values is None:
            return ""
        below = np.searchsorted(values, value, side="left") / values.size
        above = 1.0 - np.searchsorted(values, value, side="right") / values.size
        if above >= 0.5:
            return TEMPLATES[language]["lower_than"].format(share=f"{above:.0%}")
        if below >= 0.5:
            return TEMPLATES[language]["higher_than"].format(share=f"{below:.0%}")
        return ""


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _is_missing(value: object) -> bool:
    return value is None or value == MISSING_CATEGORY or (isinstance(value, float) and math.isnan(value))


# Chinese labels of the contract features, by name without the prefix and window.
CONTRACT_LABELS_ZH = {
    "days_to_renewal": "距合同续约天数",
    "days_since_renewal": "本期合同已开始天数",
    "mrr": "合同月经常性收入",
    "seats": "合同席位数",
    "mrr_change": "月经常性收入变化",
    "seats_change": "席位数变化",
    "downgrades": "合同降级次数",
    "auto_renew_off": "自动续约已关闭",
    "days_since_auto_renew_off": "自动续约关闭天数",
}


def _label(spec: FeatureSpec, language: Language) -> str:
    label = spec.label or spec.event_type or spec.name
    if language != "zh":
        return label
    if spec.kind == "contract":
        stem = spec.name.removeprefix("contract__").removesuffix(f"_{spec.window_days}d")
        zh = CONTRACT_LABELS_ZH.get(stem, label)
        return f"{zh}（近 {spec.window_days} 天）" if spec.window_days else zh
    return EVENT_LABELS_ZH.get(spec.event_type or "", label)


def _case(spec: FeatureSpec, value: object) -> tuple[str, dict[str, object]]:
    # The number is formatted later, once for every case.
    """Which template a (spec, value) takes, and the fields it needs besides name, label and window."""
    if spec.categorical:
        return ("missing", {}) if _is_missing(value) else ("categorical", {"value": value})
    kind, missing = spec.kind, _is_missing(value)
    if kind == "days_since_last":
        return ("days_since_last_missing", {}) if missing else ("days_since_last", {"n": round(float(value))})
    if kind in _CHANGE_DAYS:
        days = _CHANGE_DAYS[kind]
        if missing:
            return "change_missing", {"days": days}
        change = float(value) - 1.0
        if abs(change) < 0.005:
            return "change_steady", {"days": days}
        return ("change_down" if change < 0 else "change_up"), {"days": days, "percent": f"{abs(change):.0%}"}
    if kind in {"last", "previous"}:
        return ("last_missing", {}) if missing else (kind, {"n": float(value)})
    if kind == "max" and missing:
        return "max_missing", {}
    if kind == "contract":
        if missing:
            return "contract_missing", {}
        if "_change_" in spec.name:  # a relative change, -0.2 for a fifth less
            return "contract_change", {"percent": f"{float(value):+.0%}"}
        return "contract", {"n": float(value)}
    if kind in {"days_since", "age_years"}:
        # A date column read as a number: said as the date it is, in whole days or years. Missing
        # also covers a date after the row's moment, which was not known then.
        source = spec.source_column or spec.name
        if missing:
            return "date_missing", {"source": source}
        whole = math.floor(float(value)) if kind == "age_years" else round(float(value))
        return kind, {"source": source, "n": whole}
    if missing:
        return "missing", {}
    number = float(value)
    if kind == "tenure":
        return "tenure", {"n": round(number)}
    if kind in {"count", "sum"}:
        return (f"{kind}_zero" if number == 0 else kind), {"n": number}
    if kind in {"mean", "max"}:
        return kind, {"n": number}
    return "number", {"n": number}


def describe_in(
    language: Language, spec: FeatureSpec, value: object, ranks: ReferenceRanks | None = None
) -> str:
    """A short, human message about one feature's value, in `language`."""
    templates = TEMPLATES[language]
    case, fields = _case(spec, value)
    if case == "number":
        fields["context"] = ranks.context(spec.name, float(value), language) if ranks else ""  # type: ignore[arg-type]
    if "n" in fields:
        fields["n"] = _number(float(fields["n"]))  # type: ignore[arg-type]
    window = templates["window"].format(days=spec.window_days) if spec.window_days else templates["no_window"]
    return templates[case].format(name=spec.name, label=_label(spec, language), window=window, **fields)


def describe(spec: FeatureSpec, value: object, ranks: ReferenceRanks | None = None) -> str:
    return describe_in("en", spec, value, ranks)


def describe_zh(spec: FeatureSpec, value: object, ranks: ReferenceRanks | None = None) -> str:
    return describe_in("zh", spec, value, ranks)
