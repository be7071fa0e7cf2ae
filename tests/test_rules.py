"""Early-warning rules: each shipped rule on hand-made event histories (through the real feature code),
the score-history rule, escalation, both languages of every message, and validation on load."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from model_fixtures import telco_artifact_dir, telco_rows

from churnguard.config import ConfigError, load_file
from churnguard.datasets import load_dataset_config
from churnguard.explain import describe, describe_zh
from churnguard.features import event_features
from churnguard.history import FrameHistory
from churnguard.predict import Predictor
from churnguard.rules import EscalationConfig, RuleBook, RuleConfig, render
from churnguard.schema import FeatureSchema, FeatureSpec
from churnguard.scoring import ScoringConfig, load_scoring_config
from churnguard.settings import config_dir

T = pd.Timestamp("2025-06-01")  # observation date
DAY = pd.Timedelta(days=1)
CJK = re.compile(r"[\u4e00-\u9fff]")


def crm_event_types() -> dict:
    return {name: spec.spec() for name, spec in load_dataset_config("crm").event_types.items()}


def crm_schema() -> FeatureSchema:
    _, specs = event_features(
        pd.DataFrame(
            {"customer_id": ["x"], "timestamp": [T - DAY], "type": ["login"], "value": [np.nan]}
        ).astype({"timestamp": "datetime64[ns]"}),
        pd.DataFrame({"customer_id": ["x"], "observation_date": [T]}),
        crm_event_types(),
    )
    return FeatureSchema(features=specs)


def steady_history(customer: str) -> list[tuple]:
    """A healthy customer: logins twice a week, a monthly order, punctual payments, a ticket a month,
    good CSAT, over the 180 days before T."""
    rows = []
    for day in range(1, 181):
        when = T - day * DAY + pd.Timedelta(hours=10)
        if day % 3 == 0:
            rows.append((customer, when, "login", np.nan))
        if day % 30 == 5:
            rows += [(customer, when, "order", 1000.0), (customer, when, "payment", 0.0)]
            rows += [(customer, when, "ticket", 1.0), (customer, when, "csat", 4.0)]
    return rows


def hits_for(histories: dict[str, list[tuple]], rules: dict | None = None) -> dict[str, list[str]]:
    """Rule codes each hand-made customer hits, from features computed by churnguard.features.
    Each history's events are the customer's whatever id the rows carry."""
    events = pd.DataFrame(
        [(customer, *row[1:]) for customer, rows in histories.items() for row in rows],
        columns=["customer_id", "timestamp", "type", "value"],
    ).astype({"timestamp": "datetime64[ns]", "value": "float64"})
    population = pd.DataFrame({"customer_id": list(histories), "observation_date": T})
    frame, specs = event_features(events, population, crm_event_types())
    config = load_scoring_config()
    book = RuleBook(
        rules if rules is not None else config.rules, config.escalation, FeatureSchema(features=specs)
    )
    tier = np.array(["low"] * len(frame))
    hits = book.evaluate(lambda name: frame[name].to_numpy(float), np.full(len(frame), 80), tier)
    return dict(zip(histories, hits.hit_codes(), strict=True))


def without(rows: list[tuple], kind: str, since_days: int | None = None) -> list[tuple]:
    """Drop events of one type (only those in the last `since_days` days when given)."""
    return [r for r in rows if not (r[2] == kind and (since_days is None or r[1] >= T - since_days * DAY))]


# ------------------------------------------------------------------------------------------ the rules


def test_the_shipped_rules_are_all_active_on_the_crm_features() -> None:
    config = load_scoring_config()
    book = RuleBook(config.rules, config.escalation, crm_schema())
    assert book.inactive == {}
    assert {rule.name for rule in book.active} == {
        "no_recent_order", "activity_drop", "no_recent_login", "low_csat_repeated", "payment_overdue",
        "key_contact_changed", "ticket_surge", "health_drop",
    }  # fmt: skip


def test_a_steady_customer_hits_no_rule() -> None:
    assert hits_for({"steady": steady_history("steady")}) == {"steady": []}


def test_no_order_in_90_days() -> None:
    base = steady_history("a")
    result = hits_for(
        {
            "no_order": without(base, "order", since_days=90),
            "order_at_89_days": [
                *without(base, "order", since_days=90),
                ("order_at_89_days", T - 89 * DAY, "order", 10.0),
            ],
        }
    )
    assert result["no_order"] == ["rule:no_recent_order"]
    assert result["order_at_89_days"] == []


def test_activity_down_half_month_over_month() -> None:
    base = without(steady_history("a"), "login")
    before = [("c", T - d * DAY, "login", np.nan) for d in range(31, 121, 3)]  # 10 in [t-60, t-30)
    halved = [("c", T - d * DAY, "login", np.nan) for d in (2, 6, 10, 14, 18)]  # 5 in 30 days: -50%
    six = [("c", T - d * DAY, "login", np.nan) for d in (2, 6, 10, 14, 18, 22)]  # 6 in 30 days: -40%
    # Quiet before the last two months: only the month before counts, not a longer baseline.
    recent_month = [("c", T - d * DAY, "login", np.nan) for d in range(31, 61, 3)]  # 10 in [t-60, t-30)
    result = hits_for(
        {
            "halved": base + before + halved,
            "down_40": base + before + six,
            "halved_no_history": base + recent_month + halved,
        }
    )
    assert "rule:activity_drop" in result["halved"]
    assert "rule:activity_drop" not in result["down_40"]
    assert "rule:activity_drop" in result["halved_no_history"]


def test_no_login_for_30_days() -> None:
    base = steady_history("a")
    result = hits_for(
        {
            "quiet": without(base, "login", since_days=30),
            "logged_in_day_29": [
                *without(base, "login", since_days=30),
                ("x", T - 29 * DAY, "login", np.nan),
            ],
        }
    )
    assert "rule:no_recent_login" in result["quiet"]
    assert "rule:no_recent_login" not in result["logged_in_day_29"]


def test_two_consecutive_low_csat_scores() -> None:
    base = without(steady_history("a"), "csat")
    answers = {
        "two_low": [(150, 5.0), (40, 2.0), (10, 1.0)],
        "one_low": [(10, 1.0)],
        "low_then_good": [(40, 2.0), (10, 4.0)],
        "not_consecutive": [(60, 1.0), (40, 4.0), (10, 2.0)],  # two lows, a good answer between them
        "two_low_long_ago": [(170, 1.0), (160, 2.0)],  # consecutive whenever they were given
    }
    result = hits_for(
        {
            name: base + [("x", T - d * DAY, "csat", score) for d, score in rows]
            for name, rows in answers.items()
        }
    )
    hit = {name for name, codes in result.items() if "rule:low_csat_repeated" in codes}
    assert hit == {"two_low", "two_low_long_ago"}


def test_payment_overdue_more_than_60_days() -> None:
    base = steady_history("a")  # punctual monthly payments
    result = hits_for(
        {
            "overdue": [*base, ("x", T - 5 * DAY, "payment", 75.0)],
            "one_among_punctual": [*base, ("x", T - 80 * DAY, "payment", 61.0)],  # mean 90 days: 15
            "sixty": [*base, ("x", T - 5 * DAY, "payment", 60.0)],
            "before_the_window": [*base, ("x", T - 100 * DAY, "payment", 90.0)],
        }
    )
    assert "rule:payment_overdue" in result["overdue"]
    assert "rule:payment_overdue" in result["one_among_punctual"]
    assert "rule:payment_overdue" not in result["sixty"]
    assert "rule:payment_overdue" not in result["before_the_window"]


def test_key_contact_changed_in_90_days() -> None:
    base = steady_history("a")
    result = hits_for(
        {
            "changed": [*base, ("x", T - 80 * DAY, "contact_change", np.nan)],
            "long_ago": [*base, ("x", T - 100 * DAY, "contact_change", np.nan)],
        }
    )
    assert result["changed"] == ["rule:key_contact_changed"]
    assert result["long_ago"] == []


def test_tickets_three_times_the_customers_own_baseline() -> None:
    base = without(steady_history("a"), "ticket")
    baseline = [("x", T - d * DAY, "ticket", 1.0) for d in (40, 70, 100)]  # 1 a month
    surge = [("x", T - d * DAY, "ticket", 1.0) for d in (3, 9, 15)]  # 3 in 30 days: 3x
    two = [("x", T - d * DAY, "ticket", 1.0) for d in (3, 9)]  # 2x
    busy_baseline = [("x", T - d * DAY, "ticket", 1.0) for d in range(35, 120, 10)]  # 9 in 90 days
    result = hits_for(
        {
            "surge": base + baseline + surge,
            "double": base + baseline + two,
            "busy": base + busy_baseline + surge,
        }
    )
    assert "rule:ticket_surge" in result["surge"]
    assert "rule:ticket_surge" not in result["double"]
    assert "rule:ticket_surge" not in result["busy"]  # 3 a month is this customer's own normal


def test_health_down_20_points_over_90_days() -> None:
    config = load_scoring_config()
    book = RuleBook(config.rules, config.escalation, crm_schema())
    now = datetime(2025, 6, 1, tzinfo=UTC)
    history = FrameHistory(
        pd.DataFrame(
            {
                "customer_id": ["fell", "fell", "slipped", "old_drop"],
                "logged_at": [now - timedelta(days=80), now - timedelta(days=10), now - timedelta(days=60),
                              now - timedelta(days=120)],
                "health_score": [85, 70, 70, 95],
            }
        ),
        as_of=now,
    )  # fmt: skip
    ids = ["fell", "slipped", "old_drop", "new"]
    reference = {90: history.reference_health(ids, 90)}
    np.testing.assert_array_equal(reference[90], [85, 70, np.nan, np.nan])  # oldest in the window
    health = np.array([60, 55, 40, 10])
    zeros = lambda name: np.zeros(len(ids))  # noqa: E731 - no event rule fires on all-zero features...
    asked: list[list[int]] = []

    def lookup(window: int, rows: np.ndarray) -> np.ndarray:
        asked.append(rows.tolist())
        return reference[window][rows]

    hits = book.evaluate(zeros, health, np.array(["low"] * 4), lookup)
    codes = [[c for c in row if c == "rule:health_drop"] for row in hits.hit_codes()]
    assert codes == [["rule:health_drop"], [], [], []]  # 25 points: hit; 15: not; outside window: none
    assert asked == [[0, 1, 2, 3]]  # every health here is low enough for a 20-point drop
    (reason,) = [r for r in hits.reasons("en")[0] if r["code"] == "rule:health_drop"]
    assert reason["message"] == "health score down 25 points in 90 days"
    assert reason["value"] == 25 and reason["impact"] is None and reason["severity"] == "critical"


def test_the_score_history_is_read_only_for_rows_where_it_can_change_a_hit() -> None:
    def rule(*when: dict, if_missing: bool = False) -> RuleConfig:
        history = {"history": "health_drop", "window_days": 90, "if_missing": if_missing}
        return RuleConfig.model_validate(
            {
                "severity": "warning",
                "when": [*when[:-1], {**history, **when[-1]}],
                "message": {"en": "m", "zh": "m"},
            }
        )

    contact = {"feature": "contact_change__count_90d", "op": ">=", "value": 1}
    health = np.array([90, 50, 50, 85, 20])
    changed = np.array([1.0, 1.0, 0.0, 1.0, 1.0])
    past = np.array([100.0, 75.0, 90.0, np.nan, 30.0])  # drops: 10, 25, 40, unknown, 10

    def hits(config: RuleConfig) -> tuple[list[bool], list[int]]:
        asked: list[int] = []

        def lookup(window: int, rows: np.ndarray) -> np.ndarray:
            assert window == 90
            asked.extend(rows.tolist())
            return past[rows]

        book = RuleBook({"r": config}, EscalationConfig(), crm_schema())
        found = book.evaluate(lambda n: changed, health, np.array(["low"] * 5), lookup)
        return found.hits[:, 0].tolist(), asked

    # A 20-point drop needs health <= 80 now, and the contact condition must hold: rows 1 and 4.
    assert hits(rule(contact, {"op": ">=", "value": 20})) == ([False, True, False, False, False], [1, 4])
    # A rise of 30 or more (drop <= -30) needs health >= 30 now: rows 0, 1, 2, 3.
    assert hits(rule({"op": "<=", "value": -30})) == ([False] * 5, [0, 1, 2, 3])
    # When a missing history is a hit, every row the other conditions leave standing is read.
    found, asked = hits(rule(contact, {"op": ">=", "value": 20}, if_missing=True))
    assert found == [False, True, False, True, False] and asked == [0, 1, 3, 4]


# ------------------------------------------------------------------------------------------ escalation


def test_a_critical_rule_escalates_to_medium_and_says_so() -> None:
    config = load_scoring_config()
    book = RuleBook(config.rules, config.escalation, crm_schema())
    names = [spec.name for spec in crm_schema().features]
    values = {name: np.ones(3) for name in names}  # a quiet, unremarkable customer
    values["csat__last"] = values["csat__previous"] = np.full(3, 4.0)  # ...with good CSAT answers
    values["payment__max_90d"] = np.array([75.0, 75.0, 0.0])  # critical rule, first two customers
    values["contact_change__count_90d"] = np.array([0.0, 0.0, 1.0])  # warning rule, third
    hits = book.evaluate(lambda n: values[n], np.array([70, 10, 70]), np.array(["low", "high", "low"]))
    assert hits.tier.tolist() == ["medium", "high", "low"]  # never lowered; warnings do not escalate
    assert hits.escalated_by() == [["rule:payment_overdue"], [], []]
    reasons = hits.reasons("en")
    assert [(r["code"], r["escalated"]) for r in reasons[0]] == [("rule:payment_overdue", True)]
    assert [(r["code"], r["escalated"]) for r in reasons[1]] == [("rule:payment_overdue", False)]
    assert [(r["code"], r["severity"]) for r in reasons[2]] == [("rule:key_contact_changed", "warning")]


def test_escalate_to_and_the_severity_map_are_configurable() -> None:
    rule = RuleConfig.model_validate(
        {
            "severity": "warning",
            "escalate_to": "high",
            "when": [{"feature": "contact_change__count_90d", "op": ">=", "value": 1}],
            "message": {"en": "changed", "zh": "已变更"},
        }
    )
    schema = crm_schema()
    book = RuleBook({"vip_contact": rule}, EscalationConfig(critical=None), schema)
    hits = book.evaluate(lambda n: np.array([1.0]), np.array([90]), np.array(["low"]))
    assert hits.tier.tolist() == ["high"] and hits.escalated_by() == [["rule:vip_contact"]]
    warn_to_medium = EscalationConfig(warning="medium")
    rule = rule.model_copy(update={"escalate_to": None})
    hits = RuleBook({"c": rule}, warn_to_medium, schema).evaluate(
        lambda n: np.array([1.0]), np.array([90]), np.array(["low"])
    )
    assert hits.tier.tolist() == ["medium"]


def test_predictor_escalates_through_score_history_and_lists_the_rule_first() -> None:
    predictor = Predictor.load(telco_artifact_dir(), "local")
    rows = telco_rows(200, seed=3)
    plain = predictor.score_frame(rows)
    lows = np.flatnonzero(plain.tier == "low")
    low = int(lows[np.argmin(plain.health[lows])])  # the least healthy of the low tier
    customer = plain.customer_ids[low]
    now = datetime.now(UTC)
    history = FrameHistory(
        pd.DataFrame(
            {"customer_id": [customer], "logged_at": [now - timedelta(days=30)], "health_score": [100]}
        ),
        as_of=now,
    )
    drop = 100 - int(plain.health[low])
    assert drop >= 20, "the fixture's low-tier customers score below 80"
    batch = predictor.score_frame(rows.iloc[[low]], history=history)
    result = batch.results()[0]
    assert (result["model_tier"], result["alert_tier"]) == ("low", "medium")
    assert result["escalated_by"] == ["rule:health_drop"]
    assert result["health_score"] == plain.health[low]  # the health score stays the model's
    first = result["reasons"][0]
    assert first["code"] == "rule:health_drop" and first["escalated"] is True
    assert first["message"] == f"health score down {drop} points in 90 days"
    assert result["reasons"][1:] == plain.results()[low]["reasons"]
    zh = batch.results(language="zh")[0]["reasons"][0]["message"]
    assert zh == f"健康分在 90 天内下降了 {drop} 分"
    # The wire encoding is the same document.
    import json

    from service.payloads import single_body

    assert json.loads(single_body(batch, "zh"))["reasons"] == batch.reasons_in("zh")[0]


def test_rules_a_model_cannot_evaluate_are_inactive_and_named() -> None:
    predictor = Predictor.load(telco_artifact_dir(), "local")
    described = predictor.metadata()["rules"]
    assert [rule["code"] for rule in described["active"]] == ["rule:health_drop"]
    inactive = {rule["code"]: rule["why"] for rule in described["inactive"]}
    assert inactive["rule:no_recent_order"] == "the model has no feature order__count_90d"
    assert len(inactive) == 7


# ------------------------------------------------------------------------------------------- messages


def test_every_shipped_message_reads_well_in_both_languages() -> None:
    config = load_scoring_config()
    for name, rule in config.rules.items():
        values = [c.value + (1 if c.op in {">", ">="} else 0) for c in rule.when]
        english, chinese = render(rule, values, "en"), render(rule, values, "zh")
        for text in (english, chinese):
            assert "{" not in text and "?" not in text and text.strip() == text, (name, text)
        assert english.isascii() and not CJK.search(english), (name, english)
        assert CJK.search(chinese), (name, chinese)
        assert english != chinese


def test_rule_messages_fill_in_the_observed_values() -> None:
    rules = load_scoring_config().rules
    assert render(rules["activity_drop"], [0.4], "en") == "logins down 60% month over month"
    assert render(rules["activity_drop"], [0.4], "zh") == "登录次数环比下降 60%"
    assert render(rules["ticket_surge"], [3.5, 4], "en") == (
        "support tickets at 3.5x the customer's usual rate (4 in the last 30 days)"
    )
    assert (
        render(rules["ticket_surge"], [3.5, 4], "zh") == "支持工单量达到该客户平时的 3.5 倍（近 30 天 4 张）"
    )
    assert render(rules["no_recent_order"], [0], "zh") == "近 90 天没有任何订单"
    assert (
        render(rules["low_csat_repeated"], [1, 2], "en")
        == "the last two CSAT answers were 2 and 1 (2 or less)"
    )
    assert render(rules["payment_overdue"], [75], "zh") == "近 90 天有一笔付款逾期 75 天"


@pytest.mark.parametrize(
    ("spec", "value", "english", "chinese"),
    [
        (FeatureSpec(name="Contract", dtype="categorical", group="relationship"), "Monthly",
         "Contract is Monthly", "Contract 为 Monthly"),
        (FeatureSpec(name="order__days_since_last", dtype="numeric", group="transactions",
                     kind="days_since_last", event_type="order", label="orders"), 45.2,
         "no orders for 45 days", "已 45 天没有订单"),
        (FeatureSpec(name="login__trend_30_90", dtype="numeric", group="activity", kind="trend",
                     event_type="login", label="logins"), 0.4,
         "logins down 60% against the previous 90 days", "登录较此前 90 天下降 60%"),
        (FeatureSpec(name="ticket__count_30d", dtype="numeric", group="service", kind="count",
                     event_type="ticket", window_days=30, label="support tickets"), 4.0,
         "4 support tickets in the last 30 days", "近 30 天支持工单 4 次"),
        (FeatureSpec(name="order__sum_90d", dtype="numeric", group="transactions", kind="sum",
                     event_type="order", window_days=90, label="orders"), 0.0,
         "no orders in the last 90 days", "近 90 天没有订单"),
        (FeatureSpec(name="csat__mean_90d", dtype="numeric", group="satisfaction", kind="mean",
                     event_type="csat", window_days=90, label="CSAT responses"), 2.5,
         "CSAT responses averaging 2.5 over the last 90 days", "近 90 天满意度评分平均 2.5"),
        (FeatureSpec(name="login__mom", dtype="numeric", group="activity", kind="mom", window_days=30,
                     event_type="login", label="logins"), 0.5,
         "logins down 50% against the previous 30 days", "登录较此前 30 天下降 50%"),
        (FeatureSpec(name="login__mom", dtype="numeric", group="activity", kind="mom", window_days=30,
                     event_type="login", label="logins"), float("nan"),
         "no logins in the previous 30 days to compare with", "此前 30 天没有登录，无从比较"),
        (FeatureSpec(name="payment__max_90d", dtype="numeric", group="payments", kind="max",
                     event_type="payment", window_days=90, label="payments"), 75.0,
         "payments peaking at 75 in the last 90 days", "近 90 天付款最高 75"),
        (FeatureSpec(name="payment__max_90d", dtype="numeric", group="payments", kind="max",
                     event_type="payment", window_days=90, label="payments"), float("nan"),
         "no payments with a value in the last 90 days", "近 90 天没有带数值的付款"),
        (FeatureSpec(name="csat__last", dtype="numeric", group="satisfaction", kind="last",
                     event_type="csat", label="CSAT responses"), 2.0,
         "latest of the CSAT responses: 2", "最近一次满意度评分：2"),
        (FeatureSpec(name="csat__previous", dtype="numeric", group="satisfaction", kind="previous",
                     event_type="csat", label="CSAT responses"), 1.0,
         "the one before the latest of the CSAT responses: 1", "上一次满意度评分：1"),
        (FeatureSpec(name="csat__last", dtype="numeric", group="satisfaction", kind="last",
                     event_type="csat", label="CSAT responses"), None,
         "no CSAT responses on record", "没有满意度评分记录"),
        (FeatureSpec(name="tenure_days", dtype="numeric", group="relationship", kind="tenure"), 400.0,
         "customer for 400 days", "已合作 400 天"),
        (FeatureSpec(name="MonthlyCharges", dtype="numeric", group="transactions"), 70.5,
         "MonthlyCharges is 70.5", "MonthlyCharges 为 70.5"),
    ],
)  # fmt: skip
def test_driver_messages_in_both_languages(
    spec: FeatureSpec, value: object, english: str, chinese: str
) -> None:
    assert describe(spec, value) == english
    assert describe_zh(spec, value) == chinese


# ----------------------------------------------------------------------------------------- validation


def write_scoring(tmp_path: Path, rules: dict) -> Path:
    data = yaml.safe_load((config_dir() / "scoring.yaml").read_text())
    data["rules"] = rules
    path = tmp_path / "scoring.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def test_a_new_rule_needs_only_yaml(tmp_path: Path) -> None:
    path = write_scoring(
        tmp_path,
        {
            "webinar_dropout": {
                "severity": "info",
                "when": [
                    {"event": "webinar", "measure": "count", "window_days": 180, "op": "==", "value": 0}
                ],
                "message": {"en": "no webinar in {window} days", "zh": "近 {window} 天未参加网络研讨会"},
            }
        },
    )
    config = load_file(ScoringConfig, path, environ={})
    book = RuleBook(config.rules, config.escalation, crm_schema())
    assert [rule.code for rule in book.active] == ["rule:webinar_dropout"]
    hits = book.evaluate(lambda n: np.array([0.0]), np.array([90]), np.array(["low"]))
    assert hits.reasons("zh")[0][0]["message"] == "近 180 天未参加网络研讨会"


@pytest.mark.parametrize(
    ("rule", "key", "expected"),
    [
        ({"when": [{"event": "order", "op": "==", "value": 0}], "message": {"en": "x", "zh": "x"}},
         "rules.bad.when.0", "needs a `measure`"),
        ({"when": [{"event": "order", "measure": "count", "op": "==", "value": 0}],
          "message": {"en": "x", "zh": "x"}}, "rules.bad.when.0", "needs `window_days`"),
        ({"when": [{"feature": "x", "op": "=~", "value": 0}], "message": {"en": "x", "zh": "x"}},
         "rules.bad.when.0.op", "'<', '<=', '==', '!=', '>=' or '>'"),
        ({"when": [{"feature": "x", "op": ">", "value": 0}], "message": {"en": "{days} days", "zh": "x"}},
         "rules.bad", "message.en: unknown placeholder {days}"),
        ({"when": [{"feature": "x", "op": ">", "value": 0}], "message": {"en": "x"}},
         "rules.bad.message.zh", "Field required"),
        ({"severity": "urgent", "when": [{"feature": "x", "op": ">", "value": 0}],
          "message": {"en": "x", "zh": "x"}}, "rules.bad.severity", "'info', 'warning' or 'critical'"),
        ({"when": [{"history": "health_drop", "op": ">", "value": 0}], "message": {"en": "x", "zh": "x"}},
         "rules.bad.when.0", "`history` needs `window_days`"),
    ],
)  # fmt: skip
def test_bad_rules_fail_on_load_naming_file_key_and_expectation(
    tmp_path: Path, rule: dict, key: str, expected: str
) -> None:
    path = write_scoring(tmp_path, {"bad": rule})
    with pytest.raises(ConfigError) as error:
        load_file(ScoringConfig, path, environ={})
    message = str(error.value)
    assert str(path) in message and f"key '{key}" in message and expected in message, message


def test_a_bad_rule_code_is_refused(tmp_path: Path) -> None:
    path = write_scoring(
        tmp_path,
        {"No Order!": {"when": [{"feature": "x", "op": ">", "value": 0}], "message": {"en": "x", "zh": "x"}}},
    )
    with pytest.raises(ConfigError, match="rule code 'No Order!': expected lower-case letters"):
        load_file(ScoringConfig, path, environ={})


def test_thresholds_can_be_overridden_from_the_environment() -> None:
    config = load_file(
        ScoringConfig,
        config_dir() / "scoring.yaml",
        environ={"CHURNGUARD_SCORING__ESCALATION__WARNING": "medium"},
    )
    assert config.escalation.warning == "medium"


def test_logged_history_reads_rows_and_batch_records(tmp_path: Path) -> None:
    from churnguard.history import LoggedHistory
    from churnguard.prediction_log import PredictionLog

    predictor = Predictor.load(telco_artifact_dir(), "local")
    prediction_log = PredictionLog.open(f"sqlite:///{tmp_path / 'log.db'}", batch_rows=5)
    rows = telco_rows(12, seed=4)
    large, small = predictor.score_frame(rows.head(10)), predictor.score_frame(rows.tail(2))
    prediction_log.append(large, "batch")  # one batch record
    prediction_log.append(small, "rows")  # two rows
    history = LoggedHistory(prediction_log)
    ids = [*rows["customer_id"], "unknown"]
    expected = [*large.health.tolist(), *small.health.tolist(), np.nan]
    np.testing.assert_array_equal(history.reference_health(ids, 90), expected)
    np.testing.assert_array_equal(history.reference_health(ids, 90), expected)  # from the cache
    prediction_log.compact()
    np.testing.assert_array_equal(history.reference_health(ids, 90), expected)
    prediction_log.close()


@pytest.mark.parametrize("asked", [60, 300])  # fewer customers than rows in the window, and more
def test_oldest_health_of_many_customers_reads_the_oldest_row_in_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asked: int
) -> None:
    """Many customers: looked up customer by customer through the index, or (when the window holds no
    more rows than customers asked for) by reading the window's rows; the same answer either way."""
    from datetime import UTC, datetime, timedelta

    import churnguard.prediction_log as prediction_log_module
    from churnguard.prediction_log import PredictionLog

    predictor = Predictor.load(telco_artifact_dir(), "local")
    prediction_log = PredictionLog.open(f"sqlite:///{tmp_path / 'log.db'}", batch_rows=1_000)
    now = datetime.now(UTC)
    ids = [f"c{i:03d}" for i in range(80)]
    scored = {}
    for days, seed in ((200, 1), (60, 2), (10, 3)):  # 200 days ago falls outside the 90-day window
        rows = telco_rows(80, seed=seed).assign(customer_id=ids)
        scored[days] = predictor.score_frame(rows)
        stamp = (now - timedelta(days=days)).isoformat(timespec="microseconds")
        monkeypatch.setattr(prediction_log_module, "now_iso", lambda stamp=stamp: stamp)
        prediction_log.append(scored[days], "rows")
    wanted = [f"c{i:03d}" for i in range(asked)]  # 160 rows in the window
    found = prediction_log.oldest_health(wanted, now - timedelta(days=90))
    expected = np.full(asked, np.nan)
    known = min(asked, 80)
    expected[:known] = scored[60].health[:known]
    np.testing.assert_array_equal(found, expected)
    assert not np.array_equal(scored[60].health, scored[10].health)  # the fixture tells them apart
    prediction_log.close()


@pytest.mark.parametrize("top_reasons", [3, 0])
def test_reasons_text_of_files_and_answers_is_the_reasons_document(top_reasons: int) -> None:
    """The reasons column of a scored file and the service's answers are the JSON of `reasons_in`,
    rule reasons first, for a batch past the few-rows path, in both languages."""
    import json

    from service.payloads import batch_body

    predictor = Predictor.load(telco_artifact_dir(), "local", top_reasons=top_reasons)
    rows = telco_rows(200, seed=3)
    now = datetime.now(UTC)
    history = FrameHistory(
        pd.DataFrame(
            {"customer_id": rows["customer_id"], "logged_at": now - timedelta(days=30), "health_score": 100}
        ),
        as_of=now,
    )
    batch = predictor.score_frame(rows, history=history)
    hit = batch.rule_hits.hits.any(axis=1)
    assert 0 < hit.sum() < len(rows), "some customers hit the health-drop rule, some do not"
    for language in ("en", "zh"):
        documents = batch.reasons_in(language)
        assert all(len(reasons) == top_reasons + bool(h) for reasons, h in zip(documents, hit, strict=True))
        column = batch.to_frame(language=language)["reasons"]
        assert [json.loads(text) for text in column] == documents
        answer = json.loads(batch_body(batch, language))["results"]
        assert [result["reasons"] for result in answer] == documents
