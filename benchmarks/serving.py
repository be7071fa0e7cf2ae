"""Benchmark: the churnguard prediction service against its framework floor, its peer and raw CatBoost.

    .venv/bin/python benchmarks/serving.py [--model URI] [--repeats 3] [--duration 60] [--workers 1]

One run, one model, the same customers for everyone:
  * raw: the model in-process (`CatBoostClassifier.predict_proba` on the coerced frame), and the
    same explanation method in-process (Pool + leaf indexes + per-leaf SHAP tables);
  * service: the real `churnguard serve` (BentoML) on loopback, prediction log on;
  * floor: an empty BentoML endpoint taking the same payloads (benchmarks/floor_service.py);
  * peer: `mlflow models serve --env-manager local` on the same model (churnguard/pyfunc_model.py,
    calibrated probabilities), the usual way to serve an MLflow model.

Measured, as the median of `--repeats` runs:
  * single-request latency p50/p99 over one keep-alive http.client connection per server (service
    with and without reasons, floor, peer), the four taking turns in blocks of 20 requests;
  * batch throughput on 10,000-row batches: JSON and Parquet upload, with and without reasons
    (service), JSON `dataframe_split` (peer; the bar's figure) and, for reference, the peer's
    `dataframe_records` (the same row objects the service takes), in rounds that send each batch once
    and run each in-process baseline once;
  The turns matter on a shared machine: measured one after the other, a slow spell lands on one side
  of a ratio only.
  * `--clients` concurrent clients for `--duration` seconds (single requests without reasons):
    errors and throughput, service and peer.

Bars (exit 1 when one is missed): single without reasons p50 <= 1.5x floor and >= 5x faster than the
peer; single with reasons p50 <= 4x floor; JSON batch without reasons >= 5x the peer's rows/s; Parquet
upload without reasons >= 50% of raw in-process rows/s; batch with reasons (JSON and Parquet) >= 50%
of the in-process rate of the same explanation method; concurrency: zero errors, >= 2x peer throughput.

The default model is the test fixture's recipe at a realistic size (500 trees of depth 6 on Telco);
pass `--model` for a registered one.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

log = logging.getLogger("benchmarks.serving")

BATCH_ROWS = 10_000
SINGLE_CUSTOMERS = 200
JSON = "application/json"


# ---------------------------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    def stop(self) -> None:
        import psutil

        try:
            tree = [
                psutil.Process(self.process.pid),
                *psutil.Process(self.process.pid).children(recursive=True),
            ]
        except psutil.NoSuchProcess:
            return
        for proc in reversed(tree):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(tree, timeout=15)
        for proc in alive:
            proc.kill()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(
    name: str, command: list[str], env: dict[str, str], port: int, ready_path: str, folder: Path
) -> Server:
    log_path = folder / f"{name}.log"
    with log_path.open("w") as sink:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    server = Server(name, process, port, log_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log_path.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", ready_path)
            if connection.getresponse().status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"{name} not ready:\n{log_path.read_text()[-3000:]}")


# --------------------------------------------------------------------------------------------- requests


def post(
    connection: http.client.HTTPConnection, path: str, body: bytes, content_type: str
) -> tuple[int, bytes]:
    connection.request("POST", path, body, {"Content-Type": content_type})
    response = connection.getresponse()
    return response.status, response.read()


def _checked(connection: http.client.HTTPConnection, path: str, body: bytes, content_type: str) -> None:
    status, data = post(connection, path, body, content_type)
    if status != 200:
        raise RuntimeError(f"{path}: {status} {data[:300]!r}")


def interleaved_latencies(
    cases: dict[str, tuple[int, str, list[bytes]]], requests: int, block: int = 20, warmup: int = 50
) -> dict[str, tuple[float, float]]:
    """(p50, p99) milliseconds of single requests per case, each over its own keep-alive connection.

    The cases take turns in blocks of `block` requests, so a slow spell on the shared machine falls on
    all of them alike and the ratios between them hold (run one after the other, they drift apart)."""
    connections = {
        key: http.client.HTTPConnection("127.0.0.1", port, timeout=60) for key, (port, _, _) in cases.items()
    }
    for key, (_, path, bodies) in cases.items():
        for i in range(warmup):
            _checked(connections[key], path, bodies[i % len(bodies)], "application/json")
    times: dict[str, list[float]] = {key: [] for key in cases}
    for start in range(0, requests, block):
        for key, (_, path, bodies) in cases.items():
            for i in range(start, min(start + block, requests)):
                started = time.perf_counter()
                _checked(connections[key], path, bodies[i % len(bodies)], "application/json")
                times[key].append(time.perf_counter() - started)
    for connection in connections.values():
        connection.close()
    return {
        key: (float(np.percentile(t, 50) * 1e3), float(np.percentile(t, 99) * 1e3))
        for key, t in times.items()
    }


def interleaved_rates(
    requests: dict[str, tuple[int, str, bytes, str]],
    in_process: dict[str, Callable[[], object]],
    rows: int,
    rounds: int,
) -> dict[str, float]:
    """Median rows/s per case: every round sends each batch request once (over its own keep-alive
    connection) and runs each in-process baseline once, so all of them meet the same machine."""
    connections = {
        key: http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for key, (port, _, _, _) in requests.items()
    }
    for key, (_, path, body, content_type) in requests.items():  # warm-up
        _checked(connections[key], path, body, content_type)
    for func in in_process.values():
        func()
    times: dict[str, list[float]] = {key: [] for key in [*requests, *in_process]}
    for _ in range(rounds):
        for key, (_, path, body, content_type) in requests.items():
            started = time.perf_counter()
            _checked(connections[key], path, body, content_type)
            times[key].append(time.perf_counter() - started)
        for key, func in in_process.items():
            started = time.perf_counter()
            func()
            times[key].append(time.perf_counter() - started)
    for connection in connections.values():
        connection.close()
    return {key: rows / statistics.median(t) for key, t in times.items()}


def load(port: int, path: str, bodies: list[bytes], clients: int, seconds: float) -> tuple[float, int, int]:
    """(requests/s, successes, errors) of `clients` threads sending single requests for `seconds`."""
    counts = {"ok": 0, "errors": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        ok = errors = 0
        i = offset
        while time.monotonic() < deadline:
            try:
                status, _ = post(connection, path, bodies[i % len(bodies)], "application/json")
            except (OSError, http.client.HTTPException):
                errors += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            if status == 200:
                ok += 1
            else:
                errors += 1
            i += 1
        with lock:
            counts["ok"] += ok
            counts["errors"] += errors

    threads = [threading.Thread(target=client, args=(c * 13,)) for c in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return counts["ok"] / elapsed, counts["ok"], counts["errors"]


# -------------------------------------------------------------------------------------------- the run


@dataclass
class Results:
    figures: dict[str, float] = field(default_factory=dict)
    runs: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.runs.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        return statistics.median(self.runs[key]) if key in self.runs else self.figures[key]


def timed_rate(func: Callable[[], object], rows: int, repeats: int) -> float:
    func()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return rows / statistics.median(times)


def prepare_model(args: argparse.Namespace, folder: Path) -> tuple[str, Path, str]:
    """(model URI to serve, local artifact folder, MLflow URI for the peer)."""
    import mlflow
    from model_fixtures import build_telco_artifact, register_artifact

    from churnguard.tracking import resolve_model

    if args.model:
        resolved = resolve_model(args.model)
        local, uri = resolved.local_dir, args.model
    else:
        log.info("fitting the benchmark model: %s trees of depth %s on Telco", args.trees, args.depth)
        local = build_telco_artifact(folder / "model", iterations=args.trees, depth=args.depth, seed=0)
        uri = str(local)
    tracking = f"sqlite:///{folder / 'peer-mlflow.db'}"
    version = register_artifact(tracking, "churnguard-benchmark-peer", local)
    mlflow.set_tracking_uri(tracking)
    return uri, Path(local), f"models:/churnguard-benchmark-peer/{version}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model URI or artifact folder (default: fit the fixture recipe)")
    parser.add_argument("--trees", type=int, default=500)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single-requests", type=int, default=400)
    parser.add_argument("--batch-repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes, for the service, floor and peer"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (model, logs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    from catboost import Pool
    from model_fixtures import telco_rows

    from churnguard.predict import Predictor
    from service.payloads import RequestCodec, batch_body

    folder = Path(tempfile.mkdtemp(prefix="churnguard-serving-bench-"))
    uri, local, peer_uri = prepare_model(args, folder)
    predictor = Predictor.load(local, "bench")
    schema = predictor.schema
    rows = telco_rows().sample(BATCH_ROWS, replace=True, random_state=0).reset_index(drop=True)
    rows["customer_id"] = [f"c{i:05d}" for i in range(BATCH_ROWS)]
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    columns = ["customer_id", *schema.names]
    parquet = io.BytesIO()
    rows.to_parquet(parquet, index=False)
    coerced = schema.coerce(rows)

    results = Results()
    log.info("in-process baselines")
    model = predictor.artifact.model
    # For reference: CatBoost hashes each distinct category once when columns are pandas Categoricals
    # (what the service feeds it); the bar uses the artifact's own frame, `FeatureSchema.coerce`.
    categorical = coerced.astype({name: "category" for name in schema.categorical_names})

    def explain_in_process() -> None:
        predictor.explainer.explain(Pool(coerced, cat_features=predictor.cat_indices), predictor.thread_count)

    # Measured in every round of the batch requests, next to the servers, under the same load.
    in_process = {
        "raw": lambda: model.predict_proba(coerced),
        "raw_categorical": lambda: model.predict_proba(categorical),
        "explain": explain_in_process,
    }

    sample = Pool(coerced.head(1000), cat_features=predictor.cat_indices)
    results.figures["catboost_shap_rows_s"] = timed_rate(
        lambda: model.get_feature_importance(data=sample, type="ShapValues"), 1000, 1
    )
    one = coerced.head(1).values.tolist()
    times = []
    for _ in range(500):
        started = time.perf_counter()
        model.predict_proba(one)
        times.append(time.perf_counter() - started)
    results.figures["raw_single_ms"] = float(np.median(times) * 1e3)

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "CHURNGUARD_STATE_DIR": str(folder / "state"),
        "BENTOML_HOME": str(folder / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": str(ROOT),
        "CHURNGUARD_SERVICE__RELOAD__POLL_SECONDS": "0",
        "CHURNGUARD_SERVICE__LIMITS__MAX_BATCH_ROWS": str(BATCH_ROWS),
        "CHURNGUARD_API_KEYS": "",
        "FLOOR_WORKERS": str(args.workers),
    }
    servers: dict[str, Server] = {}
    try:
        log.info("starting the service, the floor and the peer")
        port = free_port()
        servers["service"] = start(
            "service",
            [
                sys.executable,
                "-c",
                "import sys; from service.run import serve; "
                f"sys.exit(serve({uri!r}, '127.0.0.1', {port}, {args.workers}, None))",
            ],
            env,
            port,
            "/readyz",
            folder,
        )
        port = free_port()
        servers["floor"] = start(
            "floor",
            [
                str(Path(sys.executable).with_name("bentoml")),
                "serve",
                "benchmarks.floor_service:Floor",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env,
            port,
            "/readyz",
            folder,
        )
        port = free_port()
        servers["peer"] = start(
            "peer",
            [
                str(Path(sys.executable).with_name("mlflow")),
                "models",
                "serve",
                "-m",
                peer_uri,
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "--workers",
                str(args.workers),
            ],
            {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'peer-mlflow.db'}"},
            port,
            "/ping",
            folder,
        )
        ports = {name: server.port for name, server in servers.items()}

        def service_body(record: dict, explain: bool) -> bytes:
            return json.dumps({"customer": record, "explain": explain}).encode()

        def peer_body(batch: list[dict]) -> bytes:
            return json.dumps(
                {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in batch]}}
            ).encode()

        singles = records[:SINGLE_CUSTOMERS]
        bodies = {
            "service_plain": [service_body(r, False) for r in singles],
            "service_reasons": [service_body(r, True) for r in singles],
            "peer": [peer_body([r]) for r in singles],
        }
        json_plain = json.dumps({"customers": records, "explain": False}).encode()
        # The service's own JSON decode, in-process: with the transport floor and the Categorical
        # predict, what a service doing nothing else would reach (printed for context, not a bar).
        codec = RequestCodec(predictor.rules, BATCH_ROWS)
        in_process["json_decode"] = lambda: codec.batch_json(json_plain)
        # ...and its JSON answer encoding: with receive and predict, what no JSON service can go below.
        scored = predictor.score_frame(rows, explain=False)
        in_process["json_encode"] = lambda: batch_body(scored)
        json_reasons = json.dumps({"customers": records, "explain": True}).encode()
        peer_batch = peer_body(records)
        # For reference: the peer given the same row objects as the service (its `dataframe_records`).
        peer_records = json.dumps({"dataframe_records": records}).encode()
        floor_batch = json.dumps({"customers": records}).encode()

        single_cases = {
            key: (ports[name], path, bodies[body_key])
            for key, (name, path, body_key) in {
                "floor_single": ("floor", "/predict", "service_plain"),
                "service_single": ("service", "/predict", "service_plain"),
                "service_single_reasons": ("service", "/predict", "service_reasons"),
                "peer_single": ("peer", "/invocations", "peer"),
            }.items()
        }
        parquet_type = "application/vnd.apache.parquet"
        batch_cases = {
            "service_json": (ports["service"], "/predict_batch", json_plain, JSON),
            "service_json_reasons": (ports["service"], "/predict_batch", json_reasons, JSON),
            "service_parquet": (
                ports["service"],
                "/predict_batch?explain=false",
                parquet.getvalue(),
                parquet_type,
            ),
            "service_parquet_reasons": (
                ports["service"],
                "/predict_batch?explain=true",
                parquet.getvalue(),
                parquet_type,
            ),
            "floor_json": (ports["floor"], "/predict_batch", floor_batch, JSON),
            "floor_transport": (ports["floor"], "/receive_batch", json_plain, JSON),
            "peer_json": (ports["peer"], "/invocations", peer_batch, JSON),
            "peer_json_records": (ports["peer"], "/invocations", peer_records, JSON),
        }
        for repeat in range(args.repeats):
            log.info("repeat %s/%s: single requests, taking turns", repeat + 1, args.repeats)
            for key, (p50, p99) in interleaved_latencies(single_cases, args.single_requests).items():
                results.add(f"{key}_p50", p50)
                results.add(f"{key}_p99", p99)
            log.info(
                "repeat %s/%s: 10,000-row batches and in-process, taking turns", repeat + 1, args.repeats
            )
            rates = interleaved_rates(batch_cases, in_process, BATCH_ROWS, args.batch_repeats)
            for key, rate in rates.items():
                results.add(f"{key}_rows_s", rate)

        for name, path, body_key in (
            ("service", "/predict", "service_plain"),
            ("peer", "/invocations", "peer"),
        ):
            log.info("%s: %s clients for %.0fs", name, args.clients, args.duration)
            rate, ok, errors = load(ports[name], path, bodies[body_key], args.clients, args.duration)
            results.figures[f"{name}_load_rps"] = rate
            results.figures[f"{name}_load_errors"] = errors
            results.figures[f"{name}_load_ok"] = ok
    finally:
        for server in servers.values():
            server.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    return report(results, args, predictor.explain_method)


def report(results: Results, args: argparse.Namespace, method: str) -> int:
    m = results.median
    print()
    print(
        f"churnguard serving benchmark: {args.trees} trees x depth {args.depth}, workers={args.workers}, "
        f"medians of {args.repeats} repeats (explanations: {method})"
    )
    print()
    print("single request (ms)            p50      p99")
    for key, label in [
        ("floor_single", "floor (empty BentoML)"),
        ("service_single", "service, no reasons"),
        ("service_single_reasons", "service, with reasons"),
        ("peer_single", "peer (mlflow serve)"),
    ]:
        print(f"  {label:<26} {m(key + '_p50'):7.2f}  {m(key + '_p99'):7.2f}")
    print(f"  {'raw CatBoost in-process':<26} {m('raw_single_ms'):7.2f}")
    print()
    print("10,000-row batches (rows/s)")
    for key, label in [
        ("service_json", "service JSON, no reasons"),
        ("service_json_reasons", "service JSON, reasons"),
        ("service_parquet", "service Parquet, no reasons"),
        ("service_parquet_reasons", "service Parquet, reasons"),
        ("floor_json", "floor JSON (parse only)"),
        ("floor_transport", "floor JSON (receive only)"),
        ("peer_json", "peer JSON (dataframe_split)"),
        ("peer_json_records", "  same, dataframe_records"),
    ]:
        print(f"  {label:<30} {m(key + '_rows_s'):>12,.0f}")
    print(f"  {'raw predict_proba in-process':<30} {m('raw_rows_s'):>12,.0f}")
    print(f"  {'  same, Categorical columns':<30} {m('raw_categorical_rows_s'):>12,.0f}")
    shap = m("catboost_shap_rows_s")
    print(
        f"  {'explanation in-process':<30} {m('explain_rows_s'):>12,.0f}   (CatBoost ShapValues: {shap:,.0f})"
    )
    print(f"  {'JSON decode in-process':<30} {m('json_decode_rows_s'):>12,.0f}")

    def in_sequence(label: str, keys: tuple[str, ...], note: str = "") -> None:
        """The rate of doing these steps one after the other and nothing else, against the peer."""
        rate = 1 / sum(1 / m(key) for key in keys)
        print(f"  {label:<30} {rate:>12,.0f}   ({rate / m('peer_json_rows_s'):.1f}x the peer{note})")

    # Receive + decode + Categorical predict and nothing else: the most a JSON batch could reach here.
    in_sequence(
        "  receive + decode + predict",
        ("floor_transport_rows_s", "json_decode_rows_s", "raw_categorical_rows_s"),
    )
    print(f"  {'JSON answer encoding in-process':<30} {m('json_encode_rows_s'):>12,.0f}")
    # Parsing for free: receive, predict and encode the answer, nothing else (no checks, no log).
    in_sequence(
        "  receive + predict + encode",
        ("floor_transport_rows_s", "raw_categorical_rows_s", "json_encode_rows_s"),
        ", with no parsing at all",
    )
    print()
    print(f"{args.clients} clients for {args.duration:.0f}s (single requests, no reasons)")
    for name in ("service", "peer"):
        ok, errors = int(m(name + "_load_ok")), int(m(name + "_load_errors"))
        print(f"  {name:<8} {m(name + '_load_rps'):8,.0f} req/s   {ok:>9,} ok   {errors} errors")
    print()

    bars = [
        ("single, no reasons p50 / floor p50", m("service_single_p50") / m("floor_single_p50"), "<=", 1.5),
        ("peer p50 / single, no reasons p50", m("peer_single_p50") / m("service_single_p50"), ">=", 5.0),
        (
            "single, with reasons p50 / floor p50",
            m("service_single_reasons_p50") / m("floor_single_p50"),
            "<=",
            4.0,
        ),
        ("JSON batch, no reasons / peer rows/s", m("service_json_rows_s") / m("peer_json_rows_s"), ">=", 5.0),
        ("Parquet, no reasons / raw in-process", m("service_parquet_rows_s") / m("raw_rows_s"), ">=", 0.5),
        (
            "JSON, reasons / in-process explanation",
            m("service_json_reasons_rows_s") / m("explain_rows_s"),
            ">=",
            0.5,
        ),
        (
            "Parquet, reasons / in-process explanation",
            m("service_parquet_reasons_rows_s") / m("explain_rows_s"),
            ">=",
            0.5,
        ),
        ("load: service errors", m("service_load_errors"), "<=", 0.0),
        ("load: service / peer throughput", m("service_load_rps") / m("peer_load_rps"), ">=", 2.0),
    ]
    missed = 0
    print("bars")
    for label, value, op, target in bars:
        ok = value <= target if op == "<=" else value >= target
        missed += not ok
        print(f"  {'ok  ' if ok else 'MISS'} {label:<44} {value:8.2f}  (bar {op} {target:g})")
    print()
    print("all bars met" if not missed else f"{missed} bar(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
