"""Per-model EKS serving cost from AWS split cost allocation data (CUR 2.0, queried with Athena).

Why this and not per-model Karpenter NodePools with tags: the models' InferenceService pods share
GPU nodes. One tagged NodePool per model would give each model at least one node of its own (a
whole idle GPU for a model with little traffic, multiplied by the regions), lose bin-packing and
still leave the shared pods (Knative, KServe, the logger, system DaemonSets) untagged. Split cost
allocation data divides each EC2 instance's cost among the pods that ran on it by their CPU, memory
and GPU requests (or usage, whichever is higher), gives the instance's unused share back to those
pods, and imports the pods' Kubernetes labels as cost allocation tags. The InferenceService's
``model`` label (``ModelSpec.cost_tags``, set on every InferenceService and propagated to its pods)
therefore arrives as the ``user_model`` key of CUR 2.0's ``resource_tags`` column, with no change to
the cluster's nodes.

The Cost Explorer ``eks`` query still says what the serving clusters cost (its totals stay the
bill's); the pod rows of the CUR only *attribute* that cost: each model's pod cost of a day moves
from ``(unallocated)`` to the model. What no model's pod used stays unallocated.

CUR 2.0 columns read (https://docs.aws.amazon.com/cur/latest/userguide/table-dictionary-cur2-split-line-item.html):
``line_item_usage_start_date``, ``line_item_resource_id`` (the pod's ARN,
``arn:aws:eks:<region>:<account>:pod/<cluster>/<namespace>/<pod>/<uid>``),
``split_line_item_parent_resource_id`` (the EC2 instance), ``split_line_item_split_cost``,
``split_line_item_unused_cost``, ``product_region_code`` and ``resource_tags`` (``user_model``,
``aws_eks_cluster_name``).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from hybrid_mlops.cost.explorer import UNALLOCATED
from hybrid_mlops.drift.sql import identifier, literal

#: The ``resource_tags`` key of the pods' ``model`` label once activated as a cost allocation tag.
MODEL_TAG = "user_model"
#: The AWS-generated cost allocation tag naming a pod's cluster.
CLUSTER_TAG = "aws_eks_cluster_name"
SOURCE = "eks-split"
COLUMNS = ("day", "model", "cluster", "region", "split_cost", "unused_cost")



def split_cost_query(database: str, table: str, start: str, end: str, clusters: list[str]) -> str:
    """Trino SQL: the pods' cost per day, ``model`` tag, cluster and region over ``[start, end)``.

    Only pod lines (a ``split_line_item_parent_resource_id`` and a pod ARN) of the serving clusters;
    ``element_at`` so a line without the tag gives NULL instead of failing the query.
    """
    if not clusters:
        raise ValueError("no serving cluster to report on")
    tags = "resource_tags"
    return (
        "SELECT date_format(line_item_usage_start_date, '%Y-%m-%d') AS day,\n"
        f"       element_at({tags}, {literal(MODEL_TAG)}) AS model,\n"
        f"       element_at({tags}, {literal(CLUSTER_TAG)}) AS cluster,\n"
        "       product_region_code AS region,\n"
        "       sum(split_line_item_split_cost) AS split_cost,\n"
        "       sum(coalesce(split_line_item_unused_cost, 0)) AS unused_cost\n"
        f"FROM {identifier(database)}.{identifier(table)}\n"
        f"WHERE line_item_usage_start_date >= TIMESTAMP {literal(start + ' 00:00:00')}\n"
        f"  AND line_item_usage_start_date < TIMESTAMP {literal(end + ' 00:00:00')}\n"
        "  AND split_line_item_parent_resource_id IS NOT NULL\n"
        "  AND line_item_resource_id LIKE 'arn:aws:eks:%:pod/%'\n"
        f"  AND element_at({tags}, {literal(CLUSTER_TAG)}) IN ({', '.join(literal(c) for c in clusters)})\n"
        "GROUP BY 1, 2, 3, 4\n"
        "ORDER BY 1, 2, 3, 4"
    )


def parse_result(rows: list[list[str | None]], models: list[str]) -> list[dict[str, Any]]:
    """Rows ``{day, model, cluster, region, split_usd, unused_usd, total_usd}`` of the query's result
    (the header row first, as ``GetQueryResults`` returns it). A pod without the ``model`` tag, or
    with a value no spec has, is ``(unallocated)``."""
    if not rows:
        return []
    header = [str(h) for h in rows[0]]
    if tuple(header) != COLUMNS:
        raise ValueError(f"split cost query returned columns {header}, expected {list(COLUMNS)}")
    known = set(models)
    out = []
    for values in rows[1:]:
        rec = dict(zip(COLUMNS, values))
        split, unused = float(rec["split_cost"] or 0.0), float(rec["unused_cost"] or 0.0)
        model = rec["model"] if rec["model"] in known else UNALLOCATED
        out.append({"day": rec["day"], "model": model, "cluster": rec["cluster"] or "", "region": rec["region"] or "",
                    "split_usd": split, "unused_usd": unused, "total_usd": split + unused})
    return out


def attribute(ce: dict[str, Any], split_rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The Cost Explorer result with each model's pod cost moved out of unallocated serving cost.

    Per day and region: ``+cost`` serving rows for the model and the same ``-cost`` on
    ``(unallocated)``, so every total stays Cost Explorer's. When the pods of a day cost more than
    Cost Explorer's unallocated EKS cost (the CUR and Cost Explorer refresh at different times) the
    day is attributed in proportion, never beyond the bill, and a warning says so.

    :return: ``(ce, warnings)``; ``ce`` is a new dict (``rows`` extended), the input is not changed.
    """
    warnings: list[str] = []
    eks_unallocated: dict[str, float] = defaultdict(float)
    estimated: dict[str, bool] = {}
    for row in ce["rows"]:
        if row["source"] == "eks" and row["model"] == UNALLOCATED:
            eks_unallocated[row["day"]] += row["unblended"]
            estimated[row["day"]] = estimated.get(row["day"], False) or row["estimated"]
    per_day: dict[str, dict[tuple[str, str], float]] = defaultdict(lambda: defaultdict(float))
    for r in split_rows:
        if r["model"] != UNALLOCATED and r["total_usd"]:
            per_day[r["day"]][(r["model"], r["region"])] += r["total_usd"]
    extra = []
    for day, shares in sorted(per_day.items()):
        available = eks_unallocated.get(day, 0.0)
        wanted = sum(shares.values())
        if available <= 0:
            warnings.append(f"{day}: split cost allocation data has ${wanted:,.2f} of model pods' cost, Cost "
                            "Explorer no unallocated EKS cost: not attributed.")
            continue
        scale = 1.0
        if wanted > available + 0.005:
            scale = available / wanted
            warnings.append(f"{day}: model pods cost ${wanted:,.2f} in split cost allocation data, more than the "
                            f"${available:,.2f} Cost Explorer reports for the serving clusters; attributed in "
                            "proportion.")
        for (model, region), usd in sorted(shares.items()):
            amount = usd * scale
            for who, sign in ((model, 1.0), (UNALLOCATED, -1.0)):
                extra.append({"day": day, "source": SOURCE, "model": who, "category": "serving", "usage_type": "",
                              "region": region, "unblended": sign * amount, "amortized": sign * amount,
                              "estimated": estimated.get(day, False)})
    return {**ce, "rows": [*ce["rows"], *extra]}, warnings


def window(day: date, days: int) -> tuple[str, str]:
    """``[start, end)`` of the ``days`` days ending with ``day``."""
    return (day - timedelta(days=days - 1)).isoformat(), (day + timedelta(days=1)).isoformat()
