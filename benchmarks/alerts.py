"""Delivery that loses nothing: at least 1,000 alerts through a receiver outage of at least 30 s.

The receiver (alerts/receiver.py, on loopback) answers 500 for the whole outage, then hangs past the
sender's timeout a few times, then recovers; it keeps one copy per idempotency key and counts every
alert that reaches it. Prints the counts: lost and doubled must both be 0.

    .venv/bin/python benchmarks/alerts.py --alerts 1000 --outage 30
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_alerts import SECRET, SECRET_ENV, delivery_trial  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the receiver answers 500")
    parser.add_argument("--hangs", type=int, default=5, help="requests that hang past the timeout after it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # each failed try is a warning: thousands in an outage
    os.environ[SECRET_ENV] = SECRET
    with tempfile.TemporaryDirectory() as folder:
        os.environ["CHURNGUARD_STATE_DIR"] = str(Path(folder) / "state")
        counts = delivery_trial(Path(folder), args.alerts, args.outage, args.hangs)
    print(json.dumps(counts, indent=2))
    ok = counts["lost"] == 0 and counts["doubled"] == 0 and counts["sent"] == args.alerts
    print(
        f"{'PASS' if ok else 'FAIL'}: {counts['alerts']:,} alerts, {counts['outage_seconds']} s outage, "
        f"{counts['lost']} lost, {counts['doubled']} doubled"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
