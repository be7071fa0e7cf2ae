"""`validate` catches the mistakes a new dataset config makes (issue 16): names that match no column,
labels of a single class or too few churners, columns that leak the label, churn piling up at the
data's edge, and messages that name the file's own column and the right file. Exit codes follow the
README: data problems exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_dataset_checks_censoring import churnsim
from test_dataset_sources import saas_export

from churnguard.cli import main
from churnguard.datasets import DataError, load_dataset_config, load_events, load_snapshot
from churnguard.validation import single_column_auc, validate_dataset
from training.data import load_lab_data

BANK_YAML = """
kind: snapshot
name: bank
source: {{path: bank.csv}}
id_column: CLIENTNUM
label: {{column: Attrition_Flag, positive: {positive}}}
drop_columns: {drop}
groups: {groups}
types: {types}
"""


def bank(folder: Path, drop="[]", groups="{}", types="{}", positive="Attrited Customer", rows=300) -> Path:
    """A BankChurners-like snapshot: a leak column computed from the label, an id-like text column."""
    rng = np.random.default_rng(5)
    churned = rng.random(rows) < 0.25
    frame = pd.DataFrame(
        {
            "CLIENTNUM": [f"{700000 + i}" for i in range(rows)],
            "Attrition_Flag": np.where(churned, "Attrited Customer", "Existing Customer"),
            "Customer_Age": rng.integers(25, 70, rows),
            "Total_Trans_Ct": np.round(rng.normal(60, 20, rows) - 15 * churned),
            "Card_Category": rng.choice(["Blue", "Silver", "Gold"], rows),
            "Email": [f"client{i}@example.com" for i in range(rows)],
            # Scored by a model that saw the label: the BankChurners Naive Bayes columns.
            "Naive_Bayes_Classifier_1": np.where(churned, 0.99, 0.01) + rng.normal(0, 0.005, rows),
        }
    )
    frame.to_csv(folder / "bank.csv", index=False)
    path = folder / "bank.yaml"
    path.write_text(BANK_YAML.format(drop=drop, groups=groups, types=types, positive=repr(positive)))
    return path


# ---------------------------------------------------------------------------------------------- names


def test_a_misspelt_drop_column_is_an_error_naming_the_key_and_the_closest_column(tmp_path: Path) -> None:
    report = validate_dataset(bank(tmp_path, drop="[Naive_Bayes_Classifer_1]"))
    (issue,) = report.errors
    assert issue.file.endswith("bank.yaml")
    assert "`drop_columns` names 'Naive_Bayes_Classifer_1', which is not a column" in issue.message
    assert "did you mean 'Naive_Bayes_Classifier_1'?" in issue.message


def test_unknown_groups_and_types_keys_are_errors(tmp_path: Path) -> None:
    report = validate_dataset(
        bank(
            tmp_path,
            groups="{customer_age: profile, Card_Category: profile}",
            types="{Total_Trans_Cnt: numeric}",
        )
    )
    messages = [issue.message for issue in report.errors]
    assert len(messages) == 2
    assert any("`groups` names 'customer_age'" in m and "'Customer_Age'" in m for m in messages)
    assert any("`types` names 'Total_Trans_Cnt'" in m and "'Total_Trans_Ct'" in m for m in messages)


def test_a_group_for_a_dropped_column_is_an_error(tmp_path: Path) -> None:
    path = bank(tmp_path, drop="[Email, Naive_Bayes_Classifier_1]", groups="{Email: engagement}")
    (issue,) = validate_dataset(path).errors
    assert "`groups` names 'Email', which is dropped by `drop_columns`, not a feature" in issue.message


def test_a_name_close_to_nothing_gets_no_suggestion(tmp_path: Path) -> None:
    (issue,) = validate_dataset(bank(tmp_path, drop="[zzz_unrelated]")).errors
    assert issue.message.endswith("'zzz_unrelated', which is not a column")


def test_unknown_static_columns_and_customer_groups_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text("cid,ts,kind\nA,2024-01-05,login\n")
    (tmp_path / "customers.csv").write_text("id,signup,Plan\nA,2024-01-01,pro\n")
    (tmp_path / "e.yaml").write_text(
        "kind: events\nname: e\n"
        "events: [{path: events.csv, columns: {customer_id: cid, timestamp: ts, type: kind, value: null}}]\n"
        "customers: {path: customers.csv, id_column: id, signup_column: signup, static_columns: [plan]}\n"
        "event_types: {login: {group: activity}}\n"
        "observation: {start: 2024-02-01, end: 2024-02-01, every_days: 30}\n"
        "horizon_days: 30\nchurn: {kind: inactivity, inactivity_days: 30}\n"
    )
    (issue,) = validate_dataset(tmp_path / "e.yaml").errors
    assert issue.file.endswith("customers.csv") and issue.column == "plan"
    assert "(named in `customers`)" in issue.message and "for 'plan' did you mean 'Plan'?" in issue.message

    text = (tmp_path / "e.yaml").read_text().replace("static_columns: [plan]", "static_columns: [Plan]")
    (tmp_path / "e.yaml").write_text(
        text.replace("signup_column: signup,", "signup_column: signup, groups: {plna: profile},")
    )
    (issue,) = validate_dataset(tmp_path / "e.yaml").errors
    assert issue.file.endswith("e.yaml")
    assert "`customers.groups` names 'plna', which is not a column; did you mean 'Plan'?" in issue.message


# ---------------------------------------------------------------------------------------------- labels


def test_validate_prints_class_counts_and_exits_0_when_clean(tmp_path: Path, capsys) -> None:
    path = bank(tmp_path, drop="[Naive_Bayes_Classifier_1]")
    assert main(["validate", "--dataset", str(path)]) == 0
    out = capsys.readouterr().out
    churners = int((pd.read_csv(tmp_path / "bank.csv")["Attrition_Flag"] == "Attrited Customer").sum())
    assert f"labels: 300 rows, {churners} churners ({churners / 300:.1%}), {300 - churners} not" in out
    assert "no problems found" in out


def test_a_wrong_positive_label_without_negative_is_a_single_class_error(tmp_path: Path, capsys) -> None:
    path = bank(tmp_path, drop="[Naive_Bayes_Classifier_1]", positive="Attrited")
    assert main(["validate", "--dataset", str(path)]) == 2  # the README: data problems exit 2
    out = capsys.readouterr().out
    assert "labels: 300 rows, 0 churners (0.0%), 300 not" in out
    assert "column 'Attrition_Flag': a single class, every label is 0: no churner" in out
    assert "`label.positive` is 'Attrited' and the column holds 'Existing Customer' (" in out
    with pytest.raises(DataError):  # tune loads the same way and stops before any trial
        load_snapshot(load_dataset_config(path))


def test_fewer_churners_than_the_minimum_is_an_error(tmp_path: Path) -> None:
    path = bank(tmp_path, drop="[Naive_Bayes_Classifier_1]", rows=40)
    churners = int((pd.read_csv(tmp_path / "bank.csv")["Attrition_Flag"] == "Attrited Customer").sum())
    (issue,) = validate_dataset(path).errors
    assert issue.message.startswith(f"only {churners} churners, fewer than `checks.min_positives` (20)")
    path.write_text(path.read_text() + f"checks: {{min_positives: {churners}}}\n")
    assert not validate_dataset(path).errors


def test_a_column_that_predicts_the_label_alone_is_reported_as_a_leak(tmp_path: Path) -> None:
    report = validate_dataset(bank(tmp_path))
    assert not report.errors
    leaks = [issue for issue in report.issues if "likely leak" in issue.message]
    assert [issue.column for issue in leaks] == ["Naive_Bayes_Classifier_1"]
    assert leaks[0].level == "warning" and leaks[0].file.endswith("bank.csv")


def test_single_column_auc_in_either_direction_and_for_categories() -> None:
    rng = np.random.default_rng(1)
    label = (rng.random(400) < 0.3).astype(int)
    assert single_column_auc(pd.Series(-label + rng.normal(0, 0.01, 400)), label) > 0.99  # reversed
    assert single_column_auc(pd.Series(rng.normal(size=400)), label) < 0.6
    status = pd.Series(np.where(label == 1, "closed", "open"))
    assert single_column_auc(status, label) > 0.99
    # A unique id per row matches the label in-sample; out of fold it ranks nothing.
    assert single_column_auc(pd.Series([f"id{i}" for i in range(400)]), label) == pytest.approx(0.5)
    assert single_column_auc(pd.Series([np.nan] * 400), label) is None


def test_churn_piling_up_at_the_data_edge_is_flagged(tmp_path: Path) -> None:
    """The ChurnSim config without `data_end`: every running term ends inside the last horizon."""
    report = validate_dataset(churnsim(tmp_path, ""))
    (edge,) = [issue for issue in report.issues if "jumps at the latest" in issue.message]
    assert edge.level == "warning" and edge.examples[-1].startswith("2020-05-30: ")
    assert float(edge.examples[-1].split(": ")[1].rstrip("%")) > 50
    declared = validate_dataset(churnsim(tmp_path, "    data_end: 2020-06-01"))
    assert not [issue for issue in declared.issues if "jumps at the latest" in issue.message]
    assert "churn rate by observation date: 2020-01-01" in declared.format()


# ---------------------------------------------------------------------------------------------- messages


FORMS_YAML = """
kind: events
name: forms
events:
  - path: forms.csv
    type: survey_sent
    columns: {customer_id: account, timestamp: sent_at, type: null, value: null}
  - path: forms.csv
    type: survey_answered
    columns: {customer_id: account, timestamp: submitted_at, type: null, value: null}
  - path: tickets.csv
    columns: {customer_id: client, timestamp: opened, type: kind, value: null}
customers: {path: customers.csv, id_column: id, signup_column: signup}
event_types:
  survey_sent: {group: satisfaction}
  survey_answered: {group: satisfaction}
  ticket: {group: service}
observation: {start: 2024-03-01, end: 2024-03-01, every_days: 30}
horizon_days: 30
churn: {kind: inactivity, inactivity_days: 30}
checks: {min_positives: 1}
"""


def test_drops_name_the_files_own_column_and_the_right_file(tmp_path: Path) -> None:
    (tmp_path / "customers.csv").write_text("id,signup\nA,2024-01-10\nB,2024-01-10\n")
    (tmp_path / "forms.csv").write_text(
        "account,sent_at,submitted_at\n"
        "A,2024-01-12,2024-01-13\n"
        "B,2024-01-12,2024-01-02\n"  # answered before signup: the submitted_at source's problem
        "A,2024-02-01,2024-02-03\n"
    )
    (tmp_path / "tickets.csv").write_text("client,opened,kind\nA,2024-02-01,ticket\nZ,2024-02-02,ticket\n")
    (tmp_path / "forms.yaml").write_text(FORMS_YAML)
    data = load_events(load_dataset_config(tmp_path / "forms.yaml"), now=pd.Timestamp("2024-12-31"))
    issues = {issue.message.split(";")[0]: issue for issue in data.report.issues}
    early = issues["events before the customer's signup date"]
    assert early.file.endswith("forms.csv") and early.column == "submitted_at" and early.examples == [2]
    unknown = next(issue for message, issue in issues.items() if message.startswith("events of customers"))
    assert unknown.file.endswith("tickets.csv") and unknown.column == "client" and unknown.examples == [2]
    assert len(data.report.issues) == 2

    # Example rows stay the file's rows after earlier drops: a row dropped for its id comes first.
    (tmp_path / "tickets.csv").write_text(
        "client,opened,kind\n,2024-02-01,ticket\nA,2023-12-01,ticket\nA,2024-02-01,ticket\n"
    )
    data = load_events(load_dataset_config(tmp_path / "forms.yaml"), now=pd.Timestamp("2024-12-31"))
    early = [i for i in data.report.issues if i.file.endswith("tickets.csv") and "signup" in i.message]
    assert early[0].column == "opened" and early[0].examples == [2]


# ---------------------------------------------------------------------------------------------- leaks


def saas_with_a_notice_date(folder: Path) -> Path:
    """The SaaS export (test_dataset_sources) made clean, with a `notice_given` date 45 days before each
    churn read as days-since: known before the churn, it alone ranks the rows churning within the 30-day
    horizon (15-45 days since notice) above every other row (0-15 days, or no notice yet)."""
    path = saas_export(folder)
    usage = pd.read_csv(folder / "usage.csv")
    usage.iloc[12:].to_csv(folder / "usage.csv", index=False)  # without the rows the lookups cannot map
    accounts = pd.read_pickle(folder / "accounts.pkl")
    accounts.loc[3, "founded"] = "1990"
    accounts["notice_given"] = accounts["churned_on"] - pd.Timedelta(days=45)
    with pd.ExcelWriter(folder / "accounts.xlsx", engine="openpyxl") as writer:
        accounts.to_excel(writer, sheet_name="accounts", index=False, startrow=1)
    founded = "    founded: {derive: age_years"
    path.write_text(path.read_text().replace(founded, "    notice_given: {derive: days_since}\n" + founded))
    return path


def test_a_derived_date_feature_that_predicts_the_label_is_reported_as_a_leak(tmp_path: Path) -> None:
    path = saas_with_a_notice_date(tmp_path)
    report = validate_dataset(path)
    assert not report.errors, report.format()
    leaks = [issue for issue in report.issues if "likely leak" in issue.message]
    assert [(issue.column, issue.level) for issue in leaks] == [("notice_given", "warning")]
    (leak,) = leaks
    assert leak.file.endswith("accounts.xlsx")  # the file and column the date is read from
    assert "its derived feature 'days_since_notice_given' (days since the date) alone" in leak.message
    # `tune` checks the same features the same way, before any trial.
    data = load_lab_data(load_dataset_config(path))
    assert data.table.report is not None
    tuned = [issue for issue in data.table.report.issues if "likely leak" in issue.message]
    assert [(issue.file, issue.column, issue.message) for issue in tuned] == [
        (leak.file, leak.column, leak.message)
    ]
