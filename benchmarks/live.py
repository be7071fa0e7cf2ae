"""Benchmark: the live loop — bulk and HTTP ingest, scoring by id, the daily pass, cold starts.

    .venv/bin/python benchmarks/live.py [--customers 20000] [--daily-customers 100000] [--repeats 3]

One run, on the CRM simulator (seeded), with a 300-tree events model trained on its feature table:
  * bulk ingest: `churnguard ingest` of the simulator's files (about 4.5 M events for 20,000
    customers over 365 days) into a fresh SQLite store, reading the files included: events/s;
  * HTTP ingest: JSON batches of 10,000 events to POST /events on the real service: events/s;
  * scoring one customer by id against the same customer's feature vector on the same server
    (`/predict` both; the two take turns in blocks of 20): p50 and p99 ms, and their ratio;
  * the daily pass over `--daily-customers` customers x 365 days, against `churnguard features`
    (one observation date, the same day) plus `churnguard score` of that table, both with reasons:
    wall time and peak RSS of each command (fresh processes), start-up included and also shown;
  * offline scoring rates on `--score-rows` rows: `churnguard score` without and with reasons,
    against raw CatBoost predict and the same explanation method in-process;
  * cold start with the bytecode compiled at install, and without it (PYTHONPYCACHEPREFIX pointed at
    an empty folder, so Python finds no .pyc, as before `make setup` compiled them): the CLI
    (`churnguard score` of 10 rows), the service (start to ready) and test collection.

Bars (exit 1 when one is missed; every figure is a median of --repeats):
  by id p50 <= 4x the feature vector's; bulk ingest >= 200,000 events/s; HTTP ingest >= 30,000
  events/s; daily pass time <= features + score; daily pass peak RSS <= 2x the features command's;
  the daily pass with alerting on <= 1.2x the pass without it (issue 14);
  score >= 0.5x raw predict without reasons and >= 0.5x the in-process explanation with them;
  the daily pass's rate >= 0.5x raw predict's on the same feature table (`daily_rate_over_raw`),
  shown beside what computing the features alone reaches (`features_rate_over_raw`): the pass
  computes every customer's features from the store before it scores them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from serving import free_port, interleaved_latencies, start  # noqa: E402

from churnguard.datasets import load_dataset_config, load_events  # noqa: E402
from churnguard.feature_table import events_table  # noqa: E402
from churnguard.simulate import SimulationConfig, simulate, write  # noqa: E402

HTTP_BATCH = 10_000
BARS = {
    "by_id_over_vector": 4.0,
    "bulk_events_per_s": 200_000,
    "http_events_per_s": 30_000,
    "daily_over_features_score": 1.0,
    "daily_rss_over_features": 2.0,
    "daily_with_alerts_over_without": 1.2,
    "score_over_raw": 0.5,
    "score_explain_over_in_process": 0.5,
    "daily_rate_over_raw": 0.5,
}

# Runs a churnguard command in this process and prints its wall time and peak RSS as JSON last. Peak
# RSS is the process's VmHWM: getrusage's ru_maxrss survives exec on Linux, so a child would report
# the benchmark's own peak when that is higher.
MEASURED = (
    "import json, sys, time; from churnguard.cli import main; t = time.perf_counter(); "
    "code = main(sys.argv[1:]); seconds = time.perf_counter() - t; "
    "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM')); "
    "print(json.dumps({'code': code, 'seconds': seconds, 'rss_mib': int(hwm.split()[1]) / 1024}))"
)


def run_measured(args: list[str], env: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"churnguard {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def simulated_state(folder: Path, customers: int) -> dict[str, str]:
    state = folder / "state"
    write(simulate(SimulationConfig(customers=customers, days=365, seed=3), progress=False), state / "sim")
    return {**os.environ, "CHURNGUARD_STATE_DIR": str(state), "PYTHONPATH": str(ROOT)}


def build_model(env: dict[str, str], folder: Path) -> Path:
    from model_fixtures import build_table_artifact

    os.environ["CHURNGUARD_STATE_DIR"] = env["CHURNGUARD_STATE_DIR"]
    config = load_dataset_config("crm")
    table = events_table(config, load_events(config))
    return build_table_artifact(
        folder / "model", table, config, iterations=300, depth=6, model_name="churn-crm"
    )


def ingest(env: dict[str, str], store: Path) -> float:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    result = run_measured(["ingest", "--dataset", "crm", "--store", f"sqlite:///{store}"], env)
    events = len(
        pd.read_parquet(Path(env["CHURNGUARD_STATE_DIR"]) / "sim" / "events.parquet", columns=["type"])
    )
    return events / result["seconds"]


def post(connection: http.client.HTTPConnection, path: str, body: bytes) -> bytes:
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {data[:300]!r}")
    return data


def serve(model: Path, store: Path, folder: Path, env: dict[str, str]):
    port = free_port()
    environment = {
        **env,
        "CHURNGUARD_EVENT_STORE": f"sqlite:///{store}",
        "BENTOML_HOME": str(folder / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    code = (
        "import sys; from service.run import serve; "
        f"sys.exit(serve({str(model)!r}, '127.0.0.1', {port}, 1, None))"
    )
    return start("service", [sys.executable, "-c", code], environment, port, "/readyz", folder), environment


def single_and_http(args, folder: Path, env: dict[str, str], model: Path, store: Path, results: dict) -> None:
    from churnguard.live import LiveFeatures
    from churnguard.predict import Predictor
    from churnguard.store.events import EventStore

    server, _ = serve(model, store, folder, env)
    try:
        events = pd.read_parquet(Path(env["CHURNGUARD_STATE_DIR"]) / "sim" / "events.parquet")
        as_of = pd.Timestamp(events["timestamp"].max()).normalize() + pd.Timedelta(days=1)
        opened = EventStore.open(f"sqlite:///{store}")
        rng = np.random.default_rng(0)
        ids = list(rng.choice(opened.customer_ids(), size=200, replace=False))
        live = LiveFeatures(Predictor.load(model, "1").schema)
        frame = live.frame(opened, ids, as_of)
        opened.close()
        records = json.loads(frame.to_json(orient="records"))
        by_id = [
            json.dumps({"customer_id": c, "as_of": f"{as_of:%Y-%m-%d}", "explain": False}).encode()
            for c in ids
        ]
        vector = [json.dumps({"customer": r, "explain": False}).encode() for r in records]
        for repeat in range(args.repeats):
            latencies = interleaved_latencies(
                {"by_id": (server.port, "/predict", by_id), "vector": (server.port, "/predict", vector)}, 400
            )
            results.setdefault("by_id_p50_ms", []).append(latencies["by_id"][0])
            results.setdefault("by_id_p99_ms", []).append(latencies["by_id"][1])
            results.setdefault("vector_p50_ms", []).append(latencies["vector"][0])
            results.setdefault("by_id_over_vector", []).append(latencies["by_id"][0] / latencies["vector"][0])
            print(f"  single, repeat {repeat + 1}: {latencies}", flush=True)

        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        sample = events.sample(HTTP_BATCH * args.http_batches, random_state=1, replace=True).reset_index(
            drop=True
        )
        sample["timestamp"] = sample["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        sample["value"] = sample["value"].astype(object).where(sample["value"].notna(), None)
        rates = []
        for batch in range(args.http_batches):
            part = sample.iloc[batch * HTTP_BATCH : (batch + 1) * HTTP_BATCH]
            rows = part.assign(event_id=[f"bench-{batch}-{n}" for n in range(len(part))])
            body = json.dumps({"events": rows.to_dict(orient="records")}).encode()
            started = time.perf_counter()
            post(connection, "/events", body)
            rates.append(HTTP_BATCH / (time.perf_counter() - started))
        connection.close()
        results["http_events_per_s"] = [statistics.median(rates)]
        print(
            f"  HTTP ingest: {statistics.median(rates):,.0f} events/s (batches of {HTTP_BATCH:,})", flush=True
        )
    finally:
        server.stop()


def daily_against_offline(args, folder: Path, model: Path, results: dict) -> None:
    daily_folder = folder / "daily-world"
    env = simulated_state(daily_folder, args.daily_customers)
    state = Path(env["CHURNGUARD_STATE_DIR"])
    store = daily_folder / "events.db"
    rate = ingest(env, store)
    print(f"  ingest of the daily world: {rate:,.0f} events/s", flush=True)
    events_end = pd.read_parquet(state / "sim" / "events.parquet", columns=["timestamp"])["timestamp"].max()
    day = f"{pd.Timestamp(events_end).normalize() - pd.Timedelta(days=90):%Y-%m-%d}"
    # The offline path for the same day: a feature table of that one date, then `score` with reasons.
    one_day = {
        **env,
        "CHURNGUARD_DATASET_CRM__OBSERVATION__START": day,
        "CHURNGUARD_DATASET_CRM__OBSERVATION__END": day,
    }
    table = daily_folder / "features.parquet"
    for _repeat in range(args.repeats):
        shutil.rmtree(daily_folder / "daily", ignore_errors=True)
        (daily_folder / "log.db").unlink(missing_ok=True)
        log_url = f"sqlite:///{daily_folder / 'log.db'}"
        daily_args = ["daily", "--dataset", "crm", "--as-of", day, "--model", str(model), "--log", log_url]
        daily_args += ["--out", str(daily_folder / "daily")]
        daily = run_measured([*daily_args, "--store", f"sqlite:///{store}", "--no-alerts"], env)
        # The same pass with alerting on (raised from the snapshot into the outbox), from a fresh start:
        # a copy of the store without alerts, a new log and snapshot folder.
        shutil.rmtree(daily_folder / "daily", ignore_errors=True)
        (daily_folder / "log.db").unlink(missing_ok=True)
        alerting_store = daily_folder / "alerting.db"
        shutil.copy(store, alerting_store)
        alerting = run_measured([*daily_args, "--store", f"sqlite:///{alerting_store}"], env)
        alerting_store.unlink()
        results.setdefault("daily_with_alerts_over_without", []).append(
            alerting["process_seconds"] / daily["process_seconds"]
        )
        features = run_measured(["features", "--dataset", "crm", "--out", str(table)], one_day)
        score = run_measured(
            [
                "score",
                "--model",
                str(model),
                "--input",
                str(table),
                "--output",
                str(daily_folder / "scored.parquet"),
                "--explain",
            ],
            env,
        )
        offline = features["process_seconds"] + score["process_seconds"]
        results.setdefault("daily_seconds", []).append(daily["process_seconds"])
        results.setdefault("features_score_seconds", []).append(offline)
        results.setdefault("daily_over_features_score", []).append(daily["process_seconds"] / offline)
        results.setdefault("daily_rss_mib", []).append(daily["rss_mib"])
        results.setdefault("features_rss_mib", []).append(features["rss_mib"])
        results.setdefault("daily_rss_over_features", []).append(daily["rss_mib"] / features["rss_mib"])
        scored = len(pd.read_parquet(daily_folder / "scored.parquet", columns=["customer_id"]))
        # The rate bar for the daily pass (>= 0.5x raw predict's rate) against what computing
        # the features alone allows: raw predict of the same table, in this process.
        raw = raw_predict_rate(model, table)
        results.setdefault("daily_rate_over_raw", []).append(scored / daily["process_seconds"] / raw)
        results.setdefault("features_rate_over_raw", []).append(scored / features["process_seconds"] / raw)
        print(
            f"  daily pass {daily['process_seconds']:.1f} s ({daily['rss_mib']:,.0f} MiB; with alerting "
            f"{alerting['process_seconds']:.1f} s) vs features "
            f"{features['process_seconds']:.1f} s ({features['rss_mib']:,.0f} MiB) + score "
            f"{score['process_seconds']:.1f} s, {scored:,} customers",
            flush=True,
        )


def raw_predict_rate(model: Path, table: Path) -> float:
    """Rows per second of raw predict (log-odds, all cores) on a feature table, read and checked first."""
    from catboost import Pool

    from churnguard.predict import Predictor

    predictor = Predictor.load(model, "1")
    checked = predictor.rules.check_frame(pd.read_parquet(table), allow_extra=True).only_valid()
    pool = Pool(checked.features, cat_features=predictor.cat_indices)
    started = time.perf_counter()
    predictor.artifact.model.predict(pool, prediction_type="RawFormulaVal", thread_count=-1)
    return len(checked.features) / (time.perf_counter() - started)


def scoring_rates(args, folder: Path, model: Path, env: dict[str, str], results: dict) -> None:
    from catboost import Pool

    from churnguard.predict import Predictor
    from churnguard.score_file import read_chunks

    os.environ["CHURNGUARD_STATE_DIR"] = env["CHURNGUARD_STATE_DIR"]
    config = load_dataset_config("crm")
    table = events_table(config, load_events(config)).frame
    reps = -(-args.score_rows // len(table))
    rows = pd.concat([table] * reps, ignore_index=True).head(args.score_rows)
    path = folder / "score-input.parquet"
    rows.to_parquet(path)
    rows.head(10).to_parquet(folder / "ten.parquet")
    predictor = Predictor.load(model, "1")
    checked = predictor.rules.check_frame(rows, allow_extra=True)
    pool = Pool(checked.features, cat_features=predictor.cat_indices)
    cores = os.cpu_count() or 1
    for _repeat in range(args.repeats):
        started, cpu = time.perf_counter(), time.process_time()
        predictor.artifact.model.predict(pool, prediction_type="RawFormulaVal", thread_count=-1)
        raw_seconds, raw_cpu = time.perf_counter() - started, time.process_time() - cpu
        raw = len(rows) / raw_seconds
        started = time.perf_counter()
        predictor.explainer.explain(pool, -1)
        explained = len(rows) / (time.perf_counter() - started)
        # The floor under `score`: reading the file into frames and checking them, as it does, chunk
        # by chunk. With every core busy, score without reasons can go no faster than the CPU time of
        # reading, checking and predicting spread over all cores.
        started, cpu = time.perf_counter(), time.process_time()
        chunks = list(read_chunks(path, 100_000, predictor.schema.categorical_names))
        read_seconds, read_cpu = time.perf_counter() - started, time.process_time() - cpu
        cpu = time.process_time()
        for chunk in chunks:
            predictor.rules.check_frame(chunk, allow_extra=True)
        check_cpu = time.process_time() - cpu
        del chunks
        read_only = len(rows) / read_seconds
        floor = max(read_seconds, (read_cpu + check_cpu + raw_cpu) / cores)
        results.setdefault("score_read_only_over_raw", []).append(read_only / raw)
        results.setdefault("score_ceiling_over_raw", []).append(raw_seconds / floor)
        print(
            f"  CPU s per {len(rows):,} rows: read {read_cpu:.2f}, check {check_cpu:.2f}, raw predict "
            f"{raw_cpu:.2f} ({raw_seconds:.2f} s on {cores} cores): score without reasons can reach at "
            f"most {raw_seconds / floor:.2f}x raw",
            flush=True,
        )
        startup = run_measured(
            [
                "score",
                "--model",
                str(model),
                "--input",
                str(folder / "ten.parquet"),
                "--output",
                str(folder / "ten-out.parquet"),
            ],
            env,
        )["process_seconds"]
        plain = run_measured(
            ["score", "--model", str(model), "--input", str(path), "--output", str(folder / "out.parquet")],
            env,
        )
        explain = run_measured(
            [
                "score",
                "--model",
                str(model),
                "--input",
                str(path),
                "--output",
                str(folder / "out.parquet"),
                "--explain",
            ],
            env,
        )
        plain_rate = len(rows) / max(plain["process_seconds"] - startup, 1e-9)
        explain_rate = len(rows) / max(explain["process_seconds"] - startup, 1e-9)
        results.setdefault("score_over_raw", []).append(plain_rate / raw)
        results.setdefault("score_explain_over_in_process", []).append(explain_rate / explained)
        results.setdefault("score_startup_s", []).append(startup)
        print(
            f"  score {len(rows):,} rows: {plain_rate:,.0f} rows/s vs raw {raw:,.0f} (the file read alone: "
            f"{read_only:,.0f}); with reasons "
            f"{explain_rate:,.0f} vs in-process {explained:,.0f}; start-up {startup:.1f} s (excluded)",
            flush=True,
        )


def cold_starts(args, folder: Path, model: Path, env: dict[str, str], store: Path, results: dict) -> None:
    empty = folder / "no-bytecode"
    for label, extra in (("compiled", {}), ("no bytecode", {"PYTHONPYCACHEPREFIX": str(empty)})):
        shutil.rmtree(empty, ignore_errors=True)
        environment = {**env, **extra, "PYTHONDONTWRITEBYTECODE": "1"}
        cli, service, collect = [], [], []
        for _ in range(args.repeats):
            cli.append(
                run_measured(
                    [
                        "score",
                        "--model",
                        str(model),
                        "--input",
                        str(folder / "ten.parquet"),
                        "--output",
                        str(folder / "ten-out.parquet"),
                    ],
                    environment,
                )["process_seconds"]
            )
            started = time.perf_counter()
            server, _ = serve(model, store, folder, environment)
            service.append(time.perf_counter() - started)
            server.stop()
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                cwd=ROOT,
                env=environment,
                capture_output=True,
                check=True,
            )
            collect.append(time.perf_counter() - started)
        results[f"cold_cli_{label}"] = [statistics.median(cli)]
        results[f"cold_service_{label}"] = [statistics.median(service)]
        results[f"cold_collect_{label}"] = [statistics.median(collect)]
        print(
            f"  cold start, {label}: CLI {statistics.median(cli):.1f} s, service "
            f"{statistics.median(service):.1f} s, test collection {statistics.median(collect):.1f} s",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--daily-customers", type=int, default=100_000)
    parser.add_argument("--score-rows", type=int, default=1_000_000)
    parser.add_argument("--http-batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["bulk", "single", "daily", "score", "cold"])
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="churnguard-live-bench-") as tmp:
        folder = Path(tmp)
        print(f"simulating {args.customers:,} customers x 365 days, training a 300-tree model", flush=True)
        env = simulated_state(folder, args.customers)
        model = build_model(env, folder)
        store = folder / "events.db"
        if "bulk" not in args.skip:
            for repeat in range(args.repeats):
                rate = ingest(env, store)
                results.setdefault("bulk_events_per_s", []).append(rate)
                print(f"  bulk ingest, repeat {repeat + 1}: {rate:,.0f} events/s", flush=True)
        else:
            ingest(env, store)
        if "single" not in args.skip:
            single_and_http(args, folder, env, model, store, results)
        if "score" not in args.skip:
            scoring_rates(args, folder, model, env, results)
        if "cold" not in args.skip:
            cold_starts(args, folder, model, env, store, results)
        if "daily" not in args.skip:
            daily_against_offline(args, folder, model, results)
    return report(results)


def report(results: dict[str, list[float]]) -> int:
    print("\nmedians:")
    missed = []
    for key, values in results.items():
        value = statistics.median(values)
        bar = BARS.get(key)
        verdict = ""
        if bar is not None:
            lower_is_better = key in {
                "by_id_over_vector",
                "daily_over_features_score",
                "daily_rss_over_features",
                "daily_with_alerts_over_without",
            }
            ok = value <= bar if lower_is_better else value >= bar
            verdict = f"  bar {'<=' if lower_is_better else '>='} {bar:,} {'ok' if ok else 'MISSED'}"
            if not ok:
                missed.append(key)
        runs = ", ".join(f"{v:,.3g}" for v in values)
        print(f"  {key:<34} {value:>12,.3f}   (runs: {runs}){verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
