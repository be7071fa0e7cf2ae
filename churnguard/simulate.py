"""The CRM simulator: a B2B customer base whose churn truth is known exactly.

Models, alerts and drift monitors are tested against it, so the process is built around one promise:
`truth_probabilities` is the exact probability of churn under the simulator's own law, given the full
latent state at the observation date. No model can beat it, and it is calibrated by construction. Beside
it: the same forecast without the hidden frailty, and the latent episode state itself (in an episode or
not, its cause and age), which both forecasts know and no event carries. They are references for
measuring what the observable events allow (`benchmarks/lab.py`), never model inputs.

The latent process, one step per day ("day k" is `start + k`; state is read at midnight):

* **healthy**: during day k an onset of disengagement happens with a daily hazard `_onset_hazard`
  that depends on static attributes (segment, plan, industry, a hidden frailty), tenure, the renewal
  cycle and the month. After a recovery there is a honeymoon of at least `horizon_days` without onsets
  (the customer was won back with a renewal).
* **disengaging**: an episode with a cause and an age (days since onset). It ends in churn after a
  lead time or in recovery, with per-cause laws (`CAUSE_LAWS`). Sampling the outcome and duration at
  onset is the same law as daily competing hazards in the episode's age, so (cause, age) is a Markov
  state and its future is not known in advance. Health declines with age only, and every signal is
  drawn from the state of the day, so signals never reveal more than the state does.
* **churned**: absorbing. The churn event is at midnight of the churn date; nothing follows it.

Signals (logins, orders, payments, tickets, surveys, marketing touches, contact changes) are Poisson
or Bernoulli draws per customer-day whose rates depend on static traits, the calendar (weekends,
August and year-end lulls), noise processes that do not affect churn (low-usage accounts, temporary
dips, chronic late payers) and the health of the current episode, with per-cause emphasis.

Everything is drawn from one `numpy.random.default_rng(seed)` in a fixed order, so a seed gives
identical frames.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field, fields, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

__all__ = [
    "CAUSES",
    "EVENT_TYPES",
    "Simulation",
    "SimulationConfig",
    "observation_dates",
    "realism",
    "simulate",
    "write",
]

STRING = pd.StringDtype("pyarrow")  # Arrow-backed: 10-20 million ids stay compact and write fast

EVENT_TYPES = (
    "login",
    "feature_use",
    "order",
    "payment",
    "ticket",
    "complaint",
    "csat",
    "nps",
    "email_open",
    "webinar",
    "contact_change",
    "churn",
)
EVENT_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}

SEGMENTS = ("SMB", "Mid-Market", "Enterprise")
INDUSTRIES = (
    "Software",
    "Manufacturing",
    "Retail",
    "Healthcare",
    "Financial Services",
    "Logistics",
    "Education",
    "Professional Services",
)
REGIONS = ("North America", "EMEA", "APAC", "LATAM")
PLANS = (
    "Starter Monthly",
    "Starter Annual",
    "Professional Annual",
    "Business Annual",
    "Enterprise Multi-Year",
)
MONTHLY_PLANS = frozenset({"Starter Monthly"})

DAY_SECONDS = 86_400
NEVER = np.int64(2**40)  # a day index later than any simulated day
LONG_AGO = -NEVER
MAX_EPISODE_DAYS = 365  # lead and recovery times are truncated here
WARMUP_DAYS = 365  # latent-only history before `start`, so the base starts in a realistic mix of states
MIN_HONEYMOON_DAYS = 90
RECOVERY_RAMP_DAYS = 14  # health climbs back to 1 over this many days after a recovery
HEALTH_FLOOR = 0.04


@dataclass(frozen=True)
class SimulationConfig:
    customers: int = 20_000
    days: int = 365
    seed: int = 0
    start: date = date(2025, 1, 1)
    horizon_days: int = 90  # horizon of the truth probabilities
    observe_every_days: int = 30  # observation dates for the truth table
    first_observation_day: int = 120  # first observation date = start + 120 days
    # Signals are also written for this many days before `start`: a CRM export holds history, and
    # without it trailing windows at early observation dates are truncated, so the same customer
    # state looks different in early and late rows (a shift between out-of-time splits).
    history_days: int = 120

    def __post_init__(self) -> None:
        if self.customers < 1 or self.days < 1 or self.horizon_days < 1 or self.observe_every_days < 1:
            raise ValueError(f"customers, days, horizon_days and observe_every_days must be >= 1: {self}")
        if self.first_observation_day < 1:
            raise ValueError(f"first_observation_day must be >= 1, got {self.first_observation_day}")
        if not 0 <= self.history_days <= WARMUP_DAYS:
            raise ValueError(f"history_days must be in [0, {WARMUP_DAYS}], got {self.history_days}")


@dataclass(frozen=True, eq=False)
class Simulation:
    """The simulated CRM in memory; `write` stores the five frames as Parquet.

    String columns are Arrow-backed (`string[pyarrow]`); the files hold plain Arrow strings.
    """

    config: SimulationConfig
    customers: pd.DataFrame
    events: pd.DataFrame
    truth: pd.DataFrame
    truth_probabilities: pd.DataFrame
    contracts: pd.DataFrame  # one row per contract term; see `_contracts_frame`


def observation_dates(config: SimulationConfig) -> list[date]:
    """Observation dates whose whole horizon lies inside the simulated period."""
    end = config.start + timedelta(days=config.days)
    dates = []
    current = config.start + timedelta(days=config.first_observation_day)
    while current + timedelta(days=config.horizon_days) <= end:
        dates.append(current)
        current += timedelta(days=config.observe_every_days)
    return dates


# ---------------------------------------------------------------------------------------------- causes

CHANNELS = ("activity", "features", "orders", "payments", "satisfaction", "engagement")
ACTIVITY, FEATURES, ORDERS, PAYMENTS, SATISFACTION, ENGAGEMENT = range(len(CHANNELS))


@dataclass(frozen=True)
class CauseLaw:
    """How one cause of disengagement unfolds and which signals it moves."""

    name: str
    churn_share: float  # share of onsets that end in churn; the rest recover
    lead_median_days: float  # onset to churn, lognormal
    lead_sigma: float
    recovery_median_days: float  # onset to recovery, lognormal with sigma 0.5
    channel_weights: tuple[float, ...]  # per CHANNELS: how much of the health decline each signal shows
    ticket_response: float  # > 0: tickets surge as health falls; < 0: they go silent
    contact_leaves: float  # probability the key contact leaves on the onset date


CAUSE_LAWS = (
    CauseLaw("price", 0.62, 60, 0.55, 25, (0.6, 0.4, 1.0, 1.0, 0.6, 0.5), 0.4, 0.02),
    CauseLaw("service", 0.58, 50, 0.55, 22, (0.7, 0.5, 0.5, 0.3, 1.0, 0.6), 2.5, 0.02),
    CauseLaw("product_gap", 0.62, 85, 0.5, 30, (1.0, 1.0, 0.7, 0.2, 0.7, 0.6), 0.8, 0.02),
    CauseLaw("competitor", 0.70, 45, 0.6, 22, (1.0, 0.8, 0.9, 0.3, 0.6, 1.0), -0.7, 0.15),
    CauseLaw("contact_change", 0.55, 70, 0.5, 28, (1.0, 0.7, 0.7, 0.4, 0.5, 1.0), -0.5, 0.9),
    # Budget cuts and acquisitions: sudden, with little warning in the signals.
    CauseLaw("budget", 0.92, 6, 0.7, 8, (0.5, 0.3, 1.0, 0.8, 0.2, 0.4), -0.3, 0.05),
)
CAUSES = tuple(law.name for law in CAUSE_LAWS)
NO_CAUSE = "none"

# Share of each segment's onsets by cause (rows: SEGMENTS, columns: CAUSES).
CAUSE_MIX = np.array(
    [
        [0.28, 0.17, 0.17, 0.12, 0.08, 0.18],
        [0.22, 0.20, 0.18, 0.16, 0.14, 0.10],
        [0.15, 0.22, 0.15, 0.15, 0.23, 0.10],
    ]
)


def _discretised_lognormal_cdf(median: float, sigma: float) -> np.ndarray:
    """P(duration <= x) for x = 0..MAX_EPISODE_DAYS of a lognormal rounded to whole days.

    Durations are at least one day (shorter ones count as one) and the tail beyond the cap counts as the cap.
    """
    x = np.arange(MAX_EPISODE_DAYS + 1, dtype=float)
    z = (np.log(np.maximum(x, 1.0) + 0.5) - np.log(median)) / (sigma * np.sqrt(2.0))
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z))
    cdf[0], cdf[-1] = 0.0, 1.0
    return cdf


@dataclass(frozen=True)
class EpisodeLaw:
    """Per-cause tables of the episode process, indexed [cause, age]."""

    churn_share: np.ndarray  # (C,)
    lead_cdf: np.ndarray  # (C, A + 1): P(lead <= x)
    recovery_cdf: np.ndarray  # (C, A + 1): P(recovery time <= x)
    health: np.ndarray  # (C, A + 1): health at each age, 1 = healthy
    channel_weights: np.ndarray  # (C, channels)
    ticket_response: np.ndarray  # (C,)
    contact_leaves: np.ndarray  # (C,)

    @classmethod
    def build(cls, laws: tuple[CauseLaw, ...] = CAUSE_LAWS) -> EpisodeLaw:
        ages = np.arange(MAX_EPISODE_DAYS + 1, dtype=float)
        # Health erodes slowly at first, then collapses: near the floor by 60 % of the cause's median lead,
        # so churners go quiet weeks to months before they leave.
        scale = np.array([0.3 * law.lead_median_days for law in laws])[:, None]
        health = HEALTH_FLOOR + (1 - HEALTH_FLOOR) * np.exp(-((ages[None, :] / scale) ** 2))
        return cls(
            churn_share=np.array([law.churn_share for law in laws]),
            lead_cdf=np.stack(
                [_discretised_lognormal_cdf(law.lead_median_days, law.lead_sigma) for law in laws]
            ),
            recovery_cdf=np.stack(
                [_discretised_lognormal_cdf(law.recovery_median_days, 0.5) for law in laws]
            ),
            health=health,
            channel_weights=np.array([law.channel_weights for law in laws]),
            ticket_response=np.array([law.ticket_response for law in laws]),
            contact_leaves=np.array([law.contact_leaves for law in laws]),
        )

    def ongoing(self, cause: np.ndarray, age: np.ndarray) -> np.ndarray:
        """P(episode lasts beyond `age` days), the survival that conditions every in-episode forecast."""
        share = self.churn_share[cause]
        return share * (1 - self.lead_cdf[cause, age]) + (1 - share) * (1 - self.recovery_cdf[cause, age])

    def churn_within(self, cause: np.ndarray, age: np.ndarray, horizon: int) -> np.ndarray:
        """P(churn in the next `horizon` days | episode of `cause` still running at `age`)."""
        later = np.minimum(age + horizon, MAX_EPISODE_DAYS)
        gained = self.lead_cdf[cause, later] - self.lead_cdf[cause, age]
        return self.churn_share[cause] * gained / self.ongoing(cause, age)

    def sample_durations(self, cause: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Outcome (True = churn) and duration in days of new episodes, by inverse CDF."""
        churns = rng.random(cause.size) < self.churn_share[cause]
        draw = rng.random(cause.size)
        duration = np.ones(cause.size, dtype=np.int64)
        for code in np.unique(cause):
            for outcome, cdf in ((True, self.lead_cdf[code]), (False, self.recovery_cdf[code])):
                chosen = (cause == code) & (churns == outcome)
                duration[chosen] = np.searchsorted(cdf, draw[chosen], side="left")  # first x: cdf[x] >= draw
        return churns, np.maximum(duration, 1)


# ---------------------------------------------------------------------------------------------- calendar


@dataclass(frozen=True)
class Calendar:
    """Per-day multipliers, indexed by `row(day)` (day 0 = start)."""

    first_day: int
    onset: np.ndarray  # budget planning makes December and January riskier
    office: np.ndarray  # weekdays vs weekends for logins, tickets, orders
    email: np.ndarray
    login_season: np.ndarray  # (days, regions): August and year-end lulls

    @classmethod
    def build(cls, start: date, first_day: int, last_day: int) -> Calendar:
        days = np.arange(first_day, last_day + 1)
        dates = np.datetime64(start, "D") + days
        month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
        day_of_month = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
        weekday = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        office = np.select([weekday == 5, weekday == 6], [0.12, 0.08], 1.0)
        email = np.where(weekday >= 5, 0.45, 1.0)
        # August lull differs by region (EMEA takes the longest summer holidays).
        august = np.array([0.7, 0.4, 0.9, 0.8])
        year_end = ((month == 12) & (day_of_month >= 22)) | ((month == 1) & (day_of_month <= 2))
        season = np.ones((days.size, len(REGIONS)))
        season[month == 8] = august
        season[year_end] = 0.3
        onset = np.where((month == 12) | (month == 1), 1.3, 0.95)
        return cls(first_day, onset, office, email, season)

    def row(self, day: int | np.ndarray) -> int | np.ndarray:
        return day - self.first_day


# ---------------------------------------------------------------------------------------------- customers

ONSET_SCALE = 0.00078  # daily onset hazard of a reference customer; tuned for ~17 % annual churn
SEGMENT_HAZARD = np.array([1.0, 0.72, 0.45])
INDUSTRY_HAZARD = np.array([1.0, 0.9, 1.2, 0.9, 0.85, 1.05, 1.15, 1.0])
FRAILTY_SIGMA = 0.7  # hidden per-customer risk: the oracle knows it, models must infer it


def _frailty_nodes(count: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights of the frailty's lognormal law (mean 1): expectations over a
    frailty nobody observes, exact for smooth functions to far below the oracle's sampling error."""
    z, weight = np.polynomial.hermite_e.hermegauss(count)
    return np.exp(-(FRAILTY_SIGMA**2) / 2 + FRAILTY_SIGMA * z), weight / weight.sum()


FRAILTY_NODES = _frailty_nodes()

_FIRST_NAMES_TEXT = """Ava Ben Chloe Daniel Elena Farid Grace Hiro Isabel Jonas Kofi Lena Mateo Nadia Omar
Priya Quinn Rosa Sven Tara Umar Vera Wei Xenia Yusuf Zoe Amir Bianca Carlos Dana Emil Fatima Gustav Hana Ivan
Julia Kenji Lucia Marco Nina"""
_LAST_NAMES_TEXT = """Adams Becker Chen Dubois Evans Fischer Garcia Hansen Ito Jensen Kowalski Lopez Muller
Novak Okafor Patel Quist Rossi Silva Tanaka Ueda Varga Wagner Xu Yilmaz Zimmermann Berg Costa Dahl Eriksen
Fontaine Gomez Haas Ibrahim Jovanovic Kim Larsen Moreau Nguyen Olsen"""
FIRST_NAMES = tuple(_FIRST_NAMES_TEXT.split())
LAST_NAMES = tuple(_LAST_NAMES_TEXT.split())
OWNERS_PER_SEGMENT = (20, 12, 8)  # account owners (CSMs) per segment; each segment has its own team


@dataclass(frozen=True)
class CustomerBase:
    """Static attributes and hidden traits, one entry per customer, ordered by signup."""

    ids: np.ndarray  # str
    signup: np.ndarray  # day index, negative for the existing base
    segment: np.ndarray  # index into SEGMENTS
    industry: np.ndarray
    region: np.ndarray
    plan: np.ndarray  # index into PLANS
    contract_value: np.ndarray
    owner: np.ndarray  # str
    first_contact: np.ndarray  # index into contact names
    static_hazard: np.ndarray  # segment x plan x industry x frailty x ONSET_SCALE
    frailty: np.ndarray  # the hidden factor in static_hazard, for the oracle that does not know it
    annual_renewal: np.ndarray  # bool: a renewal date each signup anniversary
    tenure_risk: np.ndarray  # (2, tenure days): see `_tenure_risk`
    cause_mix: np.ndarray  # (N, C): share of this customer's onsets by cause
    login_level: np.ndarray  # logins per weekday when healthy
    email_level: np.ndarray
    ticket_level: np.ndarray
    order_rate: np.ndarray  # orders per weekday
    order_size: np.ndarray
    feature_breadth: np.ndarray
    late_payer: np.ndarray  # bool: chronically late, whatever its health
    nps_bias: np.ndarray

    @property
    def size(self) -> int:
        return self.ids.size

    def take(self, index: np.ndarray) -> CustomerBase:
        """The customers at `index` (repeats allowed); the tenure table is shared."""
        per_customer = [f.name for f in fields(self) if f.name != "tenure_risk"]
        return replace(self, **{name: getattr(self, name)[index] for name in per_customer})


def _customer_ids(n: int) -> np.ndarray:
    width = max(6, len(str(n)))
    return np.array([f"C{i:0{width}d}" for i in range(1, n + 1)])


def _signup_days(config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Existing base with tenure 2 weeks to 5 years (truncated exponential), plus new signups."""
    new = min(config.customers // 2, round(config.customers * 0.10 * config.days / 365))
    existing = config.customers - new
    low, high, scale = 14.0, 5 * 365.0, 700.0
    u = rng.random(existing)
    tenure = low - scale * np.log1p(-u * (1 - np.exp(-(high - low) / scale)))
    signup = np.concatenate([-np.round(tenure), rng.integers(1, max(config.days, 2), new)])
    return np.sort(signup.astype(np.int64))  # customer ids follow signup order


def _draw_customers(config: SimulationConfig, rng: np.random.Generator) -> CustomerBase:
    n = config.customers
    signup = _signup_days(config, rng)
    segment = rng.choice(len(SEGMENTS), n, p=[0.6, 0.28, 0.12])
    industry = rng.integers(0, len(INDUSTRIES), n)
    region = rng.choice(len(REGIONS), n, p=[0.45, 0.3, 0.15, 0.1])
    plan_mix = np.array(
        [
            [0.45, 0.35, 0.20, 0.00, 0.00],
            [0.00, 0.00, 0.60, 0.40, 0.00],
            [0.00, 0.00, 0.00, 0.30, 0.70],
        ]
    )
    plan = (rng.random(n)[:, None] > plan_mix[segment].cumsum(axis=1)).sum(axis=1)
    monthly = np.isin(plan, [PLANS.index(p) for p in MONTHLY_PLANS])
    median_value = np.array([6_000.0, 40_000.0, 250_000.0])[segment] * np.where(monthly, 0.7, 1.0)
    contract_value = np.round(median_value * rng.lognormal(0.0, 0.5, n), 2)

    owner_offset = np.concatenate([[0], np.cumsum(OWNERS_PER_SEGMENT)])
    owner_index = owner_offset[segment] + (rng.random(n) * np.array(OWNERS_PER_SEGMENT)[segment]).astype(int)
    owner_names = np.array(
        [
            f"{FIRST_NAMES[(7 * i) % len(FIRST_NAMES)]} {LAST_NAMES[(11 * i + 3) % len(LAST_NAMES)]}"
            for i in range(owner_offset[-1])
        ]
    )

    frailty = rng.lognormal(-(FRAILTY_SIGMA**2) / 2, FRAILTY_SIGMA, n)
    static_hazard = (
        ONSET_SCALE
        * SEGMENT_HAZARD[segment]
        * INDUSTRY_HAZARD[industry]
        * np.where(monthly, 1.7, 1.0)
        * frailty
    )
    mix = CAUSE_MIX[segment].copy()
    mix[monthly, CAUSES.index("price")] *= 1.4  # month-to-month buyers shop on price
    mix /= mix.sum(axis=1, keepdims=True)

    low_usage = rng.random(n) < 0.05
    login_level = (
        np.array([0.28, 0.5, 0.8])[segment] * rng.lognormal(0.0, 0.35, n) * np.where(low_usage, 0.4, 1.0)
    )
    email_level = 0.07 * rng.lognormal(0.0, 0.7, n) * np.where(low_usage, 0.3, 1.0)
    ticket_level = np.array([0.012, 0.025, 0.045])[segment] * rng.lognormal(0.0, 0.5, n)
    order_cycle = np.array([60.0, 30.0, 20.0])[segment] * rng.lognormal(0.0, 0.3, n)
    order_size = contract_value * order_cycle / 365 * 0.3
    return CustomerBase(
        ids=_customer_ids(n),
        signup=signup,
        segment=segment,
        industry=industry,
        region=region,
        plan=plan,
        contract_value=contract_value,
        owner=owner_names[owner_index],
        first_contact=rng.integers(0, len(FIRST_NAMES) * len(LAST_NAMES), n),
        static_hazard=static_hazard,
        frailty=frailty,
        annual_renewal=~monthly,
        tenure_risk=_tenure_risk(config.days + config.horizon_days - int(signup.min()) + 1),
        cause_mix=mix,
        login_level=login_level,
        email_level=email_level,
        ticket_level=ticket_level,
        order_rate=7 / 5 / order_cycle,  # orders land on weekdays
        order_size=order_size,
        feature_breadth=rng.lognormal(np.log(2.5), 0.4, n),
        late_payer=rng.random(n) < 0.1,
        nps_bias=rng.normal(0.0, 1.0, n),
    )


def _tenure_risk(max_tenure: int) -> np.ndarray:
    """Onset risk by tenure in days, rows: monthly plans, annual plans.

    New customers are riskiest; annual contracts concentrate risk in the 60 days before each renewal.
    """
    tenure = np.arange(max_tenure + 1)
    onboarding = 1.0 + 1.2 * np.exp(-tenure / 150.0)
    before_renewal = 365 - tenure % 365 <= 60
    return np.stack([onboarding, onboarding * np.where(before_renewal, 2.0, 0.8)])


def _onset_hazard(base: CustomerBase, calendar: Calendar, who: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Daily probability that a healthy customer starts to disengage during `day` (broadcasts)."""
    tenure = np.clip(day - base.signup[who], 0, base.tenure_risk.shape[1] - 1)
    by_tenure = base.tenure_risk[base.annual_renewal[who].astype(np.intp), tenure]
    return base.static_hazard[who] * by_tenure * calendar.onset[calendar.row(day)]


# ---------------------------------------------------------------------------------------------- latent state


@dataclass
class LatentState:
    """Each customer's latent state; episodes are sampled whole at onset."""

    onset: np.ndarray  # first day of the current or last episode (NEVER if none)
    episode_end: np.ndarray  # churn or recovery day of that episode
    cause: np.ndarray
    churns: np.ndarray  # the episode ends in churn
    honeymoon_until: np.ndarray  # no onset before this day
    churn_day: np.ndarray  # NEVER if not (yet) churned
    dip_until: np.ndarray  # temporary usage dip that does not affect churn

    @classmethod
    def initial(cls, n: int) -> LatentState:
        return cls(
            onset=np.full(n, NEVER),
            episode_end=np.full(n, NEVER),
            cause=np.zeros(n, dtype=np.int64),
            churns=np.zeros(n, dtype=bool),
            honeymoon_until=np.full(n, LONG_AGO),
            churn_day=np.full(n, NEVER),
            dip_until=np.full(n, LONG_AGO),
        )

    def in_episode(self, day: int, who: np.ndarray | slice = slice(None)) -> np.ndarray:
        return (self.onset[who] <= day) & (day < self.episode_end[who])


def _draw_onsets(
    day: int,
    base: CustomerBase,
    state: LatentState,
    law: EpisodeLaw,
    calendar: Calendar,
    honeymoon_days: int,
    rng: np.random.Generator,
) -> None:
    """Onsets during `day`: the episode starts the next day with a sampled outcome and duration."""
    everyone = np.arange(base.size)
    hazard = _onset_hazard(base, calendar, everyone, np.int64(day))
    draw = rng.random(base.size)
    can_start = (
        (base.signup <= day)
        & (state.churn_day > day)
        & ~state.in_episode(day)
        & (state.honeymoon_until <= day)
    )
    starters = np.flatnonzero(can_start & (draw < hazard))
    if starters.size == 0:
        return
    cause = (rng.random(starters.size)[:, None] > base.cause_mix[starters].cumsum(axis=1)).sum(axis=1)
    cause = np.minimum(cause, len(CAUSES) - 1)
    churns, duration = law.sample_durations(cause, rng)
    first_day = day + 1
    end = first_day + duration
    churns &= end > 0  # the base is active at start: a churn inside the warm-up becomes a recovery
    state.onset[starters] = first_day
    state.episode_end[starters] = end
    state.cause[starters] = cause
    state.churns[starters] = churns
    state.churn_day[starters] = np.where(churns, end, NEVER)
    state.honeymoon_until[starters] = np.where(churns, NEVER, end + honeymoon_days)


# ---------------------------------------------------------------------------------------------- oracle


def _truth_probabilities_on(
    day: int,
    config: SimulationConfig,
    base: CustomerBase,
    state: LatentState,
    law: EpisodeLaw,
    calendar: Calendar,
    *,
    frailty_known: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact P(churn in (day, day + horizon]) for customers active at midnight of `day`.

    In an episode: the per-cause lead law conditioned on the episode still running at its age
    (a recovery inside the horizon cannot be followed by a churn: the honeymoon outlasts it).
    Healthy: sum over onset days s of P(no onset before s) * hazard(s) * P(lead <= day + horizon - s - 1).

    `frailty_known=False` is the oracle without the hidden frailty: for healthy customers the forecast
    is averaged over the frailty's population law instead of using the customer's own (an episode's
    forecast does not depend on it). It still knows the latent episode state, and it ignores what a
    customer's history says about their frailty, so it is a reference, not a bound.
    """
    horizon = config.horizon_days
    active = np.flatnonzero((base.signup < day) & (state.churn_day > day))
    probability = np.empty(active.size)
    episode = state.in_episode(day, active)

    who = active[episode]
    probability[episode] = law.churn_within(state.cause[who], day - state.onset[who], horizon)

    healthy_rows = np.flatnonzero(~episode)
    for chunk in np.array_split(healthy_rows, max(1, healthy_rows.size // 20_000)):
        who = active[chunk]
        if frailty_known:
            probability[chunk] = _healthy_churn_within(day, horizon, base, state, law, calendar, who, 1.0)
            continue
        probability[chunk] = sum(
            weight
            * _healthy_churn_within(day, horizon, base, state, law, calendar, who, node / base.frailty[who])
            for node, weight in zip(*FRAILTY_NODES, strict=True)
        )
    return active, probability


def _healthy_churn_within(
    day: int,
    horizon: int,
    base: CustomerBase,
    state: LatentState,
    law: EpisodeLaw,
    calendar: Calendar,
    who: np.ndarray,
    hazard_scale: float | np.ndarray,
) -> np.ndarray:
    """P(an onset in the next `horizon` days that churns within them), for healthy customers `who`, with
    their onset hazard multiplied by `hazard_scale` (1: their own frailty)."""
    offsets = np.arange(horizon)
    onset_churn = law.churn_share[:, None] * law.lead_cdf  # P(an onset churns within x days), by cause
    onset_day = day + offsets[None, :]
    hazard = _onset_hazard(base, calendar, who[:, None], onset_day) * np.reshape(hazard_scale, (-1, 1))
    hazard = np.where(onset_day >= state.honeymoon_until[who][:, None], hazard, 0.0)
    still_healthy = np.cumprod(1.0 - hazard, axis=1)
    still_healthy = np.hstack([np.ones((who.size, 1)), still_healthy[:, :-1]])
    churn_in_time = base.cause_mix[who] @ onset_churn[:, np.minimum(horizon - 1 - offsets, MAX_EPISODE_DAYS)]
    return (still_healthy * hazard * churn_in_time).sum(axis=1)


# ---------------------------------------------------------------------------------------------- signals


@dataclass
class EventBuffer:
    customer: list[np.ndarray] = field(default_factory=list)
    second: list[np.ndarray] = field(default_factory=list)  # seconds since start
    type_code: list[np.ndarray] = field(default_factory=list)
    value: list[np.ndarray] = field(default_factory=list)

    def add(
        self, customer: np.ndarray, second: np.ndarray, kind: str, value: np.ndarray | None = None
    ) -> None:
        if customer.size == 0:
            return
        self.customer.append(customer.astype(np.int32))
        self.second.append(second.astype(np.int64))
        self.type_code.append(np.full(customer.size, EVENT_CODE[kind], dtype=np.int8))
        self.value.append(np.full(customer.size, np.nan) if value is None else value.astype(np.float64))

    def size(self) -> int:
        return sum(part.size for part in self.customer)


@dataclass
class DayContext:
    """The active customers of one day and the multipliers their state puts on each signal."""

    day: int
    who: np.ndarray  # customer indices
    health: np.ndarray
    cause: np.ndarray
    in_episode: np.ndarray
    age: np.ndarray
    dip: np.ndarray
    channel: np.ndarray  # (channels, n): 1 = healthy level, lower = decayed

    def seconds(self, hours: np.ndarray) -> np.ndarray:
        return self.day * DAY_SECONDS + np.clip(hours * 3600, 0, DAY_SECONDS - 1).astype(np.int64)


def _business_hours(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(13.0, 2.8, n)


def _day_context(
    day: int, base: CustomerBase, state: LatentState, law: EpisodeLaw, rng: np.random.Generator
) -> DayContext:
    who = np.flatnonzero((base.signup <= day) & (state.churn_day > day))
    in_episode = state.in_episode(day, who)
    since_recovery = day - state.episode_end[who]
    recovering = (
        ~in_episode & ~state.churns[who] & (since_recovery >= 0) & (since_recovery < RECOVERY_RAMP_DAYS)
    )
    cause = state.cause[who]
    age = np.where(in_episode, day - state.onset[who], 0)
    health = np.ones(who.size)
    channel = np.ones((len(CHANNELS), who.size))
    unwell = np.flatnonzero(in_episode | recovering)  # a few percent: the rest keep their healthy levels
    health[unwell] = np.where(
        in_episode[unwell],
        law.health[cause[unwell], np.minimum(age[unwell], MAX_EPISODE_DAYS)],
        0.7 + 0.3 * since_recovery[unwell] / RECOVERY_RAMP_DAYS,
    )
    channel[:, unwell] = 1.0 - law.channel_weights[cause[unwell]].T * (1.0 - health[unwell])

    # False alarms: quiet spells (holidays, reorganisations) that recover and do not affect churn.
    dip = state.dip_until[who] > day
    new_dip = ~dip & (rng.random(who.size) < 1 / 1500)
    state.dip_until[who[new_dip]] = day + rng.integers(20, 60, int(new_dip.sum()))
    return DayContext(day, who, health, cause, in_episode, age, dip, channel)


def _emit_activity(
    ctx: DayContext, base: CustomerBase, calendar: Calendar, rng: np.random.Generator, events: EventBuffer
) -> None:
    """Logins thin out as health falls; some sessions record how many features were used."""
    row = calendar.row(ctx.day)
    rate = (
        base.login_level[ctx.who]
        * calendar.office[row]
        * calendar.login_season[row, base.region[ctx.who]]
        * ctx.channel[ACTIVITY]
        * np.where(ctx.dip, 0.3, 1.0)
    )
    count = rng.poisson(rate)
    local = np.repeat(np.arange(ctx.who.size), count)
    customer = ctx.who[local]
    second = ctx.seconds(_business_hours(rng, local.size))
    events.add(customer, second, "login")

    tracked = rng.random(local.size) < 0.3
    local, customer, second = local[tracked], customer[tracked], second[tracked]
    breadth = (
        base.feature_breadth[customer] * ctx.channel[FEATURES, local] * np.where(ctx.dip[local], 0.6, 1.0)
    )
    features = 1 + rng.poisson(breadth)
    later = np.minimum(second + rng.integers(60, 1800, local.size), (ctx.day + 1) * DAY_SECONDS - 1)
    events.add(customer, later, "feature_use", features)


def _emit_transactions(
    ctx: DayContext, base: CustomerBase, calendar: Calendar, rng: np.random.Generator, events: EventBuffer
) -> None:
    """Orders shrink and come less often; invoices are paid later as health falls."""
    row = calendar.row(ctx.day)
    order_health = ctx.channel[ORDERS]
    rate = (
        base.order_rate[ctx.who]
        * calendar.office[row]
        * (0.3 + 0.7 * order_health)
        * np.where(ctx.dip, 0.7, 1.0)
    )
    local = np.flatnonzero(rng.random(ctx.who.size) < rate)
    customer = ctx.who[local]
    amount = (
        base.order_size[customer] * (0.4 + 0.6 * order_health[local]) * rng.lognormal(0.0, 0.3, local.size)
    )
    events.add(customer, ctx.seconds(_business_hours(rng, local.size)), "order", np.round(amount, 2))

    invoice_rate = (1 / 30) * 7 / 5 * (calendar.office[row] >= 1.0)
    local = np.flatnonzero(rng.random(ctx.who.size) < invoice_rate)
    customer = ctx.who[local]
    strain = 1.0 - ctx.channel[PAYMENTS, local]
    late_share = np.clip(0.1 + 0.3 * base.late_payer[customer] + 0.6 * strain, 0, 0.95)
    late = rng.random(local.size) < late_share
    days_late = np.where(late, rng.geometric(1.0 / (3.0 + 25.0 * strain)), 0)
    events.add(customer, ctx.seconds(_business_hours(rng, local.size)), "payment", days_late)


def _emit_service(
    ctx: DayContext,
    base: CustomerBase,
    law: EpisodeLaw,
    calendar: Calendar,
    rng: np.random.Generator,
    events: EventBuffer,
) -> None:
    """Tickets surge (service) or go silent (competitor, contact change); unhappy tickets bring
    complaints and low CSAT."""
    row = calendar.row(ctx.day)
    decline = 1.0 - ctx.health
    ticket_factor = np.maximum(0.1, 1.0 + law.ticket_response[ctx.cause] * decline)
    count = rng.poisson(base.ticket_level[ctx.who] * ticket_factor * max(calendar.office[row], 0.2))
    local = np.repeat(np.arange(ctx.who.size), count)
    customer = ctx.who[local]
    unhappy = 1.0 - ctx.channel[SATISFACTION, local]
    second = ctx.seconds(_business_hours(rng, local.size))
    draw = rng.random(local.size)
    severity = 1 + (draw > 0.6 - 0.2 * unhappy) + (draw > 0.9 - 0.3 * unhappy)
    events.add(customer, second, "ticket", severity)

    complaint = rng.random(local.size) < 0.03 + 0.4 * unhappy
    events.add(customer[complaint], second[complaint], "complaint")

    answered = rng.random(local.size) < 0.4
    score = rng.normal(4.3 - 2.6 * unhappy - 0.25 * (severity - 1), 0.7)
    later = np.minimum(second + rng.integers(1800, 6 * 3600, local.size), (ctx.day + 1) * DAY_SECONDS - 1)
    events.add(customer[answered], later[answered], "csat", np.clip(np.round(score[answered]), 1, 5))


def _emit_engagement(
    ctx: DayContext, base: CustomerBase, calendar: Calendar, rng: np.random.Generator, events: EventBuffer
) -> None:
    """Marketing email opens, webinars and NPS answers stop as the customer disengages."""
    row = calendar.row(ctx.day)
    engaged = ctx.channel[ENGAGEMENT] * np.where(ctx.dip, 0.3, 1.0)
    season = calendar.login_season[row, base.region[ctx.who]]
    count = rng.poisson(base.email_level[ctx.who] * calendar.email[row] * season * engaged)
    local = np.repeat(np.arange(ctx.who.size), count)
    events.add(ctx.who[local], ctx.seconds(rng.uniform(6.0, 23.0, local.size)), "email_open")

    local = np.flatnonzero(rng.random(ctx.who.size) < 0.004 * calendar.office[row] * season * engaged)
    events.add(ctx.who[local], ctx.seconds(np.full(local.size, 16.0)), "webinar")

    answer_rate = (1 / 100) * (0.4 + 0.6 * ctx.channel[ENGAGEMENT])
    local = np.flatnonzero(rng.random(ctx.who.size) < answer_rate)
    customer = ctx.who[local]
    unhappy = 1.0 - ctx.channel[SATISFACTION, local]
    score = rng.normal(8.2 - 6.0 * unhappy + base.nps_bias[customer], 1.2)
    events.add(
        customer, ctx.seconds(_business_hours(rng, local.size)), "nps", np.clip(np.round(score), 0, 10)
    )


def _emit_relationship(
    ctx: DayContext, law: EpisodeLaw, rng: np.random.Generator, events: EventBuffer
) -> None:
    """Key contacts leave at a background rate, and on the onset date of contact-driven episodes."""
    onset_today = ctx.in_episode & (ctx.age == 0)
    leave = np.where(onset_today, law.contact_leaves[ctx.cause], 0.0)
    leave = 1.0 - (1.0 - leave) * (1.0 - 1 / 900)
    local = np.flatnonzero(rng.random(ctx.who.size) < leave)
    events.add(ctx.who[local], ctx.seconds(_business_hours(rng, local.size)), "contact_change")


# ---------------------------------------------------------------------------------------------- simulate


def simulate(config: SimulationConfig, progress: bool = False) -> Simulation:
    """Simulate the customer base; pure, in memory and deterministic per seed."""
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    law = EpisodeLaw.build()
    horizon = config.horizon_days
    calendar = Calendar.build(config.start, -WARMUP_DAYS, config.days + horizon + 1)
    base = _draw_customers(config, rng)
    state = LatentState.initial(base.size)
    honeymoon_days = max(MIN_HONEYMOON_DAYS, horizon)  # >= horizon keeps the oracle exact
    observation_days = {(d - config.start).days for d in observation_dates(config)}

    first_day = max(-WARMUP_DAYS, int(base.signup.min()))
    days = range(first_day, config.days)
    if progress:
        from tqdm import tqdm

        days = tqdm(days, desc=f"simulating ({-first_day} warm-up + {config.days} days)", unit="day")

    events = EventBuffer()
    episodes = EpisodeLog()
    oracle: list[OracleRows] = []
    for day in days:
        if day in observation_days:
            active, exact = _truth_probabilities_on(day, config, base, state, law, calendar)
            _, without_frailty = _truth_probabilities_on(
                day, config, base, state, law, calendar, frailty_known=False
            )
            oracle.append(OracleRows.at(day, active, exact, without_frailty, state))
        if day >= -config.history_days:
            ctx = _day_context(day, base, state, law, rng)
            _emit_activity(ctx, base, calendar, rng, events)
            _emit_transactions(ctx, base, calendar, rng, events)
            _emit_service(ctx, base, law, calendar, rng, events)
            _emit_engagement(ctx, base, calendar, rng, events)
            _emit_relationship(ctx, law, rng, events)
        _draw_onsets(day, base, state, law, calendar, honeymoon_days, rng)
        episodes.record(np.flatnonzero(state.onset == day + 1), state)

    churned = np.flatnonzero(state.churn_day <= config.days)
    events.add(churned, state.churn_day[churned] * DAY_SECONDS, "churn")
    log.info("drew %s events in %.1f s", f"{events.size():,}", time.perf_counter() - started)

    customers = _customers_frame(config, base, state, events, rng)  # before the buffer is consumed
    sim = Simulation(
        config=config,
        customers=customers,
        events=_events_frame(config, base, events),
        truth=_truth_frame(config, base, state),
        truth_probabilities=_truth_probabilities_frame(config, base, oracle),
        contracts=_contracts_frame(config, base, state, episodes, law),
    )
    elapsed = time.perf_counter() - started
    log.info("simulated %s customers over %d days in %.1f s", f"{base.size:,}", config.days, elapsed)
    return sim


def _dates(config: SimulationConfig, days: np.ndarray) -> np.ndarray:
    """Day indices to datetime64[ns] midnights; NEVER becomes NaT."""
    start = np.datetime64(config.start, "ns")
    out = start + days.astype(np.int64) * np.timedelta64(DAY_SECONDS * 10**9, "ns")
    return np.where(days >= NEVER, np.datetime64("NaT", "ns"), out)


def _strings(values: np.ndarray) -> pd.arrays.ArrowStringArray:
    return pd.array(values, dtype=STRING)


def _customers_frame(
    config: SimulationConfig,
    base: CustomerBase,
    state: LatentState,
    events: EventBuffer,
    rng: np.random.Generator,
) -> pd.DataFrame:
    contact_names = np.array([f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES])
    changes = np.zeros(base.size, dtype=np.int64)
    code = EVENT_CODE["contact_change"]
    for customer, kind in zip(events.customer, events.type_code, strict=True):
        changes += np.bincount(customer[kind == code], minlength=base.size)
    replacement = rng.integers(0, contact_names.size, base.size)  # whoever took over last
    contact = np.where(changes > 0, replacement, base.first_contact)
    churn_day = np.where(state.churn_day <= config.days, state.churn_day, NEVER)
    return pd.DataFrame(
        {
            "customer_id": _strings(base.ids),
            "segment": _strings(np.array(SEGMENTS)[base.segment]),
            "industry": _strings(np.array(INDUSTRIES)[base.industry]),
            "region": _strings(np.array(REGIONS)[base.region]),
            "plan": _strings(np.array(PLANS)[base.plan]),
            "contract_value": base.contract_value.astype(np.float64),
            "account_owner": _strings(base.owner),
            "signup_date": _dates(config, base.signup),
            "key_contact": _strings(contact_names[contact]),
            "churn_date": _dates(config, churn_day),
        }
    )


def _events_frame(config: SimulationConfig, base: CustomerBase, events: EventBuffer) -> pd.DataFrame:
    customer = _concatenate(events.customer, np.int32)
    second = _concatenate(events.second, np.int64)
    type_code = _concatenate(events.type_code, np.int8)
    value = _concatenate(events.value, np.float64)
    events.customer.clear(), events.second.clear(), events.type_code.clear(), events.value.clear()

    # One int64 key sorts by customer, then time, then type (a complaint follows its ticket); the sorted
    # key decodes back into the three columns, so only the values need the permutation.
    history_seconds = config.history_days * DAY_SECONDS
    second += history_seconds  # non-negative for the key; undone when decoding
    second_bits = max(int(second.max(initial=0)).bit_length(), 1)
    key = (customer.astype(np.int64) << (second_bits + 4)) | (second << 4) | type_code
    del customer, second, type_code
    order = np.argsort(key, kind="stable")
    key = key[order]
    value = value[order]
    del order
    customer = (key >> (second_bits + 4)).astype(np.int32)
    type_code = (key & 0xF).astype(np.int8)
    key >>= 4
    key &= (1 << second_bits) - 1
    key -= history_seconds
    key *= 10**9
    key += np.datetime64(config.start, "ns").astype(np.int64)
    table = pa.table(
        {
            "customer_id": _dictionary_strings(customer, base.ids),
            "timestamp": pa.array(key, pa.timestamp("ns")),
            "type": _dictionary_strings(type_code, np.array(EVENT_TYPES)),
            "value": pa.array(value, pa.float64()),
        }
    )
    return table.to_pandas(types_mapper=lambda t: STRING if pa.types.is_large_string(t) else None)


def _concatenate(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype)


def _dictionary_strings(codes: np.ndarray, names: np.ndarray) -> pa.Array:
    """Strings from codes without Python objects (pandas keeps Arrow strings as large_string)."""
    dictionary = pa.array(names, pa.large_string())
    return pa.DictionaryArray.from_arrays(pa.array(codes), dictionary).cast(pa.large_string())


def _truth_frame(config: SimulationConfig, base: CustomerBase, state: LatentState) -> pd.DataFrame:
    churned = state.churn_day <= config.days
    return pd.DataFrame(
        {
            "customer_id": _strings(base.ids),
            "churn_date": _dates(config, np.where(churned, state.churn_day, NEVER)),
            "onset_date": _dates(config, np.where(churned, state.onset, NEVER)),
            "cause": _strings(np.where(churned, np.array(CAUSES)[state.cause], NO_CAUSE)),
        }
    )


@dataclass(frozen=True)
class OracleRows:
    """The oracle's forecasts at one observation day, with the latent episode state they rest on."""

    day: int
    who: np.ndarray  # active customers
    exact: np.ndarray
    without_frailty: np.ndarray
    in_episode: np.ndarray  # bool
    cause: np.ndarray  # index into CAUSES; meaningful in an episode only
    age: np.ndarray  # days since the episode's onset; meaningful in an episode only

    @classmethod
    def at(
        cls, day: int, who: np.ndarray, exact: np.ndarray, without_frailty: np.ndarray, state: LatentState
    ) -> OracleRows:
        episode = state.in_episode(day, who)
        age = np.where(episode, day - state.onset[who], -1)
        return cls(day, who, exact, without_frailty, episode, state.cause[who].copy(), age)


def _truth_probabilities_frame(
    config: SimulationConfig, base: CustomerBase, oracle: list[OracleRows]
) -> pd.DataFrame:
    """`probability`: the exact oracle; `probability_without_frailty`: the same forecast averaged over
    the hidden frailty's law (what the latent state allows without it). `in_episode`, `episode_cause`
    and `episode_age_days` are the latent episode state both forecasts know ("none" and -1 outside an
    episode): no event carries it, so it is there for references (how much of the oracle's lead is this
    hidden state), never for a model."""

    def joined(name: str, dtype: type) -> np.ndarray:
        return np.concatenate([getattr(rows, name) for rows in oracle]) if oracle else np.empty(0, dtype)

    customer = joined("who", np.int64)
    day = np.concatenate([np.full(rows.who.size, rows.day, dtype=np.int64) for rows in oracle] or [[]])
    in_episode = joined("in_episode", bool)
    cause = np.where(in_episode, np.array(CAUSES)[joined("cause", np.int64)], NO_CAUSE)
    return pd.DataFrame(
        {
            "customer_id": _strings(base.ids[customer]),
            "observation_date": _dates(config, day.astype(np.int64)),
            "probability": joined("exact", np.float64),
            "probability_without_frailty": joined("without_frailty", np.float64),
            "in_episode": in_episode,
            "episode_cause": _strings(cause),
            "episode_age_days": joined("age", np.int64).astype(np.int64),
        }
    )


# ---------------------------------------------------------------------------------------------- contracts

CONTRACTS_STREAM = 1  # contracts draw from their own stream, so events and customers stay as they were
MONTHLY_TERM_DAYS = 30
ANNUAL_TERM_DAYS = 365  # the hazard's renewal cycle: `_tenure_risk` counts tenure % 365
SEAT_PRICE_PER_YEAR = np.array([600.0, 900.0, 1_200.0])  # by segment
NO_AUTO_RENEW_SHARE = 0.15  # customers who renew by hand, whatever their health
# Auto-renew switched off during an episode: most who will leave do it, some who recover too.
AUTO_RENEW_OFF_IF_CHURNING = 0.6
AUTO_RENEW_OFF_IF_RECOVERING = 0.12


@dataclass
class EpisodeLog:
    """Every episode as it starts (the latent state keeps only the latest one per customer)."""

    customer: list[np.ndarray] = field(default_factory=list)
    onset: list[np.ndarray] = field(default_factory=list)
    end: list[np.ndarray] = field(default_factory=list)
    cause: list[np.ndarray] = field(default_factory=list)
    churns: list[np.ndarray] = field(default_factory=list)

    def record(self, starters: np.ndarray, state: LatentState) -> None:
        if starters.size == 0:
            return
        self.customer.append(starters)
        for name in ("onset", "end", "cause", "churns"):
            source = "episode_end" if name == "end" else name
            getattr(self, name).append(getattr(state, source)[starters].copy())

    def arrays(self) -> dict[str, np.ndarray]:
        """Sorted by customer, then onset."""
        names = ("customer", "onset", "end", "cause", "churns")
        arrays = {
            name: np.concatenate(getattr(self, name)) if self.customer else np.empty(0, np.int64)
            for name in names
        }
        order = np.lexsort((arrays["onset"], arrays["customer"]))
        return {name: values[order] for name, values in arrays.items()}


def _contracts_frame(
    config: SimulationConfig, base: CustomerBase, state: LatentState, episodes: EpisodeLog, law: EpisodeLaw
) -> pd.DataFrame:
    """One row per contract term, from signup until the customer churns or the export date.

    Terms follow the hazard's renewal cycle: annual plans renew every 365 days from signup (the onset
    risk doubles in the 60 days before each renewal), monthly plans every 30 days. At each renewal the
    seats change with the customer's health that day: customers in a disengagement episode downgrade
    often, healthy ones mostly stay or expand. During an episode a customer may switch auto-renew off
    (most who will churn, a few who recover). A churn ends the running term on the churn date.
    Signals here are drawn from the latent state only, like every event, so they reveal no more than it.
    """
    rng = np.random.default_rng([config.seed, CONTRACTS_STREAM])
    export_day = config.days
    churn_day = np.where(state.churn_day <= export_day, state.churn_day, NEVER)
    term_days = np.where(base.annual_renewal, ANNUAL_TERM_DAYS, MONTHLY_TERM_DAYS)

    # Every term start: signup + k * term, up to the export date and before the churn.
    last_day = np.minimum(churn_day - 1, export_day)
    terms = np.maximum((last_day - base.signup) // term_days + 1, 0)
    customer = np.repeat(np.arange(base.size), terms)
    number = np.arange(customer.size) - np.repeat(np.cumsum(terms) - terms, terms)
    start = base.signup[customer] + number * term_days[customer]
    renewal = start + term_days[customer]
    churned_in_term = churn_day[customer] <= renewal  # leaving on the renewal day is not renewing
    end = np.where(churned_in_term, churn_day[customer], renewal)

    # Health on each term's first day, from the episode running then (none before the warm-up).
    log = episodes.arrays()
    health, in_episode = _episode_on(log, law, customer, start)

    # Seats change at renewals only: a disengaging customer cuts seats, a healthy one may expand.
    first = number == 0
    draw = rng.random(customer.size)
    cut = np.where(in_episode, 0.35 + 0.4 * (1.0 - health), 0.04)
    grow = np.where(in_episode, 0.02, 0.12)
    change = np.select([first, draw < cut, draw > 1.0 - grow], ["new", "downgrade", "upgrade"], "renewal")
    factor = np.select(
        [change == "downgrade", change == "upgrade"],
        [1.0 - rng.uniform(0.1, 0.4, customer.size), 1.0 + rng.uniform(0.05, 0.3, customer.size)],
        1.0,
    )
    factor[first] = 1.0
    initial_seats = np.maximum(1.0, np.round(base.contract_value / SEAT_PRICE_PER_YEAR[base.segment]))
    seat_path = np.exp(_cumsum_by_group(np.log(factor), terms))  # seats compound over a customer's terms
    seats = np.maximum(1, np.round(initial_seats[customer] * seat_path)).astype(np.int64)
    price_per_seat_month = base.contract_value / 12.0 / initial_seats
    mrr = np.round(seats * price_per_seat_month[customer], 2)

    # Auto-renew: on by default; switched off once during an episode, on a day inside it and this term.
    auto_renew = rng.random(base.size) >= NO_AUTO_RENEW_SHARE
    switch_off = _auto_renew_off_days(log, rng)
    off_day = np.full(customer.size, NEVER)
    if switch_off.size:
        episode_customer, day = log["customer"][switch_off[:, 0]], switch_off[:, 1]
        # The term that holds the switch-off day: terms are sorted by customer and start.
        row = (
            np.searchsorted(customer * (NEVER + 1) + start, episode_customer * (NEVER + 1) + day, "right") - 1
        )
        inside = (row >= 0) & (customer[np.maximum(row, 0)] == episode_customer)
        inside &= (day < end[np.maximum(row, 0)]) & (day <= export_day) & auto_renew[episode_customer]
        off_day[row[inside]] = np.minimum(off_day[row[inside]], day[inside])

    status = np.where(churned_in_term, "churned", np.where(renewal <= export_day, "renewed", "active"))
    return pd.DataFrame(
        {
            "contract_id": _strings(
                np.char.add(base.ids[customer].astype(str), np.char.mod("-%03d", number))
            ),
            "customer_id": _strings(base.ids[customer]),
            "plan": _strings(np.array(PLANS)[base.plan[customer]]),
            "start_date": _dates(config, start),
            "end_date": _dates(config, end),
            "renewal_date": _dates(config, renewal),
            "seats": seats,
            "mrr": mrr.astype(np.float64),
            "change": _strings(change),
            "auto_renew": auto_renew[customer],
            "auto_renew_off_date": _dates(config, off_day),
            "status": _strings(status),
        }
    )


def _cumsum_by_group(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Running sum restarting at each group (groups are consecutive, of the given sizes)."""
    total = np.cumsum(values)
    group_start = np.cumsum(sizes) - sizes
    before = np.concatenate([[0.0], total])[group_start]
    return total - np.repeat(before, sizes)


def _episode_on(
    log: dict[str, np.ndarray], law: EpisodeLaw, customer: np.ndarray, day: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Health, and whether a disengagement episode is running, for each (customer, day)."""
    if log["customer"].size == 0:
        return np.ones(customer.size), np.zeros(customer.size, dtype=bool)
    key = log["customer"] * (NEVER + 1) + log["onset"]
    latest = np.searchsorted(key, customer * (NEVER + 1) + day, side="right") - 1  # last onset <= day
    safe = np.maximum(latest, 0)
    running = (latest >= 0) & (log["customer"][safe] == customer) & (day < log["end"][safe])
    age = np.minimum(np.maximum(day - log["onset"][safe], 0), MAX_EPISODE_DAYS)
    health = np.where(running, law.health[log["cause"][safe], age], 1.0)
    return health, running


def _auto_renew_off_days(log: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """(episode index, day) pairs: the day inside each chosen episode when auto-renew is switched off."""
    share = np.where(log["churns"], AUTO_RENEW_OFF_IF_CHURNING, AUTO_RENEW_OFF_IF_RECOVERING)
    chosen = np.flatnonzero(rng.random(share.size) < share)
    length = log["end"][chosen] - log["onset"][chosen]
    day = log["onset"][chosen] + np.floor(rng.uniform(0.1, 0.9, chosen.size) * length).astype(np.int64)
    return np.stack([chosen, day], axis=1) if chosen.size else np.empty((0, 2), np.int64)


# ---------------------------------------------------------------------------------------------- files

FILE_NAMES = {
    "customers": "customers.parquet",
    "events": "events.parquet",
    "truth": "truth.parquet",
    "truth_probabilities": "truth_probabilities.parquet",
    "contracts": "contracts.parquet",
}


def write(sim: Simulation, out_dir: Path) -> dict[str, Path]:
    """Write the five frames as Parquet (plain Arrow types, no pandas metadata); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, file_name in FILE_NAMES.items():
        frame: pd.DataFrame = getattr(sim, name)
        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
        path = out_dir / file_name
        partial = path.with_name(f".{file_name}.partial")
        # Without the stored Arrow schema the files read back as plain `string`, not pandas' large_string.
        pq.write_table(table, partial, store_schema=False)  # readers never see a half-written file
        os.replace(partial, path)
        paths[name] = path
    return paths


# ---------------------------------------------------------------------------------------------- realism


def realism(sim: Simulation) -> dict[str, float]:
    """Figures that say whether the simulated base behaves like a real one."""
    config = sim.config
    start = pd.Timestamp(config.start)
    end = start + pd.Timedelta(days=config.days)
    customers = sim.customers
    churn = customers["churn_date"]
    at_start = customers["signup_date"] < start
    churned_in_period = churn.notna() & (churn > start) & (churn <= end)

    rows = sim.truth_probabilities
    churn_by_id = pd.Series(churn.to_numpy(), index=customers["customer_id"].to_numpy())
    row_churn = churn_by_id.reindex(rows["customer_id"].to_numpy()).to_numpy()
    observed = rows["observation_date"].to_numpy()
    label = (row_churn > observed) & (row_churn <= observed + np.timedelta64(config.horizon_days, "D"))
    probability = rows["probability"].to_numpy()
    in_episode, age = rows["in_episode"].to_numpy(dtype=bool), rows["episode_age_days"].to_numpy()
    fired = _no_login_rule(sim, window_days=30)

    truth = sim.truth
    churners = truth["churn_date"].notna()
    lead = (truth.loc[churners, "churn_date"] - truth.loc[churners, "onset_date"]).dt.days
    return {
        "customers": len(customers),
        "customers_at_start": int(at_start.sum()),
        "churners": int(churned_in_period.sum()),
        "annual_churn_rate": float((churned_in_period & at_start).sum() / max(at_start.sum(), 1))
        * 365
        / config.days,
        "observation_rows": len(rows),
        "horizon_churn_rate": float(label.mean()) if len(rows) else float("nan"),
        "mean_truth_probability": float(probability.mean()) if len(rows) else float("nan"),
        "oracle_roc_auc": roc_auc(label, probability),
        "oracle_without_frailty_roc_auc": roc_auc(label, rows["probability_without_frailty"].to_numpy()),
        # Of the rows whose customer churns within the horizon: already disengaging at the observation
        # date (the state both oracles know; events show it only as it ages), and not yet (the onset
        # lies ahead: only the hazard's inputs, tenure, renewal cycle and traits, can point to it).
        "churner_rows_in_episode": float(in_episode[label].mean()) if label.any() else float("nan"),
        "churner_rows_in_episode_under_14d": float((in_episode & (age < 14))[label].mean())
        if label.any()
        else float("nan"),
        "no_login_30d_fire_rate": float(fired.mean()) if len(rows) else float("nan"),
        "no_login_30d_precision": float(label[fired].mean()) if fired.any() else float("nan"),
        "no_login_30d_recall": float(fired[label].mean()) if label.any() else float("nan"),
        "median_lead_days": float(lead.median()) if len(lead) else float("nan"),
        "lead_iqr_days": float(lead.quantile(0.75) - lead.quantile(0.25)) if len(lead) else float("nan"),
        "sudden_churn_share": float((lead <= 14).mean()) if len(lead) else float("nan"),
        "n_events": len(sim.events),
    }


def roc_auc(label: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney ROC-AUC with ties counted half (numpy only, the core does not need sklearn)."""
    label = np.asarray(label, dtype=bool)
    positives = int(label.sum())
    negatives = label.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(score)).rank(method="average").to_numpy()
    return float((ranks[label].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _no_login_rule(sim: Simulation, window_days: int) -> np.ndarray:
    """Per truth-probability row: no login in the `window_days` before the observation date."""
    rows = sim.truth_probabilities
    ids = _arrow_strings(sim.customers["customer_id"])
    events = sim.events
    logins = events[(events["type"] == "login").to_numpy(dtype=bool)]
    login_customer = pc.index_in(_arrow_strings(logins["customer_id"]), value_set=ids).to_numpy(
        zero_copy_only=False
    )
    login_time = logins["timestamp"].to_numpy()
    row_customer = pc.index_in(_arrow_strings(rows["customer_id"]), value_set=ids).to_numpy(
        zero_copy_only=False
    )
    observed = rows["observation_date"].to_numpy()
    fired = np.zeros(len(rows), dtype=bool)
    for day in np.unique(observed):
        recent = (login_time >= day - np.timedelta64(window_days, "D")) & (login_time < day)
        logged_in = np.zeros(len(ids), dtype=bool)
        logged_in[login_customer[recent]] = True
        at_day = observed == day
        fired[at_day] = ~logged_in[row_customer[at_day]]
    return fired


def _arrow_strings(values: pd.Series) -> pa.Array:
    return pa.array(values).cast(pa.large_string())
