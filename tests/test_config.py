"""Configuration: YAML validated by pydantic, environment overrides, errors that say where and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from churnguard.config import ConfigError, env_overrides
from churnguard.datasets import EventsDataset, SnapshotDataset, config_hash, load_dataset_config
from churnguard.scoring import ScoringConfig, load_scoring_config


def test_shipped_dataset_configs_validate() -> None:
    telco = load_dataset_config("telco")
    assert isinstance(telco, SnapshotDataset)
    assert telco.registered_model_name == "churn-telco"
    assert telco.types["TotalCharges"] == "numeric"
    for name in ("cdnow", "crm"):
        config = load_dataset_config(name)
        assert isinstance(config, EventsDataset)
        assert config.horizon_days == 90
        assert len(config.observation.dates()) >= 5


def test_env_overrides_are_nested_and_typed() -> None:
    environ = {
        "CHURNGUARD_TRAINING__SEARCH__TRIALS": "5",
        "CHURNGUARD_TRAINING__SPLIT__TEST": "0.25",
        "CHURNGUARD_TRAINING__FLAG": "true",
        "CHURNGUARD_OTHER__X": "1",
    }
    assert env_overrides("CHURNGUARD_TRAINING", environ) == {
        "search": {"trials": 5},
        "split": {"test": 0.25},
        "flag": True,
    }


def test_env_override_changes_a_dataset_and_its_hash() -> None:
    base = load_dataset_config("cdnow", environ={})
    changed = load_dataset_config("cdnow", environ={"CHURNGUARD_DATASET_CDNOW__HORIZON_DAYS": "60"})
    assert changed.horizon_days == 60
    assert config_hash(changed) != config_hash(base)


def test_unknown_key_names_file_key_and_allowed_keys() -> None:
    with pytest.raises(ConfigError) as error:
        load_dataset_config("telco", environ={"CHURNGUARD_DATASET_TELCO__LABEL__POSITIV": "x"})
    message = str(error.value)
    assert "telco.yaml" in message
    assert "label.positiv" in message
    assert "column, negative, positive" in message


def test_wrong_value_names_key_expected_and_given() -> None:
    with pytest.raises(ConfigError) as error:
        load_dataset_config("cdnow", environ={"CHURNGUARD_DATASET_CDNOW__EVENT_TYPES__ORDER__GROUP": "money"})
    message = str(error.value)
    assert "event_types.order.group" in message
    assert "'activity'" in message and "'money'" in message


def test_wrong_kind_names_the_kind_key(tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text("kind: stream\nname: odd\n")
    with pytest.raises(ConfigError) as error:
        load_dataset_config(path)
    assert "odd.yaml" in str(error.value) and "kind" in str(error.value) and "snapshot" in str(error.value)


def test_inconsistent_churn_definition_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "kind: events\nname: bad\nevents: [{path: e.csv}]\nevent_types: {login: {group: activity}}\n"
        "observation: {start: 2024-01-01, end: 2024-03-01, every_days: 30}\nhorizon_days: 30\n"
        "churn: {kind: inactivity}\n"
    )
    with pytest.raises(ConfigError, match="inactivity churn needs `inactivity_days`"):
        load_dataset_config(path)


def test_missing_dataset_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="known datasets: cdnow, crm, telco"):
        load_dataset_config("nope")


def test_scoring_config_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_scoring_config().tiers.policy == "capacity"
    monkeypatch.setenv("CHURNGUARD_SCORING__TIERS__POLICY", "precision")
    assert load_scoring_config().tiers.policy == "precision"
    monkeypatch.setenv("CHURNGUARD_SCORING__TIERS__CAPACITY__HIGH", "0.9")
    with pytest.raises(ConfigError, match="high \\+ medium must leave room"):
        load_scoring_config()
    assert ScoringConfig().reasons.top == 3
