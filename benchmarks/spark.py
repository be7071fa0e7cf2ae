"""Benchmark: the Spark engine (`churnguard features --engine spark`) against the pandas engine.

    .venv/bin/python benchmarks/spark.py --sizes 10000000 [30000000] [--spark-sizes 100000000]

Data: the CRM simulator makes `--base-customers` customers once (its rate is printed); each size is that
base replicated with new customer ids (`C000001-r3`) until the events file holds the asked-for number of
events. A replicated customer has the same history as its original, so the work per event is the
simulator's, while generating 100 M events takes minutes instead of the simulator's ~25. The data
lives in `<state>/bench-spark/` and is reused across runs with the same sizes and seed.

Each measurement runs in a fresh subprocess over the same dataset config (crm.yaml with the paths
pointed at the replicated files):
  * pandas: `load_events` + `events_table` + writing the Parquet file; peak RSS is the process's own
    (`ru_maxrss`, imports included);
  * Spark, `--master` (default local[2]) with `spark.driver.memory` = `--driver-memory`: the session's
    fixed start-up (the session, and a first tiny job that starts its Python workers and
    imports the engine in them: `spark_engine.warm_up`) is timed on its
    own, then `spark_feature_table` (both passes, writing the folder). Peak memory is the largest sum
    of RSS over the whole process tree (driver Python, the JVM that is driver and executor in local
    mode, and its Python workers), sampled every 0.25 s: an upper bound, as forked workers share pages.

Bars (exit 1 when one is missed): at the smallest size both engines run (10 M), Spark's features time
is within 4x the pandas engine's; at the largest size, Spark's peak memory is within `--memory-cap-gib`
(8 GiB) in all. The pandas engine's memory at sizes it does not run at is estimated by the straight
line through its two largest measured sizes, and printed as an estimate. Both engines' row counts
are checked equal wherever both ran. Figures taken on a shared machine vary; the ratio of one run is
the figure to quote.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATIO_TARGET = 4.0
GIB = 2**30


# ------------------------------------------------------------------------------------------ data


def simulate_base(folder: Path, customers: int, seed: int) -> dict:
    """The simulator's output for `customers`, and its rate in events per second."""
    from churnguard.simulate import SimulationConfig, simulate, write

    done = folder / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    started = time.perf_counter()
    sim = simulate(SimulationConfig(customers=customers, days=365, seed=seed), progress=True)
    write(sim, folder)
    seconds = time.perf_counter() - started
    events = len(pd.read_parquet(folder / "events.parquet", columns=["type"]))
    facts = {"customers": customers, "events": events, "seconds": seconds, "rate": events / seconds}
    done.write_text(json.dumps(facts))
    return facts


def replicate(base: Path, folder: Path, events: int) -> Path:
    """A dataset of about `events` events: copies of the base customers with new ids (the last copy
    takes only as many whole customers as it needs). Returns its dataset config."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    config_path = folder / "dataset.yaml"
    if config_path.exists():
        return config_path
    folder.mkdir(parents=True, exist_ok=True)
    base_events = pd.read_parquet(base / "events.parquet")
    base_customers = pd.read_parquet(base / "customers.parquet")
    base_contracts = pd.read_parquet(base / "contracts.parquet")  # crm.yaml reads contracts as signals
    per_customer = base_events.groupby("customer_id", sort=False).size()
    writer = None
    written, copy, customer_parts, contract_parts = 0, 0, [], []
    while written < events:
        suffix = f"-r{copy}"
        needed = events - written
        if needed < len(base_events):
            # Whole customers only, in customers-table order, until the events are there.
            counts = per_customer.reindex(base_customers["customer_id"]).fillna(0).cumsum()
            keep = set(counts.index[: int((counts < needed).sum()) + 1])
            part = base_events[base_events["customer_id"].isin(keep)]
            customers = base_customers[base_customers["customer_id"].isin(keep)]
        else:
            part, customers = base_events, base_customers
        part = part.assign(customer_id=part["customer_id"] + suffix)
        table = pa.Table.from_pandas(part, preserve_index=False)
        writer = writer or pq.ParquetWriter(folder / "events.parquet", table.schema)
        writer.write_table(table, row_group_size=1_000_000)
        customer_parts.append(customers.assign(customer_id=customers["customer_id"] + suffix))
        contracts = base_contracts[base_contracts["customer_id"].isin(set(customers["customer_id"]))]
        contract_parts.append(contracts.assign(customer_id=contracts["customer_id"] + suffix))
        written += len(part)
        copy += 1
    assert writer is not None
    writer.close()
    pd.concat(customer_parts, ignore_index=True).to_parquet(folder / "customers.parquet", index=False)
    pd.concat(contract_parts, ignore_index=True).to_parquet(folder / "contracts.parquet", index=False)
    document = yaml.safe_load((ROOT / "configs" / "datasets" / "crm.yaml").read_text())
    document["name"] = f"crm-bench-{events}"
    document["events"][0]["path"] = str(folder / "events.parquet")
    document["customers"]["path"] = str(folder / "customers.parquet")
    document["contracts"]["path"] = str(folder / "contracts.parquet")
    config_path.write_text(yaml.safe_dump(document))
    print(f"  wrote {written:,} events of {sum(len(c) for c in customer_parts):,} customers ({copy} copies)")
    return config_path


# ------------------------------------------------------------------------------------------ runs


def run_pandas(config_path: str, out: str) -> dict:
    from churnguard.datasets import load_dataset_config, load_events
    from churnguard.feature_table import events_table

    config = load_dataset_config(config_path)
    started = time.perf_counter()
    table = events_table(config, load_events(config))
    table.write(Path(out))
    return {
        "seconds": time.perf_counter() - started,
        "rows": len(table.frame),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def run_spark(config_path: str, out: str, master: str, driver_memory: str, local_dir: str) -> dict:
    from churnguard.datasets import load_dataset_config
    from churnguard.spark_engine import spark_feature_table, spark_session, warm_up

    config = load_dataset_config(config_path)
    started = time.perf_counter()
    spark = spark_session(
        master,
        {
            "spark.driver.memory": driver_memory,
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.local.dir": local_dir,
        },
    )
    spark.sparkContext.setLogLevel("ERROR")
    warm_up(spark, spark.sparkContext.defaultParallelism)
    startup = time.perf_counter() - started
    table = spark_feature_table(config, Path(out), spark)
    seconds = time.perf_counter() - started - startup
    spark.stop()
    return {"startup_seconds": startup, "seconds": seconds, "rows": table.rows, "buckets": table.buckets}


def measured(command: list[str]) -> dict:
    """Run a child that prints one JSON line; add the peak RSS of its whole process tree."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(child.pid)
        while not stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                total = 0
                for process in tree:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += process.memory_info().rss
                peak = max(peak, total)
            except psutil.NoSuchProcess:
                return
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    stop.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode})")
    result = json.loads(output.strip().splitlines()[-1])
    result["tree_peak_rss"] = peak
    return result


def estimate(sizes: list[int], values: list[float], at: int) -> float:
    """The straight line through the two largest measured points, at `at`."""
    (x0, y0), (x1, y1) = sorted(zip(sizes, values, strict=True))[-2:]
    return y1 + (y1 - y0) / (x1 - x0) * (at - x1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000_000], help="events; both engines")
    parser.add_argument("--spark-sizes", type=int, nargs="*", default=[], help="events; Spark only")
    parser.add_argument("--base-customers", type=int, default=20_000, help="simulated customers to copy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="4g", help="spark.driver.memory (the JVM's heap)")
    parser.add_argument(
        "--memory-cap-gib", type=float, default=8.0, help="Spark's whole tree, at the top size"
    )
    parser.add_argument("--work", help="data folder (default: <state>/bench-spark)")
    parser.add_argument("--run-pandas", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--run-spark", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run_pandas:
        print(json.dumps(run_pandas(*args.run_pandas)))
        return 0
    if args.run_spark:
        local_dir = str(Path(args.run_spark[1]).parent / "spark-local")
        print(json.dumps(run_spark(*args.run_spark, args.master, args.driver_memory, local_dir)))
        return 0

    from churnguard.settings import state_dir

    work = Path(args.work) if args.work else state_dir() / "bench-spark"
    base = work / f"base-{args.base_customers}-{args.seed}"
    print(f"simulating {args.base_customers:,} customers (once; reused) ...")
    facts = simulate_base(base, args.base_customers, args.seed)
    print(
        f"  simulator: {facts['events']:,} events in {facts['seconds']:.1f} s = "
        f"{facts['rate']:,.0f} events/s "
        f"(100 M events would take ~{1e8 / facts['rate'] / 60:.0f} min: sizes are replicated copies)"
    )
    me = [sys.executable, str(Path(__file__).resolve())]
    results: dict[int, dict] = {}
    for size in sorted({*args.sizes, *args.spark_sizes}):
        print(f"{size:,} events:")
        config = replicate(base, work / f"events-{size}-{args.base_customers}-{args.seed}", size)
        out = work / "out"
        out.mkdir(exist_ok=True)
        entry: dict = {}
        if size in args.sizes:
            entry["pandas"] = measured(
                [*me, "--run-pandas", str(config), str(out / f"pandas-{size}.parquet")]
            )
            p = entry["pandas"]
            print(
                f"  pandas: {p['seconds']:.1f} s, peak RSS {p['peak_rss'] / GIB:.2f} GiB, {p['rows']:,} rows"
            )
        entry["spark"] = measured(
            [
                *me,
                "--run-spark",
                str(config),
                str(out / f"spark-{size}"),
                "--master",
                args.master,
                "--driver-memory",
                args.driver_memory,
            ]
        )
        s = entry["spark"]
        print(
            f"  spark {args.master}: start-up {s['startup_seconds']:.1f} s, features {s['seconds']:.1f} s, "
            f"peak tree RSS {s['tree_peak_rss'] / GIB:.2f} GiB, {s['rows']:,} rows, {s['buckets']} buckets"
        )
        if "pandas" in entry and entry["pandas"]["rows"] != s["rows"]:
            raise SystemExit(
                f"row counts differ at {size:,} events: pandas {entry['pandas']['rows']}, spark {s['rows']}"
            )
        results[size] = entry

    ok = True
    both = sorted(size for size, entry in results.items() if "pandas" in entry)
    print("bars (one run, on a shared machine):")
    if both:
        size = both[0]
        ratio = results[size]["spark"]["seconds"] / results[size]["pandas"]["seconds"]
        ok &= ratio <= RATIO_TARGET
        print(
            f"  time at {size:,} events: spark {results[size]['spark']['seconds']:.1f} s / pandas "
            f"{results[size]['pandas']['seconds']:.1f} s = {ratio:.2f}x (target <= {RATIO_TARGET:.0f}x); "
            f"spark start-up {results[size]['spark']['startup_seconds']:.1f} s on top"
        )
    top = max(results)
    spark_peak = results[top]["spark"]["tree_peak_rss"]
    ok &= spark_peak <= args.memory_cap_gib * GIB
    if "pandas" in results[top]:
        pandas_peak, how = results[top]["pandas"]["peak_rss"], "measured"
    elif len(both) >= 2:
        pandas_peak = estimate(both, [results[s]["pandas"]["peak_rss"] for s in both], top)
        how = f"estimated from {', '.join(f'{s:,}' for s in both)} events"
    else:
        pandas_peak, how = None, "not measured (give two --sizes to estimate it)"
    pandas_text = f"{pandas_peak / GIB:.2f} GiB ({how})" if pandas_peak else how
    print(
        f"  memory at {top:,} events: spark {spark_peak / GIB:.2f} GiB in all "
        f"(cap {args.memory_cap_gib:g} GiB), "
        f"pandas engine {pandas_text}"
    )
    (work / "results.json").write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))
    print(f"  results in {work / 'results.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
