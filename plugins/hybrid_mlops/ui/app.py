"""The Models page: a FastAPI app the Airflow plugin mounts under the api-server at :data:`URL_PREFIX`.

    GET {URL_PREFIX}/models              the HTML page (the Airflow UI shows it in its nav, framed)
    GET {URL_PREFIX}/api/models          the same data as JSON
    GET {URL_PREFIX}/reports/<key>       a drift or cost report object from the artifacts bucket

Auth is Airflow's: every route resolves the user as the api-server's own routes do (the JWT in the
``Authorization`` header, or the UI's ``_token`` cookie, which the framed page sends), and a model is
listed only when the user may read its DAGs (``is_authorized_dag``, ``GET``, on ``retrain_<model>``).
No token: 401 (the HTML page redirects to the auth manager's login page instead).

.. seealso:: https://airflow.apache.org/docs/apache-airflow/stable/administration-and-deployment/plugins.html
"""

from __future__ import annotations

import html
import threading
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

URL_PREFIX = "/hybrid-mlops"
DETAILED_VERSIONS, MAX_VERSIONS = 10, 100  # as hybrid_mlops.ui.overview (not imported here: the plugin loads this)
_overview = None
_overview_lock = threading.Lock()
_specs_cache: tuple[tuple, list] | None = None


def overview():
    """The process's :class:`~hybrid_mlops.ui.overview.ModelsOverview` (its caches make warm loads cheap)."""
    global _overview
    with _overview_lock:
        if _overview is None:
            from hybrid_mlops.ui.overview import ModelsOverview

            _overview = ModelsOverview()
        return _overview


def load_specs() -> list:
    """The valid model specs, parsed again only when a spec file changed."""
    global _specs_cache
    from hybrid_mlops import settings
    from hybrid_mlops.specs.model import load_all

    folder = settings.models_dir()
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.glob("*.y*ml")))
    with _overview_lock:
        if _specs_cache is not None and _specs_cache[0] == (str(folder), stamp):
            return _specs_cache[1]
    specs, _errors = load_all(folder)
    with _overview_lock:
        _specs_cache = ((str(folder), stamp), specs)
    return specs


async def current_user(request: Request):
    """The Airflow user of the request, exactly as the api-server's routes resolve it."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user, oauth2_scheme

    return await get_user(request, await oauth2_scheme(request), await bearer_scheme(request))


def permitted_specs(user) -> list:
    """The specs whose DAGs the user may read (the retrain DAG stands for the model's DAGs)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = get_auth_manager()
    return [s for s in load_specs()
            if manager.is_authorized_dag(method="GET", details=DagDetails(id=f"retrain_{s.dag_suffix}"), user=user)]


def ui_base(request: Request) -> str:
    """The Airflow UI's base path (what the api-server is mounted under, if anything), ending in '/'."""
    root = request.scope.get("root_path", "")
    return root.removesuffix(URL_PREFIX).rstrip("/") + "/"


def create_app() -> FastAPI:
    # No warm-up at start: parsing the specs (pydantic builds their validators holding the GIL) would stall the
    # api-server's event loop while it starts; the first page view pays the cold load instead.
    app = FastAPI(title="hybrid-mlops Models", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/api/models")
    def models_json(request: Request, versions: int = Query(DETAILED_VERSIONS, ge=1, le=MAX_VERSIONS),
                    user=Depends(current_user)) -> JSONResponse:
        """``versions``: how many of each model's newest versions to detail (metrics, decision)."""
        return JSONResponse(overview().collect(permitted_specs(user), detailed=versions))

    @app.get("/models", response_class=HTMLResponse)
    async def models_page(request: Request) -> Response:
        try:
            user = await current_user(request)
        except HTTPException as err:
            if err.status_code != 401:
                raise
            from airflow.api_fastapi.app import get_auth_manager

            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
        from starlette.concurrency import run_in_threadpool

        data = await run_in_threadpool(lambda: overview().collect(permitted_specs(user)))
        return HTMLResponse(render_page(data, ui_base(request)))

    @app.get("/reports/{key:path}")
    def report(key: str, user=Depends(current_user)) -> Response:
        from hybrid_mlops import settings
        from hybrid_mlops.hooks.records import RecordsHook

        specs = permitted_specs(user)
        if key.startswith("monitoring/") and key.split("/")[1:2] not in ([s.name] for s in specs):
            raise HTTPException(403, "Forbidden")
        hook = RecordsHook(aws_conn_id=settings.aws_conn_id(), region_name=settings.region())
        try:
            found = hook.get_report(settings.bucket(), key)
        except ValueError as err:
            raise HTTPException(404, str(err)) from None
        if found is None:
            raise HTTPException(404, f"no report at {key}")
        body, content_type = found
        return Response(body, media_type=content_type)

    return app


# -- the page ----------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _a(href: str | None, text: str, *, top: bool = False) -> str:
    if not href:
        return ""
    target = ' target="_top"' if top else ' target="_blank" rel="noopener"'
    return f'<a href="{_e(href)}"{target}>{_e(text)}</a>'


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return _e(value) if value not in (None, "") else "–"


def _usd(value: Any) -> str:
    return f"${value:,.2f}" if isinstance(value, (int, float)) else "–"


VERDICT_CLASS = {"ok": "ok", "violations": "bad", "empty_window": "warn", "too_few_rows": "warn",
                 "no_baseline": "warn"}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#1a202c;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:17px;margin:0} .muted{color:#718096;font-size:12px}
section.model{border:1px solid #e2e8f0;border-radius:8px;padding:12px 16px;margin:14px 0}
.head{display:flex;gap:12px;align-items:baseline;flex-wrap:wrap} .links a{margin-right:10px;font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:10px 0} .card{border:1px solid #edf2f7;border-radius:6px;
padding:8px 12px;min-width:220px;flex:1} .card h3{font-size:12px;text-transform:uppercase;color:#4a5568;margin:0 0 6px}
.big{font-size:18px;font-weight:600} table{border-collapse:collapse;font-size:13px;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #edf2f7} th{color:#4a5568;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.ok{background:#c6f6d5;color:#22543d}.bad{background:#fed7d7;color:#822727}.warn{background:#feebc8;color:#7b341e}
.stage-prod{background:#bee3f8;color:#2a4365}.stage-staging{background:#e9d8fd;color:#44337a}
.stage-dev,.stage-archived{background:#edf2f7;color:#4a5568} details summary{cursor:pointer;font-size:13px}
"""


def render_page(data: dict, base: str) -> str:
    """The Models page as HTML (no script: it renders the same in any browser and in tests)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Models</title><style>{STYLE}</style>"
             "</head><body>",
             f"<h1>Models</h1><div class='muted'>target {_e(data['target'])} · generated {_e(data['generated_at'])}"
             f" · cost day {_e(data['cost_day'])} ({_e(data['cost_status'])}) · "
             f"{_a(base + 'hybrid-mlops/api/models', 'JSON')}</div>"]
    if not data["models"]:
        parts.append("<p>No model spec you may read.</p>")
    for m in data["models"]:
        parts.append(_render_model(m, base))
    parts.append("</body></html>")
    return "".join(parts)


def _render_model(m: dict, base: str) -> str:
    links = m["links"]
    airflow = " ".join(_a(base + links[k], label, top=True) for k, label in (
        ("retrain_runs", "retrain runs"), ("deploy_runs", "deploy runs"), ("monitor_runs", "monitor runs"),
        ("cost_report_runs", "cost report runs")))
    aws = _a(links.get("registry_console"), "Model Registry") + " " + " ".join(
        _a(url, f"EKS {region}") for region, url in links.get("eks_consoles", {}).items())
    out = [f"<section class='model' id='model-{_e(m['model'])}' data-model='{_e(m['model'])}'>",
           f"<div class='head'><h2>{_e(m['model'])}</h2><span class='muted'>{_e(m['task'])} · team "
           f"{_e(m['team'])} · group {_e(m['group'])}</span></div>",
           f"<div class='links'>{airflow} {aws}</div><div class='cards'>",
           _render_serving(m["deployment"]), _render_drift(m["drift"], links, base),
           _render_cost(m["cost"], links, base), "</div>", _render_versions(m)]
    out.append("</section>")
    return "".join(out)


def _render_serving(d: dict | None) -> str:
    if not d:
        return "<div class='card serving'><h3>Serving</h3><div class='muted'>not deployed yet</div></div>"
    running = "" if "running" not in d else (
        " <span class='badge ok'>running</span>" if d["running"] else " <span class='badge bad'>not running</span>")
    rows = "".join(
        f"<tr><td>{_e(r)}</td><td>{_e(e.get('version'))}</td><td>{_e(e.get('traffic_percent'))} %</td>"
        f"<td>{_e(e.get('min_replicas'))}–{_e(e.get('max_replicas'))}</td>"
        f"<td>{_e(str(e.get('deployed_at') or '')[:16].replace('T', ' '))}</td></tr>"
        for r, e in sorted((d.get("regions") or {}).items()))
    return (f"<div class='card serving'><h3>Serving ({_e(d.get('target'))})</h3>"
            f"<div class='big'>version <span class='deployed-version'>{_e(d.get('version'))}</span>{running}</div>"
            f"<table><tr><th>region</th><th>version</th><th>traffic</th><th>replicas</th><th>since</th></tr>"
            f"{rows}</table></div>")


def _render_drift(d: dict | None, links: dict, base: str) -> str:
    if not d:
        return "<div class='card drift'><h3>Drift</h3><div class='muted'>no monitor report yet</div></div>"
    status = d.get("status") or "unknown"
    features = ", ".join(d.get("violated_features") or []) or "none"
    report = _a(base + "hybrid-mlops/" + links["drift_report"], "report.json") if links.get("drift_report") else ""
    return (f"<div class='card drift'><h3>Drift (latest window)</h3>"
            f"<div class='big'><span class='badge drift-verdict {VERDICT_CLASS.get(status, 'warn')}'>{_e(status)}</span>"
            f"</div><div>{_e(d.get('window_start'))} → {_e(d.get('window_end'))}, {_e(d.get('rows'))} rows</div>"
            f"<div>violated: <span class='violated'>{_e(features)}</span></div>"
            f"<div class='muted'>{_e(d.get('message'))}</div><div class='links'>{report} "
            f"{_a(links.get('drift_console'), 'S3 console')}</div></div>")


def _render_cost(c: dict | None, links: dict, base: str) -> str:
    if not c:
        return "<div class='card cost'><h3>Cost</h3><div class='muted'>no cost report yet</div></div>"
    report = _a(base + "hybrid-mlops/" + links["cost_report"], "report.html") if links.get("cost_report") else ""
    return (f"<div class='card cost'><h3>Cost {_e(c.get('day'))}</h3>"
            f"<div class='big'><span class='cost-total'>{_usd(c.get('total_usd'))}</span></div>"
            f"<div>per 1,000 predictions: <span class='cost-per-1k'>{_usd(c.get('cost_per_1k_predictions_usd'))}"
            f"</span> ({_e(c.get('predictions'))} predictions)</div>"
            f"<div class='muted'>training {_usd(c.get('training_usd'))} · serving {_usd(c.get('serving_usd'))} · "
            f"budget {_usd(c.get('budget_usd'))}</div><div class='links'>{report} "
            f"{_a(links.get('cost_console'), 'S3 console')}</div></div>")


def _render_versions(m: dict) -> str:
    names = m["metric_names"]
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    rows, older = [], []
    for v in m["versions"]:
        if not v.get("detailed"):
            older.append(f"<tr class='version' data-version='{_e(v['version'])}'><td>{_e(v['version'])}</td>"
                         f"<td>{_e(v['status'])}</td><td>{_e(v.get('stage') or '–')}</td>"
                         f"<td class='muted'>{_e(str(v.get('created'))[:19])}</td></tr>")
            continue
        stage = v.get("stage") or ""
        who = v.get("decided_by") or (v.get("decision") == "rules" and "rules") or ""
        rows.append(
            f"<tr class='version' data-version='{_e(v['version'])}'><td>{_e(v['version'])}</td>"
            f"<td>{_e(v['status'])}</td><td><span class='badge stage-{_e(stage)}'>{_e(stage or '–')}</span> "
            f"<span class='muted'>{_e(v.get('stage_status'))}</span></td>"
            + "".join(f"<td>{_fmt(v['metrics'].get(n))}</td>" for n in names)
            + f"<td>{_e(who)}</td><td class='muted'>{_e(v.get('trigger'))}</td>"
            f"<td class='muted'>{_e(str(v.get('created'))[:19])}</td></tr>")
    table = (f"<table><tr><th>version</th><th>approval</th><th>stage</th>{head}<th>decided by</th>"
             f"<th>trigger</th><th>registered</th></tr>{''.join(rows)}</table>")
    more = (f"<details><summary>{len(older)} older version(s) (details: the JSON API's ?versions=)</summary>"
            f"<table><tr><th>version</th><th>approval</th><th>stage</th><th>registered</th></tr>{''.join(older)}"
            "</table></details>") if older else ""
    return f"<details open><summary>{len(rows)} newest version(s)</summary>{table}</details>{more}"



app = create_app()
