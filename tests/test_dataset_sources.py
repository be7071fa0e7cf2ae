"""Shapes real exports have, declared in a dataset YAML (issue 16): an .xlsx sheet with a header row,
date columns read as days-since or age, event type names from a lookup file, events keyed by a
subscription mapped to the customer, and a per-dataset lead time. Each situation is a small synthetic
export built here; what cannot be used is counted and reported by file, column and row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from churnguard.cli import main
from churnguard.config import ConfigError
from churnguard.datasets import load_dataset_config, load_events, load_snapshot
from churnguard.explain import ReasonBuilder
from churnguard.feature_table import FeaturePlan, events_table
from churnguard.inputs import InputRules
from churnguard.live import LiveFeatures
from churnguard.messages import describe_in
from churnguard.schema import ID_COLUMN, OBSERVATION_COLUMN, FeatureSpec
from churnguard.sources import DAYS_PER_YEAR, derive_dates
from churnguard.store.backfill import backfill
from churnguard.store.events import EventStore

SNAPSHOT_DAY = pd.Timestamp("2024-06-30")

SNAPSHOT_YAML = """
kind: snapshot
name: bankx
source: {{path: export.xlsx, sheet: {sheet}, header_row: 3}}
id_column: client_id
label: {{column: churned, positive: 1, negative: 0}}
snapshot_date: 2024-06-30
date_columns:
  signup_date: {{derive: days_since, group: relationship}}
  date_of_birth: {{derive: age_years, format: "%d/%m/%Y", name: age}}
checks: {{min_positives: 5}}
"""


def snapshot_workbook(folder: Path, sheet: str = "clients", bad_birth: str | None = None) -> Path:
    """A bank export as a workbook: a notes sheet first, then the clients under a title and a blank row."""
    rng = np.random.default_rng(3)
    rows = 80
    signup = SNAPSHOT_DAY - pd.to_timedelta(rng.integers(10, 2000, rows), unit="D")
    birth = pd.Timestamp("1990-01-01") - pd.to_timedelta(rng.integers(0, 15000, rows), unit="D")
    clients = pd.DataFrame(
        {
            "client_id": [f"00{i:03d}" for i in range(rows)],  # leading zeros: ids are text
            "signup_date": signup,
            "date_of_birth": birth.strftime("%d/%m/%Y"),
            "balance": rng.normal(1000, 300, rows).round(2),
            "churned": (rng.random(rows) < 0.3).astype(int),
        }
    )
    if bad_birth is not None:
        clients.loc[4, "date_of_birth"] = bad_birth
    path = folder / "export.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        pd.DataFrame({"note": ["exported from the CRM"]}).to_excel(writer, sheet_name="notes", index=False)
        clients.to_excel(writer, sheet_name="clients", index=False, startrow=2)
    book = openpyxl.load_workbook(path)
    book["clients"]["A1"] = "Clients as of 2024-06-30"  # a title above the header, as exports have
    book.save(path)
    (folder / "bankx.yaml").write_text(SNAPSHOT_YAML.format(sheet=sheet))
    clients.to_pickle(folder / "expected.pkl")
    return folder / "bankx.yaml"


def test_xlsx_sheet_with_a_header_row_and_date_columns_read_as_days_and_age(tmp_path: Path) -> None:
    path = snapshot_workbook(tmp_path)
    assert main(["validate", "--dataset", str(path)]) == 0
    data = load_snapshot(load_dataset_config(path))
    expected = pd.read_pickle(tmp_path / "expected.pkl")
    frame = data.frame.set_index(ID_COLUMN)
    assert list(frame.index[:2]) == ["00000", "00001"]  # the header row found, ids kept as text
    assert "signup_date" not in data.feature_columns and "date_of_birth" not in data.feature_columns
    assert {"days_since_signup_date", "age", "balance"} <= set(data.feature_columns)
    days = (SNAPSHOT_DAY - expected["signup_date"]).dt.days.to_numpy()
    np.testing.assert_array_equal(frame["days_since_signup_date"].to_numpy(), days)
    birth = pd.to_datetime(expected["date_of_birth"], format="%d/%m/%Y")
    np.testing.assert_allclose(frame["age"], (SNAPSHOT_DAY - birth).dt.days / DAYS_PER_YEAR)
    assert frame["age"].between(34, 76).all()


def test_a_missing_sheet_is_an_error_naming_the_file_the_sheet_and_the_sheets_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = snapshot_workbook(tmp_path, sheet="Clients 2024")
    assert main(["validate", "--dataset", str(path)]) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert "export.xlsx" in text and "sheet 'Clients 2024'" in text
    assert "['notes', 'clients']" in text


def test_unparseable_dates_are_counted_by_file_column_and_row_never_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = snapshot_workbook(tmp_path, bad_birth="31/02/1980")
    data = load_snapshot(load_dataset_config(path))
    assert len(data.frame) == 80  # the row is kept, its age missing
    assert np.isnan(data.frame.loc[data.frame[ID_COLUMN] == "00004", "age"]).all()
    (issue,) = [i for i in data.report.issues if i.column == "date_of_birth"]
    assert issue.level == "warning" and issue.rows == 1 and issue.file.endswith("export.xlsx")
    assert "cannot be parsed" in issue.message and "row 5: '31/02/1980'" in issue.examples
    assert main(["validate", "--dataset", str(path)]) == 2  # validating, a lost date is an error
    assert "row 5: '31/02/1980'" in capsys.readouterr().out


def test_date_columns_need_the_snapshot_date_and_a_column_that_exists(tmp_path: Path) -> None:
    path = snapshot_workbook(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("snapshot_date: 2024-06-30\n", ""))
    with pytest.raises(ConfigError, match="snapshot_date"):
        load_dataset_config(path)
    path.write_text(text.replace("date_of_birth: {", "date_of_brith: {"))
    assert main(["validate", "--dataset", str(path)]) == 2
    report_text = load_snapshot_report(path)
    assert "`date_columns` names 'date_of_brith', which is not a column; did you mean 'date_of_birth'?" in (
        report_text
    )


def load_snapshot_report(path: Path) -> str:
    from churnguard.validation import validate_dataset

    return validate_dataset(path).format()


# ---------------------------------------------------------------------------------------------- events

START = pd.Timestamp("2024-01-01")
END = pd.Timestamp("2024-12-31")
CUSTOMERS = 240

SAAS_YAML = """
kind: events
name: saas
events:
  - path: usage.csv
    columns: {{customer_id: subscription_id, timestamp: used_at, type: type_id, value: amount}}
    type_names: {{path: types.csv, id_column: type_id, name_column: type_name}}
    customer_keys: {{path: subscriptions.csv, key_column: subscription_id, customer_column: account}}
    data_end: 2024-12-31
customers:
  path: accounts.xlsx
  sheet: accounts
  header_row: 2
  id_column: account
  signup_column: created
  static_columns: [plan]
  date_columns:
    last_contact: {{derive: days_since, group: relationship}}
    founded: {{derive: age_years, format: "%Y"}}
  data_end: 2024-12-31
event_types:
  login: {{group: activity}}
  export: {{group: activity, has_value: true}}
  ticket: {{group: service}}
observation: {{start: 2024-03-01, end: 2024-11-01, every_days: 30}}
horizon_days: 30
windows_days: [14, 30]
checks: {{min_positives: 5}}
churn: {{kind: explicit, column: churned_on}}
{extra}
"""


def saas_export(folder: Path, extra: str = "") -> Path:
    """A SaaS export: usage per subscription with numeric type ids, a types lookup, a subscriptions
    file mapping subscriptions to accounts, and an accounts workbook with date columns.

    Rows the lookups cannot resolve: 7 usage rows of type id 9 (not in types.csv) and 5 of
    subscription S-UNKNOWN (not in subscriptions.csv)."""
    rng = np.random.default_rng(16)
    accounts = [f"ACC{i:03d}" for i in range(CUSTOMERS)]
    created = START - pd.to_timedelta(rng.integers(30, 400, CUSTOMERS), unit="D")
    activity = rng.gamma(2.0, 1.0, CUSTOMERS)
    churned = rng.random(CUSTOMERS) < 0.35 / (1 + activity)
    churn_on = pd.Series(
        np.where(churned, START + pd.to_timedelta(rng.integers(60, 360, CUSTOMERS), unit="D"), pd.NaT),
        dtype="datetime64[ns]",
    )
    # A contact date anywhere in the year: after many observation dates, which must not see it.
    last_contact = START + pd.to_timedelta(rng.integers(0, 366, CUSTOMERS), unit="D")
    subscriptions = pd.DataFrame(
        {"subscription_id": [f"S-{i:04d}" for i in range(CUSTOMERS)], "account": accounts}
    )
    rows = []
    for i in range(CUSTOMERS):
        stop = churn_on[i] if churned[i] else END
        count = int(rng.poisson(10 + 40 * activity[i]))
        moments = START + pd.to_timedelta(rng.uniform(0, (stop - START).days, count), unit="D")
        for moment in moments:
            rows.append((f"S-{i:04d}", moment.floor("s"), int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))))
    usage = pd.DataFrame(rows, columns=["subscription_id", "used_at", "type_id"])
    usage["amount"] = np.where(usage["type_id"] == 2, rng.integers(1, 20, len(usage)), np.nan)
    usage.loc[usage.index[:7], "type_id"] = 9
    usage.loc[usage.index[7:12], "subscription_id"] = "S-UNKNOWN"
    usage.to_csv(folder / "usage.csv", index=False)
    pd.DataFrame({"type_id": [1, 2, 3], "type_name": ["login", "export", "ticket"]}).to_csv(
        folder / "types.csv", index=False
    )
    subscriptions.to_csv(folder / "subscriptions.csv", index=False)
    frame = pd.DataFrame(
        {
            "account": accounts,
            "created": created,
            "plan": rng.choice(["basic", "pro"], CUSTOMERS),
            "last_contact": last_contact,
            "founded": rng.integers(1950, 2020, CUSTOMERS).astype(str),
            "churned_on": churn_on,
        }
    )
    frame.loc[3, "founded"] = "n/a"  # one unparseable year: counted, the account kept
    with pd.ExcelWriter(folder / "accounts.xlsx", engine="openpyxl") as writer:
        frame.to_excel(writer, sheet_name="accounts", index=False, startrow=1)
    frame.to_pickle(folder / "accounts.pkl")
    path = folder / "saas.yaml"
    path.write_text(SAAS_YAML.format(extra=extra))
    return path


@pytest.fixture(scope="module")
def saas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saas_export(tmp_path_factory.mktemp("saas"))


def test_type_ids_are_named_from_the_lookup_file_and_unknown_ids_counted(saas: Path) -> None:
    data = load_events(load_dataset_config(saas))
    assert set(data.events["type"]) == {"login", "export", "ticket"}
    (issue,) = [i for i in data.report.issues if i.column == "type_id"]
    assert issue.file.endswith("usage.csv") and issue.rows == 7
    assert "types.csv" in issue.message and "'9': 7" in issue.message
    assert issue.examples == [1, 2, 3, 4, 5]  # the usage file's own rows


def test_events_keyed_by_subscription_are_mapped_to_accounts_and_unmapped_ones_counted(saas: Path) -> None:
    data = load_events(load_dataset_config(saas))
    assert set(data.events[ID_COLUMN]) <= {f"ACC{i:03d}" for i in range(CUSTOMERS)}
    (issue,) = [i for i in data.report.issues if i.column == "subscription_id"]
    assert issue.file.endswith("usage.csv") and issue.rows == 5 and issue.examples == [8, 9, 10, 11, 12]
    assert "subscriptions.csv" in issue.message and "'subscription_id' -> 'account'" in issue.message
    usage = pd.read_csv(saas.parent / "usage.csv")
    assert len(data.events) == len(usage) - 12  # every other row kept
    # Validating, the rows the lookups cannot resolve are errors, each with its file and column.
    assert main(["validate", "--dataset", str(saas)]) == 2


def test_date_features_count_from_each_observation_date_and_never_see_a_later_date(saas: Path) -> None:
    config = load_dataset_config(saas)
    table = events_table(config, load_events(config))
    accounts = pd.read_pickle(saas.parent / "accounts.pkl").set_index("account")
    frame = table.frame
    observed = frame[OBSERVATION_COLUMN]
    contact = accounts["last_contact"].reindex(frame[ID_COLUMN]).to_numpy()
    future = contact > observed.to_numpy()
    assert future.sum() > 500 and (~future).sum() > 500  # both cases are well represented
    days = frame["days_since_last_contact"].to_numpy()
    assert np.isnan(days[future]).all()  # a contact after the observation date is not known then
    expected = (observed.to_numpy() - contact) / np.timedelta64(1, "D")
    np.testing.assert_array_equal(days[~future], expected[~future])
    spec = table.schema["days_since_last_contact"]
    assert (spec.kind, spec.source_column, spec.group) == ("days_since", "last_contact", "relationship")
    founded = pd.to_datetime(accounts["founded"], format="%Y", errors="coerce").reindex(frame[ID_COLUMN])
    age = (observed.to_numpy() - founded.to_numpy()) / np.timedelta64(1, "D") / DAYS_PER_YEAR
    np.testing.assert_allclose(frame["age_years_founded"].to_numpy(), age)  # NaN for 'n/a' too
    assert np.isnan(frame.loc[frame[ID_COLUMN] == "ACC003", "age_years_founded"]).all()
    # Moving dates that lie after an observation date changes nothing at that date.
    moved = derive_dates(np.where(future, contact + np.timedelta64(40, "D"), contact), observed, "days_since")
    np.testing.assert_array_equal(moved, days)


def test_reasons_say_a_date_feature_as_the_date_column_in_both_languages(saas: Path) -> None:
    config = load_dataset_config(saas)
    schema = events_table(config, load_events(config)).schema
    reasons = ReasonBuilder(schema, top=3, expected_value=0.0, health_from_raw=lambda raw: raw)
    contact = schema.names.index("days_since_last_contact")
    founded = schema.names.index("age_years_founded")
    assert reasons.phrase(contact, 412.4).message == "last_contact 412 days ago"
    assert reasons.phrase(contact, 412.4, "zh").message == "last_contact 距今 412 天"
    # Age in whole years, as ages are said.
    assert reasons.phrase(founded, 33.9).message == "founded 33 years ago"
    assert reasons.phrase(founded, 33.9, "zh").message == "founded 距今 33 年"
    # Missing: no date, or a date after the row's moment (not known then).
    assert reasons.phrase(contact, float("nan")).message == "no last_contact on record"
    assert reasons.phrase(contact, float("nan"), "zh").message == "没有 last_contact 记录"
    # A feature renamed in the YAML (`name: age`) still says the file's own date column.
    age = FeatureSpec(name="age", dtype="numeric", group="profile", kind="age_years", source_column="birth")
    assert describe_in("en", age, 41.2) == "birth 41 years ago"


def test_date_features_above_their_training_range_are_neither_flagged_nor_refused(saas: Path) -> None:
    """Days since a date and an age grow with the moment scored, as tenure does: a customer scored a
    year after training is above the range by the course of time alone."""
    config = load_dataset_config(saas)
    table = events_table(config, load_events(config))
    schema = table.schema.fit(table.frame)
    rules = InputRules(schema)
    row = schema.coerce(table.frame.head(1)).iloc[0].to_dict()
    row = {name: (None if value != value else value) for name, value in row.items()}
    contact, founded = schema["days_since_last_contact"], schema["age_years_founded"]
    assert contact.max is not None and founded.max is not None
    later = {**row, "customer_id": "ACC000", contact.name: contact.max + 3650, founded.name: founded.max + 30}
    later["tenure_days"] = schema["tenure_days"].max + 3650
    _, _, flags, errors = rules.check_record(later)
    assert errors == []
    assert not {contact.name, founded.name, "tenure_days"} & {flag["field"] for flag in flags}


def test_the_live_loop_gives_the_offline_date_features(saas: Path, tmp_path: Path) -> None:
    config = load_dataset_config(saas)
    table = events_table(config, load_events(config))
    assert (
        FeaturePlan.from_schema(table.schema).date_features == FeaturePlan.from_config(config).date_features
    )
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        backfill(config, store, progress=False)
        live = LiveFeatures(table.schema)
        for observed, rows in table.frame.groupby(OBSERVATION_COLUMN):
            got = live.frame(store, rows[ID_COLUMN].tolist(), pd.Timestamp(observed))
            for name in table.schema.names:
                want = rows[name].to_numpy()
                if table.schema[name].categorical:
                    assert [str(v) for v in got[name]] == [str(v) for v in want], name
                else:
                    np.testing.assert_array_equal(got[name].to_numpy(float), want.astype(float), err_msg=name)
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------- lead time


def test_lead_time_defaults_to_half_a_short_horizon_and_can_be_set(tmp_path: Path) -> None:
    config = load_dataset_config(saas_export(tmp_path))
    assert config.lead_time(30) == 15  # 30 days ahead inside a 30-day horizon would be 0 by construction
    set_path = saas_export(tmp_path, extra="lead_time_days: 20")
    assert load_dataset_config(set_path).lead_time(30) == 20
    set_path.write_text(set_path.read_text().replace("lead_time_days: 20", "lead_time_days: 30"))
    with pytest.raises(ConfigError, match="shorter than `horizon_days`"):
        load_dataset_config(set_path)
    crm = load_dataset_config("crm")
    assert crm.lead_time(30) == 30  # a 90-day horizon keeps the configured 30


@pytest.mark.slow
def test_tune_on_the_saas_export_reports_its_own_lead_time(
    lab_store: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from training.config import load_training_config
    from training.fit import default_point
    from training.tune import run_tune

    # The small-data search: customer folds over every date, starting from CatBoost's defaults.
    monkeypatch.setenv("CHURNGUARD_TRAINING__SEARCH__EVENTS_OBJECTIVE", "customer_folds")
    monkeypatch.setenv("CHURNGUARD_TRAINING__SEARCH__CUSTOMER_FOLD_DATES", "all")
    monkeypatch.setenv("CHURNGUARD_TRAINING__SEARCH__START_FROM_DEFAULTS", "true")
    path = saas_export(tmp_path)
    result = run_tune(str(path), trials=2, timeout=None, storage=None, study="saas-shapes", seed=3)
    assert result.finalized
    assert "test_lead_time_share_15d" in result.test_metrics
    assert not any(name.startswith("test_lead_time_share_30d") for name in result.test_metrics)
    parent = MlflowClient().get_run(result.parent_run_id)
    assert "test_lead_time_share_15d" in parent.data.metrics
    trials = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
    )
    first = trials.loc[trials["tags.mlflow.runName"] == "trial-000"].iloc[0]
    defaults = default_point(load_training_config().search.space)
    for name in ("depth", "l2_leaf_reg", "learning_rate", "random_strength"):
        assert float(first[f"params.{name}"]) == defaults[name], name
    # Which trial the final model was fitted with, and why, is in the run, the model version and the
    # card; the model's parameters are that trial's.
    assert result.selected_trial in (0, 1) and result.selection
    assert parent.data.tags["trial_selection"] == result.selection
    assert parent.data.params["selected_trial"] == str(result.selected_trial)
    assert "selection_standard_error" in parent.data.metrics
    version = MlflowClient().get_model_version(result.model_name, result.model_version)
    assert version.tags["selected_trial"] == str(result.selected_trial)
    assert f"- trial selection: {result.selection}" in version.description
    chosen = trials.loc[trials["tags.mlflow.runName"] == f"trial-{result.selected_trial:03d}"].iloc[0]
    contract = resolve_contract(result)
    assert contract.params["depth"] == int(chosen["params.depth"])
    assert contract.params["l2_leaf_reg"] == pytest.approx(float(chosen["params.l2_leaf_reg"]))


def resolve_contract(result):
    """The registered model's contract, as the service reads it."""
    from churnguard.artifact import ModelArtifact
    from churnguard.tracking import resolve_model

    resolved = resolve_model(f"models:/{result.model_name}/{result.model_version}")
    return ModelArtifact.load(resolved.local_dir).contract
