"""Load: `--users` concurrent locust clients mix single and batch calls against the real service.

    .venv/bin/python benchmarks/load.py --duration 300 --users 32          # starts its own server
    .venv/bin/python benchmarks/load.py --url http://127.0.0.1:3000 --log sqlite:///PATH --duration 20

Locust runs in this process; the service runs in its own (`churnguard serve` on loopback, `--workers`
workers, prediction log on), so the load comes from a second process as a client's would. Without
`--url`, the test fixture's model (Telco, 120 trees) is served from a temporary state folder.

The mix, per client, with no think time (each client sends its next request when the last returns):
  6 x POST /predict with reasons, 2 x POST /predict without, 3 x POST /predict_batch of 20 customers
  with reasons, 1 x POST /predict_batch of 500 customers without reasons (JSON), 1 x a CSV upload of
  100 customers.
Every response is checked (status 200, one result per customer, in order). Every request carries an
X-Request-ID with this run's prefix, so the log check counts exactly this run's customers: the
prediction log must hold one entry per customer acknowledged, no more and no fewer.

Prints requests, errors, throughput, p50/p95/p99 latency overall and per call, and the log check;
`--json PATH` also writes them. Exit 1 on any error or an incomplete log.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # locust's clients are greenlets: patch before anything opens a socket

import argparse  # noqa: E402
import contextlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from locust import FastHttpUser, constant, task  # noqa: E402
from locust.env import Environment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

log = logging.getLogger("benchmarks.load")

RUN = f"load-{uuid.uuid4().hex[:8]}"  # this run's request-id prefix
SMALL_BATCH, LARGE_BATCH, CSV_ROWS = 20, 500, 100


class Traffic:
    """Customers to send (real Telco rows) and what was acknowledged."""

    records: list[dict] = []
    csv_header: str = ""
    csv_lines: list[str] = []
    api_key: str | None = None
    acknowledged = 0
    bad_answers: list[str] = []
    counter = itertools.count()

    @classmethod
    def load(cls) -> None:
        from model_fixtures import telco_customers, telco_rows

        cls.records = telco_customers(2_000, seed=5)
        text = telco_rows(2_000, seed=5).to_csv(index=False).splitlines()
        cls.csv_header, cls.csv_lines = text[0], text[1:]


class ServiceClient(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.client_id = next(Traffic.counter)
        self.sent = 0

    def _next(self, count: int) -> tuple[str, list[dict]]:
        self.sent += 1
        request_id = f"{RUN}-{self.client_id}-{self.sent}"
        start = (self.client_id * 97 + self.sent * 31) % (len(Traffic.records) - count)
        customers = [
            {**record, "customer_id": f"{request_id}-{j}"}
            for j, record in enumerate(Traffic.records[start : start + count])
        ]
        return request_id, customers

    def _headers(self, request_id: str, content_type: str = "application/json") -> dict[str, str]:
        headers = {"X-Request-ID": request_id, "Content-Type": content_type}
        if Traffic.api_key:
            headers["Authorization"] = f"Bearer {Traffic.api_key}"
        return headers

    def _post(self, path: str, name: str, request_id: str, ids: list[str], **kwargs) -> None:
        with self.client.post(path, name=name, catch_response=True, **kwargs) as response:
            if response.status_code != 200:
                detail = (response.text or "")[:200] or repr(response.error)
                response.failure(f"{response.status_code}: {detail}")
                return
            body = response.json()
            results = [body] if path == "/predict" else body.get("results", [])
            if [r.get("customer_id") for r in results] != ids:
                response.failure("results do not match the customers sent")
                Traffic.bad_answers.append(request_id)
                return
            Traffic.acknowledged += len(ids)
            response.success()

    @task(6)
    def single_with_reasons(self) -> None:
        request_id, (customer,) = self._next(1)
        body = json.dumps({"customer": customer, "explain": True})
        self._post(
            "/predict",
            "single, reasons",
            request_id,
            [customer["customer_id"]],
            data=body,
            headers=self._headers(request_id),
        )

    @task(2)
    def single_without_reasons(self) -> None:
        request_id, (customer,) = self._next(1)
        body = json.dumps({"customer": customer, "explain": False})
        self._post(
            "/predict",
            "single, no reasons",
            request_id,
            [customer["customer_id"]],
            data=body,
            headers=self._headers(request_id),
        )

    @task(3)
    def small_batch(self) -> None:
        request_id, customers = self._next(SMALL_BATCH)
        body = json.dumps({"customers": customers, "explain": True})
        self._post(
            "/predict_batch",
            f"batch {SMALL_BATCH}, reasons",
            request_id,
            [c["customer_id"] for c in customers],
            data=body,
            headers=self._headers(request_id),
        )

    @task(1)
    def large_batch(self) -> None:
        request_id, customers = self._next(LARGE_BATCH)
        body = json.dumps({"customers": customers, "explain": False})
        self._post(
            "/predict_batch",
            f"batch {LARGE_BATCH}, no reasons",
            request_id,
            [c["customer_id"] for c in customers],
            data=body,
            headers=self._headers(request_id),
        )

    @task(1)
    def csv_upload(self) -> None:
        self.sent += 1
        request_id = f"{RUN}-{self.client_id}-{self.sent}"
        start = (self.client_id * 53 + self.sent * 17) % (len(Traffic.csv_lines) - CSV_ROWS)
        lines = Traffic.csv_lines[start : start + CSV_ROWS]
        ids = [f"{request_id}-{j}" for j in range(CSV_ROWS)]
        # customer_id is the first column of the fixture rows
        rows = [f"{i},{line.split(',', 1)[1]}" for i, line in zip(ids, lines, strict=True)]
        body = "\n".join([Traffic.csv_header, *rows])
        self._post(
            "/predict_batch?explain=false",
            f"csv upload {CSV_ROWS}",
            request_id,
            ids,
            data=body.encode(),
            headers=self._headers(request_id, "text/csv"),
        )


def run_locust(
    url: str | None, users: int, duration: float, user_classes: list[type[FastHttpUser]] | None = None
) -> Environment:
    """`users` clients for `duration` seconds; `user_classes` with their own `host` spread the clients
    over several services (benchmarks/replicas.py), else every client calls `url`."""
    # stop_timeout: at the end, each client finishes the request it has in flight (so that every
    # request the service answered is counted, and the log check is exact).
    environment = Environment(user_classes=user_classes or [ServiceClient], host=url, stop_timeout=120)
    runner = environment.create_local_runner()
    runner.start(users, spawn_rate=users)
    gevent.sleep(duration)
    runner.stop()
    runner.quit()
    return environment


LOG_COUNTS = (
    "SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM predictions WHERE request_id LIKE ?",
    "SELECT COALESCE(SUM(customers), 0) FROM prediction_batches WHERE request_id LIKE ?",
)


def logged_customers(url: str) -> tuple[int, int]:
    """This run's customers in the log (SQLite or PostgreSQL): entries, and distinct customer ids
    among row entries."""
    pattern = f"{RUN}-%"
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(url) as sql:
            (rows, distinct), (held,) = (
                sql.execute(query.replace("?", "%s"), [pattern]).fetchone() for query in LOG_COUNTS
            )
    else:
        path = url[len("sqlite:///") :].partition("?")[0] if url.startswith("sqlite:///") else url
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as sql:
            (rows, distinct), (held,) = (sql.execute(query, [pattern]).fetchone() for query in LOG_COUNTS)
    return int(rows) + int(held), int(distinct) + int(held)


def summarize(environment: Environment, users: int, duration: float, log_url: str | None) -> dict:
    stats = environment.stats
    total = stats.total
    per_call = {
        name: {
            "requests": entry.num_requests,
            "errors": entry.num_failures,
            "p50_ms": entry.get_response_time_percentile(0.5),
            "p99_ms": entry.get_response_time_percentile(0.99),
        }
        for (name, _method), entry in sorted(stats.entries.items())
    }
    errors = [f"{e.name}: {e.error} (x{e.occurrences})" for e in stats.errors.values()]
    summary = {
        "run": RUN,
        "users": users,
        "duration_s": duration,
        "requests": total.num_requests,
        "errors": total.num_failures,
        "error_samples": errors[:5],
        "requests_per_s": total.num_requests / duration if duration else 0.0,
        "p50_ms": total.get_response_time_percentile(0.5),
        "p95_ms": total.get_response_time_percentile(0.95),
        "p99_ms": total.get_response_time_percentile(0.99),
        "max_ms": total.max_response_time,
        "customers_scored": Traffic.acknowledged,
        "per_call": per_call,
    }
    if log_url:
        entries, distinct = logged_customers(log_url)
        summary["log_entries"] = entries
        summary["log_distinct_customers"] = distinct
        summary["log_complete"] = entries == distinct == Traffic.acknowledged
    return summary


def print_summary(summary: dict) -> None:
    print(f"\nload: {summary['users']} clients for {summary['duration_s']:.0f} s (run {summary['run']})")
    print(
        f"  requests {summary['requests']:,}  errors {summary['errors']}  "
        f"{summary['requests_per_s']:.1f} req/s  customers scored {summary['customers_scored']:,}"
    )
    print(
        f"  latency p50 {summary['p50_ms']:.0f} ms  p95 {summary['p95_ms']:.0f} ms  "
        f"p99 {summary['p99_ms']:.0f} ms  max {summary['max_ms']:.0f} ms"
    )
    for name, call in summary["per_call"].items():
        print(
            f"    {name:<28} {call['requests']:>7,} req  {call['errors']} err  "
            f"p50 {call['p50_ms']:.0f} ms  p99 {call['p99_ms']:.0f} ms"
        )
    for sample in summary["error_samples"]:
        print(f"  error: {sample}")
    if "log_entries" in summary:
        verdict = "complete" if summary["log_complete"] else "INCOMPLETE"
        print(
            f"  prediction log: {summary['log_entries']:,} entries, {summary['log_distinct_customers']:,} "
            f"distinct, for {summary['customers_scored']:,} customers acknowledged: {verdict}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--users", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--url", help="a running service; default: start one")
    parser.add_argument(
        "--log", help="its prediction log (sqlite:///PATH or postgresql://...) for the completeness check"
    )
    parser.add_argument("--api-key", default=os.environ.get("LOAD_API_KEY"), help="bearer key, if needed")
    parser.add_argument("--workers", type=int, default=2, help="service workers when starting one")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Traffic.load()
    Traffic.api_key = args.api_key
    server = None
    folder = None
    try:
        if args.url:
            url, log_url = args.url, args.log
        else:
            from model_fixtures import start_server, telco_artifact_dir

            folder = tempfile.TemporaryDirectory(prefix="churnguard-load-")
            state = Path(folder.name) / "state"
            server = start_server(
                str(telco_artifact_dir()), state, workers=args.workers, env={"CHURNGUARD_API_KEYS": ""}
            )
            url, log_url = server.base_url, f"sqlite:///{state / 'predictions.db'}"
            print(f"service: {url}, {args.workers} worker(s), log {log_url}", flush=True)
        started = time.monotonic()
        environment = run_locust(url, args.users, args.duration)
        summary = summarize(environment, args.users, time.monotonic() - started, log_url)
    finally:
        if server is not None:
            server.stop()
        if folder is not None:
            folder.cleanup()
    print_summary(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    failed = summary["errors"] > 0 or summary.get("log_complete") is False
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
