"""The KS merge and Smirnov's distribution against scipy: ties, NaNs, unequal sizes, every branch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from hybrid_mlops.drift import engine


def _scipy(a, b):
    return scipy.stats.ks_2samp(a, b)


def _raw(a, b):
    """scipy's statistic before its exact branch snaps it to the lattice ``h / lcm(n1, n2)``."""
    return scipy.stats.ks_2samp(a, b, method="asymp").statistic


@pytest.mark.parametrize(
    "a,b",
    [
        ([0.0, 0.0, 0.0], [0.0, 1.0]),  # the running extreme lies inside a run of ties
        ([1.0], [2.0]),  # disjoint: D = 1
        ([3.0, 1.0, 2.0], [2.0, 3.0, 1.0]),  # same sample: D = 0
        ([5.0], [1.0, 5.0, 9.0, 5.0]),
        ([-0.0, 0.0, 1.0], [0.0, -0.0, 2.0]),  # signed zeros are equal values
        ([1.0, 2.0, 2.0, 2.0, 3.0], [2.0, 2.0]),
        ([np.inf, -np.inf, 0.0], [np.inf, 1.0]),
    ],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the mean of [inf, -inf, 0]; scipy at n1 = n2 = 1
def test_small_cases(a, b):
    a, b = np.asarray(a), np.asarray(b)
    ref = _scipy(a, b)
    assert engine.ks_statistic_sorted(np.sort(a), np.sort(b)) == _raw(a, b)
    r = engine.numeric_drift("x", a, b)
    assert r.ks_statistic == _raw(a, b) and abs(r.ks_statistic - ref.statistic) <= 1e-12
    assert abs(r.ks_pvalue - ref.pvalue) <= 1e-12


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["continuous", "ties", "integers", "cross_ties_only"])
def test_merge_matches_scipy(seed, kind):
    rng = np.random.default_rng(seed)
    n1, n2 = int(rng.integers(1, 3000)), int(rng.integers(1, 3000))
    a, b = rng.normal(size=n1), rng.normal(rng.choice([0.0, 0.1, 0.5]), size=n2)
    if kind == "ties":
        a, b = np.round(a, 1), np.round(b, 1)
    elif kind == "integers":
        a, b = np.round(3 * a), np.round(3 * b)
    elif kind == "cross_ties_only":  # distinct within each side, shared across
        pool = rng.permutation(4 * (n1 + n2)).astype(float)
        a, b = pool[:n1], np.concatenate([pool[: n2 // 2], pool[n1 : n1 + n2 - n2 // 2]])
    ref = _scipy(a, b)
    assert engine.ks_statistic_sorted(np.sort(a), np.sort(b)) == _raw(a, b)
    r = engine.numeric_drift("x", a, b)
    assert r.ks_statistic == _raw(a, b) and abs(r.ks_statistic - ref.statistic) <= 1e-12
    assert abs(r.ks_pvalue - ref.pvalue) <= 1e-12


@pytest.mark.parametrize("n1,n2", [(10_001, 10_001), (250_000, 12_000), (12_000, 400_000), (50_000, 50_001)])
@pytest.mark.parametrize("shift", [0.0, 0.004, 0.02, 0.2])
def test_asymptotic_pvalues_equal_scipy(n1, n2, shift):
    rng = np.random.default_rng(n1 ^ n2)
    a, b = rng.normal(size=n1), rng.normal(shift, size=n2)
    ref = _scipy(a, b)
    r = engine.numeric_drift("x", a, b)
    assert r.ks_statistic == ref.statistic and r.ks_pvalue == ref.pvalue


def test_nans_on_both_sides_and_cached_baseline():
    rng = np.random.default_rng(3)
    a, b = np.round(rng.normal(size=20_000), 2), np.round(rng.normal(0.05, size=15_000), 2)
    a[rng.random(a.size) < 0.1] = np.nan
    b[rng.random(b.size) < 0.2] = np.nan
    ref = scipy.stats.ks_2samp(a, b, nan_policy="omit")
    a0, b0 = a.copy(), b.copy()
    r = engine.numeric_drift("x", a, b, window_invalid=7)
    assert r.ks_statistic == ref.statistic and r.ks_pvalue == ref.pvalue
    assert r.baseline_count == np.count_nonzero(~np.isnan(a)) and r.window_count == np.count_nonzero(~np.isnan(b))
    assert r.window_missing == np.count_nonzero(np.isnan(b)) - 7 and r.window_invalid == 7
    cached = engine.numeric_drift("x", np.sort(a[~np.isnan(a)]), b, baseline_sorted=True, window_invalid=7)
    assert cached.to_dict() == r.to_dict()
    assert np.array_equal(a, a0, equal_nan=True) and np.array_equal(b, b0, equal_nan=True)  # inputs untouched
    assert engine.numeric_drift("x", a, np.full(10, np.nan)).ks_statistic is None


def test_float32_and_integer_inputs_compare_as_float64():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=3000).astype(np.float32), rng.integers(-3, 3, 2000)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = _scipy(a64, b64)
    r = engine.numeric_drift("x", a, b)
    assert r.ks_statistic == _raw(a64, b64) and abs(r.ks_pvalue - ref.pvalue) <= 1e-12


def test_candidates_within_slack(monkeypatch):
    """Past n1 * n2 ~ 2**48 the positions near the extreme are taken as well (forced here); same result."""
    rng = np.random.default_rng(5)
    for rounding in (None, 1):
        a, b = rng.normal(size=4000), rng.normal(0.05, size=3000)
        if rounding is not None:
            a, b = np.round(a, rounding), np.round(b, rounding)
        monkeypatch.setattr(engine, "KS_SLACK_SHIFT", 48)
        exact = engine.ks_statistic_sorted(np.sort(a), np.sort(b))
        monkeypatch.setattr(engine, "KS_SLACK_SHIFT", 12)  # slack of a few thousand units
        assert engine.ks_statistic_sorted(np.sort(a), np.sort(b)) == exact == _raw(a, b)


@pytest.mark.parametrize("n", [1, 2, 5, 50, 140, 141, 300, 1000, 5000, 20_000, 99_999, 100_000, 100_001,
                               250_000, 500_000, 10**6, 10**7])
def test_kstwo_sf_is_scipys_to_the_bit(n):
    rng = np.random.default_rng(n)
    centre = rng.random(60) * np.sqrt(2.2 / n)  # n * x**2 < 2.2: the series (Pelz-Good, Durbin, Pomeranz)
    # 2.2 <= n * x**2 < 370 is 2 * scipy.special.smirnov, the same call on both sides; it costs O(n) a
    # call, so a few points, at the smaller n only
    band = np.sqrt(rng.uniform(2.2, 370, 3 if n <= 100_000 else 0) / n)
    xs = np.concatenate([rng.random(40), centre, band,
                         [0.0, 0.5 / n, 0.5 / n + 1e-15, 1 / n, 0.5, 1 - 1e-12, 1.0, (n - 1) / n, 2.0]])
    for x in xs:
        assert engine.kstwo_sf(float(x), float(n)) == scipy.stats.kstwo.sf(x, float(n)), (n, x)
    assert np.isnan(engine.kstwo_sf(np.nan, float(n)))


def test_asymptotic_branch_needs_no_scipy_stats():
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys; sys.path.insert(0, 'plugins')\n"
        "import numpy as np\n"
        "from hybrid_mlops.drift import engine\n"
        "rng = np.random.default_rng(0)\n"
        "for shift in (0.0, 0.01, 0.3):\n"
        "    engine.numeric_drift('x', rng.normal(size=200_000), rng.normal(shift, size=200_000))\n"
        "engine.categorical_drift_from_counts('c', {'a': 5, 'b': 7}, {'a': 9, 'b': 1})\n"
        "assert 'scipy.stats' not in sys.modules, 'scipy.stats imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
