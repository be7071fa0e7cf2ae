"""What a /metrics scrape costs: the alert measures over a store of N alerts (SQLite, in a temp folder).

.venv/bin/python benchmarks/alert_measures.py --alerts 100000
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from alerts.measures import measures_from_store, prometheus_text  # noqa: E402
from alerts.store import AlertStore  # noqa: E402

FIELDS = {"model": "m", "raised_day": "2025-06-01", "observation_date": "2025-06-01",
          "reasons": {"en": []}, "delivery": "single", "updated_at": 0.0}  # fmt: skip


def fill(store: AlertStore, alerts: int, seed: int = 0) -> None:
    """Alerts over 40 owners: a quarter open, a quarter acknowledged, half resolved."""
    rng = random.Random(seed)
    with store.transaction() as cursor:
        for number in range(alerts):
            raised = rng.uniform(0, 1e7)
            acknowledged = raised + rng.expovariate(1 / 7200)
            state = rng.choice(["open", "acknowledged", "resolved", "resolved"])
            resolved = state == "resolved"
            store.insert_alert(
                cursor,
                {
                    **FIELDS,
                    "customer_id": f"C{number}",
                    "owner": f"Owner {number % 40}",
                    "state": state,
                    "tier": rng.choice(["high", "medium"]),
                    "triggers": ["enter_high"],
                    "rules": ["health_drop"] if number % 5 == 0 else [],
                    "raised_at": raised,
                    "due_at": raised + 86400,
                    "acknowledged_at": None if state == "open" else acknowledged,
                    "resolved_at": acknowledged + 86400 if resolved else None,
                    "outcome": rng.choice(["saved", "churned", "false_alarm"]) if resolved else None,
                },
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = AlertStore.open(f"sqlite:///{Path(folder) / 'events.db'}")
        fill(store, args.alerts)
        for _ in range(args.repeats):
            started = time.perf_counter()
            text = prometheus_text(measures_from_store(store))
            seconds = time.perf_counter() - started
            print(f"{args.alerts:,} alerts: measures + Prometheus text {seconds:.2f} s, {len(text):,} bytes")
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
