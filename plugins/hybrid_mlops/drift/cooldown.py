"""Drift-triggered retraining: the cooldown rule and the triggering report's lineage.

The retrain DAG is scheduled on ``AssetOrTimeSchedule(cron, [Asset(drift_asset_uri(model))])``.
A run started by a drift event calls :func:`should_retrain` (proceed or skip) and
:func:`triggering_drift_report` (what to record in the model package's lineage). Pure functions:
no Airflow or AWS imports, so they are trivial to test.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hybrid_mlops.assets import drift_asset_uri


def should_retrain(
    now: datetime,
    last_drift_run: datetime | None,
    cooldown_hours: float,
) -> tuple[bool, str]:
    """Whether a drift-triggered retrain may proceed, and why.

    :param now: when the drift-triggered run starts (timezone-aware).
    :param last_drift_run: start of the last drift-triggered retrain that went ahead, or None.
    :param cooldown_hours: ``spec.schedule.drift_retrain_cooldown_hours`` (0 disables the cooldown).
    :return: ``(proceed, reason)``.
    """
    if cooldown_hours < 0:
        raise ValueError(f"schedule.drift_retrain_cooldown_hours={cooldown_hours} must be >= 0")
    if now.tzinfo is None:
        raise ValueError("should_retrain: now must be timezone-aware (UTC)")
    if last_drift_run is None:
        return True, "no earlier drift-triggered retrain"
    if last_drift_run.tzinfo is None:
        last_drift_run = last_drift_run.replace(tzinfo=timezone.utc)
    ready_at = last_drift_run + timedelta(hours=cooldown_hours)
    if now >= ready_at:
        return True, f"cooldown of {cooldown_hours:g} h since {last_drift_run.isoformat()} has passed"
    return False, (
        f"last drift-triggered retrain started {last_drift_run.isoformat()}; cooldown of {cooldown_hours:g} h "
        f"lasts until {ready_at.isoformat()}"
    )


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _asset_uri(event: Any) -> str | None:
    asset = _get(event, "asset")
    uri = _get(asset, "uri") if asset is not None else None
    return uri or _get(event, "uri")


def drift_events(triggering_asset_events: Any, model: str) -> list[Any]:
    """The drift events of ``model`` among ``context["triggering_asset_events"]``, oldest first.

    Accepts Airflow's ``TriggeringAssetEventsAccessor`` (a mapping of asset -> events) or any
    mapping / iterable of events (objects or dicts with ``asset.uri``, ``extra``, ``timestamp``).
    """
    if not triggering_asset_events:
        return []
    uri = drift_asset_uri(model)
    events: list[Any] = []
    if hasattr(triggering_asset_events, "items"):
        for key, evs in triggering_asset_events.items():
            key_uri = key if isinstance(key, str) else _get(key, "uri")
            for ev in evs:
                if (_asset_uri(ev) or key_uri) == uri:
                    events.append(ev)
    else:
        events = [ev for ev in triggering_asset_events if _asset_uri(ev) == uri]
    return sorted(events, key=lambda ev: str(_get(ev, "timestamp") or ""))


def triggering_drift_report(triggering_asset_events: Any, model: str) -> dict | None:
    """The drift report that started this run (latest drift event), for the model package lineage.

    Returns ``None`` for a run that no drift event started (cron or manual), else::

        {"report_uri", "violated_features", "window_start", "window_end", "asset_uri",
         "event_timestamp", "events"}
    """
    events = drift_events(triggering_asset_events, model)
    if not events:
        return None
    last = events[-1]
    extra = dict(_get(last, "extra") or {})
    ts = _get(last, "timestamp")
    return {
        "report_uri": extra.get("report_uri"),
        "violated_features": list(extra.get("violated_features") or []),
        "window_start": extra.get("window_start"),
        "window_end": extra.get("window_end"),
        "asset_uri": drift_asset_uri(model),
        "event_timestamp": ts.isoformat() if isinstance(ts, datetime) else ts,
        "events": len(events),
    }


def lineage_metadata(report: dict | None) -> dict[str, str]:
    """``CustomerMetadataProperties`` entries (string values, <= 256 chars) for a drift-triggered package."""
    if not report:
        return {}
    return {
        "drift_report_uri": str(report.get("report_uri") or "")[:256],
        "drift_violated_features": ",".join(report.get("violated_features") or [])[:256],
        "drift_window_start": str(report.get("window_start") or ""),
    }
