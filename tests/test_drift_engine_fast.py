"""The hourly path of the drift engine: a prepared (sorted, stored) baseline and the bounded KS p-value."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats

from hybrid_mlops.drift import engine


def _samples(kind, n, m, rng):
    """A baseline and a window of ``kind`` (each the hard case of one branch of the grid's refinement)."""
    if kind in ("none", "mild", "strong"):  # continuous, shifted by 0, 0.01 and 0.1 sd
        return rng.normal(0, 1, n), rng.normal({"none": 0, "mild": 0.01, "strong": 0.1}[kind], 1, m)
    if kind == "ties":  # few distinct values: whole cells of equal values on both sides
        return rng.integers(0, 6, n).astype(float), rng.integers(1, 8, m).astype(float)
    if kind == "beyond":  # most of the window in the two end cells, infinities included
        b = rng.normal(0, 30, m)
        b[::7] = np.inf
        b[1::11] = -np.inf
        return rng.normal(0, 1, n), b
    if kind == "one cell":  # the whole window inside one cell of the grid
        a = rng.normal(0, 1, n)
        return a, np.median(a) + rng.normal(0, 1e-12, m)
    if kind == "constant":  # a constant baseline, the window on and around its value
        return np.full(n, 3.5), rng.choice([3.0, 3.5, 4.0], m, p=[0.2, 0.6, 0.2])
    if kind == "constant window":
        return rng.lognormal(0, 1, n), np.full(m, 1.25)
    raise AssertionError(kind)


KINDS = ["none", "mild", "strong", "ties", "beyond", "one cell", "constant", "constant window"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,m", [(1, 1), (7, 2), (40, 1), (300, 5000), (5000, 300), (30_000, 30_000),
                                 (200_000, 700)])
def test_prepared_ks_is_scipys_statistic(kind, n, m):
    rng = np.random.default_rng([n, m, KINDS.index(kind)])
    a, b = _samples(kind, n, m, rng)
    col = engine.prepare_column(a)
    edges = engine.quantile_edges(col.values)
    d, at = engine.ks_statistic_prepared(col, b, edges)
    assert d == scipy.stats.ks_2samp(a, b).statistic  # to the bit
    assert np.array_equal(at, np.searchsorted(np.sort(b), edges, side="right"))  # the PSI bins' counts


def test_prepared_ks_on_the_full_grid_and_verdicts_equal_scipy():
    """Large samples on a fine grid, shifts around the threshold (exact and Pelz-Good p-values)."""
    rng = np.random.default_rng(11)
    a = rng.normal(0, 1, 600_000)
    col = engine.prepare_column(a)
    assert col.cells == 2 ** 18
    for shift in (0.0, 0.004, 0.008, 0.05):
        b = rng.normal(shift, 1, 600_000)
        got = engine.numeric_drift_prepared("x", col, b, ks_alpha=1e-3)
        want = scipy.stats.ks_2samp(a, b)
        assert got.ks_statistic == want.statistic
        assert (got.ks_pvalue < 1e-3) == (want.pvalue < 1e-3)


def test_prepared_baseline_figures_equal_the_full_path(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.lognormal(1, 0.5, 50_000)
    base[::97] = np.nan
    window = rng.lognormal(1.02, 0.5, 4_000)
    window[::50] = np.nan
    prepared = engine.prepare_baseline({"x": base})
    engine.save_prepared(prepared, tmp_path)
    loaded = engine.load_prepared(tmp_path, ["x"])["x"]
    assert isinstance(loaded.values, np.memmap) and np.array_equal(loaded.values, prepared["x"].values)
    assert isinstance(loaded.below, np.memmap) and np.array_equal(loaded.below, prepared["x"].below)
    fast = engine.numeric_drift_prepared("x", loaded, window, window_invalid=3)
    full = engine.numeric_drift("x", base, window, window_invalid=3)
    for key, value in full.to_dict().items():
        assert fast.to_dict()[key] == (pytest.approx(value, rel=1e-9, abs=1e-12) if isinstance(value, float) else value), key
    assert fast.ks_statistic == full.ks_statistic and fast.ks_pvalue == full.ks_pvalue


def test_bounded_pvalue_error_and_verdicts_equal_scipy():
    worst = 0.0
    for n, points in ((10_000, 40), (90_909, 40), (500_000, 5)):  # Smirnov's exact sum is O(n)
        for nx2 in np.linspace(2.2, 369.0, points):
            d = float(np.sqrt(nx2 / n))
            exact = float(np.clip(2 * scipy.special.smirnov(n, d), 0, 1))
            p, bound = engine.ks_pvalue_bounded(d, n * 2, n * 2, alpha=0.5)  # n1 = n2 = 2n: en = n
            assert bound == engine.KS_FAST_ABS_ERROR
            worst = max(worst, abs(p - exact))
    assert worst <= engine.KS_FAST_ABS_ERROR / 2  # the bound keeps a factor of two over the measured error
    # at the threshold: alpha within the bound of the fast figure -> the exact figure, scipy's verdict
    n1 = n2 = 1_000_000
    d = float(np.sqrt(8.0 / 500_000))
    exact = scipy.stats.kstwo.sf(d, 500_000)
    for alpha in (exact, exact * (1 + 1e-9), exact - 5e-8, 0.001, 0.05):
        p, bound = engine.ks_pvalue_bounded(d, n1, n2, alpha)
        assert (p < alpha) == (exact < alpha), alpha
        if abs(exact - alpha) < engine.KS_FAST_ABS_ERROR:
            assert bound == 0.0 and p == pytest.approx(exact, rel=1e-12)
