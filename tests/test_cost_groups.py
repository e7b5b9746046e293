"""Cost Explorer groups read by the response's GroupDefinitions, on moto's Cost Explorer.

moto answers ``GetCostAndUsage`` from a queue of injected responses (``/moto-api/static/ce/...``): the
responses below are shaped as AWS documents them, with ``GroupDefinitions``.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from hybrid_mlops.cost import explorer

REQUEST = {
    "TimePeriod": {"Start": "2026-07-01", "End": "2026-07-02"}, "Granularity": "DAILY",
    "Metrics": ["UnblendedCost", "AmortizedCost"],
    "GroupBy": [{"Type": "TAG", "Key": "model"}, {"Type": "DIMENSION", "Key": "REGION"}],
}


def _money(usd):
    return {"UnblendedCost": {"Amount": str(usd), "Unit": "USD"}, "AmortizedCost": {"Amount": str(usd), "Unit": "USD"}}


def _pages(aws, definitions, groups):
    from hybrid_mlops.hooks.cost import CostExplorerHook

    page = {"GroupDefinitions": definitions, "DimensionValueAttributes": [],
            "ResultsByTime": [{"TimePeriod": REQUEST["TimePeriod"], "Total": {}, "Estimated": False,
                               "Groups": [{"Keys": k, "Metrics": _money(v)} for k, v in groups]}]}
    req = urllib.request.Request(aws.url + "/moto-api/static/ce/cost-and-usage-results",
                                 data=json.dumps({"results": [page]}).encode(), method="POST")
    urllib.request.urlopen(req).read()
    return CostExplorerHook(aws_conn_id="aws_default").get_cost_and_usage_pages(REQUEST, max_pages=2, name="eks")


def test_groups_follow_the_responses_definitions_not_the_requests_order(aws):
    # The response lists REGION first: by position, "us-west-2" would be read as the model tag.
    pages = _pages(aws, [{"Type": "DIMENSION", "Key": "REGION"}, {"Type": "TAG", "Key": "model"}],
                   [(["us-west-2", "model$fraud-detection"], 12.5), (["eu-west-1", "model$"], 2)])
    rows, _ = explorer.parse_pages("eks", REQUEST, pages)
    assert [(r["model"], r["region"], r["unblended"]) for r in rows] == [
        ("fraud-detection", "us-west-2", 12.5), ("(unallocated)", "eu-west-1", 2.0)]


def test_a_different_grouping_is_refused_not_misattributed(aws):
    pages = _pages(aws, [{"Type": "DIMENSION", "Key": "SERVICE"}, {"Type": "DIMENSION", "Key": "REGION"}],
                   [(["Amazon Elastic Compute Cloud - Compute", "us-west-2"], 40)])
    with pytest.raises(explorer.CostExplorerResultError, match="the request asked for"):
        explorer.parse_pages("eks", REQUEST, pages)


def test_a_tag_key_where_the_tag_should_be_is_checked():
    page = {"ResultsByTime": [{"TimePeriod": {"Start": "2026-07-01"},
                               "Groups": [{"Keys": ["us-west-2", "model$m"], "Metrics": _money(1)}]}]}
    with pytest.raises(explorer.CostExplorerResultError, match="not a 'model' tag value"):
        explorer.parse_pages("eks", REQUEST, [page])
