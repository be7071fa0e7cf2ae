"""Right-censoring: a label exists only where the horizon fits inside every source that defines churn.

Built from the situation in issue 16 (ChurnSim): monthly subscriptions that stop being renewed on
2020-06-01 while the events run to 2020-06-30. An account still subscribed at the subscriptions' end
has not churned, and observation dates whose horizon runs past that end are left out and reported.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from churnguard.datasets import DataError, load_dataset_config, load_events
from churnguard.feature_table import build_feature_table

SUBSCRIPTIONS_END = pd.Timestamp("2020-06-01")  # the last renewal the file holds
EVENTS_END = pd.Timestamp("2020-06-30")
ACCOUNTS = 40
CHURNERS = {f"A{i:02d}": pd.Timestamp("2020-02-10") + pd.Timedelta(days=9 * i) for i in range(10)}

YAML = """
kind: events
name: churnsim
events:
  - path: events.csv
    columns: {{customer_id: account_id, timestamp: event_time, type: event_type, value: null}}
event_types:
  login: {{group: activity}}
observation: {{start: 2020-01-01, end: 2020-05-31, every_days: 30}}
horizon_days: 30
checks: {{min_positives: 1}}
churn:
  kind: explicit
  subscriptions:
    path: subscriptions.csv
    id_column: account_id
{subscriptions}
"""


def churnsim(folder: Path, subscriptions: str) -> Path:
    """Accounts renew every 30 days from signup; churners stop renewing (their last term ends on their
    churn day), the others renew until the file's last renewal on SUBSCRIPTIONS_END."""
    subscription_rows, event_rows = [], []
    for number in range(ACCOUNTS):
        account = f"A{number:02d}"
        signup = start = pd.Timestamp("2019-07-01") + pd.Timedelta(days=4 * number)
        churn = CHURNERS.get(account)
        while start <= SUBSCRIPTIONS_END:
            end = start + pd.Timedelta(days=30)
            subscription_rows.append((account, start, end))
            if churn is not None and end >= churn:
                break
            start = end
        last = churn if churn is not None else EVENTS_END
        for moment in pd.date_range(signup, last, freq="3D"):
            event_rows.append((account, moment + pd.Timedelta(hours=9), "login"))
    for account, churn in CHURNERS.items():  # the churn day is exactly the last term's end
        rows = [i for i, row in enumerate(subscription_rows) if row[0] == account]
        name, start, _ = subscription_rows[rows[-1]]
        subscription_rows[rows[-1]] = (name, start, churn)
    pd.DataFrame(subscription_rows, columns=["account_id", "start_date", "end_date"]).to_csv(
        folder / "subscriptions.csv", index=False, date_format="%Y-%m-%d"
    )
    events = pd.DataFrame(event_rows, columns=["account_id", "event_time", "event_type"])
    events.loc[len(events)] = ("A39", EVENTS_END + pd.Timedelta(hours=12), "login")
    events.to_csv(folder / "events.csv", index=False)
    path = folder / "churnsim.yaml"
    path.write_text(YAML.format(subscriptions=subscriptions))
    return path


def still_subscribed_accounts() -> list[str]:
    return [f"A{i:02d}" for i in range(ACCOUNTS) if f"A{i:02d}" not in CHURNERS]


@pytest.mark.parametrize(
    "subscriptions",
    ["    data_end: 2020-06-01", "    start_column: start_date"],
    ids=["declared data_end", "latest start date"],
)
def test_accounts_subscribed_past_the_subscriptions_end_are_not_churners(
    tmp_path: Path, subscriptions: str
) -> None:
    config = load_dataset_config(churnsim(tmp_path, subscriptions))
    data = load_events(config)
    assert data.data_end.normalize() == EVENTS_END  # the events run longer ...
    assert data.labels_until == SUBSCRIPTIONS_END  # ... but labels stop where the subscriptions do
    assert data.label_end_source.endswith(
        "(`churn.subscriptions.data_end` in the config)"
        if "data_end" in subscriptions
        else "(its latest 'start_date')"
    )
    assert data.churn_dates[still_subscribed_accounts()].isna().all()
    for account, churn in CHURNERS.items():
        assert data.churn_dates[account] == churn
    censored = [issue for issue in data.report.issues if issue.column == "end_date"]
    assert censored and censored[0].rows == ACCOUNTS - len(CHURNERS)  # every still-open last term

    table = build_feature_table(config)
    frame = table.frame
    # 2020-05-30's horizon ends 2020-06-29, after the subscriptions end: left out, not labelled.
    assert sorted(frame["observation_date"].unique()) == list(
        pd.to_datetime(["2020-01-01", "2020-01-31", "2020-03-01", "2020-03-31", "2020-04-30"])
    )
    assert frame.loc[frame["customer_id"].isin(still_subscribed_accounts()), "label"].eq(0).all()
    positives = frame.loc[frame["label"] == 1, ["customer_id", "observation_date"]]
    expected = {
        (account, max(d for d in frame["observation_date"].unique() if d < churn))
        for account, churn in CHURNERS.items()
        if churn <= pd.Timestamp("2020-05-30")
    }
    assert set(map(tuple, positives.itertuples(index=False))) == expected
    (left_out,) = [issue for issue in table.report.issues if issue.column == "observation"]
    assert left_out.examples == ["2020-05-30"] and left_out.file.endswith("churnsim.yaml")
    assert left_out.rows == ACCOUNTS - sum(churn <= pd.Timestamp("2020-05-30") for churn in CHURNERS.values())
    assert "2020-06-01" in left_out.message and "subscriptions.csv" in left_out.message


def test_without_a_declared_end_the_latest_end_date_is_capped_by_the_events(tmp_path: Path) -> None:
    """No `data_end` and no start column: the end dates run a month past the events, so the events'
    end bounds the labels (validate's label-rate check flags the pile-up; see test_dataset_checks)."""
    data = load_events(load_dataset_config(churnsim(tmp_path, "")))
    assert data.labels_until == EVENTS_END


def test_no_observation_date_with_a_whole_horizon_is_an_error_naming_the_end(tmp_path: Path) -> None:
    path = churnsim(tmp_path, "    data_end: 2020-01-15")
    config = load_dataset_config(path)
    with pytest.raises(DataError) as error:
        build_feature_table(config)
    message = str(error.value)
    assert "churnsim.yaml, column 'observation'" in message and "2020-01-15" in message
    assert "subscriptions.csv" in message


def test_customers_churn_dates_after_the_customers_end_are_not_churn(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(
        "cid,ts,kind\n" + "".join(f"{c},2024-0{m}-05 10:00:00,login\n" for c in "ABC" for m in range(1, 8))
    )
    (tmp_path / "customers.csv").write_text(
        "id,signup,churned_on\nA,2024-01-01,2024-03-10\nB,2024-01-01,2024-06-20\nC,2024-01-01,\n"
    )
    (tmp_path / "tiny.yaml").write_text(
        "kind: events\nname: tiny\n"
        "events: [{path: events.csv, columns: {customer_id: cid, timestamp: ts, type: kind, value: null}}]\n"
        "customers: {path: customers.csv, id_column: id, signup_column: signup, data_end: 2024-05-31}\n"
        "event_types: {login: {group: activity}}\n"
        "observation: {start: 2024-02-01, end: 2024-06-30, every_days: 30}\n"
        "horizon_days: 30\nchurn: {kind: explicit, column: churned_on}\n"
        "checks: {min_positives: 1}\n"
    )
    config = load_dataset_config(tmp_path / "tiny.yaml")
    data = load_events(config)
    assert data.churn_dates["A"] == pd.Timestamp("2024-03-10")
    assert pd.isna(data.churn_dates["B"])  # a cancellation the May export could not have known
    assert data.labels_until == pd.Timestamp("2024-05-31")
    (censored,) = [issue for issue in data.report.issues if issue.column == "churned_on"]
    assert censored.rows == 1 and censored.examples == ["B"]
    table = build_feature_table(config)
    assert table.frame["observation_date"].max() == pd.Timestamp("2024-05-01")  # + 30 days = 05-31
    assert table.frame.loc[table.frame["customer_id"] == "B", "label"].eq(0).all()


def test_inactivity_labels_stop_at_the_events_file_that_ends_first(tmp_path: Path) -> None:
    """Inactivity is read from every events file: one that ends early would make everyone look gone."""
    logins = "".join(f"{c},2024-{m:02d}-03\n" for c in "AB" for m in range(1, 13))
    orders = "".join(f"{c},2024-{m:02d}-20\n" for c in "AB" for m in range(1, 7))
    (tmp_path / "logins.csv").write_text("cid,day\n" + logins)
    (tmp_path / "orders.csv").write_text("cid,day\n" + orders)
    (tmp_path / "two.yaml").write_text(
        "kind: events\nname: two\nevents:\n"
        "  - {path: logins.csv, type: login,\n"
        "     columns: {customer_id: cid, timestamp: day, type: null, value: null}}\n"
        "  - {path: orders.csv, type: order, data_end: 2024-08-31,\n"
        "     columns: {customer_id: cid, timestamp: day, type: null, value: null}}\n"
        "event_types: {login: {group: activity}, order: {group: transactions}}\n"
        "observation: {start: 2024-03-01, end: 2024-11-01, every_days: 30}\n"
        "horizon_days: 30\nchurn: {kind: inactivity, inactivity_days: 30}\n"
        "checks: {min_positives: 1}\n"
    )
    data = load_events(load_dataset_config(tmp_path / "two.yaml"))
    assert data.data_end == pd.Timestamp("2024-12-03")
    assert data.labels_until == pd.Timestamp("2024-08-31")
    assert "orders.csv (`data_end` in the config)" in data.label_end_source


def test_label_delayed_quality_knows_outcomes_only_up_to_the_subscriptions_end(tmp_path: Path) -> None:
    """Monitoring reads the same cut-off: a prediction whose horizon runs past the subscriptions' end
    has not matured, however long the events run."""
    from monitoring.outcomes import outcomes_from_dataset

    outcomes = outcomes_from_dataset(str(churnsim(tmp_path, "    data_end: 2020-06-01")))
    assert outcomes.as_of == SUBSCRIPTIONS_END
    assert set(outcomes.frame["customer_id"]) == set(CHURNERS)  # still-subscribed accounts did not churn
