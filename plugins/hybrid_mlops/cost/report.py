"""The daily cost report: ``cost.json`` (schema ``SCHEMA.md``), ``cost.csv`` and ``report.html``.

:func:`build_document` is the one place figures are computed; the CSV and the HTML only render the
document, so what a person reads is what the machines read.
"""

from __future__ import annotations

import csv
import html
import io
import json
from datetime import date, timedelta
from typing import Any

from hybrid_mlops.cost.explorer import CATEGORIES, UNALLOCATED
from hybrid_mlops.cost.maths import (
    alert_id,
    anomaly_rule,
    budget_rule,
    category_totals,
    daily_by_model,
    serving_by_version,
    training_job_cost,
)

SCHEMA = "hybrid-mlops/cost-report/v1"
BASIS = "UnblendedCost"
ANOMALY_METRICS = ("total", "training", "serving")


def _days(start: str, end: str) -> list[str]:
    d, stop = date.fromisoformat(start), date.fromisoformat(end)
    out = []
    while d < stop:
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def build_document(
    *,
    day: str,
    models: list[dict[str, Any]],
    ce: dict[str, Any],
    jobs: list[dict[str, Any]],
    predictions: dict[str, dict[str, dict[str, int]]],
    previous: dict[str, dict | None] | None = None,
    generated_at: str,
    target: str,
) -> dict[str, Any]:
    """Compute the whole report of one day.

    :param day: the reported day, ``YYYY-MM-DD``.
    :param models: per-model settings: ``{name, budget_usd, anomaly_sigma, trailing_days, restate_days, ...}``.
    :param ce: ``{window, rows, days, requests, max_requests, queries}`` from the Cost Explorer task.
    :param jobs: training jobs that ended on ``day``, with ``price_per_hour`` resolved.
    :param predictions: ``{model: {version: {requests, predictions}}}`` counted from the capture.
    :param previous: previously published ``cost.json`` of the re-stated days (and of ``day`` itself).
    """
    previous = previous or {}
    unblended = daily_by_model(ce["rows"], "unblended")
    amortized = daily_by_model(ce["rows"], "amortized")
    estimated = {d["day"]: d["estimated"] for d in ce["days"]}
    window_days = _days(ce["window"]["start"], ce["window"]["end"])
    answered = [d for d in window_days if d in estimated]
    warnings: list[str] = []

    if not estimated:
        status = "no_data"
        warnings.append(
            f"Cost Explorer returned no results for {ce['window']['start']}..{ce['window']['end']}: "
            "no figure below is a measured zero. Check that the account has Cost Explorer data and that the "
            "cost-allocation tags (model, team, environment, ...) are activated in the Billing console."
        )
    elif day not in estimated:
        status = "incomplete"
        warnings.append(f"Cost Explorer has no result for {day} yet; its figures are missing, not zero.")
    elif not ce["rows"]:
        status = "empty"
        warnings.append("Cost Explorer answered every day with no cost for the project's tags: an empty window.")
    else:
        status = "ok"
    missing = [d for d in window_days if d not in estimated]
    if estimated and missing:
        warnings.append(f"Cost Explorer did not answer {len(missing)} day(s) of the window: {', '.join(missing)}.")

    # --- the 30-day series --------------------------------------------------------------------------
    daily = []
    for d in answered:
        cats = {c: sum(m.get(c, 0.0) for m in unblended.get(d, {}).values()) for c in CATEGORIES}
        daily.append({
            "day": d,
            "estimated": estimated[d],
            **category_totals(cats),
            "amortized_total_usd": sum(sum(m.values()) for m in amortized.get(d, {}).values()),
            "by_model": {m: sum(c.values()) for m, c in sorted(unblended.get(d, {}).items())},
        })
    daily_index = {row["day"]: row for row in daily}

    # --- per model --------------------------------------------------------------------------------
    today = unblended.get(day, {})
    today_amortized = amortized.get(day, {})
    jobs_by_model: dict[str, list[dict]] = {}
    for job in jobs:
        jobs_by_model.setdefault(job["model"], []).append(training_job_cost(job, job.get("price_per_hour")))
    alerts: list[dict[str, Any]] = []
    model_docs = []
    for spec in sorted(models, key=lambda m: m["name"]):
        name = spec["name"]
        cats = today.get(name, dict.fromkeys(CATEGORIES, 0.0))
        totals = category_totals(cats)
        amort = category_totals(today_amortized.get(name, {}))
        model_jobs = sorted(jobs_by_model.get(name, []), key=lambda j: j["job_name"])
        for job in model_jobs:
            if job["status"] != "ok":
                warnings.append(f"{name}: training job {job['job_name']} has no cost figure ({job['status']}).")
        attributed = sum(j["cost_usd"] or 0.0 for j in model_jobs)
        versions = serving_by_version(totals["serving_usd"], predictions.get(name, {}))

        history_days = [d for d in answered if d < day][-spec["trailing_days"]:]
        signals: dict[str, Any] = {"evaluated": status in ("ok", "empty")}
        if signals["evaluated"]:
            signals["budget"] = budget_rule(totals["total_usd"], spec["budget_usd"])
            signals["anomalies"] = {}
            for metric in ANOMALY_METRICS:
                key = "total_usd" if metric == "total" else f"{metric}_usd"
                history = [category_totals(unblended.get(d, {}).get(name, {}))[key] for d in history_days]
                signals["anomalies"][metric] = anomaly_rule(totals[key], history, spec["anomaly_sigma"])
            if signals["budget"]["breach"]:
                alerts.append({
                    "id": alert_id(day, name, "budget", "total"), "model": name, "rule": "budget", "metric": "total",
                    "value": totals["total_usd"], "threshold": spec["budget_usd"],
                    "message": f"{name} cost ${totals['total_usd']:,.2f} on {day}, over its daily budget of "
                               f"${spec['budget_usd']:,.2f} ({signals['budget']['utilisation']:.0%}).",
                })
            for metric, result in signals["anomalies"].items():
                if result["breach"]:
                    alerts.append({
                        "id": alert_id(day, name, "anomaly", metric), "model": name, "rule": "anomaly",
                        "metric": metric, "value": result["value"], "threshold": result["threshold"],
                        "message": f"{name} {metric} cost ${result['value']:,.2f} on {day} is "
                                   f"{'above' if result['direction'] == 'up' else 'below'} its "
                                   f"{result['history_days']}-day mean ${result['mean']:,.2f} by more than "
                                   f"{spec['anomaly_sigma']:g} sd (sd ${result['sd']:,.2f}).",
                    })
        model_docs.append({
            "model": name,
            "budget_usd": spec["budget_usd"],
            "estimated": estimated.get(day, True),
            "totals": totals,
            "amortized": amort,
            "training": {
                "cost_explorer_usd": totals["training_usd"],
                "attributed_usd": attributed,
                "unattributed_usd": totals["training_usd"] - attributed,
                "spot_savings_usd": sum(j["spot_savings_usd"] or 0.0 for j in model_jobs),
                "jobs": model_jobs,
            },
            "versions": versions,
            "predictions": sum(v["predictions"] for v in versions),
            "cost_per_1k_predictions_usd": (
                totals["serving_usd"] / sum(v["predictions"] for v in versions) * 1000.0
                if sum(v["predictions"] for v in versions) else None
            ),
            "signals": signals,
        })

    unallocated = category_totals(today.get(UNALLOCATED, {}))
    if unallocated["total_usd"]:
        warnings.append(
            f"${unallocated['total_usd']:,.2f} of the day's cost carries no model tag (shared nodes or buckets); "
            "it is in the totals as unallocated, not in any model."
        )
    day_cats = {c: sum(m.get(c, 0.0) for m in today.values()) for c in CATEGORIES}
    totals = category_totals(day_cats)
    totals["amortized_total_usd"] = sum(sum(m.values()) for m in today_amortized.values())
    totals["unallocated_usd"] = unallocated["total_usd"]
    totals["spot_savings_usd"] = sum(m["training"]["spot_savings_usd"] for m in model_docs)
    totals["predictions"] = sum(m["predictions"] for m in model_docs)

    # --- re-statement of the trailing days ---------------------------------------------------------
    restate_days = max((m["restate_days"] for m in models), default=0)
    restated = []
    for offset in range(restate_days, -1, -1):
        d = (date.fromisoformat(day) - timedelta(days=offset)).isoformat()
        if d not in daily_index:
            continue
        prev = previous.get(d)
        prev_total = prev["totals"]["total_usd"] if prev and prev.get("status") in ("ok", "empty") else None
        current = daily_index[d]["total_usd"]
        restated.append({
            "day": d,
            "final": not daily_index[d]["estimated"],
            "previous_total_usd": prev_total,
            "current_total_usd": current,
            "delta_usd": None if prev_total is None else current - prev_total,
        })

    # --- alerts already notified by an earlier run of the same day ---------------------------------
    earlier = {a["id"]: a for a in (previous.get(day) or {}).get("alerts", [])}
    for alert in alerts:
        alert["notified_at"] = earlier.get(alert["id"], {}).get("notified_at")

    return {
        "schema": SCHEMA,
        "day": day,
        "generated_at": generated_at,
        "target": target,
        "currency": "USD",
        "basis": BASIS,
        "status": status,
        "final": day in estimated and not estimated[day],
        "window": dict(ce["window"]),
        "cost_explorer": {
            "requests": ce["requests"],
            "max_requests": ce["max_requests"],
            "queries": ce["queries"],
        },
        "totals": totals,
        "unallocated": unallocated,
        "models": model_docs,
        "daily": daily,
        "restated": restated,
        "alerts": alerts,
        "warnings": warnings,
    }


# ---------------------------------------------------------------------------------------------------
# CSV

CSV_FIELDS = ("record", "day", "model", "version", "item", "category", "unblended_usd", "amortized_usd",
              "predictions", "estimated")


def to_csv(doc: dict[str, Any]) -> str:
    """Long-format CSV: one row per model, day and category, per training job and per served version."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in doc["daily"]:
        for model, total in row["by_model"].items():
            w.writerow({"record": "daily_model_total", "day": row["day"], "model": model, "category": "total",
                        "unblended_usd": f"{total:.6f}", "estimated": row["estimated"]})
    for m in doc["models"]:
        for c in CATEGORIES:
            w.writerow({"record": "model_category", "day": doc["day"], "model": m["model"], "category": c,
                        "unblended_usd": f"{m['totals'][c + '_usd']:.6f}",
                        "amortized_usd": f"{m['amortized'][c + '_usd']:.6f}", "estimated": m["estimated"]})
        for j in m["training"]["jobs"]:
            w.writerow({"record": "training_job", "day": doc["day"], "model": m["model"],
                        "version": j.get("version") or "", "item": j["job_name"], "category": "training",
                        "unblended_usd": "" if j["cost_usd"] is None else f"{j['cost_usd']:.6f}",
                        "estimated": False})
        for v in m["versions"]:
            w.writerow({"record": "serving_version", "day": doc["day"], "model": m["model"], "version": v["version"],
                        "category": "serving", "unblended_usd": f"{v['serving_usd']:.6f}",
                        "predictions": v["predictions"], "estimated": m["estimated"]})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------
# HTML

COLORS = {"training": "#4f46e5", "serving": "#0d9488", "other": "#f59e0b", "paid": "#4f46e5", "saved": "#a5b4fc"}
CSS = """
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc;--card:#fff;--bad:#b91c1c;--ok:#047857}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:24px}h1{font-size:22px;margin:0}h2{font-size:16px;margin:0 0 12px}
.sub{color:var(--muted)}.badge{display:inline-block;padding:2px 8px;border-radius:999px;font-size:12px;
font-weight:600;margin-left:8px;vertical-align:middle}.final{background:#d1fae5;color:var(--ok)}
.est{background:#fef3c7;color:#92400e}.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));
gap:12px;margin:18px 0}.tile{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px}
.tile .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.tile .v{font-size:24px;font-weight:700;margin-top:4px}.card{background:var(--card);border:1px solid var(--line);
border-radius:10px;padding:16px;margin:0 0 16px}.alerts li{color:var(--bad);margin:4px 0}.okmsg{color:var(--ok)}
.warn{background:#fffbeb;border-color:#fde68a}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line)}td.n,th.n{text-align:right;
font-variant-numeric:tabular-nums}.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}@media(max-width:900px){.grid2{grid-template-columns:1fr}}
svg text{font:11px -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Arial,sans-serif;fill:#374151}
footer{color:var(--muted);font-size:12px;margin-top:8px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def _delta(value: float | None) -> str:
    return "" if value is None else f"{'+' if value >= 0 else '-'}${abs(value):,.2f}"


def _fig(path: str, value: float | None, text: str | None = None) -> str:
    """A figure the test suite checks against ``cost.json`` (``data-figure`` is its path there)."""
    raw = "" if value is None else repr(float(value))
    return f'<span data-figure="{_e(path)}" data-value="{raw}">{_e(text if text is not None else money(value))}</span>'


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    import math

    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def chart_daily(doc: dict[str, Any]) -> str:
    """Stacked bars, one per day of the window: training, serving and the rest (storage, processing)."""
    rows = doc["daily"]
    w, h, left, bottom, top = 1040, 260, 56, 34, 14
    if not rows:
        return ('<svg class="chart" id="chart-daily" role="img" aria-label="no data" width="100%" '
                f'viewBox="0 0 {w} 60"><text x="{w / 2}" y="34" text-anchor="middle">No Cost Explorer data in the '
                'window</text></svg>')
    ymax = _nice_max(max(r["total_usd"] for r in rows))
    plot_w, plot_h = w - left - 10, h - bottom - top
    bw = plot_w / len(rows)
    parts = [f'<svg class="chart" id="chart-daily" role="img" width="100%" viewBox="0 0 {w} {h}" '
             f'aria-label="Training vs serving cost per day, {len(rows)} days">']
    for i in range(5):
        v = ymax * i / 4
        y = top + plot_h - plot_h * v / ymax
        parts.append(f'<line x1="{left}" x2="{w - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">${v:,.0f}</text>')
    for i, r in enumerate(rows):
        x = left + i * bw + bw * 0.15
        y = top + plot_h
        stack = (("training", r["training_usd"]), ("serving", r["serving_usd"]),
                 ("other", r["storage_usd"] + r["processing_usd"] + r["other_usd"]))
        for cat, v in stack:
            bh = plot_h * v / ymax
            y -= bh
            opacity = "0.55" if r["estimated"] else "1"
            parts.append(
                f'<rect class="bar" data-day="{r["day"]}" data-category="{cat}" data-value="{v!r}" x="{x:.1f}" '
                f'y="{y:.1f}" width="{bw * 0.7:.1f}" height="{bh:.1f}" fill="{COLORS[cat]}" fill-opacity="{opacity}">'
                f'<title>{r["day"]} {cat}: {money(v)}{" (estimated)" if r["estimated"] else ""}</title></rect>')
        if i % max(1, len(rows) // 10) == 0 or i == len(rows) - 1:
            parts.append(f'<text x="{x + bw * 0.35:.1f}" y="{h - 14}" text-anchor="middle">{r["day"][5:]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _hbars(chart_id: str, label: str, items: list[tuple[str, float, float | None, str]], color: str,
           second: str | None = None, w: int = 500) -> str:
    """Horizontal bars ``(label, value, optional backdrop value, right-hand text)``."""
    row_h, left = 30, 170 if w <= 500 else 240
    if not items:
        return (f'<svg class="chart" id="{chart_id}" role="img" aria-label="{_e(label)}: nothing to show" '
                f'width="100%" viewBox="0 0 {w} 40"><text x="10" y="24">Nothing to show for this day</text></svg>')
    vmax = _nice_max(max(max(v, b or 0.0) for _, v, b, _ in items))
    h = row_h * len(items) + 10
    parts = [f'<svg class="chart" id="{chart_id}" role="img" aria-label="{_e(label)}" width="100%" '
             f'viewBox="0 0 {w} {h}">']
    span = w - left - (120 if w <= 500 else 180)
    for i, (name, value, backdrop, text) in enumerate(items):
        y = 6 + i * row_h
        parts.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{_e(name[:40])}</text>')
        if backdrop is not None and second:
            parts.append(f'<rect class="backdrop" x="{left}" y="{y + 3}" width="{span * backdrop / vmax:.1f}" '
                         f'height="18" rx="3" fill="{second}"><title>{_e(name)}: {money(backdrop)}</title></rect>')
        parts.append(f'<rect class="bar" data-label="{_e(name)}" data-value="{value!r}" x="{left}" y="{y + 3}" '
                     f'width="{max(span * value / vmax, 1):.1f}" height="18" rx="3" fill="{color}">'
                     f'<title>{_e(name)}: {money(value)}</title></rect>')
        parts.append(f'<text x="{left + span + 6}" y="{y + 15}">{_e(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def to_html(doc: dict[str, Any]) -> str:
    """A self-contained page: inline CSS and SVG, no scripts, no external fonts or images."""
    t = doc["totals"]
    badge = ('<span class="badge final">final</span>' if doc["final"]
             else '<span class="badge est">estimated: Cost Explorer may still revise it</span>')
    tiles = [
        ("Total", _fig("totals.total_usd", t["total_usd"])),
        ("Training", _fig("totals.training_usd", t["training_usd"])),
        ("Serving", _fig("totals.serving_usd", t["serving_usd"])),
        ("Storage", _fig("totals.storage_usd", t["storage_usd"])),
        ("Spot savings", _fig("totals.spot_savings_usd", t["spot_savings_usd"])),
        ("Alerts", _fig("alerts.length", len(doc["alerts"]), str(len(doc["alerts"])))),
    ]
    out = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>Cost report {doc['day']}</title><meta name=\"viewport\" content=\"width=device-width\">",
        f"<style>{CSS}</style></head><body><main>",
        f'<h1>Cost report, {doc["day"]}{badge}</h1>',
        f'<div class="sub">Target <b>{_e(doc["target"])}</b> · {_e(doc["basis"])} in {doc["currency"]} · window '
        f'{doc["window"]["start"]} to {doc["window"]["end"]} · status <b id="status">{_e(doc["status"])}</b></div>',
        '<section class="tiles">',
        *[f'<div class="tile"><div class="k">{k}</div><div class="v">{v}</div></div>' for k, v in tiles],
        "</section>",
    ]
    if doc["warnings"]:
        out.append('<section class="card warn" id="warnings"><h2>Read this first</h2><ul>'
                   + "".join(f"<li>{_e(w)}</li>" for w in doc["warnings"]) + "</ul></section>")
    out.append('<section class="card" id="alerts"><h2>Signals</h2>')
    if doc["alerts"]:
        out.append('<ul class="alerts">' + "".join(f"<li>{_e(a['message'])}</li>" for a in doc["alerts"]) + "</ul>")
    elif doc["status"] in ("ok", "empty"):
        out.append('<p class="okmsg">Every model is within its budget and its usual range.</p>')
    else:
        out.append("<p>Signals were not evaluated: there is no cost data for this day.</p>")
    out.append("</section>")
    legend = "".join(f'<span><i style="background:{COLORS[c]}"></i>{c}</span>' for c in ("training", "serving", "other"))
    out.append(f'<section class="card"><h2>Training vs serving, last {len(doc["daily"])} days</h2>'
               f'<div class="legend">{legend}<span>paler bars: estimated days</span></div>{chart_daily(doc)}</section>')

    version_items, job_items = [], []
    for m in doc["models"]:
        for v in m["versions"]:
            per1k = v["cost_per_1k_predictions_usd"]
            version_items.append((f'{m["model"]} {v["version"]}', v["serving_usd"], None,
                                  f'{money(v["serving_usd"])} · {"n/a" if per1k is None else f"${per1k:,.4f}"}/1k'))
        for j in m["training"]["jobs"]:
            if j["cost_usd"] is not None:
                job_items.append((j["job_name"], j["cost_usd"], j["on_demand_usd"],
                                  f'saved {money(j["spot_savings_usd"])} ({j["spot_saving_fraction"]:.0%})'))
    model_items = [(m["model"], m["totals"]["total_usd"], m["budget_usd"],
                    f'{money(m["totals"]["total_usd"])} of {money(m["budget_usd"])}') for m in doc["models"]]
    out.append('<div class="grid2">')
    out.append('<section class="card"><h2>Per model: day total against budget</h2>'
               + _hbars("chart-models", "cost per model against budget", model_items, COLORS["serving"], "#e5e7eb")
               + "</section>")
    out.append('<section class="card"><h2>Serving per version (cost per 1,000 predictions)</h2>'
               + _hbars("chart-versions", "serving cost per model version", version_items, COLORS["serving"])
               + "</section>")
    out.append("</div>")
    out.append('<section class="card"><h2>Training jobs: paid vs on-demand (spot savings)</h2>'
               f'<div class="legend"><span><i style="background:{COLORS["paid"]}"></i>paid</span>'
               f'<span><i style="background:{COLORS["saved"]}"></i>on-demand equivalent</span></div>'
               + _hbars("chart-spot", "training cost paid vs on-demand", job_items, COLORS["paid"], COLORS["saved"], w=1040)
               + "</section>")

    rows = []
    for i, m in enumerate(doc["models"]):
        p = f"models.{i}"
        mt = m["totals"]
        rows.append(
            f'<tr data-model="{_e(m["model"])}"><td>{_e(m["model"])}</td>'
            + "".join(f'<td class="n">{_fig(f"{p}.totals.{c}_usd", mt[c + "_usd"])}</td>'
                      for c in ("training", "serving", "processing", "storage"))
            + f'<td class="n"><b>{_fig(f"{p}.totals.total_usd", mt["total_usd"])}</b></td>'
            + f'<td class="n">{_fig(f"{p}.budget_usd", m["budget_usd"])}</td>'
            + f'<td class="n">{_fig(f"{p}.training.spot_savings_usd", m["training"]["spot_savings_usd"])}</td>'
            + f'<td class="n">{m["predictions"]:,}</td></tr>')
    if t["unallocated_usd"]:
        u = doc["unallocated"]
        rows.append('<tr><td><i>unallocated</i></td>'
                    + "".join(f'<td class="n">{_fig(f"unallocated.{c}_usd", u[c + "_usd"])}</td>'
                              for c in ("training", "serving", "processing", "storage"))
                    + f'<td class="n">{_fig("unallocated.total_usd", u["total_usd"])}</td><td></td><td></td><td></td></tr>')
    out.append('<section class="card"><h2>Per model</h2><table id="models"><thead><tr><th>model</th>'
               '<th class="n">training</th><th class="n">serving</th><th class="n">processing</th>'
               '<th class="n">storage</th><th class="n">total</th><th class="n">budget</th>'
               '<th class="n">spot saved</th><th class="n">predictions</th></tr></thead><tbody>'
               + "".join(rows) + "</tbody></table></section>")

    job_rows = []
    for i, m in enumerate(doc["models"]):
        for k, j in enumerate(m["training"]["jobs"]):
            p = f"models.{i}.training.jobs.{k}"
            job_rows.append(
                f'<tr><td>{_e(j["job_name"])}</td><td>{_e(j.get("version") or "")}</td>'
                f'<td>{_e(j["instance_type"])} × {j["instance_count"]}</td><td class="n">{j["training_seconds"] or 0:,}</td>'
                f'<td class="n">{j["billable_seconds"] or 0:,}</td><td class="n">{_fig(p + ".cost_usd", j["cost_usd"])}</td>'
                f'<td class="n">{_fig(p + ".spot_savings_usd", j["spot_savings_usd"])}</td><td>{_e(j["status"])}</td></tr>')
    ver_rows = []
    for i, m in enumerate(doc["models"]):
        for k, v in enumerate(m["versions"]):
            p = f"models.{i}.versions.{k}"
            per1k = v["cost_per_1k_predictions_usd"]
            ver_rows.append(
                f'<tr><td>{_e(m["model"])}</td><td>{_e(v["version"])}</td><td class="n">{v["requests"]:,}</td>'
                f'<td class="n">{v["predictions"]:,}</td><td class="n">{_fig(p + ".serving_usd", v["serving_usd"])}</td>'
                f'<td class="n">{_fig(p + ".cost_per_1k_predictions_usd", per1k, "n/a" if per1k is None else f"${per1k:,.4f}")}'
                "</td></tr>")
    out.append('<div class="grid2"><section class="card"><h2>Training jobs</h2><table id="jobs"><thead><tr>'
               '<th>job</th><th>version</th><th>instances</th><th class="n">ran s</th><th class="n">billed s</th>'
               '<th class="n">cost</th><th class="n">spot saved</th><th>status</th></tr></thead><tbody>'
               + ("".join(job_rows) or '<tr><td colspan="8">No training job ended this day.</td></tr>')
               + '</tbody></table></section><section class="card"><h2>Served versions</h2><table id="versions">'
               '<thead><tr><th>model</th><th>version</th><th class="n">requests</th><th class="n">predictions</th>'
               '<th class="n">serving</th><th class="n">per 1k</th></tr></thead><tbody>'
               + ("".join(ver_rows) or '<tr><td colspan="6">No serving cost or predictions this day.</td></tr>')
               + "</tbody></table></section></div>")
    res_rows = "".join(
        f'<tr><td>{r["day"]}</td><td>{"final" if r["final"] else "estimated"}</td>'
        f'<td class="n">{"not published" if r["previous_total_usd"] is None else money(r["previous_total_usd"])}</td>'
        f'<td class="n">{money(r["current_total_usd"])}</td>'
        f'<td class="n">{_delta(r["delta_usd"])}</td></tr>' for r in doc["restated"])
    out.append('<section class="card"><h2>Re-stated days</h2><p class="sub">Cost Explorer revises recent days '
               'until they are final; each run fetches them again.</p><table id="restated"><thead><tr><th>day</th>'
               '<th>state</th><th class="n">published</th><th class="n">now</th><th class="n">change</th></tr></thead>'
               f"<tbody>{res_rows}</tbody></table></section>")
    ce = doc["cost_explorer"]
    out.append(f'<footer>{ce["requests"]} Cost Explorer request(s) (bounded at {ce["max_requests"]}); generated '
               f'{_e(doc["generated_at"])}; schema {doc["schema"]}.</footer></main></body></html>')
    return "\n".join(out)


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def headline(doc: dict[str, Any]) -> dict[str, Any]:
    """The figures a person wants first (what the DAG returns and the demo prints)."""
    t = doc["totals"]
    return {
        "day": doc["day"],
        "status": doc["status"],
        "final": doc["final"],
        "total_usd": round(t["total_usd"], 2),
        "training_usd": round(t["training_usd"], 2),
        "serving_usd": round(t["serving_usd"], 2),
        "spot_savings_usd": round(t["spot_savings_usd"], 2),
        "predictions": t["predictions"],
        "alerts": [a["message"] for a in doc["alerts"]],
    }
