"""What an alert says, in the recipient's language (en or zh): the payload stored in the outbox.

Every message carries the tier, the health score, the top reasons, the value tier and the alert's id
(and link, when configured) for acting on it. The payload is made when the message is queued and
sent as stored, so what the owner got is what the outbox holds.
"""

from __future__ import annotations

from typing import Any

from alerts.routing import AlertsConfig, Language, Route

TIER_NAMES: dict[Language, dict[str, str]] = {
    "en": {"high": "high", "medium": "medium", "low": "low"},
    "zh": {"high": "高", "medium": "中", "low": "低"},
}
TEXT: dict[Language, dict[str, str]] = {
    "en": {
        "alert": "Churn risk: customer {customer} is in the {tier} tier (health {health}/100)",
        "update": "Churn risk rising: customer {customer} is now in the {tier} tier (health {health}/100)",
        "escalation": (
            "Not acknowledged in {sla} h: customer {customer} ({owner}), {tier} tier, health {health}/100"
        ),
        "digest": "{count} more churn alerts for {owner} on {day}, by priority",
        "facts": "tier {tier}, health score {health}/100, value tier {value}, priority {priority}",
        "why": "Why:",
        "triggers": "Raised because: ",
        "act": "Act on alert #{alert_id}: {where}; acknowledge within {sla} h",
        "cli": "churnguard alerts ack {alert_id}",
        "enter_high": "entered the high tier",
        "rise_by_tier": "rose from {previous} to {tier}",
        "critical_rule": "critical rule {rule}",
        "line": (
            "#{alert_id} {customer}: {tier} tier, health {health}, value {value}, "
            "priority {priority}; {reason}"
        ),
    },
    "zh": {
        "alert": "流失预警：客户 {customer} 进入{tier}风险层级（健康分 {health}/100）",
        "update": "风险上升：客户 {customer} 现为{tier}风险层级（健康分 {health}/100）",
        "escalation": "超过 {sla} 小时未确认：客户 {customer}（{owner}），{tier}风险，健康分 {health}",
        "digest": "{owner} 在 {day} 另有 {count} 条流失预警，按优先级排列",
        "facts": "风险层级 {tier}，健康分 {health}/100，客户价值 {value}，优先级 {priority}",
        "why": "原因：",
        "triggers": "触发条件：",
        "act": "处理预警 #{alert_id}：{where}；请在 {sla} 小时内确认",
        "cli": "churnguard alerts ack {alert_id}",
        "enter_high": "进入高风险层级",
        "rise_by_tier": "风险层级由{previous}升至{tier}",
        "critical_rule": "触发严重规则 {rule}",
        "line": (
            "#{alert_id} {customer}：{tier}风险，健康分 {health}，价值 {value}，优先级 {priority}；{reason}"
        ),
    },
}


def top_reasons(alert: dict[str, Any], language: Language, count: int) -> list[dict[str, Any]]:
    """Rule hits first, then the drivers that raise the risk (a driver that lowers it explains nothing)."""
    reasons = alert["reasons"].get(language) or alert["reasons"].get("en") or []
    return [r for r in reasons if not str(r.get("code", "")).startswith("lowers_risk:")][:count]


def _tier(name: str | None, language: Language) -> str:
    return TIER_NAMES[language].get(name or "", name or "?")


def _triggers(alert: dict[str, Any], language: Language) -> list[str]:
    text = TEXT[language]
    out = []
    for trigger in alert["triggers"]:
        if trigger.startswith("critical_rule:"):
            out.append(text["critical_rule"].format(rule=trigger.split(":", 1)[1]))
        elif trigger == "rise_by_tier":
            out.append(
                text["rise_by_tier"].format(
                    previous=_tier(alert.get("previous_tier"), language), tier=_tier(alert["tier"], language)
                )
            )
        elif trigger in text:
            out.append(text[trigger])
    return out


def alert_facts(alert: dict[str, Any], config: AlertsConfig, language: Language) -> dict[str, Any]:
    """The alert as a message carries it: JSON-ready, in one language."""
    return {
        "alert_id": alert["alert_id"],
        "customer_id": alert["customer_id"],
        "owner": alert["owner"],
        "state": alert["state"],
        "tier": alert["tier"],
        "model_tier": alert.get("model_tier"),
        "health_score": alert["health_score"],
        "churn_probability": alert["churn_probability"],
        "value_tier": alert["value_tier"],
        "priority": alert["priority"],
        "triggers": alert["triggers"],
        "reasons": top_reasons(alert, language, config.top_reasons),
        "observation_date": alert["observation_date"],
        "due_at": alert["due_at"],
        "link": config.link.format(alert_id=alert["alert_id"]) if config.link else None,
    }


def compose(
    kind: str,
    alerts: list[dict[str, Any]],
    route: Route,
    config: AlertsConfig,
    *,
    key: str,
    owner: str | None = None,
    day: str | None = None,
) -> dict[str, Any]:
    """The payload of one message: `alert`, `update` and `escalation` carry one alert, a `digest` many
    (already ordered by priority)."""
    language = route.language
    text = TEXT[language]
    first = alerts[0]
    sla = f"{route.sla_hours:g}"
    if kind == "digest":
        subject = text["digest"].format(count=len(alerts), owner=owner, day=day)
        lines = [subject]
        for alert in alerts:
            reasons = top_reasons(alert, language, 1)
            lines.append(
                "- "
                + text["line"].format(
                    alert_id=alert["alert_id"],
                    customer=alert["customer_id"],
                    tier=_tier(alert["tier"], language),
                    health=alert["health_score"],
                    value=_tier(alert["value_tier"], language),
                    priority=alert["priority"],
                    reason=reasons[0]["message"] if reasons else "",
                )
            )
    else:
        subject = text[kind].format(
            customer=first["customer_id"],
            tier=_tier(first["tier"], language),
            health=first["health_score"],
            sla=sla,
            owner=first["owner"],
        )
        where = (
            config.link.format(alert_id=first["alert_id"])
            if config.link
            else text["cli"].format(alert_id=first["alert_id"])
        )
        lines = [
            subject,
            text["facts"].format(
                tier=_tier(first["tier"], language),
                health=first["health_score"],
                value=_tier(first["value_tier"], language),
                priority=first["priority"],
            ),
            text["why"],
            *(f"- {reason['message']}" for reason in top_reasons(first, language, config.top_reasons)),
        ]
        triggers = _triggers(first, language)
        if triggers:
            lines.append(text["triggers"] + "; ".join(triggers))
        lines.append(text["act"].format(alert_id=first["alert_id"], where=where, sla=sla))
    return {
        "idempotency_key": key,
        "kind": kind,
        "alert_id": first["alert_id"] if kind != "digest" else None,
        "alert_ids": [alert["alert_id"] for alert in alerts],
        "language": language,
        "recipient": {"name": route.person, "email": route.email},
        "subject": subject,
        "text": "\n".join(lines),
        "alerts": [alert_facts(alert, config, language) for alert in alerts],
    }
