"""Cost maths: aggregation of Cost Explorer rows, attribution no bill gives, budget and anomaly rules.

Every function is pure and deterministic; amounts are USD floats rounded only when rendered.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from hybrid_mlops.cost.explorer import CATEGORIES

# ---------------------------------------------------------------------------------------------------
# Aggregation


def daily_by_model(rows: list[dict], metric: str = "unblended") -> dict[str, dict[str, dict[str, float]]]:
    """``{day: {model: {category: usd}}}`` summed over usage types, regions and queries."""
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(lambda: dict.fromkeys(CATEGORIES, 0.0)))
    for row in rows:
        out[row["day"]][row["model"]][row["category"]] += row[metric]
    return {d: {m: dict(c) for m, c in models.items()} for d, models in out.items()}


def category_totals(by_category: dict[str, float]) -> dict[str, float]:
    """``{training_usd, ..., total_usd}`` from ``{training: usd, ...}``."""
    out = {f"{c}_usd": by_category.get(c, 0.0) for c in CATEGORIES}
    out["total_usd"] = sum(by_category.get(c, 0.0) for c in CATEGORIES)
    return out


def model_total(day_models: dict[str, dict[str, float]], model: str, category: str | None = None) -> float:
    cats = day_models.get(model, {})
    return cats.get(category, 0.0) if category else sum(cats.values())


# ---------------------------------------------------------------------------------------------------
# Attribution


def training_job_cost(job: dict[str, Any], price_per_hour: float | None) -> dict[str, Any]:
    """Cost and managed-spot saving of one training job.

    SageMaker bills ``BillableTimeInSeconds`` per instance, so the job costs
    ``billable × instance_count × price / 3600``. With managed spot, billable time is what is paid
    for and ``TrainingTimeInSeconds`` is what ran: the saving is ``1 − billable / training`` (the
    figure the SageMaker console shows), in USD ``(training − billable) × count × price / 3600``.

    :param job: ``{job_name, instance_type, instance_count, training_seconds, billable_seconds, ...}``.
    :param price_per_hour: on-demand USD per instance-hour, None when unknown.
    """
    out = dict(job)
    training, billable, count = job.get("training_seconds"), job.get("billable_seconds"), job["instance_count"]
    out.update(price_per_hour=price_per_hour, cost_usd=None, on_demand_usd=None, spot_savings_usd=None,
               spot_saving_fraction=None)
    if training is None or billable is None:
        out["status"] = "timings_unavailable"
        return out
    if billable < 0 or training < 0 or billable > training:
        out["status"] = "timings_inconsistent"
        return out
    out["spot_saving_fraction"] = (1.0 - billable / training) if training > 0 else 0.0
    if price_per_hour is None:
        out["status"] = "price_unknown"
        return out
    out["cost_usd"] = billable * count * price_per_hour / 3600.0
    out["on_demand_usd"] = training * count * price_per_hour / 3600.0
    out["spot_savings_usd"] = out["on_demand_usd"] - out["cost_usd"]
    out["status"] = "ok"
    return out


def serving_by_version(serving_usd: float, counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Split a model's serving cost over its versions by their share of predictions.

    The bill has one figure per model (nodes and endpoints are shared by the versions a canary
    splits traffic over); the capture says how many predictions each version served. A day with
    serving cost and no predictions is reported as one ``(idle)`` line, cost per 1,000 = None.

    :param serving_usd: the model's serving cost of the day.
    :param counts: ``{version: {"requests": n, "predictions": rows}}`` from the capture.
    """
    total = sum(c["predictions"] for c in counts.values())
    if total == 0:
        if serving_usd == 0 and not counts:
            return []
        return [{"version": "(idle)", "requests": 0, "predictions": 0, "share": 1.0, "serving_usd": serving_usd,
                 "cost_per_1k_predictions_usd": None}]
    out = []
    for version, c in sorted(counts.items()):
        share = c["predictions"] / total
        usd = serving_usd * share
        out.append({
            "version": version,
            "requests": c["requests"],
            "predictions": c["predictions"],
            "share": share,
            "serving_usd": usd,
            "cost_per_1k_predictions_usd": usd / c["predictions"] * 1000.0 if c["predictions"] else None,
        })
    return out


# ---------------------------------------------------------------------------------------------------
# Signals


def budget_rule(value: float, budget: float) -> dict[str, Any]:
    """Breach when the day's cost is strictly above the daily budget (at the budget is within it)."""
    return {
        "rule": "budget",
        "value": value,
        "threshold": budget,
        "utilisation": value / budget if budget else None,
        "breach": value > budget,
    }


def anomaly_rule(
    value: float, history: list[float], sigma: float, *, min_history: int = 3, min_abs_usd: float = 1.0
) -> dict[str, Any]:
    """Yesterday against the trailing days: breach when ``|value − mean| > sigma × sd``.

    ``sd`` is the sample standard deviation (n − 1). Exactly at the threshold is not a breach.
    A deviation under ``min_abs_usd`` never is, so a flat history of cents does not page anyone.
    Fewer than ``min_history`` days of history give ``status: insufficient_history`` and no breach.

    :param value: the day's cost.
    :param history: the trailing days' costs, oldest first (days Cost Explorer did not answer left out).
    :param sigma: how many standard deviations make an anomaly (``cost.anomaly_sigma``).
    """
    out: dict[str, Any] = {"rule": "anomaly", "value": value, "sigma": sigma, "history_days": len(history),
                           "mean": None, "sd": None, "threshold": None, "z": None, "direction": None, "breach": False}
    if len(history) < min_history:
        out["status"] = "insufficient_history"
        return out
    mean = sum(history) / len(history)
    sd = math.sqrt(sum((x - mean) ** 2 for x in history) / (len(history) - 1))
    deviation = value - mean
    out.update(mean=mean, sd=sd, threshold=sigma * sd, status="ok",
               direction="up" if deviation > 0 else "down" if deviation < 0 else None)
    out["z"] = deviation / sd if sd > 0 else None
    out["breach"] = abs(deviation) > sigma * sd and abs(deviation) >= min_abs_usd
    return out


def alert_id(day: str, model: str, rule: str, metric: str) -> str:
    """Stable id of an alert: a re-run of the same day finds it and does not notify twice."""
    return f"{day}/{model}/{rule}/{metric}"
