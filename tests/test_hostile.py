"""Hostile input against the real server: the whole OpenAPI document fuzzed (1,000+ cases), huge and
deeply nested bodies, odd ids, numeric extremes, malformed CSV and Parquet uploads, and auth on every
route but the probes. Every answer is a 2xx or a 4xx with an error message; never a 5xx, never a hang,
never a restarted worker; and a key never reaches the logs."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_fixtures import ServerProcess, start_server, telco_artifact_dir, telco_customers, telco_rows

from churnguard.prediction_log import PredictionLog

pytestmark = pytest.mark.slow

KEY = "hostile-key-5f0c"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 2_000_000
MAX_ROWS = 300
SLOW = 20.0  # seconds: any answer slower than this counts as a hang
PROBES = ("/livez", "/readyz", "/healthz")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(
        str(telco_artifact_dir()),
        tmp_path_factory.mktemp("hostile-state"),
        env={
            "CHURNGUARD_API_KEYS": KEY,
            "CHURNGUARD_SERVICE__LIMITS__MAX_BODY_BYTES": str(MAX_BODY),
            "CHURNGUARD_SERVICE__LIMITS__MAX_BATCH_ROWS": str(MAX_ROWS),
        },
    )
    yield process
    assert process.log_path.read_text().count("Service churnguard initialized") == 1  # no worker died
    assert KEY not in process.log_path.read_text()  # the key never reached a log line
    process.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=SLOW, headers=AUTH) as session:
        yield session


def customer(seed: int = 0, **changes: object) -> dict:
    return {**telco_customers(1, seed=seed)[0], **changes}


def assert_refused(response: httpx.Response, status: int | set[int] = 400, field: str | None = None) -> dict:
    statuses = {status} if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    body = response.json()
    assert body["error"]
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])] or field in body["error"], body
    return body


# ------------------------------------------------------------------------------------------- auth


def test_every_route_but_the_probes_needs_a_key(server: ServerProcess, client: httpx.Client) -> None:
    spec = client.get("/docs.json").json()
    operations = [(method.upper(), path) for path, item in spec["paths"].items() for method in item]
    assert {("POST", "/predict"), ("POST", "/predict_batch"), ("GET", "/model")} <= set(operations)
    extra = [("GET", "/"), ("GET", "/docs"), ("GET", "/docs.json"), ("GET", "/no-such-route"),
             ("GET", "/metrics"), ("GET", "/predict"), ("DELETE", "/model"),
             ("POST", "/admin/reload")]  # fmt: skip
    with httpx.Client(base_url=server.base_url, timeout=SLOW) as anonymous:
        for method, path in operations + extra:
            open_route = path in PROBES
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
                response = anonymous.request(method, path, headers=headers)
                if open_route:
                    assert response.status_code < 400, (method, path)
                else:
                    assert response.status_code == 401, (method, path, headers, response.status_code)
                    assert response.headers["www-authenticate"].startswith("Bearer")
        for probe in PROBES:
            assert anonymous.get(probe).status_code == 200


# ------------------------------------------------------------------------------- the OpenAPI document


def test_schemathesis_covers_the_whole_document_with_1000_cases(server: ServerProcess) -> None:
    """Valid and invalid cases for every operation in /docs.json: no 5xx, no hang. (Hypothesis drives
    schemathesis' strategies directly: its pytest plugin does not work with pytest 9.)"""
    from schemathesis.generation.modes import GenerationMode

    api = schemathesis.openapi.from_url(f"{server.base_url}/docs.json", headers=AUTH)
    documented = {
        f"{method.upper()} {path}" for path, item in api.raw_schema["paths"].items() for method in item
    }
    calls: list[tuple[str, int, float]] = []
    started = time.monotonic()

    for mode in ("positive", "negative"):

        @given(case=api.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=520, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case) -> None:
            began = time.monotonic()
            response = case.call(base_url=server.base_url, headers=AUTH, timeout=SLOW)
            elapsed = time.monotonic() - began
            calls.append((f"{case.method} {case.path}", response.status_code, elapsed))
            assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
            if response.status_code >= 400:
                assert response.json()["error"], response.text

        run()
    seconds = time.monotonic() - started
    seen = {name for name, _, _ in calls}
    print(f"schemathesis: {len(calls)} cases over {len(seen)} operations in {seconds:.0f} s")
    assert len(calls) >= 1000
    assert seen == documented, documented - seen  # every operation of the document was exercised
    assert max(elapsed for _, _, elapsed in calls) < SLOW
    assert {status for name, status, _ in calls if name == "POST /predict"} >= {200, 400}


# ----------------------------------------------------------------------------- hand-written bodies


def test_huge_bodies_are_refused_quickly(client: httpx.Client) -> None:
    json_type = {"Content-Type": "application/json"}
    started = time.monotonic()
    assert_refused(client.post("/predict_batch", content=b"[" * (MAX_BODY + 1), headers=json_type), 413)
    assert_refused(client.post("/predict", content=b" " * (50 * MAX_BODY), headers=json_type), 413)
    # Just under the limit: parsed, and refused for what it says, naming the field.
    filler = b'{"customers": [' + b"1," * (MAX_BODY // 2 - 20) + b"1]}"
    assert_refused(client.post("/predict_batch", content=filler, headers=json_type), {400, 413})
    body = assert_refused(
        client.post("/predict", json={"customer": customer(customer_id="x" * 1_500_000)}), 400
    )
    assert "customer_id" in body["error"] and len(body["error"]) < 2_000  # the answer does not echo it
    many_keys = {**customer(), **{f"extra_{i}": i for i in range(60_000)}}
    body = assert_refused(client.post("/predict", json={"customer": many_keys}), {400, 413})
    assert len(json.dumps(body)) < 50_000  # errors are capped, not one per unknown key
    # A megabyte-long category is an unknown category: served and flagged, or refused by name.
    response = client.post("/predict", json={"customer": customer(Contract="M" * 1_000_000)})
    if response.status_code == 200:
        assert {"code": "unknown_category", "field": "Contract"} in response.json()["flags"]
    else:
        assert_refused(response, 400, "Contract")
    assert_refused(client.post("/predict_batch", json={"customers": [customer()] * (MAX_ROWS + 1)}), 413)
    assert time.monotonic() - started < 60


def _nested_bodies(depth: int) -> list[tuple[str, bytes, str | None]]:
    nested = b"[" * depth + b"]" * depth
    inside = b'{"customers": [' + json.dumps(customer())[:-1].encode() + b', "tenure": ' + nested + b"}]}"
    objects = b'{"a":' * depth + b"1" + b"}" * depth
    return [
        ("/predict", b'{"customer": ' + nested + b"}", None),
        ("/predict_batch", inside, "tenure"),
        ("/predict", objects, None),
    ]


def test_nested_json_is_refused(client: httpx.Client) -> None:
    json_type = {"Content-Type": "application/json"}
    for depth in (2, 100, 300):
        for path, body, field in _nested_bodies(depth):
            assert_refused(client.post(path, content=body, headers=json_type), 400, field)


def test_deeply_nested_json_is_refused(client: httpx.Client) -> None:
    json_type = {"Content-Type": "application/json"}
    for depth in (10_000, 200_000):
        for path, body, field in _nested_bodies(depth):
            assert_refused(client.post(path, content=body, headers=json_type), 400, field)
    assert client.get("/livez").status_code == 200


IDS = [
    "顧客-42",
    "клиент",
    "🙂-emoji-id",
    "\u202eevil-rtl",
    "tab\there",
    "new\nline",
    "nul\x00inside",
    "bell\x07",
    "quote\"and'single",
    "<script>alert(1)</script>",
    "'; DROP TABLE predictions; --",
    "a" * 256,
]


def test_unicode_and_control_characters_in_ids_come_back_and_are_logged_exactly(
    server: ServerProcess, client: httpx.Client
) -> None:
    for i, customer_id in enumerate(IDS):
        response = client.post("/predict", json={"customer": customer(i, customer_id=customer_id)},
                               headers={"X-Request-ID": f"odd-id-{i}"})  # fmt: skip
        assert response.status_code == 200, (customer_id, response.text)
        assert response.json()["customer_id"] == customer_id
    batch = [customer(i, customer_id=customer_id) for i, customer_id in enumerate(IDS)]
    response = client.post("/predict_batch", json={"customers": batch}, headers={"X-Request-ID": "odd-ids"})
    assert [r["customer_id"] for r in response.json()["results"]] == IDS
    log = PredictionLog.open(f"sqlite:///{server.state_dir / 'predictions.db'}")
    logged = log.read()
    log.close()
    singles = logged[logged["request_id"].str.startswith("odd-id-")].sort_values(
        "request_id", key=lambda s: s.str[7:].astype(int)
    )
    assert singles["customer_id"].tolist() == IDS
    assert logged.loc[logged["request_id"] == "odd-ids", "customer_id"].tolist() == IDS
    # Refused ids name the field; a lone surrogate is not valid UTF-8 JSON.
    for bad in ["", "x" * 257, 42.5, None, ["list"], {"id": 1}]:
        assert_refused(
            client.post("/predict", json={"customer": customer(customer_id=bad)}), 400, "customer_id"
        )
    lone = b'{"customer": ' + json.dumps(customer())[:-1].encode() + b', "customer_id": "\\ud800"}}'
    assert client.post(
        "/predict", content=lone, headers={"Content-Type": "application/json"}
    ).status_code in {200, 400}
    # Request ids that are not plain tokens are replaced, never echoed.
    for request_id in (b"bad id", b"../../etc", b"caf\xe9", b"x" * 65):
        response = client.post(
            "/predict", json={"customer": customer()}, headers={"X-Request-ID": request_id}
        )
        assert response.status_code == 200 and response.headers["x-request-id"].encode() != request_id


NUMERIC_EXTREMES = [
    1e308,
    -1e308,
    5e-324,
    -0.0,
    2**63,
    -(2**63),
    2**64 + 1,
    10**30,
    1e-300,
    123456789.123456789,
]


def test_numeric_extremes_are_scored_or_refused_by_name(client: httpx.Client) -> None:
    for value in NUMERIC_EXTREMES:
        for field in ("tenure", "MonthlyCharges", "TotalCharges"):
            response = client.post("/predict", json={"customer": customer(**{field: value})})
            if response.status_code == 200:
                result = response.json()
                assert 0 <= result["churn_probability"] <= 1 and 0 <= result["health_score"] <= 100
            else:
                assert_refused(response, 400, field)
    json_type = {"Content-Type": "application/json"}
    base = json.dumps(customer())[:-1]
    for literal in (
        "1e400",
        "-1e400",
        "NaN",
        "Infinity",
        "-Infinity",
        "1" * 5000,
        "0x10",
        "1_000",
        ".5",
        "+1",
    ):
        body = f'{{"customer": {base}, "tenure": {literal}}}}}'.encode()
        response = client.post("/predict", content=body, headers=json_type)
        if response.status_code != 200:
            assert_refused(response, 400)
    rows = [customer(i) for i in range(5)]
    rows[1]["tenure"], rows[3]["MonthlyCharges"] = 1e308, -1e308
    body = assert_refused(client.post("/predict_batch", json={"customers": rows}), 400)
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(1, "tenure"), (3, "MonthlyCharges")]


# ------------------------------------------------------------------------------------ fuzzed uploads


def _valid_frame(rows: int = 12) -> pd.DataFrame:
    return telco_rows(rows, seed=17)


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _send_upload(client: httpx.Client, content: bytes, kind: str, multipart: bool) -> httpx.Response:
    media = "application/vnd.apache.parquet" if kind == "parquet" else "text/csv"
    params = {"explain": "false"}
    if multipart:
        name = "customers.parquet" if kind == "parquet" else "customers.csv"
        return client.post("/predict_batch", params=params, files={"file": (name, content, media)})
    return client.post("/predict_batch", params=params, content=content, headers={"Content-Type": media})


def _check_upload(response: httpx.Response) -> None:
    assert response.status_code in {200, 400, 413, 415}, (response.status_code, response.text[:500])
    if response.status_code == 200:
        assert response.json()["count"] == len(response.json()["results"]) >= 1
    else:
        assert response.json()["error"]


@st.composite
def mutated_bytes(draw: st.DrawFn, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "duplicate"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if action == "truncate":
            data = data[:at]
        elif action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 256))] * draw(st.integers(2, 20))
    return bytes(data)


CSV_CELLS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            '"',
            '""',
            '"unclosed',
            "\x00",
            "\r",
            "\n",
            ",",
            ";",
            "\ufeff",
            "NaN",
            "inf",
            "-1e999",
            "1e308",
            "",
            " ",
            "null",
            "None",
            "=cmd|' /C calc'!A0",
            "\\N",
        ]
    ),
)


@st.composite
def malformed_csv(draw: st.DrawFn) -> bytes:
    frame = _valid_frame().astype(str)
    how = draw(st.sampled_from(["cells", "bytes", "header", "delimiter", "encoding"]))
    if how == "cells":
        for _ in range(draw(st.integers(1, 6))):
            frame.iat[draw(st.integers(0, len(frame) - 1)), draw(st.integers(0, frame.shape[1] - 1))] = draw(
                CSV_CELLS
            )
        return frame.to_csv(index=False).encode("utf-8", "surrogatepass")
    if how == "bytes":
        return draw(mutated_bytes(frame.to_csv(index=False).encode()))
    if how == "header":
        columns = list(frame.columns)
        change = draw(st.sampled_from(["drop", "duplicate", "rename", "only"]))
        if change == "drop":
            frame = frame.drop(columns=[columns[draw(st.integers(0, len(columns) - 1))]])
        elif change == "duplicate":
            column = columns[draw(st.integers(0, len(columns) - 1))]
            return frame.to_csv(index=False).replace(column, f"{column},{column}", 1).encode()
        elif change == "rename":
            frame = frame.rename(
                columns={columns[draw(st.integers(0, len(columns) - 1))]: draw(st.text(max_size=20))}
            )
        else:
            return (",".join(columns) + "\n").encode()
        return frame.to_csv(index=False).encode("utf-8", "surrogatepass")
    if how == "delimiter":
        return frame.to_csv(index=False, sep=draw(st.sampled_from([";", "\t", "|", " "]))).encode()
    return frame.to_csv(index=False).encode(draw(st.sampled_from(["utf-16", "utf-32", "latin-1"])), "replace")


@st.composite
def malformed_parquet(draw: st.DrawFn) -> bytes:
    frame = _valid_frame()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    how = draw(st.sampled_from(["bytes", "retype", "drop", "extra", "empty", "nulls", "nested"]))
    if how == "bytes":
        return draw(mutated_bytes(_parquet(table)))
    names = table.column_names
    at = draw(st.integers(0, len(names) - 1))
    if how == "retype":
        kind = draw(
            st.sampled_from(["string", "binary", "bool", "timestamp", "decimal", "int64", "dictionary"])
        )
        length = table.num_rows
        column = {
            "string": lambda: pa.array([draw(st.text(max_size=10)) for _ in range(length)], pa.string()),
            "binary": lambda: pa.array([b"\x00\xff"] * length, pa.binary()),
            "bool": lambda: pa.array([True, False] * (length // 2), pa.bool_()),
            "timestamp": lambda: pa.array([0] * length, pa.timestamp("ns")),
            "decimal": lambda: pa.array([None] * length, pa.decimal128(38, 10)),
            "int64": lambda: pa.array([2**63 - 1] * length, pa.int64()),
            "dictionary": lambda: pa.array(["a", "b"] * (length // 2)).dictionary_encode(),
        }[kind]()
        table = table.set_column(at, names[at], column)
    elif how == "drop":
        table = table.remove_column(at)
    elif how == "extra":
        table = table.append_column(draw(st.text(min_size=1, max_size=20)), pa.array(range(table.num_rows)))
    elif how == "empty":
        table = table.slice(0, 0)
    elif how == "nulls":
        table = table.set_column(at, names[at], pa.nulls(table.num_rows, table.schema.field(at).type))
    else:
        nested = pa.array([[{"x": i}] for i in range(table.num_rows)])
        table = table.set_column(at, names[at], nested)
    return _parquet(table)


def test_fuzzed_csv_uploads_never_get_a_server_error(client: httpx.Client) -> None:
    @given(content=malformed_csv(), multipart=st.booleans())
    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(content: bytes, multipart: bool) -> None:
        _check_upload(_send_upload(client, content, "csv", multipart))

    run()


def test_fuzzed_parquet_uploads_never_get_a_server_error(client: httpx.Client) -> None:
    @given(content=malformed_parquet(), multipart=st.booleans())
    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(content: bytes, multipart: bool) -> None:
        _check_upload(_send_upload(client, content, "parquet", multipart))

    run()
    # Hand-picked: not Parquet at all, a Parquet file whose footer claims gigabytes, pickle bytes.
    import pickle

    for content in (b"", b"PAR1", b"PAR1" + b"\x00" * 100 + b"\xff\xff\xff\x7fPAR1", pickle.dumps(object)):
        _check_upload(_send_upload(client, content, "parquet", False))
    assert (
        client.post(
            "/predict_batch",
            content=pickle.dumps({}),
            headers={"Content-Type": "application/x-python-pickle"},
        ).status_code
        == 415
    )


def test_parquet_with_corrupt_metadata_or_names_is_read_or_refused(client: httpx.Client) -> None:
    table = pa.Table.from_pandas(_valid_frame(), preserve_index=False)
    broken_pandas_metadata = table.replace_schema_metadata({b"pandas": b'{"columns": [{"no": "name"}]}'})
    response = _send_upload(client, _parquet(broken_pandas_metadata), "parquet", multipart=False)
    assert response.status_code == 200 and response.json()["count"] == 12  # the columns still read
    not_utf8 = _parquet(table).replace(b"gender", b"\xa9ender")  # a column name that is not UTF-8
    for multipart in (False, True):
        assert_refused(_send_upload(client, not_utf8, "parquet", multipart), 400)
