"""Replicas: the 32-client load scenario of benchmarks/load.py spread over two `churnguard serve`
processes that share one PostgreSQL prediction log and event store, as behind a load balancer.

    .venv/bin/python benchmarks/replicas.py --duration 300 --users 32     # the bar: 5 minutes
    .venv/bin/python benchmarks/replicas.py --duration 60                 # a quick check

It makes a fresh database on the PostgreSQL server (`CHURNGUARD_TEST_POSTGRES`, default the project
machines' postgresql://postgres@127.0.0.1:5432/postgres), starts two replicas of the fixture model
(Telco, 120 trees) with `--workers` workers each, and runs locust in this process: half the clients
call replica A, half replica B, with the same mix and checks as benchmarks/load.py. Afterwards the
shared log must hold exactly the customers acknowledged, once each. The database is dropped at the end.

Prints the load summary with each call per replica; `--json PATH` also writes it. `--compare` then
runs the same load on one service with twice the workers (the same cores, one process tree), each
on its own fresh database, and prints the ratio: a figure from one run, whatever else the machine
does. Exit 1 on any error or a log that does not hold exactly the customers scored.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # locust's clients are greenlets: patch before anything opens a socket

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests")]

import load  # noqa: E402  (benchmarks/load.py: the scenario, its checks and its summary)


def replica_client(label: str, url: str) -> type[load.ServiceClient]:
    """The load scenario's client, bound to one replica; its calls are named after the replica."""

    class ReplicaClient(load.ServiceClient):
        host = url

        def _post(self, path: str, name: str, request_id: str, ids: list[str], **kwargs) -> None:
            super()._post(path, f"{label}: {name}", request_id, ids, **kwargs)

    ReplicaClient.__name__ = f"Replica{label}"
    return ReplicaClient


def measure(model: str, replicas: int, workers: int, users: int, duration: float) -> dict:
    """`replicas` services of `workers` workers each on one fresh database, under the scenario."""
    from model_fixtures import start_server
    from pg_fixtures import fresh_database

    load.Traffic.acknowledged = 0
    with fresh_database("churnguard_bench_replicas") as url, tempfile.TemporaryDirectory() as folder:
        env = {"CHURNGUARD_API_KEYS": "", "CHURNGUARD_PREDICTION_LOG": url, "CHURNGUARD_EVENT_STORE": url}
        servers = {
            label: start_server(
                model, Path(folder) / f"replica-{label}", env=env, workers=workers, wait=False
            )
            for label in "AB"[:replicas]
        }
        try:
            for server in servers.values():
                server.wait_ready()
            for label, server in servers.items():
                print(f"replica {label}: {server.base_url}, {workers} worker(s)", flush=True)
            print(f"shared prediction log and event store: {url}", flush=True)
            clients = [replica_client(label, server.base_url) for label, server in servers.items()]
            started = time.monotonic()
            environment = load.run_locust(None, users, duration, clients)
            summary = load.summarize(environment, users, time.monotonic() - started, url)
        finally:
            for server in servers.values():
                server.stop()
    summary["replicas"] = replicas
    summary["workers_per_replica"] = workers
    load.print_summary(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--users", type=int, default=32, help="concurrent clients over both (default 32)")
    parser.add_argument("--workers", type=int, default=1, help="service workers per replica (default 1)")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="then the same load on one service with twice the workers, and the ratio of the two",
    )
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import pytest
    from model_fixtures import telco_artifact_dir

    load.Traffic.load()
    model = str(telco_artifact_dir())
    try:
        summary = measure(model, 2, args.workers, args.users, args.duration)
        runs = [summary]
        if args.compare:
            single = measure(model, 1, 2 * args.workers, args.users, args.duration)
            runs.append(single)
            summary["single"] = single
            summary["ratio_requests_per_s"] = summary["requests_per_s"] / max(single["requests_per_s"], 1e-9)
            print(
                f"\ntwo replicas / one service with {2 * args.workers} workers: "
                f"{summary['ratio_requests_per_s']:.2f}x the requests per second"
            )
    except pytest.skip.Exception as no_server:  # fresh_database says why there is no server
        print(f"replicas: {no_server}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 1 if any(run["errors"] > 0 or not run["log_complete"] for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
