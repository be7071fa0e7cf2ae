"""Feature tables: one row per customer (snapshot) or per customer and observation date (events),
with the label and a schema that tags every feature with its signal group.

This is the one place that turns a dataset config into model inputs; training builds its tables
here and serving/monitoring read the schema the lab stored with the model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnguard import features
from churnguard.contract_features import ContractPlan, contract_feature_specs, contract_features
from churnguard.datasets import (
    DataError,
    DataReport,
    DatasetConfig,
    EventsData,
    EventsDataset,
    SnapshotDataset,
    config_file,
    load_events,
    load_snapshot,
)
from churnguard.schema import (
    ID_COLUMN,
    LABEL_COLUMN,
    OBSERVATION_COLUMN,
    FeatureSchema,
    FeatureSpec,
    SignalGroup,
)
from churnguard.sources import derive_dates

log = logging.getLogger(__name__)

SCHEMA_KEY = b"churnguard.schema"
META_KEY = b"churnguard.table"
SPARK_SIDECAR = "_churnguard.json"  # the Spark engine's schema and metadata, beside its part files


@dataclass
class FeatureTable:
    dataset: str
    kind: Literal["snapshot", "events"]
    frame: pd.DataFrame  # customer_id, [observation_date], label, features in schema order
    schema: FeatureSchema
    horizon_days: int | None = None
    report: DataReport | None = None

    @property
    def features(self) -> pd.DataFrame:
        return self.frame[self.schema.names]

    @property
    def labels(self) -> pd.Series:
        return self.frame[LABEL_COLUMN]

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        meta = {"dataset": self.dataset, "kind": self.kind, "horizon_days": self.horizon_days}
        table = table.replace_schema_metadata(
            {
                **(table.schema.metadata or {}),
                SCHEMA_KEY: self.schema.model_dump_json().encode(),
                META_KEY: json.dumps(meta).encode(),
            }
        )
        pq.write_table(table, path)
        return path

    @classmethod
    def read(cls, path: Path) -> FeatureTable:
        """A table the pandas engine wrote (one Parquet file) or the Spark engine (a Parquet folder with
        the schema in a sidecar file)."""
        path = Path(path)
        sidecar = path / SPARK_SIDECAR
        if path.is_dir() and sidecar.is_file():
            meta = json.loads(sidecar.read_text())
            schema = FeatureSchema.model_validate(meta["schema"])
            # Spark keeps microseconds; the pandas engine's observation dates are datetime64[ns].
            frame = pq.read_table(path).to_pandas(coerce_temporal_nanoseconds=True)
            return cls(meta["dataset"], meta["kind"], frame, schema, meta.get("horizon_days"))
        table = pq.read_table(path)
        metadata = table.schema.metadata or {}
        if SCHEMA_KEY not in metadata:
            raise ValueError(f"{path}: not a churnguard feature table (no feature schema in its metadata)")
        meta = json.loads(metadata[META_KEY])
        schema = FeatureSchema.model_validate_json(metadata[SCHEMA_KEY])
        return cls(meta["dataset"], meta["kind"], table.to_pandas(), schema, meta.get("horizon_days"))


def build_feature_table(config: DatasetConfig, strict: bool = False) -> FeatureTable:
    if isinstance(config, SnapshotDataset):
        return snapshot_table(config, strict)
    return events_table(config, load_events(config, strict=strict))


def snapshot_table(config: SnapshotDataset, strict: bool = False) -> FeatureTable:
    data = load_snapshot(config, strict=strict)
    dates = {spec.feature_name(column): (column, spec) for column, spec in config.date_columns.items()}
    specs = []
    for column in data.feature_columns:
        if column in dates:
            source, date_spec = dates[column]
            group = date_spec.group or config.groups.get(source, config.default_group)
            specs.append(
                FeatureSpec(
                    name=column, dtype="numeric", group=group, kind=date_spec.derive, source_column=source
                )
            )
            continue
        numeric = pd.api.types.is_numeric_dtype(data.frame[column]) and not pd.api.types.is_bool_dtype(
            data.frame[column]
        )
        specs.append(
            FeatureSpec(
                name=column,
                dtype="numeric" if numeric else "categorical",
                group=config.groups.get(column, config.default_group),
            )
        )
    frame = data.frame[[ID_COLUMN, LABEL_COLUMN, *data.feature_columns]]
    return FeatureTable(config.name, "snapshot", frame, FeatureSchema(features=specs), None, data.report)


def labelled_observation_dates(config: EventsDataset, data: EventsData) -> list[pd.Timestamp]:
    """Observation dates whose whole horizon lies inside every source that defines churn.

    Past `data.labels_until` a churn is not observed yet (right-censoring): those dates are left out,
    counted and reported, never labelled. None left is an error naming where the data ends.
    """
    dates = config.observation.dates()
    horizon = pd.Timedelta(days=config.horizon_days)
    last_day = data.labels_until
    # Explicit churn counts the horizon's last day, (date, date + h]; inactivity reads [date, date + h).
    limit = last_day if config.churn.kind == "explicit" else last_day + pd.Timedelta(days=1)
    usable = [d for d in dates if d + horizon <= limit]
    late = [d for d in dates if d + horizon > limit]
    where = data.label_end_source or "the events"
    yaml = config_file(config)
    if late:
        rows = len(features.population(data.customers, late, data.churn_dates))
        data.report.warn(
            yaml,
            "observation",
            f"observation dates whose {config.horizon_days}-day horizon runs past the last day the data "
            f"can label ({last_day:%Y-%m-%d}, set by {where}) are left out, unlabelled; "
            f"{len(late)} of {len(dates)} dates, counted in customer rows",
            rows,
            [f"{d:%Y-%m-%d}" for d in late],
        )
    if not usable:
        data.report.error(
            yaml,
            "observation",
            f"no observation date between {config.observation.start} and {config.observation.end} has its "
            f"whole {config.horizon_days}-day horizon by {last_day:%Y-%m-%d} (set by {where}); move "
            "`observation` earlier, shorten `horizon_days`, or check the sources' `data_end`",
        )
        raise DataError(data.report)
    return usable


def events_table(config: EventsDataset, data: EventsData, labelled: bool = True) -> FeatureTable:
    dates = labelled_observation_dates(config, data) if labelled else config.observation.dates()
    if not dates:
        raise ValueError(
            f"dataset '{config.name}': no observation date between {config.observation.start} and "
            f"{config.observation.end} has a complete {config.horizon_days}-day horizon before the data ends "
            f"({data.data_end:%Y-%m-%d})"
        )
    population = features.population(data.customers, dates, data.churn_dates)
    feature_frame, schema = customer_features(
        FeaturePlan.from_config(config), data.events, data.customers, population, contracts=data.contracts
    )

    if config.churn.kind == "explicit":
        label = features.label_explicit(population, data.churn_dates, config.horizon_days)
    else:
        label = features.label_inactivity(population, data.events, config.horizon_days)

    frame = pd.concat(
        [
            population[[ID_COLUMN, OBSERVATION_COLUMN]],
            label.rename(LABEL_COLUMN).astype("int8"),
            feature_frame,
        ],
        axis=1,
    ).reset_index(drop=True)
    log.info("built %s rows x %s features for %s", len(frame), len(schema.features), config.name)
    return FeatureTable(config.name, "events", frame, schema, config.horizon_days, data.report)


@dataclass(frozen=True)
class FeaturePlan:
    """What an events model's features are made of: event types, windows, static columns and contracts.

    Built from a dataset config for the offline table, or from a model's feature schema for the live
    loop, which has a model but no config; both give the same columns in the same order.
    """

    event_types: dict[str, features.EventTypeSpec]
    windows_days: tuple[int, ...]
    static_columns: tuple[str, ...]
    groups: dict[str, SignalGroup]
    default_group: SignalGroup = "profile"
    # From a schema: the dtype each static column is scored as (values from a store are coerced to it).
    static_dtypes: dict[str, str] | None = None
    # The customers' date columns as features: (date column, feature name, derivation, group).
    date_features: tuple[tuple[str, str, str, SignalGroup], ...] = ()
    contracts: ContractPlan | None = None  # contract features, after the event features

    @classmethod
    def from_config(cls, config: EventsDataset) -> FeaturePlan:
        customers, source = config.customers, config.contracts
        dates = customers.date_columns if customers else {}
        contracts = None
        if source is not None:
            measures = tuple(
                m for m, column in (("mrr", source.mrr_column), ("seats", source.seats_column)) if column
            )
            auto_renew = bool(source.auto_renew_column or source.auto_renew_off_column)
            contracts = ContractPlan(measures, auto_renew, source.group)
        return cls(
            {name: spec.spec() for name, spec in config.event_types.items()},
            tuple(config.windows_days),
            tuple(customers.static_columns if customers else ()),
            dict(customers.groups) if customers else {},
            customers.default_group if customers else "profile",
            date_features=tuple(
                (column, spec.feature_name(column), spec.derive, spec.group or customers.default_group)
                for column, spec in dates.items()
            ),
            contracts=contracts,
        )

    @classmethod
    def from_schema(cls, schema: FeatureSchema) -> FeaturePlan:
        """The plan that rebuilds `schema`; ValueError when the schema is not an events model's."""
        event_types: dict[str, features.EventTypeSpec] = {}
        windows: list[int] = []
        for spec in schema.features:
            if spec.event_type is None:
                continue
            if spec.event_type not in event_types:
                has_value = any(s.event_type == spec.event_type and s.kind == "sum" for s in schema.features)
                event_types[spec.event_type] = features.EventTypeSpec(spec.group, has_value, spec.label)
            if spec.kind == "count" and spec.event_type == next(iter(event_types)):
                windows.append(int(spec.window_days or 0))
        static = [spec for spec in schema.features if spec.kind == "static"]
        dates = [spec for spec in schema.features if spec.kind in ("days_since", "age_years")]
        contract = [spec for spec in schema.features if spec.kind == "contract"]
        if not event_types or not windows:
            raise ValueError("the model has no event features: it scores feature vectors, not customer ids")
        plan = cls(
            event_types,
            tuple(windows),
            tuple(spec.name for spec in static),
            {spec.name: spec.group for spec in static},
            static_dtypes={spec.name: spec.dtype for spec in static},
            date_features=tuple((s.source_column or "", s.name, s.kind, s.group) for s in dates),
            contracts=ContractPlan.from_names(schema.names, contract[0].group) if contract else None,
        )
        rebuilt = ["tenure_days", *plan.static_columns, *(name for _, name, _, _ in plan.date_features)]
        rebuilt += [spec.name for spec in features.event_feature_specs(event_types, plan.windows_days)]
        if plan.contracts is not None:
            rebuilt += [spec.name for spec in contract_feature_specs(plan.contracts, plan.windows_days)]
        if rebuilt != schema.names:
            raise ValueError("the model's feature schema is not one the event features rebuild, in order")
        return plan


def customer_features(
    plan: FeaturePlan,
    events: pd.DataFrame,
    customers: pd.DataFrame | Mapping[str, np.ndarray],
    population: pd.DataFrame,
    *,
    any_moment: bool = False,
    contracts: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, FeatureSchema]:
    """The model's features for each (customer_id, observation_date) row of `population`, as of its
    observation moment: tenure, the customers' static columns, the event features and, when the plan
    has them, the contract features.

    The one place both the offline table and the live loop (scoring by id, the daily pass) build
    features, so training and serving cannot drift apart. `events` and `customers` as `load_events`
    gives them; `any_moment` allows moments other than midnight (scoring as of now). Aligned with
    `population`'s index. Contract events come in `contracts` (the offline table) or among `events`
    (the live loop reads them from the event store with the rest).
    """
    event_frame, event_feature_specs = features.event_features(
        events, population, plan.event_types, plan.windows_days, any_moment=any_moment
    )
    # Each row's customer by position (-1: none), then plain takes: a reindex per table costs
    # milliseconds, which is most of scoring one customer by id.
    rows = pd.Index(customers[ID_COLUMN]).get_indexer(population[ID_COLUMN])
    head = {"tenure_days": features.tenure_days(population, customers, rows).to_numpy()}
    static_specs = []
    for column in plan.static_columns:
        head[column] = pd.api.extensions.take(np.asarray(customers[column]), rows, allow_fill=True)
        numeric = pd.api.types.is_numeric_dtype(customers[column])
        if plan.static_dtypes is not None:
            numeric = plan.static_dtypes[column] == "numeric"
        static_specs.append(
            FeatureSpec(
                name=column,
                dtype="numeric" if numeric else "categorical",
                group=plan.groups.get(column, plan.default_group),
            )
        )
    # Date columns count from each row's own moment: a date after it is not known then (sources.py).
    observed = population[OBSERVATION_COLUMN].to_numpy(dtype="datetime64[ns]")
    for column, name, derive, group in plan.date_features:
        held = np.asarray(customers[column], dtype="datetime64[ns]")
        dates = pd.api.extensions.take(held, rows, allow_fill=True)
        head[name] = derive_dates(dates, observed, derive)
        static_specs.append(
            FeatureSpec(name=name, dtype="numeric", group=group, kind=derive, source_column=column)
        )
    tenure_spec = FeatureSpec(name="tenure_days", dtype="numeric", group="relationship", kind="tenure")
    # In front of the event columns, in place: a frame of the head plus a concat cost more per request.
    frame = event_frame
    for position, (name, values) in enumerate(head.items()):
        frame.insert(position, name, values)
    contract_specs = []
    if plan.contracts is not None:
        contract_specs = contract_feature_specs(plan.contracts, plan.windows_days)
        source = contracts if contracts is not None else events
        contract_frame = contract_features(plan.contracts, source, population, plan.windows_days)
        for name in contract_frame.columns:
            frame[name] = contract_frame[name].to_numpy()
    return frame, FeatureSchema(features=[tenure_spec, *static_specs, *event_feature_specs, *contract_specs])
