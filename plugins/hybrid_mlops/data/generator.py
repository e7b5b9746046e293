"""Synthetic card transactions with a known true fraud probability per row.

Because every row carries the probability its label was drawn from, the *oracle* ROC AUC of any
sample is computable: the ceiling no model can beat on that sample, which is what the trained model
is measured against. Drift knobs shift, stretch, null out, drop or extend features for the
monitoring tests and the demo's drifted traffic.

numpy only (pyarrow for the Parquet writer), so every runtime can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hybrid_mlops.metrics import roc_auc

NUMERIC_FEATURES = (
    "amount",
    "avg_amount_30d",
    "hour",
    "distance_km",
    "txn_count_24h",
    "account_age_days",
    "card_present",
)
CATEGORICAL_FEATURES = {
    "merchant_category": (
        "grocery", "restaurant", "fuel", "pharmacy", "fashion", "electronics", "travel", "gaming",
    ),
    "channel": ("pos", "online", "mobile", "atm"),
    "country": ("US", "GB", "DE", "FR", "KR", "JP", "BR", "IN"),
}
FEATURES = NUMERIC_FEATURES + tuple(CATEGORICAL_FEATURES)

# Effects on the log-odds of fraud (known ground truth).
_CATEGORY_EFFECT = {
    "merchant_category": (-0.6, -0.4, -0.2, -0.3, 0.2, 0.9, 0.7, 1.1),
    "channel": (-0.5, 0.6, 0.4, 0.1),
    "country": (-0.2, 0.0, -0.1, 0.0, 0.1, -0.1, 0.7, 0.5),
}
_CATEGORY_WEIGHTS = {
    "merchant_category": (0.25, 0.18, 0.12, 0.08, 0.12, 0.1, 0.08, 0.07),
    "channel": (0.5, 0.3, 0.15, 0.05),
    "country": (0.4, 0.1, 0.1, 0.08, 0.12, 0.08, 0.06, 0.06),
}


@dataclass(frozen=True)
class DriftKnobs:
    """Ways to make a sample drift from the training distribution.

    :param shift: feature -> additive shift of a numeric feature, in its own standard deviations.
    :param scale: feature -> factor applied to a numeric feature's spread around its mean.
    :param new_category: feature -> (value, fraction) replacing that fraction of a categorical
        feature with a value never seen in training.
    :param nulls: feature -> fraction of the values set missing (NaN / None).
    :param drop: features left out of the sample entirely.
    """

    shift: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)
    new_category: dict[str, tuple[str, float]] = field(default_factory=dict)
    nulls: dict[str, float] = field(default_factory=dict)
    drop: tuple[str, ...] = ()

    def __post_init__(self):
        for knob in ("shift", "scale", "nulls", "new_category", "drop"):
            names = getattr(self, knob)
            unknown = sorted(set(names) - set(FEATURES))
            if unknown:
                raise ValueError(f"DriftKnobs.{knob}: unknown feature(s) {unknown}; features are {list(FEATURES)}")
        for name in self.new_category:
            if name not in CATEGORICAL_FEATURES:
                raise ValueError(f"DriftKnobs.new_category: {name!r} is numeric; use shift or scale")
        for name in (*self.shift, *self.scale):
            if name not in NUMERIC_FEATURES:
                raise ValueError(f"DriftKnobs: {name!r} is categorical; use new_category")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _raw_features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    avg = rng.lognormal(mean=3.6, sigma=0.6, size=n)
    cols["avg_amount_30d"] = avg
    cols["amount"] = avg * rng.lognormal(mean=0.0, sigma=0.7, size=n)
    # transactions cluster in the day; a long night tail
    cols["hour"] = np.mod(np.round(rng.normal(14.0, 5.0, size=n)), 24)
    cols["distance_km"] = rng.lognormal(mean=1.5, sigma=1.2, size=n)
    cols["txn_count_24h"] = rng.poisson(3.0, size=n).astype(np.float64)
    cols["account_age_days"] = rng.gamma(shape=2.0, scale=400.0, size=n)
    for name, values in CATEGORICAL_FEATURES.items():
        idx = rng.choice(len(values), size=n, p=_CATEGORY_WEIGHTS[name])
        cols[name] = idx  # codes for now; strings at the end
    cols["card_present"] = (
        (cols["channel"] == 0) | (cols["channel"] == 3) | (rng.random(n) < 0.05)
    ).astype(np.float64)
    return cols


def _logit(cols: dict[str, np.ndarray]) -> np.ndarray:
    ratio = np.log(cols["amount"] / cols["avg_amount_30d"])
    night = ((cols["hour"] <= 4) | (cols["hour"] >= 23)).astype(np.float64)
    z = 2.0 * (
        1.1 * np.maximum(ratio, 0.0) ** 1.5
        + 0.9 * night
        + 0.35 * np.log1p(cols["distance_km"])
        + 0.25 * np.maximum(cols["txn_count_24h"] - 4.0, 0.0)
        - 0.6 * np.log1p(cols["account_age_days"] / 365.0)
        - 0.7 * cols["card_present"]
        + 0.8 * (1.0 - cols["card_present"]) * (cols["amount"] > 150.0)
    )
    for name, effects in _CATEGORY_EFFECT.items():
        z = z + 2.0 * np.asarray(effects)[cols[name]]
    return z


def _intercept(z: np.ndarray, rate: float) -> float:
    """The intercept that makes the mean fraud probability equal ``rate`` (bisection)."""
    lo, hi = -30.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(z + mid).mean() > rate:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


_REFERENCE_INTERCEPT: dict[float, float] = {}


def generate(
    n: int,
    *,
    seed: int = 7,
    fraud_rate: float = 0.02,
    drift: DriftKnobs | None = None,
    id_prefix: str = "txn",
) -> dict[str, np.ndarray]:
    """``n`` transactions as columns: the features, ``label``, ``true_probability``, ``transaction_id``.

    The fraud mechanism is fixed (calibrated once on a reference sample per ``fraud_rate``), so
    labels of drifted samples still come from the same true probability function.
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    rng = np.random.default_rng(seed)
    cols = _raw_features(rng, n)
    if fraud_rate not in _REFERENCE_INTERCEPT:
        ref = _raw_features(np.random.default_rng(12345), 200_000)
        _REFERENCE_INTERCEPT[fraud_rate] = _intercept(_logit(ref), fraud_rate)
    drift = drift or DriftKnobs()
    for name, k in drift.shift.items():
        cols[name] = cols[name] + k * cols[name].std()
    for name, k in drift.scale.items():
        mean = cols[name].mean()
        cols[name] = mean + (cols[name] - mean) * k
    p = _sigmoid(_logit(cols) + _REFERENCE_INTERCEPT[fraud_rate])
    out: dict[str, np.ndarray] = {"transaction_id": np.char.add(f"{id_prefix}-{seed}-", np.arange(n).astype(str))}
    for name in NUMERIC_FEATURES:
        out[name] = cols[name].astype(np.float64)
    for name, values in CATEGORICAL_FEATURES.items():
        out[name] = np.asarray(values, dtype=object)[cols[name]]
    for name, (value, fraction) in drift.new_category.items():
        out[name][rng.random(n) < fraction] = value
    for name, fraction in drift.nulls.items():
        mask = rng.random(n) < fraction
        if name in NUMERIC_FEATURES:
            out[name][mask] = np.nan
        else:
            out[name][mask] = None
    for name in drift.drop:
        del out[name]
    out["true_probability"] = p
    out["label"] = (rng.random(n) < p).astype(np.int8)
    return out


def to_arrow(columns: dict[str, np.ndarray]):
    import pyarrow as pa

    arrays = {}
    for name, values in columns.items():
        if values.dtype == object:
            arrays[name] = pa.array(values.tolist(), type=pa.string())
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def write_parquet(columns: dict[str, np.ndarray], path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(to_arrow(columns), path)


def oracle_auc(columns: dict[str, np.ndarray]) -> float:
    """ROC AUC of the true probabilities: the ceiling for any model on this sample."""
    return roc_auc(columns["label"], columns["true_probability"])
