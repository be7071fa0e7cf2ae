"""Why a customer got their score: per-feature SHAP contributions, the top reasons and per-group health.

Contributions are CatBoost's path-dependent TreeSHAP values in the model's raw (log-odds) space:
for each customer they add up, with the expected value, to the raw prediction.

How they are computed fast: in an oblivious (symmetric) tree every node at one depth tests the same
split, so a customer's SHAP values in that tree depend only on the leaf they fall in. `LeafShapTables`
precomputes, once per model, each leaf's contribution to every feature (exact Shapley values of the
path-dependent value function, as CatBoost defines it: a split on a combination of features counts as
one player, attributed in equal shares to the categorical features of its projection). The walk
follows CatBoost's, from a tree's last split to its first, which fixes the path-dependent covers.
Explaining a customer is then one `calc_leaf_indexes` call plus one table lookup per tree, instead of
CatBoost re-deriving those tables on every `get_feature_importance(type="ShapValues")` call. The
tables are checked against CatBoost's own ShapValues on the reference sample when a model loads; if
they disagree (or the model is not supported) the explainer falls back to CatBoost's call.

Reasons: the `top` features with the largest absolute contribution, each with a short message built
from its FeatureSpec. Positive impact raises the churn risk, negative impact lowers it.

Group sub-scores: for each signal group, the health score the customer would have if only that
group's contributions moved them away from the average customer (the expected value) and every other
group stayed at its average effect:
    group_score[g] = health(calibrate(sigmoid(expected_value + sum of contributions of g's features)))
100 means the group's signals alone would make the customer as healthy as possible; a low score names
the dimension that drags them down. A group with no influence scores what the average customer scores.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from catboost import CatBoostClassifier, Pool

from churnguard.config import UsageError
from churnguard.messages import (  # noqa: F401  (describe, describe_zh: re-exported)
    MISSING_CATEGORY,
    Language,
    ReferenceRanks,
    describe,
    describe_in,
    describe_zh,
)
from churnguard.schema import FeatureSchema

log = logging.getLogger(__name__)

MAX_TABLE_DEPTH = 8  # deeper trees make the per-leaf tables too large; CatBoost's own call is used then
VERIFY_ROWS = 200  # reference rows on which the tables must match CatBoost's ShapValues
VERIFY_TOLERANCE = 1e-6
MESSAGE_CACHE = 100_000
SLOT_CHUNK = 4096
TOP_BLOCK = 1024  # rows per block of top_by_magnitude's passes
_JSON = msgspec.json.Encoder()
FEW_ROWS = 32  # up to this many rows, raw predictions come from the leaf indexes
FOLD_CELLS = 1 << 22  # cells of the per-chunk fold array (32 MiB of float64)
SMALL_BATCH = 512  # up to this many rows, one gather over all trees beats a loop over trees


class UnsupportedModel(UsageError):
    """The per-leaf tables cannot represent this model (the message says why)."""


# --------------------------------------------------------------------------------------- leaf tables


@dataclass(frozen=True)
class _TreeSplits:
    depth: int
    classes: list[frozenset[int]]  # per depth: the flat features the split depends on


def _model_json(model: CatBoostClassifier) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.json"
        model.save_model(str(path), format="json")
        return json.loads(path.read_text())


def _split_classes(dump: dict) -> list[_TreeSplits]:
    """For every tree, the set of original (flat) features each level's split depends on."""
    info = dump["features_info"]
    floats = {f["feature_index"]: f for f in info.get("float_features", [])}
    cats = {c["feature_index"]: c for c in info.get("categorical_features", [])}
    ctrs = info.get("ctrs", [])
    # Binary features are numbered float borders first, then one-hot values, then CTR borders.
    offset = sum(len(f.get("borders") or []) for f in info.get("float_features", []))
    offset += sum(len(c.get("values") or []) for c in info.get("categorical_features", []))
    ctr_of_bin: dict[int, tuple[dict, int]] = {}
    for ctr in ctrs:
        for position in range(len(ctr.get("borders") or [])):
            ctr_of_bin[offset] = (ctr, position)
            offset += 1

    def ctr_class(ctr: dict) -> frozenset[int]:
        # CatBoost attributes a CTR split to the categorical features of its projection only; float
        # and one-hot parts of a combination do not count (checked against its ShapValues).
        features = frozenset(
            cats[e["cat_feature_index"]]["flat_feature_index"]
            for e in ctr["elements"]
            if e.get("combination_element") == "cat_feature_value"
        )
        if not features:
            raise UnsupportedModel(f"CTR {ctr.get('identifier')} has no categorical feature")
        return features

    trees = []
    for tree in dump["oblivious_trees"]:
        classes = []
        for split in tree["splits"]:
            kind = split["split_type"]
            if kind == "FloatFeature":
                classes.append(frozenset([floats[split["float_feature_index"]]["flat_feature_index"]]))
            elif kind == "OneHotFeature":
                classes.append(frozenset([cats[split["cat_feature_index"]]["flat_feature_index"]]))
            elif kind == "OnlineCtr":
                found = ctr_of_bin.get(split["split_index"])
                if found is None:
                    raise UnsupportedModel(f"CTR split {split['split_index']} not in the model's CTR list")
                ctr, position = found
                if ctr["borders"][position] != split["border"]:
                    raise UnsupportedModel("CTR split border does not match the CTR layout")
                classes.append(ctr_class(ctr))
            else:
                raise UnsupportedModel(f"split type {kind} is not supported")
        trees.append(_TreeSplits(len(classes), classes))
    return trees


def _bit_reversal(depth: int) -> np.ndarray:
    """Leaf index with its `depth` bits reversed (an involution, so it maps both ways)."""
    leaves = np.arange(2**depth)
    bits = (leaves[:, None] >> np.arange(depth)) & 1
    return (bits * (1 << np.arange(depth)[::-1])).sum(axis=1) if depth else leaves


def _shapley_matrix(players: int) -> np.ndarray:
    """M[S, j] such that phi_j = sum_S v(S) * M[S, j] for coalition bitmasks S (exact Shapley values)."""
    weight = [
        math.factorial(s) * math.factorial(players - s - 1) / math.factorial(players) for s in range(players)
    ]
    matrix = np.zeros((2**players, players))
    for coalition in range(2**players):
        size = bin(coalition).count("1")
        for j in range(players):
            if coalition >> j & 1:
                matrix[coalition, j] = weight[size - 1]
            else:
                matrix[coalition, j] = -weight[size]
    return matrix


def _conditional_values(values: np.ndarray, weights: np.ndarray, depth: int) -> np.ndarray:
    """u[t, b, C]: tree t's path-dependent expectation for a customer in leaf b when only the levels in
    bitmask C are known (the others are averaged with the training cover), for all b and C at once.

    Folds the tree bottom-up; node n at depth l holds the leaves whose low l bits equal n, and each
    level adds a (b_l, C_l) digit to the index, so the work is about 2 * 4**depth per tree."""
    trees = values.shape[0]
    subtree = [np.empty(0)] * (depth + 1)
    subtree[depth] = weights
    for level in range(depth - 1, -1, -1):
        subtree[level] = subtree[level + 1].reshape(trees, 2, 2**level).sum(axis=1)
    folded = values.reshape(trees, 2**depth, 1)
    for level in range(depth - 1, -1, -1):
        child = folded.reshape(trees, 2, 2**level, -1)  # child index = c * 2**level + n
        parent = subtree[level][:, None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(parent > 0, subtree[level + 1].reshape(trees, 2, 2**level) / parent, 0.0)
        averaged = (share[..., None] * child).sum(axis=1)  # level unknown: (trees, n, R)
        known = np.moveaxis(child, 1, -1)  # level known: follow the customer's bit, (trees, n, R, b)
        stacked = np.empty((*averaged.shape, 2, 2))
        stacked[..., 0] = averaged[..., None]
        stacked[..., 1] = known
        folded = stacked.reshape(trees, 2**level, -1)
    digits = np.arange(2**depth)
    bits = (digits[:, None] >> np.arange(depth)) & 1  # (2**depth, depth)
    place = 4 ** np.arange(depth)
    index = (2 * bits[:, None, :] + bits[None, :, :]) @ place  # index[b, C]
    return folded.reshape(trees, -1)[:, index]


@dataclass(frozen=True, eq=False)
class LeafShapTables:
    """Per-leaf SHAP contributions of a CatBoost oblivious-tree model (see the module docstring)."""

    tables: np.ndarray  # (trees, leaves, slots): contribution of each slot's feature, raw units
    slot_features: np.ndarray  # (trees, slots): feature index of each slot; n_features pads unused slots
    leaf_values: np.ndarray  # (trees, leaves), scaled
    bias: float
    expected_value: float
    n_features: int

    @classmethod
    def from_model(cls, model: CatBoostClassifier) -> LeafShapTables:
        dump = _model_json(model)
        trees = _split_classes(dump)
        if not trees:
            raise UnsupportedModel("the model has no trees")
        scale, biases = dump.get("scale_and_bias", [1.0, [0.0]])
        if isinstance(biases, list) and len(biases) != 1:
            raise UnsupportedModel("only single-output models are supported")
        bias = float(biases[0] if isinstance(biases, list) else biases)
        max_depth = max(tree.depth for tree in trees)
        if max_depth > MAX_TABLE_DEPTH:
            raise UnsupportedModel(f"tree depth {max_depth} is above {MAX_TABLE_DEPTH}")
        n_features = len(model.feature_names_)
        leaves = 2**max_depth
        raw_trees = dump["oblivious_trees"]
        leaf_values = np.zeros((len(trees), leaves))
        per_tree: list[tuple[np.ndarray, list[int]]] = []
        means = np.zeros(len(trees))
        for depth in sorted({tree.depth for tree in trees}):
            members = [i for i, tree in enumerate(trees) if tree.depth == depth]
            values = np.array([raw_trees[i]["leaf_values"] for i in members], dtype=float)
            weights = np.array([raw_trees[i]["leaf_weights"] for i in members], dtype=float)
            if values.shape[1] != 2**depth:
                raise UnsupportedModel("only single-output oblivious trees are supported")
            leaf_values[members, : 2**depth] = values
            totals = weights.sum(axis=1)
            means[members] = np.where(
                totals > 0, (values * weights).sum(axis=1) / np.maximum(totals, 1e-300), 0
            )
            # CatBoost walks an oblivious tree from its last split to its first, and the path-dependent
            # covers depend on that order: fold the tree with its levels (leaf index bits) reversed.
            reverse = _bit_reversal(depth)
            chunk = max(1, FOLD_CELLS // 4**depth)  # bounds the fold's memory for deep trees
            for start in range(0, len(members), chunk):
                part = slice(start, start + chunk)
                conditional = _conditional_values(values[part][:, reverse], weights[part][:, reverse], depth)
                for row, tree_index in enumerate(members[part]):
                    splits = trees[tree_index]
                    table, features = _tree_table(_TreeSplits(depth, splits.classes[::-1]), conditional[row])
                    per_tree.append((tree_index, table[reverse], features))
        per_tree.sort(key=lambda item: item[0])
        slots = max(1, max(len(features) for _, _, features in per_tree))
        tables = np.zeros((len(trees), leaves, slots))
        slot_features = np.full((len(trees), slots), n_features, dtype=np.int64)
        for tree_index, table, features in per_tree:
            tables[tree_index, : table.shape[0], : len(features)] = table
            slot_features[tree_index, : len(features)] = features
        return cls(
            tables=tables * scale,
            slot_features=slot_features,
            leaf_values=leaf_values * scale,
            bias=bias,
            expected_value=bias + scale * float(means.sum()),
            n_features=n_features,
        )

    def raw(self, leaf_indexes: np.ndarray) -> np.ndarray:
        """Raw predictions (log-odds) from leaf indexes: the bias plus each tree's leaf value."""
        trees = self._tree_positions
        return self.bias + self.leaf_values[trees, leaf_indexes].sum(axis=1)

    @functools.cached_property
    def _tree_positions(self) -> np.ndarray:
        return np.arange(self.leaf_values.shape[0])[None, :]

    def contributions(self, leaf_indexes: np.ndarray) -> np.ndarray:
        """(rows, n_features) SHAP contributions from `calc_leaf_indexes` output (rows, trees).

        Their row sums plus `expected_value` are the raw predictions (local accuracy)."""
        rows = leaf_indexes.shape[0]
        if rows <= SMALL_BATCH:
            chunks = [self._gathered(leaf_indexes[start : start + 256]) for start in range(0, rows, 256)]
            return np.vstack(chunks) if chunks else np.zeros((0, self.n_features))
        return self._by_slot(leaf_indexes)

    def _gathered(self, leaf_indexes: np.ndarray) -> np.ndarray:
        # One gather over all trees and a bincount: cheapest for a few rows.
        rows, trees = leaf_indexes.shape
        width = self.n_features + 1  # the last column collects padding slots
        gathered = self.tables[np.arange(trees)[None, :], leaf_indexes]  # (rows, trees, slots)
        target = np.arange(rows)[:, None, None] * width + self.slot_features[None, :, :]
        flat = np.bincount(target.ravel(), weights=gathered.ravel(), minlength=rows * width)
        return flat.reshape(rows, width)[:, : self.n_features]

    def _by_slot(self, leaf_indexes: np.ndarray) -> np.ndarray:
        # One contiguous 1-D take per (tree, feature): cheapest for many rows. Chunks of rows keep
        # the transposed leaf indexes and the accumulators in cache.
        rows = leaf_indexes.shape[0]
        out = np.empty((rows, self.n_features))
        tables, used = self._slot_tables, self._used_slots
        for start in range(0, rows, SLOT_CHUNK):
            by_tree = np.ascontiguousarray(leaf_indexes[start : start + SLOT_CHUNK].T)
            totals = np.zeros((self.n_features + 1, by_tree.shape[1]))
            for tree, slots in enumerate(used):
                leaves = by_tree[tree]
                for slot, feature in slots:
                    totals[feature] += tables[tree, slot].take(leaves)
            out[start : start + SLOT_CHUNK] = totals[: self.n_features].T
        return out

    @functools.cached_property
    def _slot_tables(self) -> np.ndarray:
        return np.ascontiguousarray(self.tables.transpose(0, 2, 1))  # (trees, slots, leaves)

    @functools.cached_property
    def _used_slots(self) -> list[list[tuple[int, int]]]:
        return [
            [(slot, int(feature)) for slot, feature in enumerate(row) if feature < self.n_features]
            for row in self.slot_features
        ]


def _tree_table(tree: _TreeSplits, conditional: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(leaves, features) contributions of one tree and the features they belong to."""
    players = sorted(set(tree.classes), key=sorted)
    if not players:
        return np.zeros((conditional.shape[0], 0)), []
    player_of_level = [players.index(c) for c in tree.classes]
    coalitions = np.arange(2 ** len(players))
    levels_known = np.zeros(len(coalitions), dtype=np.int64)
    for level, player in enumerate(player_of_level):
        levels_known |= ((coalitions >> player) & 1) << level
    by_player = conditional[:, levels_known] @ _shapley_matrix(len(players))  # (leaves, players)
    features = sorted(set().union(*players))
    share = np.zeros((len(players), len(features)))
    for j, player in enumerate(players):
        for feature in player:
            share[j, features.index(feature)] = 1.0 / len(player)
    return by_player @ share, features


# ------------------------------------------------------------------------------------------ explainer


class ShapExplainer:
    """Raw predictions and SHAP contributions, by the per-leaf tables or CatBoost's own call."""

    def __init__(self, model: CatBoostClassifier, cat_indices: Sequence[int], thread_count: int = -1) -> None:
        self.model = model
        self.cat_indices = list(cat_indices)
        self.thread_count = thread_count
        self.tables: LeafShapTables | None = None
        self.method = "catboost"
        self.expected_value = 0.0

    def prepare(self, reference: pd.DataFrame | None) -> ShapExplainer:
        """Build the tables and check them against CatBoost on reference rows (coerced features)."""
        try:
            tables = LeafShapTables.from_model(self.model)
        except (UnsupportedModel, KeyError, IndexError, ValueError) as exc:
            log.warning("explaining with CatBoost's ShapValues (slower): %s", exc)
            self.expected_value = self._catboost_expected_value(reference)
            return self
        if reference is not None and len(reference):
            sample = reference.head(VERIFY_ROWS)
            pool = Pool(sample, cat_features=self.cat_indices)
            expected = self.model.get_feature_importance(data=pool, type="ShapValues", thread_count=1)
            leaves = self.model.calc_leaf_indexes(pool, thread_count=1).astype(np.int64)
            mine = tables.contributions(leaves)
            error = max(
                float(np.abs(mine - expected[:, :-1]).max()),
                abs(tables.expected_value - float(expected[0, -1])),
            )
            if error > VERIFY_TOLERANCE:
                log.warning("per-leaf SHAP tables differ from CatBoost by %.2g; using CatBoost's call", error)
                self.expected_value = float(expected[0, -1])
                return self
        self.tables = tables
        self.method = "leaf_tables"
        self.expected_value = tables.expected_value
        return self

    def _catboost_expected_value(self, reference: pd.DataFrame | None) -> float:
        if reference is None or not len(reference):
            return 0.0
        pool = Pool(reference.head(1), cat_features=self.cat_indices)
        return float(self.model.get_feature_importance(data=pool, type="ShapValues", thread_count=1)[0, -1])

    def raw(self, pool: Pool, rows: int, thread_count: int) -> np.ndarray:
        """Raw predictions; a few rows go through the leaf indexes, which is cheaper than `predict`."""
        if self.tables is not None and rows <= FEW_ROWS:
            return self.tables.raw(self.model.calc_leaf_indexes(pool, thread_count=1))
        return self.model.predict(pool, prediction_type="RawFormulaVal", thread_count=thread_count)

    def explain(self, pool: Pool, thread_count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(raw predictions, contributions) for every row of the pool."""
        threads = self.thread_count if thread_count is None else thread_count
        if self.tables is not None:
            leaves = self.model.calc_leaf_indexes(pool, thread_count=threads)
            contributions = self.tables.contributions(leaves)
            return self.tables.expected_value + contributions.sum(axis=1), contributions
        values = self.model.get_feature_importance(data=pool, type="ShapValues", thread_count=threads)
        return values.sum(axis=1), values[:, :-1]


# ---------------------------------------------------------------------------------------------- reasons


class ReasonBuilder:
    """Turns contributions into the top reasons and per-group sub-scores."""

    def __init__(
        self,
        schema: FeatureSchema,
        top: int,
        expected_value: float,
        health_from_raw: Callable[[np.ndarray], np.ndarray],
        ranks: ReferenceRanks | None = None,
    ) -> None:
        self.specs = schema.features
        self.top = min(top, len(self.specs))
        self.expected_value = expected_value
        self.health_from_raw = health_from_raw
        self.ranks = ranks
        groups = schema.by_group()
        self.group_names = list(groups)
        index = {name: i for i, name in enumerate(schema.names)}
        self.membership = np.zeros((len(self.specs), len(groups)))
        for column, members in enumerate(groups.values()):
            self.membership[[index[name] for name in members], column] = 1.0
        # Per feature, for reasons gathered column-wise by feature index.
        self.feature_names = _objects([spec.name for spec in self.specs])
        self.feature_groups = _objects([spec.group for spec in self.specs])
        self.raises_codes = _objects([f"raises_risk:{spec.name}" for spec in self.specs])
        self.lowers_codes = _objects([f"lowers_risk:{spec.name}" for spec in self.specs])
        self._phrases: dict[tuple[int, str], dict[object, _Phrase]] = {}  # by (feature, language)
        self._cached = 0

    def group_scores(self, contributions: np.ndarray) -> np.ndarray:
        """(rows, groups) integer health sub-scores; columns follow `group_names`."""
        raw = self.expected_value + contributions @ self.membership
        return self.health_from_raw(raw.ravel()).reshape(raw.shape)

    def explain(self, contributions: np.ndarray, column: Callable[[int], Sequence[object]]) -> Explanations:
        """The top reasons of every row; `column(j)` gives feature j's values as scored, row by row
        (an array, so that only the rows that chose the feature are gathered)."""
        chosen = top_by_magnitude(contributions, self.top)
        impacts = np.take_along_axis(contributions, chosen, axis=1).round(4)
        # Gather only the chosen values, one feature at a time: one sort instead of a mask per feature.
        top = chosen.shape[1]
        flat = chosen.ravel()
        order = np.argsort(flat, kind="stable")
        features, starts = np.unique(flat[order], return_index=True)
        bounds = [*starts.tolist(), len(order)]
        values = np.empty(len(flat), dtype=object)
        for k, feature in enumerate(features.tolist()):
            where = order[bounds[k] : bounds[k + 1]]
            values[where] = _objects(np.asarray(column(feature))[where // top].tolist())
        return Explanations(self, chosen, impacts, values.reshape(chosen.shape))

    def phrase(self, feature: int, value: object, language: Language = "en") -> _Phrase:
        """The value as reported and the message of one (feature, value, language), cached: they
        repeat across customers."""
        if value != value or value == MISSING_CATEGORY:  # NaN or a missing category
            value = None
        cache = self.phrases(feature, language)
        found = cache.get(value)
        if found is None:
            found = self._new_phrase(
                feature, value, describe_in(language, self.specs[feature], value, self.ranks)
            )
            if self._cached < MESSAGE_CACHE:
                cache[value] = found
                self._cached += 1
        return found

    def phrases(self, feature: int, language: Language) -> dict[object, _Phrase]:
        """The cached phrases of one feature in one language, by value (NaN and missing under None)."""
        return self._phrases.setdefault((feature, language), {})

    def _new_phrase(self, feature: int, value: object, message: str) -> _Phrase:
        """A phrase with its reason's JSON around the impact, which alone differs from row to row."""
        value_json, message_json = _text(value), _text(message)
        raises, lowers = self._json_prefixes[feature]
        return _Phrase(
            value,
            message,
            f'{raises}{value_json},"impact":',
            f'{lowers}{value_json},"impact":',
            f',"message":{message_json}}}',
        )

    @functools.cached_property
    def _json_prefixes(self) -> list[tuple[str, str]]:
        """Per feature, a reason's JSON up to its value: when it raises the risk, when it lowers it."""
        out = []
        for j, spec in enumerate(self.specs):
            named = f',"feature":{_text(spec.name)},"group":{_text(spec.group)},"value":'
            out.append(
                (
                    f'{{"code":{_text(self.raises_codes[j])}{named}',
                    f'{{"code":{_text(self.lowers_codes[j])}{named}',
                )
            )
        return out


@dataclass(frozen=True)
class _Phrase:
    value: object  # None when missing
    message: str
    raises: str  # the reason as JSON up to its impact, when the impact raises the risk
    lowers: str  # the same when it lowers the risk
    tail: str  # the reason as JSON after its impact


REASON_KEYS = ("code", "feature", "group", "value", "impact", "message")
ReasonColumns = tuple[list[str], list[str], list[str], list[object], list[float], list[str]]


class Explanations:
    """The top reasons of a batch, kept columnar: as columns per reason slot for the wire, as dicts for
    Python callers."""

    def __init__(self, builder: ReasonBuilder, chosen: np.ndarray, impacts: np.ndarray, values: np.ndarray):
        self.builder = builder
        self.chosen = chosen  # (rows, top) feature indices, largest absolute impact first
        self.impacts = impacts  # (rows, top) contributions to the log-odds, rounded to 4 places
        self.values = values  # (rows, top) the chosen features' values, as scored

    def __len__(self) -> int:
        return len(self.chosen)

    def columns(self, language: Language = "en") -> list[ReasonColumns]:
        """Per reason slot (largest impact first), every row's reason as the columns of `REASON_KEYS`:
        code, feature, group, value (None when missing), impact and message."""
        builder, top = self.builder, self.chosen.shape[1]
        chosen = self.chosen.ravel()
        impacts = self.impacts.ravel()
        index, phrases = self._phrase_index(chosen, self.values.ravel(), language)
        values = _objects([p.value for p in phrases])[index]
        messages = _objects([p.message for p in phrases])[index]
        codes = np.where(impacts > 0, builder.raises_codes[chosen], builder.lowers_codes[chosen])
        names, groups = builder.feature_names[chosen], builder.feature_groups[chosen]
        return [
            (
                codes[slot::top].tolist(),
                names[slot::top].tolist(),
                groups[slot::top].tolist(),
                values[slot::top].tolist(),
                impacts[slot::top].tolist(),
                messages[slot::top].tolist(),
            )
            for slot in range(top)
        ]

    def json_array(self, language: Language = "en", first: Sequence[str | None] | None = None) -> pa.Array:
        """Per row, its reasons as one JSON array text (the objects of `REASON_KEYS`), with `first[row]`'s
        JSON objects ahead of them when given (the rules' reasons; None or "" for none). Joined in Arrow from
        each phrase's cached JSON around the impact: building and encoding them in Python, reason by
        reason, was most of the cost of a file scored with reasons."""
        top, rows = self.chosen.shape[1], len(self)
        large = pa.large_string()  # 64-bit offsets: a large batch's reasons may pass 2 GiB
        # Slot-major positions (Arrow joins whole columns), then the fragments taken in Arrow from
        # the distinct phrases': no Python string per reason.
        index, phrases = self._phrase_index(self.chosen.T.ravel(), self.values.T.ravel(), language)
        impacts = self.impacts.T.ravel()
        fragments = pa.array([p.raises for p in phrases] + [p.lowers for p in phrases], large)
        heads = fragments.take(np.where(impacts > 0, index, index + len(phrases)))
        tails = pa.array([p.tail for p in phrases], large).take(index)
        numbers = pa.array(
            _JSON.encode(impacts.tolist())[1:-1].decode().split(",") if len(impacts) else [], large
        )
        comma = "," if top else ""
        ahead = [f"{text}{comma}" if text else "" for text in first or [""] * rows]
        parts: list[object] = [pa.scalar("[", large), pa.array(ahead, large)]
        for slot in range(top):
            if slot:
                parts.append(pa.scalar(",", large))
            parts += [column.slice(slot * rows, rows) for column in (heads, numbers, tails)]
        # The last is the separator.
        return pc.binary_join_element_wise(*parts, pa.scalar("]", large), pa.scalar("", large))

    def _phrase_index(
        self, chosen: np.ndarray, values: np.ndarray, language: Language
    ) -> tuple[np.ndarray, list[_Phrase]]:
        """The distinct phrases of flat (feature, value) pairs, and each pair's position among them:
        one phrase lookup per distinct pair, so ten thousand rows do not pay thirty thousand lookups."""
        phrase = self.builder.phrase
        if len(chosen) <= FEW_ROWS:  # a single request: plain lookups beat the columnar set-up
            found = [phrase(f, v, language) for f, v in zip(chosen.tolist(), values.tolist(), strict=True)]
            return np.arange(len(found)), found
        index = np.empty(len(chosen), dtype=np.int64)
        phrases: list[_Phrase] = []
        order = np.argsort(chosen, kind="stable")  # one sort instead of a mask per feature
        features, starts = np.unique(chosen[order], return_index=True)
        bounds = [*starts.tolist(), len(order)]
        for k, feature in enumerate(features.tolist()):
            where = order[bounds[k] : bounds[k + 1]]
            codes, uniques = pd.factorize(values[where], use_na_sentinel=False)
            distinct = uniques.tolist()
            found = list(map(self.builder.phrases(feature, language).get, distinct))  # mostly cached
            for position in [k for k, hit in enumerate(found) if hit is None]:
                found[position] = phrase(feature, distinct[position], language)
            index[where] = codes + len(phrases)
            phrases += found
        return index, phrases

    def dicts(self, language: Language = "en") -> list[list[dict]]:
        slots = [
            [dict(zip(REASON_KEYS, reason, strict=True)) for reason in zip(*column, strict=True)]
            for column in self.columns(language)
        ]
        return [list(row) for row in zip(*slots, strict=True)] if slots else [[] for _ in range(len(self))]


def top_by_magnitude(contributions: np.ndarray, top: int) -> np.ndarray:
    """(rows, top) indices of each row's largest absolute contributions, largest first; among equal
    magnitudes the lower index first. A few passes of argmax: argpartition over every column, then a
    sort, cost 5-10x more for the handful of reasons a customer gets. Blocks of rows keep the passes
    in cache (half the time of whole-batch passes on 100,000 x 186)."""
    rows, width = contributions.shape
    top = min(top, width)
    chosen = np.empty((rows, top), dtype=np.intp)
    for start in range(0, rows, TOP_BLOCK):
        magnitude = np.abs(contributions[start : start + TOP_BLOCK])
        everyone = np.arange(len(magnitude))
        for slot in range(top):
            best = magnitude.argmax(axis=1)
            chosen[start : start + TOP_BLOCK, slot] = best
            magnitude[everyone, best] = -1.0  # below any magnitude: taken
    return chosen


def _text(value: object) -> str:
    return _JSON.encode(value).decode()


def _objects(items: Sequence[object]) -> np.ndarray:
    """A 1-d object array of the items as they are (np.array would unpack sequences)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out
