"""One synth per session (jsii starts a Node process: seconds), into a temporary cdk.out."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(INFRA), str(INFRA.parent / "plugins")]
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """``(config, {stack key: Template}, cdk.out path)`` of the reference config."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from hybrid_mlops_infra.app import build
    from hybrid_mlops_infra.config import load_config

    out = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(outdir=str(out))
    stacks = build(app, INFRA / "config" / "reference.json")
    app.synth()
    return load_config(INFRA / "config" / "reference.json"), {k: Template.from_stack(s) for k, s in stacks.items()}, out
