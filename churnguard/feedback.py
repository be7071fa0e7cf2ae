"""The feedback loop: what happened to alerted customers, how good the alerts were, and new labels.

`churnguard outcomes ingest FILE` reads a CSV or Parquet file, one outcome per row:
- `customer_id`;
- `outcome`: saved, churned or false_alarm ("false alarm" and any case are accepted);
- `outcome_date`: when it happened (the churn date for a churned customer);
- `churn_reason`: for a churned customer, one of price, service, product_gap, competitor,
  contact_change, budget, other; for a saved customer, optionally the one that put them at risk
  (the review wants to know what was saved from what); empty for a false alarm.
A file with any bad row is refused whole, every bad row named; nothing is half-stored. Outcomes
are kept in `<state>/outcomes/outcomes.parquet`, one per (customer, outcome date), the latest
ingest winning.

The report matches each outcome with the customer's alerts in the prediction log: the logged
predictions in an alert tier (configs/scoring.yaml, `feedback.alert_tiers`) within
`feedback.lookback_days` before the outcome. Per alert tier (the highest the customer reached) and
per rule (every `rule:` reason logged with those alerts) it gives:
- precision: (saved + churned) / alerted outcomes; a saved customer was at risk, so the alert was right;
- lead time: days from the first alert to the churn, for churned customers;
- the distribution of churn-reason tags.
Outcomes with no alert in the log are counted as `not_alerted`, never dropped.

Labels: confirmed outcomes become training labels when `churnguard tune --with-outcomes` asks:
churned is 1 and false_alarm is 0. A saved customer is left to the dataset's own label: they
stayed because someone acted, which says nothing about what the model should have predicted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import Field

from churnguard.config import StrictModel, UsageError
from churnguard.schema import ID_COLUMN, LABEL_COLUMN, OBSERVATION_COLUMN
from churnguard.tiers import TIER_RANK, Tier

if TYPE_CHECKING:
    from churnguard.feature_table import FeatureTable

log = logging.getLogger(__name__)

OUTCOMES = ("saved", "churned", "false_alarm")
REASON_TAGS = ("price", "service", "product_gap", "competitor", "contact_change", "budget", "other")
REQUIRED_COLUMNS = (ID_COLUMN, "outcome", "outcome_date")
STORE_COLUMNS = (ID_COLUMN, "outcome", "churn_reason", "outcome_date", "ingested_at", "source")
MAX_LISTED_ERRORS = 20


class FeedbackConfig(StrictModel):
    alert_tiers: list[Tier] = Field(["high", "medium"], min_length=1, description="tiers that alert")
    lookback_days: int = Field(180, gt=0, description="alerts this long before an outcome count")


class OutcomeFileError(UsageError):
    """An outcomes file that cannot be ingested; the message names the file, rows and columns."""


def store_path(state: Path) -> Path:
    return state / "outcomes" / "outcomes.parquet"


# ------------------------------------------------------------------------------------------- reading


def _token(value: object) -> str | None:
    """Lower-case with underscores ("False alarm" -> false_alarm); None when empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().lower().replace("-", " ").replace(" ", "_")
    return text or None


def read_outcome_file(path: Path) -> pd.DataFrame:
    """The outcomes of a file, checked (see the module docstring); raises OutcomeFileError."""
    path = Path(path)
    if not path.is_file():
        raise OutcomeFileError(f"{path}: file not found")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            raw = pd.read_parquet(path)
        else:
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise OutcomeFileError(f"{path}: cannot be read as CSV or Parquet: {exc}") from None
    missing = [column for column in REQUIRED_COLUMNS if column not in raw.columns]
    if missing:
        raise OutcomeFileError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)} "
            f"and churn_reason (for churned customers); the file has {', '.join(map(str, raw.columns))}"
        )
    errors: list[str] = []
    ids = raw[ID_COLUMN].map(
        lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()
    )
    outcome = raw["outcome"].map(_token)
    reason = (
        raw["churn_reason"].map(_token) if "churn_reason" in raw.columns else pd.Series(None, index=raw.index)
    )
    dates = pd.to_datetime(raw["outcome_date"], errors="coerce", utc=True, format="mixed")
    for position in range(len(raw)):
        row = position + 1  # data rows, 1-based, as `churnguard score` numbers them
        if not ids.iloc[position]:
            errors.append(f"row {row}, {ID_COLUMN}: missing")
        kind = outcome.iloc[position]
        if kind not in OUTCOMES:
            errors.append(
                f"row {row}, outcome: expected one of {', '.join(OUTCOMES)}, "
                f"got {raw['outcome'].iloc[position]!r}"
            )
        if pd.isna(dates.iloc[position]):
            errors.append(
                f"row {row}, outcome_date: expected a date such as 2025-09-30, "
                f"got {raw['outcome_date'].iloc[position]!r}"
            )
        tag = reason.iloc[position]
        if kind == "churned" and tag not in REASON_TAGS:
            got = "nothing" if tag is None else repr(raw["churn_reason"].iloc[position])
            errors.append(
                f"row {row}, churn_reason: a churned customer needs one of "
                f"{', '.join(REASON_TAGS)}, got {got}"
            )
        elif kind == "saved" and tag is not None and tag not in REASON_TAGS:
            errors.append(
                f"row {row}, churn_reason: a saved customer's reason (what put them at risk) must be one "
                f"of {', '.join(REASON_TAGS)}, got {raw['churn_reason'].iloc[position]!r}"
            )
        elif kind == "false_alarm" and tag is not None:
            errors.append(f"row {row}, churn_reason: a false alarm carries no churn reason")
    if errors:
        listed = "\n  ".join(errors[:MAX_LISTED_ERRORS])
        more = f"\n  (and {len(errors) - MAX_LISTED_ERRORS} more)" if len(errors) > MAX_LISTED_ERRORS else ""
        raise OutcomeFileError(f"{path}: {len(errors)} problem(s); nothing was ingested:\n  {listed}{more}")
    return pd.DataFrame(
        {
            ID_COLUMN: ids.astype(str),
            "outcome": outcome.astype(str),
            "churn_reason": reason.where(outcome.isin(["churned", "saved"]), None).astype(object),
            "outcome_date": dates.dt.tz_localize(None),
        }
    )


# ------------------------------------------------------------------------------------------- storing


@dataclass
class IngestSummary:
    rows: int
    new: int
    replaced: int
    total: int
    path: Path
    outcomes: dict[str, int] = field(default_factory=dict)

    def format(self) -> str:
        kinds = ", ".join(f"{kind} {count:,}" for kind, count in self.outcomes.items())
        return (
            f"ingested {self.rows:,} outcomes ({kinds}): {self.new:,} new, "
            f"{self.replaced:,} replacing earlier ones; {self.total:,} stored in {self.path}"
        )


def load_outcomes(state: Path) -> pd.DataFrame:
    path = store_path(state)
    if not path.is_file():
        return pd.DataFrame({column: [] for column in STORE_COLUMNS})
    return pd.read_parquet(path)


def ingest(path: Path, state: Path) -> IngestSummary:
    """Check a file and merge its outcomes into the store: one per (customer, outcome date)."""
    incoming = read_outcome_file(path)
    incoming["ingested_at"] = pd.Timestamp(datetime.now(UTC)).tz_localize(None)
    incoming["source"] = str(Path(path).resolve())
    incoming = incoming.drop_duplicates([ID_COLUMN, "outcome_date"], keep="last")
    stored = load_outcomes(state)
    keys = pd.MultiIndex.from_frame(incoming[[ID_COLUMN, "outcome_date"]])
    if len(stored):
        stored_keys = pd.MultiIndex.from_frame(stored[[ID_COLUMN, "outcome_date"]])
        replaced = int(keys.isin(stored_keys).sum())
        merged = pd.concat([stored[~stored_keys.isin(keys)], incoming], ignore_index=True)
    else:
        replaced, merged = 0, incoming
    target = store_path(state)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    merged[list(STORE_COLUMNS)].to_parquet(temporary, index=False)
    temporary.replace(target)  # atomic: a reader sees the old store or the new one
    counts = incoming["outcome"].value_counts()
    return IngestSummary(
        len(incoming),
        len(incoming) - replaced,
        replaced,
        len(merged),
        target,
        {kind: int(counts.get(kind, 0)) for kind in OUTCOMES},
    )


# ------------------------------------------------------------------------------------------- report


def _rule_codes(reasons: object) -> list[str]:
    if reasons is None or (isinstance(reasons, float) and np.isnan(reasons)):
        return []
    items = json.loads(reasons) if isinstance(reasons, str | bytes) else reasons
    return [item["code"] for item in items or [] if str(item.get("code", "")).startswith("rule:")]


def match_alerts(outcomes: pd.DataFrame, predictions: pd.DataFrame, config: FeedbackConfig) -> pd.DataFrame:
    """Outcomes with their alert: tier (highest reached), rules, first alert time and lead days.

    `predictions` as PredictionLog.read returns them (customer_id, logged_at, alert_tier, reasons)."""
    frame = outcomes[[ID_COLUMN, "outcome", "churn_reason", "outcome_date"]].reset_index(drop=True).copy()
    frame[ID_COLUMN] = frame[ID_COLUMN].astype(str)
    outcome_day = pd.to_datetime(frame["outcome_date"]).dt.normalize()
    alerts = predictions[predictions["alert_tier"].isin(config.alert_tiers)].copy()
    alerts[ID_COLUMN] = alerts[ID_COLUMN].astype(str)
    alerts["logged_at"] = pd.to_datetime(alerts["logged_at"], utc=True).dt.tz_localize(None)
    by_customer = {customer: group for customer, group in alerts.groupby(ID_COLUMN, sort=False)}
    tiers, rules, first, lead = [], [], [], []
    lookback = pd.Timedelta(days=config.lookback_days)
    for customer, day in zip(frame[ID_COLUMN], outcome_day, strict=True):
        group = by_customer.get(customer)
        if group is not None:
            # Alerts up to the end of the outcome's day, within the lookback before it.
            group = group[
                (group["logged_at"] < day + pd.Timedelta(days=1)) & (group["logged_at"] >= day - lookback)
            ]
        if group is None or group.empty:
            tiers.append(None), rules.append([]), first.append(pd.NaT), lead.append(np.nan)
            continue
        tiers.append(max(group["alert_tier"], key=lambda tier: TIER_RANK[tier]))
        rules.append(sorted({code for reasons in group["reasons"] for code in _rule_codes(reasons)}))
        started = group["logged_at"].min()
        first.append(started)
        lead.append(float((day - started.normalize()).days))
    frame["alert_tier"] = tiers
    frame["rules"] = rules
    frame["first_alert_at"] = first
    frame["lead_days"] = lead
    return frame


def _summary(rows: pd.DataFrame) -> dict[str, object]:
    counts = rows["outcome"].value_counts()
    saved, churned, false_alarm = (int(counts.get(kind, 0)) for kind in OUTCOMES)
    alerts = saved + churned + false_alarm
    lead = rows.loc[rows["outcome"] == "churned", "lead_days"].dropna()
    tags = rows.loc[rows["outcome"] == "churned", "churn_reason"].value_counts()
    return {
        "alerts": alerts,
        "saved": saved,
        "churned": churned,
        "false_alarm": false_alarm,
        "precision": round((saved + churned) / alerts, 4) if alerts else None,
        "lead_time_days": {
            "median": float(lead.median()) if len(lead) else None,
            "mean": round(float(lead.mean()), 2) if len(lead) else None,
            "min": float(lead.min()) if len(lead) else None,
        },
        "churn_reasons": {tag: int(tags.get(tag, 0)) for tag in REASON_TAGS if tags.get(tag, 0)},
    }


def outcome_report(
    outcomes: pd.DataFrame, predictions: pd.DataFrame, config: FeedbackConfig
) -> dict[str, object]:
    """Alert precision, lead time and churn reasons, overall, per alert tier and per rule."""
    matched = match_alerts(outcomes, predictions, config)
    alerted = matched[matched["alert_tier"].notna()]
    silent = matched[matched["alert_tier"].isna()]
    per_rule = alerted.explode("rules").dropna(subset=["rules"])
    return {
        "outcomes": len(matched),
        "alert_tiers": list(config.alert_tiers),
        "lookback_days": config.lookback_days,
        "overall": _summary(alerted),
        "per_tier": {
            tier: _summary(alerted[alerted["alert_tier"] == tier])
            for tier in config.alert_tiers
            if (alerted["alert_tier"] == tier).any()
        },
        "per_rule": {rule: _summary(group) for rule, group in per_rule.groupby("rules", sort=True)},
        "not_alerted": {kind: int((silent["outcome"] == kind).sum()) for kind in OUTCOMES},
    }


def format_report(report: dict) -> str:
    def line(name: str, part: dict) -> str:
        precision = "n/a" if part["precision"] is None else f"{part['precision']:.0%}"
        lead = part["lead_time_days"]["median"]
        lead_text = "n/a" if lead is None else f"{lead:g} days"
        tags = ", ".join(f"{tag} {count}" for tag, count in part["churn_reasons"].items()) or "none"
        return (
            f"  {name:<28} alerts {part['alerts']:>5}  precision {precision:>5}  "
            f"saved {part['saved']}, churned {part['churned']}, false alarms {part['false_alarm']}; "
            f"median lead {lead_text}; churn reasons: {tags}"
        )

    lines = [f"outcomes: {report['outcomes']:,} (alerts in tiers {', '.join(report['alert_tiers'])})"]
    lines.append(line("all alerts", report["overall"]))
    lines += [line(f"tier {tier}", part) for tier, part in report["per_tier"].items()]
    lines += [line(rule, part) for rule, part in report["per_rule"].items()]
    silent = report["not_alerted"]
    lines.append("  not alerted: " + ", ".join(f"{kind} {count}" for kind, count in silent.items()))
    return "\n".join(lines)


OUTCOME_HEADERS = [
    "alerts of", "alerts", "precision", "saved", "churned", "false alarms", "median lead", "churn reasons",
]  # fmt: skip


def report_sections(report: dict) -> list[tuple[str, list[str], list[list[object]]]]:
    """The report as titled tables (the HTML page): overall and per tier, per rule, not alerted."""

    def row(name: str, part: dict) -> list[object]:
        lead = part["lead_time_days"]["median"]
        return [
            name,
            part["alerts"],
            "n/a" if part["precision"] is None else f"{part['precision']:.0%}",
            part["saved"],
            part["churned"],
            part["false_alarm"],
            "n/a" if lead is None else f"{lead:g} days",
            ", ".join(f"{tag} {count}" for tag, count in part["churn_reasons"].items()) or "none",
        ]

    tiers = [row("all alerts", report["overall"])]
    tiers += [row(f"tier {tier}", part) for tier, part in report["per_tier"].items()]
    rules = [row(rule, part) for rule, part in report["per_rule"].items()]
    silent = [[kind, count] for kind, count in report["not_alerted"].items()]
    return [
        (f"Outcomes ({report['outcomes']:,}): alert precision and lead time", OUTCOME_HEADERS, tiers),
        ("Per rule", OUTCOME_HEADERS, rules),
        ("Outcomes with no alert in the prediction log", ["outcome", "customers"], silent),
    ]


# ------------------------------------------------------------------------------------------- labels


def confirmed_labels(outcomes: pd.DataFrame) -> pd.DataFrame:
    """customer_id, outcome_date, label: churned -> 1, false_alarm -> 0 (saved is not a label)."""
    confirmed = outcomes[outcomes["outcome"].isin(["churned", "false_alarm"])]
    return pd.DataFrame(
        {
            ID_COLUMN: confirmed[ID_COLUMN].astype(str).to_numpy(),
            "outcome_date": pd.to_datetime(confirmed["outcome_date"]).to_numpy(),
            LABEL_COLUMN: (confirmed["outcome"] == "churned").astype("int8").to_numpy(),
        }
    )


@dataclass
class LabelUpdate:
    confirmed: int  # confirmed outcomes offered
    matched: int  # of those, customers found in the table
    labels_set: int  # rows whose label the outcomes decide
    labels_changed: int  # of those, rows whose label changed
    rows_after_churn: int  # rows observed on or after a confirmed churn, removed

    def format(self) -> str:
        return (
            f"confirmed outcomes: {self.confirmed:,} ({self.matched:,} customers in the table); "
            f"labels set on {self.labels_set:,} rows, {self.labels_changed:,} changed; "
            f"{self.rows_after_churn:,} rows observed after a confirmed churn removed"
        )


def apply_confirmed_labels(table: FeatureTable, labels: pd.DataFrame) -> tuple[FeatureTable, LabelUpdate]:
    """The table with labels decided by confirmed outcomes.

    Snapshot tables: every row of the customer. Events tables: rows whose horizon holds the outcome
    (observation_date < outcome_date <= observation_date + horizon); rows observed on or after a
    confirmed churn are removed (the customer had gone) and counted."""
    from churnguard.feature_table import FeatureTable

    frame = table.frame.copy()
    customers = frame[ID_COLUMN].astype(str)
    label = frame[LABEL_COLUMN].to_numpy().copy()
    decided = np.zeros(len(frame), dtype=bool)
    remove = np.zeros(len(frame), dtype=bool)
    matched = 0
    rows_of = pd.Series(np.arange(len(frame))).groupby(customers.to_numpy()).apply(np.asarray).to_dict()
    for customer, outcome_date, confirmed in labels[[ID_COLUMN, "outcome_date", LABEL_COLUMN]].itertuples(
        index=False
    ):
        rows = rows_of.get(customer)
        if rows is None:
            continue
        matched += 1
        if table.kind == "snapshot":
            chosen = rows
        else:
            observed = frame[OBSERVATION_COLUMN].to_numpy()[rows]
            day = np.datetime64(pd.Timestamp(outcome_date).normalize())
            horizon = np.timedelta64(int(table.horizon_days or 0), "D")
            chosen = rows[(observed < day) & (day <= observed + horizon)]
            if confirmed == 1:
                remove[rows[observed >= day]] = True
        label[chosen] = confirmed
        decided[chosen] = True
    changed = int((label[decided] != frame[LABEL_COLUMN].to_numpy()[decided]).sum())
    frame[LABEL_COLUMN] = label.astype(frame[LABEL_COLUMN].dtype)
    frame = frame[~remove].reset_index(drop=True)
    update = LabelUpdate(len(labels), matched, int(decided.sum()), changed, int(remove.sum()))
    return FeatureTable(
        table.dataset, table.kind, frame, table.schema, table.horizon_days, table.report
    ), update


def stored_confirmed_labels(state: Path) -> pd.DataFrame:
    outcomes = load_outcomes(state)
    if outcomes.empty:
        raise UsageError(
            f"no outcomes in {store_path(state)}: ingest some with `churnguard outcomes ingest FILE` first"
        )
    return confirmed_labels(outcomes)


def outcomes_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Outcomes from records (tests, notebooks): the same columns the store keeps."""
    frame = pd.DataFrame(list(rows))
    frame["outcome_date"] = pd.to_datetime(frame["outcome_date"])
    if "churn_reason" not in frame.columns:
        frame["churn_reason"] = None
    return frame
