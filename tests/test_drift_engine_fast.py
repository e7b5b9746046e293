"""The hourly path of the drift engine: a prepared (sorted, stored) baseline and the bounded KS p-value."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats

from hybrid_mlops.drift import engine


@pytest.mark.parametrize("n,m,ties", [(5000, 700, False), (20000, 3000, True), (1000, 1000, True), (3, 50, False)])
def test_presorted_ks_equals_the_merge(n, m, ties):
    rng = np.random.default_rng(n + m)
    a = rng.integers(0, 40, n).astype(float) if ties else rng.normal(0, 1, n)
    b = rng.integers(2, 45, m).astype(float) if ties else rng.normal(0.05, 1, m)
    a.sort(), b.sort()
    got = engine.ks_statistic_presorted(a, b)
    assert got == pytest.approx(engine.ks_statistic_sorted(a, b), abs=1e-12)
    assert got == pytest.approx(scipy.stats.ks_2samp(a, b).statistic, abs=1e-12)


def test_prepared_baseline_figures_equal_the_full_path(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.lognormal(1, 0.5, 50_000)
    base[::97] = np.nan
    window = rng.lognormal(1.02, 0.5, 4_000)
    window[::50] = np.nan
    prepared = engine.prepare_baseline({"x": base})
    engine.save_prepared(prepared, tmp_path)
    loaded = engine.load_prepared(tmp_path, ["x"])
    assert isinstance(loaded["x"], np.memmap) and np.array_equal(loaded["x"], prepared["x"])
    fast = engine.numeric_drift_prepared("x", loaded["x"], window, window_invalid=3)
    full = engine.numeric_drift("x", base, window, window_invalid=3)
    for key, value in full.to_dict().items():
        assert fast.to_dict()[key] == (pytest.approx(value, rel=1e-9, abs=1e-12) if isinstance(value, float) else value), key


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
