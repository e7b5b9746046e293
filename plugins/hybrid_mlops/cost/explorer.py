"""The Cost Explorer side of the report: which requests one run sends, and what the answers mean.

One run sends exactly three ``GetCostAndUsage`` queries (plus their pages), all DAILY over the same
window, each with ``UnblendedCost`` and ``AmortizedCost``:

``sagemaker``  SERVICE = Amazon SageMaker, tag ``model`` in the project's models and the scope tags;
               grouped by USAGE_TYPE and TAG model, then split into training / hosting / processing /
               storage by usage type.
``eks``        SERVICE = EC2 compute and EC2 - Other (EBS) with the cluster tag
               ``kubernetes.io/cluster/<cluster>=owned`` of every serving cluster; grouped by TAG model
               and REGION. Nodes without a ``model`` tag are reported as unallocated serving cost; on
               ``aws`` the pods' split cost allocation data attributes it per model
               (:mod:`hybrid_mlops.cost.split`).
``s3``         SERVICE = S3 with the scope tags (the artifacts and capture bucket); grouped by TAG model
               and USAGE_TYPE. Untagged buckets' cost is reported as unallocated storage.

The scope tags are the cost-allocation tags the project puts on everything it creates
(:meth:`ModelSpec.cost_tags` minus ``model``): ``team``, ``environment`` and the spec's ``cost.tags``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

METRICS = ("UnblendedCost", "AmortizedCost")
SERVICES = {
    "sagemaker": ("Amazon SageMaker",),
    "eks": ("Amazon Elastic Compute Cloud - Compute", "EC2 - Other"),
    "s3": ("Amazon Simple Storage Service",),
}
QUERY_NAMES = tuple(SERVICES)
CATEGORIES = ("training", "serving", "processing", "storage", "other")
UNALLOCATED = "(unallocated)"
#: Pages allowed per query before the run fails instead of sending more billed requests.
DEFAULT_MAX_PAGES = 10


class CostExplorerResultError(ValueError):
    """A Cost Explorer answer does not have the shape this report relies on."""


@dataclass(frozen=True)
class Scope:
    """What one report covers: the models, their serving clusters and the tags that select them.

    :param models: model names (values of the ``model`` cost-allocation tag).
    :param clusters: EKS cluster names serving them.
    :param tags: scope tags, ``{key: sorted values}`` (team, environment, project ...).
    """

    models: tuple[str, ...]
    clusters: tuple[str, ...]
    tags: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @classmethod
    def from_models(cls, models: list[dict[str, Any]]) -> Scope:
        """Build a scope from the per-model dicts the DAG passes (see ``hybrid_mlops.dags.cost_report``)."""
        if not models:
            raise ValueError("a cost report needs at least one model spec under include/models/")
        tag_values: dict[str, set[str]] = {}
        for m in models:
            for key, value in m["tags"].items():
                if key != "model":
                    tag_values.setdefault(key, set()).add(value)
        return cls(
            models=tuple(sorted(m["name"] for m in models)),
            clusters=tuple(sorted({c for m in models for c in m["clusters"]})),
            tags=tuple((k, tuple(sorted(v))) for k, v in sorted(tag_values.items())),
        )


def window(day: date, days: int) -> tuple[str, str]:
    """``[start, end)`` of the ``days`` days ending with ``day`` (Cost Explorer's End is exclusive)."""
    return (day - timedelta(days=days - 1)).isoformat(), (day + timedelta(days=1)).isoformat()


def _dimension(key: str, values: tuple[str, ...]) -> dict:
    return {"Dimensions": {"Key": key, "Values": list(values), "MatchOptions": ["EQUALS"]}}


def _tag(key: str, values: tuple[str, ...]) -> dict:
    return {"Tags": {"Key": key, "Values": list(values), "MatchOptions": ["EQUALS"]}}


def _any(expressions: list[dict]) -> dict:
    return expressions[0] if len(expressions) == 1 else {"Or": expressions}


def plan_queries(scope: Scope, start: str, end: str) -> list[dict[str, Any]]:
    """The requests of one run, in the order they are sent: ``[{"name": ..., "request": {...}}]``."""
    scope_tags = [_tag(k, v) for k, v in scope.tags]
    base = {"TimePeriod": {"Start": start, "End": end}, "Granularity": "DAILY", "Metrics": list(METRICS)}
    clusters = _any([_tag(f"kubernetes.io/cluster/{c}", ("owned",)) for c in scope.clusters])
    return [
        {
            "name": "sagemaker",
            "request": {
                **base,
                "Filter": {
                    "And": [_dimension("SERVICE", SERVICES["sagemaker"]), _tag("model", scope.models), *scope_tags]
                },
                "GroupBy": [{"Type": "DIMENSION", "Key": "USAGE_TYPE"}, {"Type": "TAG", "Key": "model"}],
            },
        },
        {
            "name": "eks",
            "request": {
                **base,
                "Filter": {"And": [_dimension("SERVICE", SERVICES["eks"]), clusters]},
                "GroupBy": [{"Type": "TAG", "Key": "model"}, {"Type": "DIMENSION", "Key": "REGION"}],
            },
        },
        {
            "name": "s3",
            "request": {
                **base,
                "Filter": {"And": [_dimension("SERVICE", SERVICES["s3"]), *scope_tags]}
                if scope_tags
                else _dimension("SERVICE", SERVICES["s3"]),
                "GroupBy": [{"Type": "TAG", "Key": "model"}, {"Type": "DIMENSION", "Key": "USAGE_TYPE"}],
            },
        },
    ]


def sagemaker_category(usage_type: str) -> str:
    """Split SageMaker usage types (``USW2-Train:ml.g5.2xlarge``, ``USW2-Host:ml.g5.xlarge``, ...)."""
    u = usage_type.lower()
    if "volumeusage" in u or "storage" in u:
        return "storage"
    if "train" in u:
        return "training"
    if "host" in u or "inference" in u or "endpoint" in u or "transform" in u:
        return "serving"
    if "processing" in u:
        return "processing"
    return "other"


def _tag_value(key: str) -> str:
    """``model$fraud-detection`` -> ``fraud-detection``; ``model$`` (untagged) -> unallocated."""
    _, _, value = key.partition("$")
    return value or UNALLOCATED


def _amount(metrics: dict, name: str, where: str) -> float:
    try:
        item = metrics[name]
        if item.get("Unit", "USD") != "USD":
            raise CostExplorerResultError(f"{where}: {name} is in {item['Unit']}, this report sums USD only")
        return float(item["Amount"])
    except (KeyError, TypeError, ValueError) as err:
        raise CostExplorerResultError(f"{where}: metric {name} missing or not a number ({err!r})") from None


def parse_pages(name: str, request: dict, pages: list[dict]) -> tuple[list[dict], list[dict]]:
    """Rows ``{day, source, model, category, usage_type, region, unblended, amortized, estimated}``
    and per-day flags ``{day, estimated}`` of one query's pages.

    A group's ``Keys`` are read in the order of the page's ``GroupDefinitions`` (the response says
    which key is which), which must be the grouping the request asked for; a tag key must carry its
    ``<tag>$`` prefix. A day without groups is a day with no cost (Cost Explorer still answers it,
    with ``Estimated``).
    """
    asked = [(g["Type"], g["Key"]) for g in request["GroupBy"]]
    rows: list[dict] = []
    days: dict[str, bool] = {}
    for page_no, page in enumerate(pages, 1):
        definitions = [(d.get("Type"), d.get("Key")) for d in page.get("GroupDefinitions") or []] or asked
        if sorted(definitions) != sorted(asked):
            raise CostExplorerResultError(
                f"{name} page {page_no}: the response groups by {definitions}, the request asked for {asked}"
            )
        group_keys = [key for _, key in definitions]
        tag_positions = [(i, key) for i, (kind, key) in enumerate(definitions) if kind == "TAG"]
        for result in page.get("ResultsByTime", []):
            try:
                day = result["TimePeriod"]["Start"]
            except (KeyError, TypeError):
                raise CostExplorerResultError(f"{name} page {page_no}: a result has no TimePeriod.Start") from None
            estimated = bool(result.get("Estimated", False))
            days[day] = days.get(day, False) or estimated
            for group in result.get("Groups", []):
                keys = group.get("Keys", [])
                if len(keys) != len(group_keys):
                    raise CostExplorerResultError(
                        f"{name} page {page_no} {day}: group keys {keys} do not match GroupBy {group_keys}"
                    )
                for i, tag in tag_positions:
                    if not str(keys[i]).startswith(f"{tag}$"):
                        raise CostExplorerResultError(
                            f"{name} page {page_no} {day}: group key {keys[i]!r} at position {i} is not a "
                            f"{tag!r} tag value ({tag}$...); keys {keys} for GroupDefinitions {definitions}"
                        )
                by = dict(zip(group_keys, keys, strict=True))
                where = f"{name} {day} {keys}"
                row = {
                    "day": day,
                    "source": name,
                    "model": _tag_value(by["model"]),
                    "usage_type": by.get("USAGE_TYPE", ""),
                    "region": by.get("REGION", ""),
                    "unblended": _amount(group.get("Metrics", {}), "UnblendedCost", where),
                    "amortized": _amount(group.get("Metrics", {}), "AmortizedCost", where),
                    "estimated": estimated,
                }
                row["category"] = {
                    "sagemaker": lambda: sagemaker_category(row["usage_type"]),
                    "eks": lambda: "serving",
                    "s3": lambda: "storage",
                }[name]()
                rows.append(row)
    return rows, [{"day": d, "estimated": e} for d, e in sorted(days.items())]
