"""Upper-tail tests used by the stall-cluster detectors (no SciPy needed).

Both return the probability of seeing at least ``k`` events by chance. They
are exact sums in log space, stopped once terms no longer matter; at or below
the expected count they return 1.0 (we only ever ask about excesses).
"""

from __future__ import annotations

import math

_EPS = 1e-17


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0 or k <= n * p:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_term = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                + k * log_p + (n - k) * log_q)
    term = math.exp(log_term)
    total = term
    ratio_base = p / (1.0 - p)
    i = k
    while i < n:
        term *= (n - i) / (i + 1) * ratio_base
        total += term
        i += 1
        if term <= total * _EPS:
            break
    return min(1.0, total)


def poisson_sf(k: int, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam)."""
    if k <= 0:
        return 1.0
    if lam <= 0.0:
        return 0.0
    if k <= lam:
        return 1.0
    log_term = -lam + k * math.log(lam) - math.lgamma(k + 1)
    term = math.exp(log_term)
    total = term
    i = k
    while True:
        term *= lam / (i + 1)
        total += term
        i += 1
        if term <= total * _EPS:
            break
    return min(1.0, total)
