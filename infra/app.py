#!/usr/bin/env python3
"""The CDK app: ``cdk synth`` / ``cdk deploy --all`` from infra/ (config: ``-c config=config/<name>.json``)."""

from __future__ import annotations

import os

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")  # jsii's banner on Node 20
import aws_cdk as cdk  # noqa: E402

from hybrid_mlops_infra.app import build  # noqa: E402

app = cdk.App()
build(app, app.node.try_get_context("config") or "config/reference.json")
app.synth()
