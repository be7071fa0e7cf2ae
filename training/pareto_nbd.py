"""Pareto/NBD (Schmittlein, Morrison and Colombo 1987), the other classic baseline for purchase data.

While alive a customer buys at a Poisson rate lambda ~ Gamma(r, alpha) and dies at an exponential time
of rate mu ~ Gamma(s, beta), at any moment, not only after a purchase as in BG/NBD. A customer's history
is the same (x, t_x, T) in weeks as BG/NBD's (training.bgnbd.PurchaseHistory). The likelihood is Fader
and Hardie's "A note on deriving the Pareto/NBD model and related expressions" (2005); the published
CDNOW parameters on the 39-week calibration are r 0.55, alpha 10.58, s 0.61, beta 11.67.

No kept library installs cleanly for it: `lifetimes` is unmaintained since 2020, `btyd` is a 2022 beta,
and `pymc-marketing` brings PyMC and PyTensor for one likelihood; this is the likelihood and two
expectations, checked against the published fit in tests/test_lab_baselines.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1

from training.bgnbd import PurchaseHistory


@dataclass(frozen=True)
class ParetoNbd:
    r: float
    alpha: float
    s: float
    beta: float

    def _log_a0(self, history: PurchaseHistory) -> np.ndarray:
        """log A0 of the note's equation (19): the integral over death times between t_x and T."""
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        x, t_x, T = history.x, history.t_x, history.T
        rsx = r + s + x
        high, low = max(alpha, beta), min(alpha, beta)
        second = s + 1.0 if alpha >= beta else r + x
        at_last = np.log(hyp2f1(rsx, second, rsx + 1.0, (high - low) / (high + t_x))) - rsx * np.log(
            high + t_x
        )
        at_end = np.log(hyp2f1(rsx, second, rsx + 1.0, (high - low) / (high + T))) - rsx * np.log(high + T)
        # log(exp(at_last) - exp(at_end)); at_last >= at_end since t_x <= T. Zero when t_x == T.
        with np.errstate(divide="ignore"):
            return at_last + np.log1p(-np.exp(np.minimum(at_end - at_last, 0.0)))

    def log_likelihood(self, history: PurchaseHistory) -> np.ndarray:
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        x, T = history.x, history.T
        common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
        alive_at_end = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
        died_before = np.log(s) - np.log(r + s + x) + self._log_a0(history)
        return common + np.logaddexp(alive_at_end, died_before)

    def p_alive(self, history: PurchaseHistory) -> np.ndarray:
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        x, T = history.x, history.T
        log_ratio = (
            np.log(s)
            - np.log(r + s + x)
            + (r + x) * np.log(alpha + T)
            + s * np.log(beta + T)
            + self._log_a0(history)
        )
        return 1.0 / (1.0 + np.exp(np.minimum(log_ratio, 700.0)))

    def expected_purchases(self, history: PurchaseHistory, weeks: float) -> np.ndarray:
        """E[purchases in (T, T + weeks] | history] (the note's equation 41)."""
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        x, T = history.x, history.T
        if np.isclose(s, 1.0):  # the limit s -> 1 of the bracket below
            bracket = np.log((beta + T + weeks) / (beta + T))
            rate = (r + x) * (beta + T) / (alpha + T)
        else:
            bracket = 1.0 - ((beta + T) / (beta + T + weeks)) ** (s - 1.0)
            rate = (r + x) * (beta + T) / ((alpha + T) * (s - 1.0))
        return rate * bracket * self.p_alive(history)


def fit_pareto_nbd(history: PurchaseHistory) -> ParetoNbd:
    """Maximum likelihood over the customers who bought (log-parameters keep all four positive)."""
    keep = history.buyer
    if not keep.any():
        raise ValueError("Pareto/NBD needs at least one customer with a purchase")
    # Customers with the same (x, t_x, T) share a likelihood: CDNOW's 23,570 are a few thousand distinct
    # histories, and hyp2f1 is most of the cost.
    stacked = np.stack([history.x[keep], history.t_x[keep], history.T[keep]], axis=1)
    distinct, counts = np.unique(stacked, axis=0, return_counts=True)
    buyers = PurchaseHistory(distinct[:, 0], distinct[:, 1], distinct[:, 2], np.ones(len(distinct), bool))
    weights = counts / counts.sum()

    def negative_log_likelihood(log_params: np.ndarray) -> float:
        value = -float(weights @ ParetoNbd(*np.exp(log_params)).log_likelihood(buyers))
        return value if np.isfinite(value) else 1e10  # hyp2f1 can overflow far from the optimum

    result = minimize(negative_log_likelihood, np.zeros(4), method="L-BFGS-B")
    if not result.success:
        raise ValueError(f"Pareto/NBD fit did not converge: {result.message}")
    return ParetoNbd(*(float(value) for value in np.exp(result.x)))
