"""Vectorised per-feature drift statistics: KS, PSI, Jensen-Shannon, chi-square, L-infinity.

Each numeric column is sorted once per side (``np.sort`` on float64). The two-sample
Kolmogorov-Smirnov statistic comes from one merge of the two sorted sides (a stable argsort of
their concatenation, which numpy runs as a single timsort merge of two presorted runs) and a running
count of the baseline's values along it; the PSI / Jensen-Shannon histograms come from
``np.searchsorted`` of the few bin edges into the sorted columns. Against a prepared baseline
(:class:`PreparedColumn`, the hourly path) the window is not sorted at all: it is counted on the
baseline's grid and only the few cells that can hold the supremum are looked into
(:func:`ks_statistic_prepared`). No per-row Python anywhere. The KS
p-value reproduces ``scipy.stats.ks_2samp`` (``method="auto"``): exact for ``max(n1, n2) <= 10000``,
Smirnov's ``kstwo`` distribution at ``round(n1 * n2 / (n1 + n2))`` above, evaluated here the way
scipy evaluates it, with ``scipy.special`` only (``scipy.stats`` is imported just for the series
not reproduced here: Durbin's matrix near the centre for ``n <= 100000``, and ``n <= 140``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

MAX_EXACT_N = 10_000  # scipy's MAX_AUTO_N
PSI_BINS = 10
EPS = 1e-4  # floor of a bin's share in PSI / JS (an empty bin would make PSI infinite)
KS_SLACK_SHIFT = 48  # see ks_statistic_sorted: exact-extreme positions suffice below n1 * n2 = 2**48


# ---------------------------------------------------------------------------------------------
# Kolmogorov-Smirnov
# ---------------------------------------------------------------------------------------------


def ks_statistic_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided KS statistic of two sorted, NaN-free float64 samples (same values as scipy's).

    The two sides are merged (a stable argsort of ``a`` then ``b``: one timsort merge of two sorted
    runs, ``a`` first among equal values). A running sum of ``n2`` per value of ``a`` and ``-n1`` per
    value of ``b`` gives ``e = n1 * n2 * (F_a - F_b)`` exactly, in integers, after each merged
    position; only the last position of a run of equal values counts (the ECDFs jump at the run's
    end). At the positions where ``e`` reaches its maximum (and minimum), ``i`` values of ``a`` and
    ``j`` of ``b`` lie at or before the position, scipy's ``searchsorted(..., side="right")`` counts,
    and the statistic is ``i / n1 - j / n2`` there, each quotient as scipy's ``cddiffs`` holds it
    (:func:`_ecdf_value`). (Two
    different exact values are at least ``1 / (n1 * n2)`` apart, far more than the rounding of a
    quotient, so the float maximum lies among the exact maximum's positions; past ``n1 * n2 ~ 2**48``
    the positions within a few units of the extreme are taken too.)
    """
    if a.size == 0 or b.size == 0:
        raise ValueError("ks_statistic_sorted: both samples must be non-empty")
    return _ks_merged(np.concatenate((a, b)), a.size)


def _ks_merged(both: np.ndarray, n1: int) -> float:
    """:func:`ks_statistic_sorted` of ``both[:n1]`` and ``both[n1:]`` (each sorted, NaN-free)."""
    n = both.size
    n2 = n - n1
    order = np.argsort(both, kind="stable")
    e = np.multiply(order < n1, n, dtype=np.int64)
    e -= n1  # n2 for a value of a, -n1 for a value of b
    np.cumsum(e, out=e)
    slack = (n1 * n2) >> KS_SLACK_SHIFT  # 0 below 16M x 16M values
    at = [np.flatnonzero(e >= e.max() - slack), np.flatnonzero(e <= e.min() + slack)]
    if not all(_run_ends(both, order, k).all() for k in at):  # ties around an extreme: run ends only
        ends = np.flatnonzero(np.append(both[order[1:]] != both[order[:-1]], True))
        e_ends = e[ends]
        at = [ends[e_ends >= e_ends.max() - slack], ends[e_ends <= e_ends.min() + slack]]
    d = 0.0
    for k in at:
        c = k + 1  # values at or before position k
        i = (e[k] + c * n1) // n  # of a, since e = i * n - c * n1
        d = max(d, float(np.abs(_ecdf_value(i, n1) - _ecdf_value(c - i, n2)).max()))
    return min(d, 1.0)


def _ecdf_value(count: np.ndarray, size: int) -> np.ndarray:
    """``count / size`` as scipy >= 1.18's ``ks_2samp`` holds it: ``np.linspace(0, 1, size + 1)[count]``
    (``count * (1 / size)``, and exactly 1.0 at ``count == size``), so the statistic is scipy's to the bit."""
    return np.where(count == size, 1.0, count * (1.0 / size))


def _run_ends(both: np.ndarray, order: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Whether each merged position ``k`` is the last of its run of equal values."""
    out = np.ones(k.size, bool)
    inner = k < both.size - 1
    out[inner] = both[order[k[inner]]] != both[order[k[inner] + 1]]
    return out


def _prob_outside_square(n: int, h: int) -> float:
    """``P(D_{n,n} >= h/n)`` (scipy's ``_compute_prob_outside_square``)."""
    p = 0.0
    k = int(np.floor(n / h))
    while k >= 0:
        p1 = 1.0
        for j in range(h):
            p1 = (n - k * h - j) * p1 / (n + k * h + j + 1)
        p = p1 * (1.0 - p)
        k -= 1
    return 2 * p


def _outer_prob_inside(m: int, n: int, g: int, h: int) -> float:
    """``P(D_{m,n} >= h/lcm)`` for ``m != n``: Hodges' inside method in its ``1 - p`` form.

    ``q[j]`` is the share of the lattice paths from ``(0, 0)`` to ``(i, j)`` that have already left
    the band ``|j*mg - i*ng| < h``; a cell outside the band counts as left (1), and a cell inside
    mixes its two predecessors in proportion to their path counts (``i`` and ``j`` of ``i + j``).
    Working on the complement keeps the figures in [0, 1] (Viehmann 2021, arXiv:2102.08037), which is
    how scipy computes it too, so the two agree to rounding.
    """
    if m < n:
        m, n = n, m
    mg, ng = m // g, n // g
    q = np.ones(n + 1)
    q[: min(int(np.ceil(h / mg)), n + 1)] = 0.0  # column i = 0: inside below the upper line
    lo, hi = 0, n + 1
    for i in range(1, m + 1):
        lo = min(max(int(np.floor((ng * i - h) / mg)) + 1, 0), n)
        hi = min(int(np.ceil((ng * i + h) / mg)), n + 1)
        if hi <= lo:
            return 1.0
        left = 0.0 if lo == 0 else 1.0  # q[i, lo - 1]: outside the band
        for j in range(lo, hi):
            left = (q[j] * i + left * j) / (i + j)
            q[j] = left
        q[:lo] = 1.0
        q[hi:] = 1.0
    return float(q[hi - 1])


#: Largest |Pelz-Good - 2 * smirnov| measured for n >= 10000 and 2.2 <= n * x**2 < 370 is 4.6e-8
#: (tests/test_drift_engine_fast.py measures it again); the bound leaves a factor of two.
KS_FAST_ABS_ERROR = 1e-7
KS_FAST_MIN_N = 10_000


def ks_pvalue_bounded(d: float, n1: int, n2: int, alpha: float) -> tuple[float, float]:
    """``(p, error bound)``: the KS p-value fast where scipy runs Smirnov's exact O(n) sum.

    In that region (``n * d**2`` in [2.2, 370), ``n = round(n1 * n2 / (n1 + n2)) >= 10000``) the
    Pelz-Good series (O(1)) is within :data:`KS_FAST_ABS_ERROR` of scipy's figure. When ``alpha``
    lies within that bound of it, the verdict could differ, so the exact figure is computed
    (error 0): ``p < alpha`` is always scipy's verdict. Elsewhere this is :func:`ks_pvalue`.
    """
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = float(np.round(m * n / (m + n)))
    nx2 = en * d * d
    if max(n1, n2) > MAX_EXACT_N and en >= KS_FAST_MIN_N and 2.2 <= nx2 < 370.0 and d < 0.5:
        p = float(np.clip(1.0 - _kolmogn_pelz_good(int(en), np.float64(d)), 0.0, 1.0))
        if abs(p - alpha) > KS_FAST_ABS_ERROR:
            return p, KS_FAST_ABS_ERROR
    return ks_pvalue(d, n1, n2), 0.0


def ks_pvalue(d: float, n1: int, n2: int) -> float:
    """Two-sided p-value of a KS statistic as ``scipy.stats.ks_2samp(method="auto")`` computes it."""
    if max(n1, n2) <= MAX_EXACT_N:
        g = math.gcd(n1, n2)
        lcm = (n1 // g) * n2
        h = int(np.round(d * lcm))
        d = h / lcm
        if h == 0:
            return 1.0
        try:
            with np.errstate(invalid="raise", over="raise"):
                prob = _prob_outside_square(n1, h) if n1 == n2 else _outer_prob_inside(n1, n2, g, h)
            if 0 <= prob <= 1:
                return float(prob)
        except (FloatingPointError, OverflowError):
            pass
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(kstwo_sf(d, np.round(en)), 0, 1))


# Smirnov's distribution of D_n, survival function: scipy.stats.kstwo.sf(x, n) (scipy.stats._ksstats,
# Simard & L'Ecuyer 2011), step for step and with the same numpy operations, so the figures are
# scipy's to the last bit. Importing scipy.stats costs about a second; scipy.special does not.
# For 2.2 <= n * x**2 < 370 it is scipy.special.smirnov, whose exact sum runs over n terms (about
# 0.4 s at n = 500000, a mild shift between two 1M-row sides); scipy's ks_2samp pays the same.
_SQRT2PI = np.sqrt(2 * np.pi)
_LOG_2PI = np.log(2 * np.pi)
_MIN_LOG = -708
_SQRT3 = np.sqrt(3)
_PI_SQUARED = np.pi ** 2
_PI_FOUR = np.pi ** 4
_PI_SIX = np.pi ** 6
_STIRLING_COEFFS = [-2.955065359477124183e-2, 6.4102564102564102564e-3,
                    -1.9175269175269175269e-3, 8.4175084175084175084e-4,
                    -5.952380952380952381e-4, 7.9365079365079365079e-4,
                    -2.7777777777777777778e-3, 8.3333333333333333333e-2]


def kstwo_sf(x: float, n: float) -> float:
    """``scipy.stats.kstwo.sf(x, n)`` for a scalar ``x`` and an integral ``n >= 1``."""
    if not (n >= 1 and n == np.round(n)) or math.isnan(x):
        return math.nan
    if x <= 0.5 / n:  # below the support
        return 1.0
    if not x < 1.0:
        return 0.0
    return float(_kolmogn_sf(int(n), np.asarray(x, dtype=np.float64)))


def _kolmogn_sf(n: int, x: np.ndarray):
    """scipy's ``_kolmogn(n, x, cdf=False)`` for ``0.5 / n < x < 1`` (``x`` a 0-d array, as scipy has it)."""
    import scipy.special

    t = n * x
    if t <= 1.0:  # Ruben-Gambino: 1/2n <= x <= 1/n
        if t <= 0.5:
            return 1.0
        if n <= 140:
            prob = np.prod(np.arange(1, n + 1) * (1.0 / n) * (2 * t - 1))
        else:
            prob = np.exp(_log_nfactorial_div_n_pow_n(n) + n * np.log(2 * t - 1))
        return np.clip(1.0 - prob, 0.0, 1.0)
    if t >= n - 1:  # Ruben-Gambino
        return np.clip(2 * (1.0 - x) ** n, 0.0, 1.0)
    if x >= 0.5:  # exact: 2 * smirnov
        return np.clip(2 * scipy.special.smirnov(n, x), 0.0, 1.0)
    nxsquared = t * x
    if n > 140:
        if nxsquared >= 370.0:
            return 0.0
        if nxsquared >= 2.2:
            return np.clip(2 * scipy.special.smirnov(n, x), 0.0, 1.0)
        if not nxsquared >= 18.0 and not (n <= 100000 and n * x ** 1.5 <= 1.4):
            return np.clip(1.0 - _kolmogn_pelz_good(n, x), 0.0, 1.0)
    from scipy.stats import kstwo  # the Durbin-matrix and n <= 140 series, not reproduced here

    return kstwo.sf(x, n)


def _log_nfactorial_div_n_pow_n(n):
    rn = 1.0 / n
    return np.log(n) / 2 - n + _LOG_2PI / 2 + rn * np.polyval(_STIRLING_COEFFS, rn / n)


def _kolmogn_pelz_good(n: int, x):
    """Pelz-Good approximation of ``P(D_n <= x)`` (scipy's ``_kolmogn_PelzGood``, ``0 < x < 1``)."""
    z = np.sqrt(n) * x
    zsquared, zthree, zfour, zsix = z ** 2, z ** 3, z ** 4, z ** 6
    qlog = -_PI_SQUARED / 8 / zsquared
    if qlog < _MIN_LOG:
        return 0.0
    q = np.exp(qlog)
    k1a = -zsquared
    k1b = _PI_SQUARED / 4
    k2a = 6 * zsix + 2 * zfour
    k2b = (2 * zfour - 5 * zsquared) * _PI_SQUARED / 4
    k2c = _PI_FOUR * (1 - 2 * zsquared) / 16
    k3d = _PI_SIX * (5 - 30 * zsquared) / 64
    k3c = _PI_FOUR * (-60 * zsquared + 212 * zfour) / 16
    k3b = _PI_SQUARED * (135 * zfour - 96 * zsix) / 4
    k3a = -30 * zsix - 90 * z ** 8
    k0to3 = np.zeros(4)
    maxk = int(np.ceil(16 * z / np.pi))
    for k in range(maxk, 0, -1):
        m = 2 * k - 1
        msquared, mfour, msix = m ** 2, m ** 4, m ** 6
        qpower = np.power(q, 8 * k)
        coeffs = np.array([1.0,
                           k1a + k1b * msquared,
                           k2a + k2b * msquared + k2c * mfour,
                           k3a + k3b * msquared + k3c * mfour + k3d * msix])
        k0to3 *= qpower
        k0to3 += coeffs
    k0to3 *= q
    k0to3 *= _SQRT2PI
    k0to3 /= np.array([z, 6 * zfour, 72 * z ** 7, 6480 * z ** 10])
    q = np.exp(-_PI_SQUARED / 2 / zsquared)
    ks = np.arange(maxk, 0, -1)
    ksquared = ks ** 2
    sqrt3z = _SQRT3 * z
    kspi = np.pi * ks
    qpwers = q ** ksquared
    k2extra = np.sum(ksquared * qpwers)
    k2extra *= _PI_SQUARED * _SQRT2PI / (-36 * zthree)
    k0to3[2] += k2extra
    k3extra = np.sum((sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpwers)
    k3extra *= _PI_SQUARED * _SQRT2PI / (216 * zsix)
    k0to3[3] += k3extra
    k0to3 /= np.power(n * 1.0, np.arange(len(k0to3)) / 2.0)
    return sum(k0to3)


# ---------------------------------------------------------------------------------------------
# Histograms: PSI and Jensen-Shannon on the baseline's quantile bins
# ---------------------------------------------------------------------------------------------


def quantile_edges(ref_sorted: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Distinct interior bin edges at the baseline's quantiles (right-closed bins)."""
    if ref_sorted.size == 0:
        return np.empty(0)
    idx = (np.arange(1, bins) * ref_sorted.size) // bins
    return np.unique(ref_sorted[np.minimum(idx, ref_sorted.size - 1)])


def binned_shares(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of ``(-inf, e1], (e1, e2], ..., (ek, inf)`` from a sorted sample."""
    cum = np.concatenate(([0], np.searchsorted(sorted_values, edges, side="right"), [sorted_values.size]))
    counts = np.diff(cum).astype(np.float64)
    return counts / max(sorted_values.size, 1)


def psi(p: np.ndarray, q: np.ndarray) -> float:
    """Population stability index of the window shares ``q`` against the baseline shares ``p``."""
    p, q = np.maximum(p, EPS), np.maximum(q, EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two share vectors."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x):
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return float(math.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


# ---------------------------------------------------------------------------------------------
# Per-feature results
# ---------------------------------------------------------------------------------------------


@dataclass
class NumericDrift:
    """Drift figures of one numeric feature (window vs baseline)."""

    feature: str
    baseline_count: int
    window_count: int
    window_missing: int
    window_invalid: int = 0
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    psi: float | None = None
    js: float | None = None
    baseline_mean: float | None = None
    window_mean: float | None = None
    baseline_std: float | None = None
    window_std: float | None = None
    kind: str = field(default="numeric")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CategoricalDrift:
    """Drift figures of one categorical feature (window vs baseline)."""

    feature: str
    baseline_count: int
    window_count: int
    window_missing: int
    window_invalid: int = 0
    chi2_statistic: float | None = None
    chi2_pvalue: float | None = None
    linf: float | None = None
    js: float | None = None
    unknown_share: float = 0.0
    unknown_values: list[str] = field(default_factory=list)
    kind: str = field(default="categorical")

    def to_dict(self) -> dict:
        return asdict(self)


#: Version of the prepared baseline's files (:func:`save_prepared`): a reader skips another version's files.
PREPARED_FORMAT_VERSION = 1
#: The prepared baseline's grid: a power of two of uniform cells, about one per 4 baseline values, at most this many.
GRID_CELLS_MAX = 2 ** 20
#: A window is counted on the grid coarsened to 4-8 of its values per cell: a finer histogram outgrows the
#: CPU caches and costs more to count than the few more values it spares the refinement (measured at 1M).
WINDOW_CELL_SHIFT = 2


@dataclass(frozen=True)
class PreparedColumn:
    """A numeric baseline column prepared once, at registration, for windows checked against it in O(window).

    ``values``: the column sorted, NaNs dropped. ``below[j]``: how many values fall in cells ``< j`` of a
    uniform grid (:meth:`cell_ids`) of ``G`` cells between the baseline's 0.05 % and 99.95 % quantiles,
    cell 0 and cell ``G + 1`` taking what lies beyond (``G + 3`` counts). Both may be memory maps.
    """

    values: np.ndarray
    below: np.ndarray

    @property
    def cells(self) -> int:
        return self.below.size - 3

    def cell_ids(self, x: np.ndarray, level: int = 0) -> np.ndarray:
        """Grid cell of each value (NaN-free), on the grid coarsened ``2**level`` times (``id >> level``)."""
        origin, scale = _grid(self.values, self.cells)
        y = np.subtract(x, origin)
        y *= scale
        np.clip(y, 0, self.cells + 1, out=y)
        ids = y.astype(np.intp)
        if level:
            ids >>= level
        return ids


def _grid(values: np.ndarray, cells: int) -> tuple[float, float]:
    """``(origin, 1 / width)`` of the grid, from two of the sorted values (cheap to redo on every load).

    Exactness needs no property of the grid beyond this: the cell id is a non-decreasing function of the
    value (rounded subtraction, multiplication and truncation all are), applied alike to both samples. So
    the set of values in cells ``< j`` is a prefix of each sorted sample, and a grid edge is a point where
    both ECDFs can be compared. The quantiles only make it fine where the data are.
    """
    n = values.size
    lo, hi = (float(values[min(n * q // 10000, n - 1)]) if n else 0.0 for q in (5, 9995))
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(hi - lo)):
        lo, hi = 0.0, 1.0  # infinite quantiles: any grid is still exact
    width = (hi - lo) / cells if hi > lo else max(abs(lo), 1.0) / cells  # a constant core: a cell around it
    scale = 1.0 / width
    if not (math.isfinite(scale) and scale > 0):
        return lo - 1.0, 1.0
    return lo - width, scale  # the origin one cell below lo: cell 0 holds the values below the grid


def prepare_column(values: np.ndarray) -> PreparedColumn:
    """:class:`PreparedColumn` of a raw baseline column (NaN = missing)."""
    s = sorted_present(values)
    cells = 1 << min(max(int(s.size - 1).bit_length() - 2, 4), GRID_CELLS_MAX.bit_length() - 1)
    col = PreparedColumn(s, np.zeros(cells + 3, np.int32 if s.size < 2 ** 31 else np.int64))  # half the bytes
    np.cumsum(np.bincount(col.cell_ids(s), minlength=cells + 2), out=col.below[1:])
    return col


def prepare_baseline(columns: dict[str, np.ndarray]) -> dict[str, PreparedColumn]:
    """Each numeric baseline column prepared (:func:`prepare_column`): done once, at registration."""
    return {name: prepare_column(values) for name, values in columns.items()}


def save_prepared(prepared: dict[str, PreparedColumn], directory) -> list[str]:
    """Write prepared columns as ``<feature>.npy`` (sorted values) and ``<feature>.cells.npy`` (grid
    counts), both memory-mappable; returns the paths."""
    import os

    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, col in prepared.items():
        for suffix, array in (("", np.asarray(col.values, dtype=np.float64)), (".cells", col.below)):
            path = os.path.join(directory, f"{name}{suffix}.npy")
            np.save(path, np.ascontiguousarray(array))
            paths.append(path)
    return paths


def load_prepared(directory, names) -> dict[str, PreparedColumn]:
    """Prepared columns back, memory-mapped (an hourly run touches only the pages it reads)."""
    import os

    def load(name):
        return np.load(os.path.join(directory, f"{name}.npy"), mmap_mode="r")

    return {name: PreparedColumn(load(name), load(f"{name}.cells")) for name in names}


def ks_statistic_prepared(ref: PreparedColumn, cur: np.ndarray, probes: np.ndarray = np.empty(0)
                          ) -> tuple[float, np.ndarray]:
    """Exact KS statistic of a prepared baseline and an unsorted, NaN-free window, without sorting the window.

    Returns the statistic and the window's counts ``<=`` each of ``probes`` (the PSI bin edges).

    The window is counted per grid cell (arithmetic, then ``np.bincount``), which gives both ECDFs
    exactly at every grid edge: ``e = n1 * n2 * (F_ref - F_cur)`` there, in integers. Inside a cell both
    ECDFs are monotone, so ``|e|`` cannot exceed ``max(e_right, -e_left) + n1 * (window values in the
    cell)``; a cell without window values never beats its edges. Only the cells whose bound reaches the
    best edge's are refined: their window values (usually a handful) are sorted and ``e`` is taken at each
    distinct one and just before it (both ECDFs' right and left limits), the baseline's counts by binary
    search in its sorted values and the window's as the count below the cell plus the rank in the cell.
    Heavy ties or a window beyond the grid put many values in few cells: still exact, just more to sort.
    The grid is coarsened to a few window values per cell (:data:`WINDOW_CELL_SHIFT`), so a small window
    pays for few cells.
    """
    n, m = ref.values.size, cur.size
    if n == 0 or m == 0:
        raise ValueError("ks_statistic_prepared: both samples must be non-empty")
    level = max(ref.cells.bit_length() - m.bit_length() + WINDOW_CELL_SHIFT, 0)
    ids = ref.cell_ids(cur, level)
    ncells = ((ref.cells + 1) >> level) + 1
    below = ref.below if level == 0 else np.append(ref.below[: ref.cells + 1 : 1 << level], n)
    count = np.bincount(ids, minlength=ncells)
    w_below = np.zeros(ncells + 1, np.int64)
    np.cumsum(count, out=w_below[1:])
    e = np.multiply(below, m, dtype=np.int64)
    e -= w_below * n
    best = max(int(e.max()), -int(e.min()))
    at = [(below, w_below, e)]  # (baseline count, window count, e) at the places looked at
    bound = np.maximum(e[1:], -e[:-1])
    count *= n
    bound += count
    slack = (n * m) >> KS_SLACK_SHIFT
    need = bound >= best - slack  # >=: every place where e ties the extreme, for scipy's rounding below
    probe_ids = ref.cell_ids(probes, level)
    need[probe_ids] = True
    s = cur[need[ids]]
    s.sort()
    new_run = np.ones(s.size, bool)  # s's distinct values u (few even when s is large: heavy ties)
    np.not_equal(s[1:], s[:-1], out=new_run[1:])
    run = np.append(np.flatnonzero(new_run), s.size)  # where each value's run starts in s, then s's size
    u = s[run[:-1]]
    u_ids = ref.cell_ids(u, level)

    def window_count(x, x_ids, side):
        """The window's values ``<= x`` (side="right") or ``< x`` ("left"), ``x`` in cells all of whose
        window values are in ``s``: those of the cells below, less the part of them in ``s``, plus ``s``'s
        values up to ``x``."""
        return w_below[x_ids] - run[np.searchsorted(u_ids, x_ids, side="left")] + np.searchsorted(s, x, side=side)

    if u.size:
        for side in ("left", "right"):
            i, j = np.searchsorted(ref.values, u, side=side).astype(np.int64), window_count(u, u_ids, side)
            e_s = i * m - j * n
            best = max(best, int(np.abs(e_s).max()))
            at.append((i, j, e_s))
    # the statistic as scipy rounds it, at all the places where e is extreme (see ks_statistic_sorted)
    d = 0.0
    for i, j, e_at in at:
        k = np.flatnonzero(np.abs(e_at) >= best - slack)
        if k.size:
            d = max(d, float(np.abs(_ecdf_value(i[k], n) - _ecdf_value(j[k], m)).max()))
    return min(d, 1.0), window_count(probes, probe_ids, "right")


def numeric_drift_prepared(feature: str, ref: PreparedColumn, window: np.ndarray, *, window_invalid: int = 0,
                           ks_alpha: float | None = None, bins: int = PSI_BINS,
                           ref_moments: tuple[float, float] | None = None) -> NumericDrift:
    """:func:`numeric_drift` against a prepared baseline, in O(window) and without sorting the window.

    :param ks_alpha: the KS threshold; given, the p-value comes from :func:`ks_pvalue_bounded`
        (fast, same verdict as scipy at ``ks_alpha``); else exactly as scipy computes it.
    :param ref_moments: the baseline's (mean, std) when known, so even those cost no pass over it.
    """
    values = ref.values
    cur = np.asarray(window, dtype=np.float64)
    nans = np.isnan(cur)
    if nans.any():
        cur = cur[~nans]
    n2 = cur.size
    out = NumericDrift(feature, int(values.size), int(n2), max(int(window.size - n2 - window_invalid), 0),
                       window_invalid)
    if values.size:
        out.baseline_mean, out.baseline_std = ref_moments or (float(values.mean()), float(values.std()))
    if n2:
        out.window_mean, out.window_std = float(cur.mean()), float(cur.std())
    if values.size and n2:
        edges = quantile_edges(values, bins)
        d, at = ks_statistic_prepared(ref, cur, edges)
        out.ks_statistic = d
        if ks_alpha is None:
            out.ks_pvalue = ks_pvalue(d, int(values.size), int(n2))
        else:
            out.ks_pvalue, _ = ks_pvalue_bounded(d, int(values.size), int(n2), ks_alpha)
        q = np.diff(np.concatenate(([0], at, [n2]))).astype(np.float64) / n2
        p = binned_shares(values, edges)
        out.psi = psi(p, q)
        out.js = js_distance(p, q)
    return out


class StreamedWindow:
    """One numeric feature of a window streamed in chunks against a prepared baseline, in bounded memory.

    Each chunk's values are placed in the baseline's slots (``2g``: strictly between ``ref[g-1]`` and
    ``ref[g]``; ``2l+1``: equal to the distinct value starting at ``ref[l]``) and only the per-slot
    counts are kept (``2 * len(ref) + 1`` integers, whatever the window's size). Between two baseline
    values the baseline's ECDF is flat, so the KS supremum lies at a slot's ends: the statistic from
    the counts is exactly :func:`ks_statistic_prepared`'s, and the PSI / JS shares come from the same
    counts at the baseline's quantile edges.

    :param ref: the prepared baseline column (its sorted values are what this uses; memory maps are fine).
    """

    def __init__(self, feature: str, ref: PreparedColumn):
        self.feature, self.ref = feature, ref.values
        self.counts = np.zeros(2 * self.ref.size + 1, np.int64)
        self.missing = 0
        self.total = 0.0
        self.total_sq = 0.0

    def add(self, values: np.ndarray) -> None:
        v = np.sort(np.asarray(values, dtype=np.float64))  # sorted keys: searchsorted walks the baseline once
        n = v.size - _trailing_nans(v)
        self.missing += v.size - n
        v = v[:n]
        if not n:
            return
        left = np.searchsorted(self.ref, v, side="left")
        slot = 2 * left + (np.searchsorted(self.ref, v, side="right") > left)
        self.counts += np.bincount(slot, minlength=self.counts.size)
        self.total += float(v.sum())
        self.total_sq += float(np.dot(v, v))

    def ks_statistic(self) -> float:
        n, m = self.ref.size, int(self.counts.sum())
        if n == 0 or m == 0:
            raise ValueError("StreamedWindow.ks_statistic: both samples must be non-empty")
        after = np.cumsum(self.counts)
        before = after - self.counts
        g = np.arange(n + 1, dtype=np.int64)
        starts = np.ones(n + 1, bool)  # gap g is a real gap unless ref[g-1] == ref[g]
        starts[1:n] = self.ref[1:] != self.ref[:-1]
        e = max(int(np.abs(g[starts] * m - before[0::2][starts] * n).max()),
                int(np.abs(g[starts] * m - after[0::2][starts] * n).max()))
        first = starts[:n]  # tie slot 2l+1 of a distinct value starting at l: F_b = r / n there
        ties = np.flatnonzero(first)
        if ties.size:
            upper = np.searchsorted(self.ref, self.ref[ties], side="right").astype(np.int64)
            e = max(e, int(np.abs(upper * m - after[2 * ties + 1] * n).max()))
        return min(e / (n * m), 1.0)

    def result(self, *, ks_alpha: float | None = None, bins: int = PSI_BINS,
               ref_moments: tuple[float, float] | None = None) -> NumericDrift:
        """The feature's :class:`NumericDrift` (p-value as in :func:`numeric_drift_prepared`)."""
        ref, m = self.ref, int(self.counts.sum())
        out = NumericDrift(self.feature, int(ref.size), m, int(self.missing))
        if ref.size:
            out.baseline_mean, out.baseline_std = ref_moments or (float(ref.mean()), float(ref.std()))
        if m:
            mean = self.total / m
            out.window_mean, out.window_std = mean, float(math.sqrt(max(self.total_sq / m - mean * mean, 0.0)))
        if ref.size and m:
            d = self.ks_statistic()
            out.ks_statistic = d
            out.ks_pvalue = (ks_pvalue(d, int(ref.size), m) if ks_alpha is None
                             else ks_pvalue_bounded(d, int(ref.size), m, ks_alpha)[0])
            edges = quantile_edges(ref, bins)
            at = np.cumsum(self.counts)[2 * np.searchsorted(ref, edges, side="left") + 1]  # window values <= edge
            q = np.diff(np.concatenate(([0], at, [m]))).astype(np.float64) / m
            p = binned_shares(ref, edges)
            out.psi, out.js = psi(p, q), js_distance(p, q)
        return out


def sorted_present(values: np.ndarray) -> np.ndarray:
    """The column sorted, NaNs dropped (they sort to the end)."""
    s = np.sort(np.asarray(values, dtype=np.float64))
    return s[: s.size - _trailing_nans(s)]


def _trailing_nans(s: np.ndarray) -> int:
    """NaNs of a sorted float array (all at its end)."""
    return int(np.count_nonzero(np.isnan(s[-1:]))) and int(np.count_nonzero(np.isnan(s)))


def numeric_drift(
    feature: str,
    baseline: np.ndarray,
    window: np.ndarray,
    *,
    baseline_sorted: bool = False,
    window_invalid: int = 0,
    bins: int = PSI_BINS,
) -> NumericDrift:
    """KS, PSI and Jensen-Shannon of one numeric feature.

    Both sides are sorted in place in one buffer, baseline then window, which is what the KS merge
    takes (no further copy of either side).

    :param baseline: baseline values (NaN = missing); already sorted and NaN-free when
        ``baseline_sorted`` (a cached baseline).
    :param window: window values (NaN = missing).
    :param window_invalid: values of the window that were present but not numbers.
    """
    baseline = np.asarray(baseline, dtype=np.float64)
    window = np.asarray(window)
    both = np.empty(baseline.size + window.size)
    both[: baseline.size] = baseline
    n1 = baseline.size
    if not baseline_sorted:
        both[:n1].sort()
        n1 -= _trailing_nans(both[:n1])
    cur = both[n1 : n1 + window.size]
    cur[...] = np.asarray(window, dtype=np.float64)
    cur.sort()
    n2 = cur.size - _trailing_nans(cur)
    ref, cur, both = both[:n1], cur[:n2], both[: n1 + n2]
    out = NumericDrift(feature, int(ref.size), int(cur.size), int(window.size - cur.size - window_invalid),
                       window_invalid)
    out.window_missing = max(out.window_missing, 0)
    if ref.size:
        out.baseline_mean, out.baseline_std = float(ref.mean()), float(ref.std())
    if cur.size:
        out.window_mean, out.window_std = float(cur.mean()), float(cur.std())
    if ref.size and cur.size:
        d = _ks_merged(both, n1)
        out.ks_statistic = d
        out.ks_pvalue = ks_pvalue(d, int(ref.size), int(cur.size))
        edges = quantile_edges(ref, bins)
        p, q = binned_shares(ref, edges), binned_shares(cur, edges)
        out.psi = psi(p, q)
        out.js = js_distance(p, q)
    return out


def _categorical_counts(values: np.ndarray) -> tuple[dict[str, int], int]:
    v = np.asarray(values, dtype=object)
    missing = np.fromiter((x is None or (isinstance(x, float) and x != x) for x in v.tolist()), bool, v.size) \
        if v.size else np.zeros(0, bool)
    present = v[~missing].astype(str)
    uniq, counts = np.unique(present, return_counts=True)
    return dict(zip(uniq.tolist(), counts.tolist())), int(missing.sum())


def categorical_drift_from_counts(
    feature: str,
    baseline_counts: dict[str, int],
    window_counts: dict[str, int],
    *,
    window_missing: int = 0,
) -> CategoricalDrift:
    """Chi-square (homogeneity, 2 x K), L-infinity and Jensen-Shannon from value counts."""
    from scipy.special import chdtrc

    cats = sorted(set(baseline_counts) | set(window_counts))
    ref = np.array([baseline_counts.get(c, 0) for c in cats], dtype=np.float64)
    cur = np.array([window_counts.get(c, 0) for c in cats], dtype=np.float64)
    out = CategoricalDrift(feature, int(ref.sum()), int(cur.sum()), int(window_missing))
    unknown = [c for c in cats if baseline_counts.get(c, 0) == 0 and window_counts.get(c, 0) > 0]
    out.unknown_values = unknown[:20]
    if cur.sum() > 0:
        out.unknown_share = float(sum(window_counts[c] for c in unknown) / cur.sum())
    if ref.sum() == 0 or cur.sum() == 0:
        return out
    p, q = ref / ref.sum(), cur / cur.sum()
    out.linf = float(np.max(np.abs(p - q)))
    out.js = js_distance(p, q)
    table = np.vstack([ref, cur])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    keep = expected.sum(axis=0) > 0
    stat = float(np.sum((table[:, keep] - expected[:, keep]) ** 2 / expected[:, keep]))
    dof = int(keep.sum()) - 1
    out.chi2_statistic = stat
    out.chi2_pvalue = float(chdtrc(dof, stat)) if dof > 0 else 1.0
    return out


def categorical_drift(feature: str, baseline: np.ndarray, window: np.ndarray) -> CategoricalDrift:
    """:func:`categorical_drift_from_counts` from raw values (str, or None for missing)."""
    ref_counts, _ = _categorical_counts(baseline)
    cur_counts, missing = _categorical_counts(window)
    return categorical_drift_from_counts(feature, ref_counts, cur_counts, window_missing=missing)
