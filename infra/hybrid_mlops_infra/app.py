"""Wires the stacks from one config: keys/IAM, network, per-region replicas and access, MLOps, inference."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk

from .config import load_config
from .inference import InferenceStack
from .keys_iam import KeysIamStack
from .mlops import MlopsStack, RegionalStack
from .network import NetworkStack

INFRA = Path(__file__).resolve().parents[1]


def build(app: cdk.App, config_path: str | Path) -> dict[str, cdk.Stack]:
    # Exports between the primary stacks stay strong (a consumer protects its producer), said explicitly.
    app.node.set_context("@aws-cdk/core:defaultCrossStackReferences", "strong")
    path = Path(config_path)
    c = load_config(path if path.is_absolute() else INFRA / path)
    prefix, account = c["prefix"], c["account"]

    def env(region: str) -> cdk.Environment:
        return cdk.Environment(account=account, region=region)

    stacks: dict[str, cdk.Stack] = {}
    keys = stacks["keys-iam"] = KeysIamStack(app, f"{prefix}-keys-iam", config=c, env=env(c.primary))
    network = stacks["network"] = NetworkStack(app, f"{prefix}-network", config=c, env=env(c.primary))
    mlops = stacks["mlops"] = MlopsStack(
        app, f"{prefix}-mlops", config=c, key=keys.artifacts_key, mwaa_role=keys.mwaa_role,
        replication_role=keys.replication_role, vpc=network.vpc, subnets=network.private_subnets,
        env=env(c.primary))
    for region in c.serving_regions:
        if region != c.primary:
            regional = stacks[f"mlops-{region}"] = RegionalStack(app, f"{prefix}-mlops-{region}", config=c,
                                                                 env=env(region))
            regional.add_stack_dependency(keys)  # its key policy names the replication role
            mlops.add_stack_dependency(regional)  # replication needs the replica buckets
    stacks["inference"] = InferenceStack(app, f"{prefix}-inference", config=c, env=env(c.primary))
    for stack in stacks.values():
        cdk.Tags.of(stack).add("project", prefix)
    return stacks
