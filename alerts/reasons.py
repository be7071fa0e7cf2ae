"""Reasons in the owners' other language: the snapshot holds them in English only.

Only the customers whose alert is written in a pass are scored again, from the event store as of the
same day with the same model and score history, so the reasons match the snapshot's (the parity the
daily pass keeps with scoring by id) and come in every language the rules and messages have.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from churnguard.history import ScoreHistory
from churnguard.live import LiveFeatures, UnknownCustomers
from churnguard.predict import Predictor
from churnguard.rules import Language
from churnguard.store.events import EventStore

log = logging.getLogger(__name__)
CHUNK = 5_000


def localized_reasons(
    predictor: Predictor,
    store: EventStore,
    as_of: pd.Timestamp,
    customer_ids: Sequence[str],
    languages: Sequence[Language] = ("zh",),
    history: ScoreHistory | None = None,
) -> dict[str, dict[str, list[dict]]]:
    """{language: {customer_id: reasons}}; a customer who cannot be scored again keeps English."""
    out: dict[str, dict[str, list[dict]]] = {language: {} for language in languages}
    live = LiveFeatures(predictor.schema)
    ids = sorted(set(customer_ids))
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        try:
            frame = live.frame(store, chunk, as_of)
        except UnknownCustomers as exc:
            log.warning("reasons in other languages: %s", exc)
            continue
        batch = predictor.score_checked(predictor.rules.check_frame(frame, allow_extra=False), True, history)
        for language in languages:
            reasons = batch.reasons_in(language) or []
            out[language].update(zip(batch.customer_ids, reasons, strict=True))
    return out
