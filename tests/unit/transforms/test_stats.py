"""Tail probabilities against brute-force sums."""

import math

import pytest

from transforms.stats import binomial_sf, poisson_sf


def _binom_brute(k, n, p):
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _poisson_brute(k, lam):
    return 1.0 - sum(math.exp(-lam) * lam**i / math.factorial(i) for i in range(k))


@pytest.mark.parametrize("k, n, p", [(5, 20, 0.01), (3, 10, 0.05), (40, 100, 0.1), (10, 10, 0.3),
                                     (8, 500, 0.003), (1, 1, 0.5)])
def test_binomial_sf__matches_brute_force(k, n, p):
    assert binomial_sf(k, n, p) == pytest.approx(_binom_brute(k, n, p), rel=1e-9)


@pytest.mark.parametrize("k, lam", [(4, 0.5), (10, 2.0), (30, 5.5), (2, 0.01)])
def test_poisson_sf__matches_brute_force(k, lam):
    assert poisson_sf(k, lam) == pytest.approx(_poisson_brute(k, lam), rel=1e-7)


def test_tails__edges():
    assert binomial_sf(0, 10, 0.1) == 1.0
    assert binomial_sf(11, 10, 0.1) == 0.0
    assert binomial_sf(3, 10, 0.0) == 0.0
    assert binomial_sf(2, 10, 0.5) == 1.0          # at or below the mean: not an excess
    assert poisson_sf(3, 0.0) == 0.0 and poisson_sf(1, 5.0) == 1.0


def test_binomial_sf__tiny_p_values_do_not_underflow_to_garbage():
    p = binomial_sf(150, 250, 0.005)
    assert 0.0 <= p < 1e-200
