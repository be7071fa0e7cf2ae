"""How fast owners act on their alerts and what comes of it, read from the alert store.

- time to acknowledge: `acknowledged_at - raised_at` (starting the work acknowledges, too);
- time to resolve: `resolved_at - raised_at`;
  each as median, 90th percentile (linear interpolation, numpy's default) and count, in seconds;
- save rate: saved / (saved + churned) among resolved alerts; a false alarm had nothing to save;
- open past SLA: alerts still open (nobody acknowledged them) whose `due_at` has passed.

Overall, per owner, per tier (the alert's latest tier) and per rule: what raised or later updated the
alert, `enter_high`, `rise_by_tier` or `rule:<code>` of a critical rule (an alert can count under
several). The outcomes report prints them (`churnguard outcomes report`, text and HTML) and the
service exposes them on `/metrics` (`prometheus_text`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from alerts.store import AlertStore

COLUMNS = (
    "alert_id", "owner", "tier", "state", "triggers", "rules", "raised_at", "acknowledged_at",
    "resolved_at", "due_at", "outcome",
)  # fmt: skip
DIMENSIONS = ("owner", "tier", "rule")
NO_OWNER = "(no owner)"
# Histogram buckets, seconds: 15 min, 1 h, 4 h, 8 h, 1 day, 2 days, 3 days, 1 week, 30 days.
BUCKETS = (900.0, 3600.0, 14400.0, 28800.0, 86400.0, 172800.0, 259200.0, 604800.0, 2592000.0)
QUANTILES = {"0.5": "median_seconds", "0.9": "p90_seconds"}


def read_alerts(store: AlertStore) -> pd.DataFrame:
    """The columns the measures need, one row per alert (every alert, resolved or not), with `rule`:
    the list of rule keys. Rows come as tuples and the JSON lists are decoded once per distinct value,
    so a scrape of 100,000 alerts stays well within Prometheus' timeout."""
    with store.transaction() as cursor:
        cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM alerts ORDER BY alert_id")
        frame = pd.DataFrame(cursor.raw.fetchall(), columns=list(COLUMNS))
    frame["owner"] = frame["owner"].fillna("").replace("", NO_OWNER)
    pairs = list(zip(frame["triggers"], frame["rules"], strict=True))
    keys = {pair: rule_keys(json.loads(pair[0]), json.loads(pair[1])) for pair in set(pairs)}
    frame["rule"] = [keys[pair] for pair in pairs]
    return frame.drop(columns=["triggers", "rules"])


def rule_keys(triggers: Iterable[str], rules: Iterable[str]) -> list[str]:
    """`enter_high`, `rise_by_tier` and `rule:<code>` of the critical rules, each once."""
    keys = [trigger for trigger in triggers if not trigger.startswith("critical_rule:")]
    keys += [f"rule:{code}" for code in rules]
    return list(dict.fromkeys(keys))


def _prepared(frame: pd.DataFrame, now: float) -> pd.DataFrame:
    """Per alert: the two durations (NaN until they happen) and 0/1 columns that groups add up."""
    outcome = frame["outcome"].to_numpy(dtype=object)
    raised = frame["raised_at"].astype(float)
    return pd.DataFrame(
        {
            "owner": frame["owner"],
            "tier": frame["tier"],
            "rule": frame["rule"],
            "acknowledge": frame["acknowledged_at"].astype(float) - raised,
            "resolve": frame["resolved_at"].astype(float) - raised,
            "saved": outcome == "saved",
            "churned": outcome == "churned",
            "false_alarm": outcome == "false_alarm",
            "open_past_sla": (frame["state"].to_numpy(dtype=object) == "open")
            & (frame["due_at"].astype(float).to_numpy() < now),
        }
    )


def _number(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


def _by(prepared: pd.DataFrame, key: str | None) -> dict[str, dict[str, Any]]:
    """The measures of each group (of everything when `key` is None), computed column-wise."""
    frame = prepared.assign(all="all") if key is None else prepared
    groups = frame.groupby(key or "all", sort=True)
    sizes = groups.size()
    totals = groups[["saved", "churned", "false_alarm", "open_past_sla"]].sum()
    timings = {}
    for name in ("acknowledge", "resolve"):
        column = groups[name]
        quantiles = column.quantile([0.5, 0.9]).unstack()  # linear interpolation, as numpy's percentile
        timings[name] = (quantiles, column.count(), column.sum())
    out = {}
    for group in sizes.index:
        saved, churned = int(totals.at[group, "saved"]), int(totals.at[group, "churned"])
        part: dict[str, Any] = {"alerts": int(sizes[group])}
        for name in ("acknowledge", "resolve"):
            quantiles, counts, sums = timings[name]
            count = int(counts[group])
            part[f"time_to_{name}"] = {
                "count": count,
                "median_seconds": _number(quantiles.at[group, 0.5]) if count else None,
                "p90_seconds": _number(quantiles.at[group, 0.9]) if count else None,
                "sum_seconds": float(sums[group]),
            }
        part.update(
            saved=saved,
            churned=churned,
            false_alarm=int(totals.at[group, "false_alarm"]),
            save_rate=saved / (saved + churned) if saved + churned else None,
            open_past_sla=int(totals.at[group, "open_past_sla"]),
        )
        out[str(group)] = part
    return out


def alert_measures(frame: pd.DataFrame, now: float | None = None) -> dict[str, Any]:
    """Overall, per owner, per tier and per rule (see the module docstring); JSON-ready."""
    now = time.time() if now is None else now
    prepared = _prepared(frame, now)
    by_rule = prepared.explode("rule")
    by_rule = by_rule[by_rule["rule"].notna()]
    return {
        "as_of": pd.Timestamp(now, unit="s", tz="UTC").isoformat(),
        "overall": _by(prepared, None)["all"],
        "per_owner": _by(prepared, "owner"),
        "per_tier": _by(prepared, "tier"),
        "per_rule": _by(by_rule, "rule") if len(by_rule) else {},
        "_histograms": {name: _histograms(prepared, name) for name in ("acknowledge", "resolve")},
    }


def _histograms(prepared: pd.DataFrame, name: str) -> dict[str, dict[str, Any]]:
    """Per tier, cumulative bucket counts of the durations (every alert ever: they only grow)."""
    out = {}
    for tier, part in prepared[name].groupby(prepared["tier"], sort=True):
        values = part.dropna().to_numpy(dtype=float)
        if len(values):
            counts = np.searchsorted(np.sort(values), BUCKETS, side="right").tolist()
            out[str(tier)] = {"buckets": counts, "count": len(values), "sum": float(values.sum())}
    return out


def measures_from_store(store: AlertStore, now: float | None = None) -> dict[str, Any] | None:
    """The measures of every alert in the store; None when there is none."""
    frame = read_alerts(store)
    return alert_measures(frame, now) if len(frame) else None


def public(measures: dict[str, Any]) -> dict[str, Any]:
    """The measures without the histogram counts (those are for /metrics)."""
    return {key: value for key, value in measures.items() if not key.startswith("_")}


# ------------------------------------------------------------------------------------------------ text


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def measure_rows(measures: dict[str, Any]) -> list[list[str]]:
    """One row per group: the table the text and the HTML report both show."""
    rows = []
    groups = [("all", "all alerts", measures["overall"])]
    for dimension in DIMENSIONS:
        groups += [(dimension, key, part) for key, part in measures[f"per_{dimension}"].items()]
    for dimension, key, part in groups:
        ack, resolve = part["time_to_acknowledge"], part["time_to_resolve"]
        rate = part["save_rate"]
        rows.append(
            [
                dimension,
                key,
                str(part["alerts"]),
                f"{duration(ack['median_seconds'])} / {duration(ack['p90_seconds'])} ({ack['count']})",
                f"{duration(resolve['median_seconds'])} / {duration(resolve['p90_seconds'])} "
                f"({resolve['count']})",
                f"{part['saved']}/{part['churned']}/{part['false_alarm']}",
                "n/a" if rate is None else f"{rate:.0%}",
                str(part["open_past_sla"]),
            ]
        )
    return rows


MEASURE_HEADERS = [
    "by", "group", "alerts", "acknowledge: median / p90 (n)", "resolve: median / p90 (n)",
    "saved/churned/false alarm", "save rate", "open past SLA",
]  # fmt: skip


def format_measures(measures: dict[str, Any]) -> str:
    rows = [MEASURE_HEADERS, *measure_rows(measures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(MEASURE_HEADERS))]
    lines = [f"alert measures as of {measures['as_of']} (from the alert store):"]
    lines += [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


# ------------------------------------------------------------------------------------------ Prometheus


def prometheus_text(measures: dict[str, Any] | None) -> str:
    """The measures in Prometheus' text format, for the service's /metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(measures))
    return generate_latest(registry).decode("utf-8")


class _Collector:
    def __init__(self, measures: dict[str, Any] | None) -> None:
        self.measures = measures

    def collect(self) -> Iterable[Any]:
        measures = self.measures
        families = {
            name: GaugeMetricFamily(f"churnguard_alert_{name}", text, labels=labels)
            for name, text, labels in (
                ("time_to_acknowledge_seconds", "median and p90 time from raised to acknowledged",
                 ["by", "group", "quantile"]),
                ("acknowledged", "alerts acknowledged", ["by", "group"]),
                ("time_to_resolve_seconds", "median and p90 time from raised to resolved",
                 ["by", "group", "quantile"]),
                ("resolved", "alerts resolved", ["by", "group"]),
                ("outcomes", "resolved alerts by outcome", ["by", "group", "outcome"]),
                ("save_rate", "saved / (saved + churned) of resolved alerts", ["by", "group"]),
                ("open_past_sla", "open alerts nobody acknowledged within their SLA", ["by", "group"]),
            )
        }  # fmt: skip
        if measures is not None:
            groups = [("all", "all", measures["overall"])]
            for dimension in DIMENSIONS:
                groups += [(dimension, key, part) for key, part in measures[f"per_{dimension}"].items()]
            for by, group, part in groups:
                for name, count_name, key in (
                    ("time_to_acknowledge_seconds", "acknowledged", "time_to_acknowledge"),
                    ("time_to_resolve_seconds", "resolved", "time_to_resolve"),
                ):
                    for quantile, field in QUANTILES.items():
                        if part[key][field] is not None:
                            families[name].add_metric([by, group, quantile], part[key][field])
                    families[count_name].add_metric([by, group], part[key]["count"])
                for outcome in ("saved", "churned", "false_alarm"):
                    families["outcomes"].add_metric([by, group, outcome], part[outcome])
                if part["save_rate"] is not None:
                    families["save_rate"].add_metric([by, group], part["save_rate"])
                families["open_past_sla"].add_metric([by, group], part["open_past_sla"])
        yield from families.values()
        for name in ("acknowledge", "resolve"):
            histogram = HistogramMetricFamily(
                f"churnguard_alert_{name}_duration_seconds",
                f"time from raised to {name}d, per tier",
                labels=["tier"],
            )
            for tier, part in (measures or {}).get("_histograms", {}).get(name, {}).items():
                buckets = [(str(bound), count) for bound, count in zip(BUCKETS, part["buckets"], strict=True)]
                histogram.add_metric([tier], [*buckets, ("+Inf", part["count"])], part["sum"])
            yield histogram
