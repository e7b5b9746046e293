"""The deployment's config (``infra/config/*.json``) and the model specs it serves, validated on load."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins"))  # the one policy source, shared with the least-privilege test

from hybrid_mlops.iam.policies import Deployment, ModelScope, Promotion  # noqa: E402

ACCOUNT = re.compile(r"^\d{12}$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
CONTINENTS = {"AF", "AN", "AS", "EU", "NA", "OC", "SA"}


class ConfigError(ValueError):
    """A config field is missing or wrong: the message names the file and the field."""


@dataclass(frozen=True)
class Config:
    path: Path
    raw: dict
    deployment: Deployment

    def __getitem__(self, key):
        return self.raw[key]

    @property
    def primary(self) -> str:
        return self.raw["primary_region"]

    @property
    def serving_regions(self) -> dict[str, dict]:
        return self.raw["serving_regions"]

    @property
    def mwaa_role_arn(self) -> str:
        return f"arn:aws:iam::{self['account']}:role/{self['mwaa_role']}"


def _models(models_dir: Path) -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted(models_dir.glob("*.y*ml"))]


def load_config(path: str | Path, models_dir: Path | None = None) -> Config:
    """Read and check the config; the model specs add their names, package groups and clusters."""
    path = Path(path)
    raw = json.loads(path.read_text())

    def need(key: str, pattern: re.Pattern | None = None, where: dict | None = None, name: str | None = None):
        scope = raw if where is None else where
        if key not in scope:
            raise ConfigError(f"{path}: {name or key} is missing")
        if pattern and not pattern.match(str(scope[key])):
            raise ConfigError(f"{path}: {name or key}={scope[key]!r} does not match {pattern.pattern}")
        return scope[key]

    need("account", ACCOUNT)
    primary = need("primary_region", REGION)
    regions = need("serving_regions")
    if not isinstance(regions, dict) or primary not in regions:
        raise ConfigError(f"{path}: serving_regions must be an object that includes primary_region {primary!r}")
    for region, serving in regions.items():
        if not REGION.match(region):
            raise ConfigError(f"{path}: serving_regions.{region}: not a region name")
        geo = need("geolocation", where=serving, name=f"serving_regions.{region}.geolocation")
        if set(geo) - {"continent", "country"} or len(geo) != 1:
            raise ConfigError(f"{path}: serving_regions.{region}.geolocation: one of continent or country")
        if "continent" in geo and geo["continent"] not in CONTINENTS:
            raise ConfigError(f"{path}: serving_regions.{region}.geolocation.continent={geo['continent']!r}: "
                              f"one of {sorted(CONTINENTS)}")
        need("ingress", where=serving, name=f"serving_regions.{region}.ingress")
    if not need("mwaa")["source_bucket"].startswith("airflow-"):
        raise ConfigError(f"{path}: mwaa.source_bucket must start with 'airflow-' (MWAA requires it)")
    for key in ("artifacts_bucket", "sagemaker_role", "mwaa_role", "athena", "cur", "dns", "vpc_cidr", "prefix"):
        need(key)

    specs = _models(models_dir or ROOT / "include" / "models")
    for spec in specs:
        extra = set(spec.get("serving", {}).get("regions", [primary])) - set(regions)
        if extra:
            raise ConfigError(f"{path}: serving_regions lacks {sorted(extra)}, where model {spec['name']!r} serves")
    clusters = sorted({(r, spec.get("serving", {}).get("cluster_name", "mlops-{region}").format(region=r))
                       for spec in specs for r in spec.get("serving", {}).get("regions", [primary])})
    deployment = Deployment(
        account=raw["account"], region=primary, bucket=raw["artifacts_bucket"],
        sagemaker_role_name=raw["sagemaker_role"],
        models=tuple(_scope(s, primary) for s in specs),
        clusters=tuple(clusters), athena_workgroups=tuple(raw["athena"]["workgroups"]),
        athena_database=raw["athena"]["database"], cur_database=raw["cur"]["database"],
        cur_table=raw["cur"]["table"], cur_bucket=raw["cur"]["bucket"],
        backup_bucket=(raw.get("backup") or {}).get("bucket"), backup_region=(raw.get("backup") or {}).get("region"))
    return Config(path=path, raw=raw, deployment=deployment)


def _scope(spec: dict, primary: str) -> ModelScope:
    """What a spec adds to the policies: its SageMaker endpoint's regions, the monitor's SHAP job, the
    external Model Monitor output it watches, its promotion."""
    serving, drift, group = spec.get("serving", {}), spec.get("drift") or {}, spec["registry"]["model_package_group"]
    p = spec.get("promotion")
    return ModelScope(
        spec["name"], group,
        endpoint_regions=tuple(serving.get("regions", [primary])) if serving.get("target") == "sagemaker" else (),
        window_attributions=drift.get("feature_attribution") is not None,
        external_report_prefix=drift.get("external_report_prefix"),
        promotion=Promotion(p["account_id"], p["region"], p["role_arn"], p["bucket"], p["kms_key_arn"],
                            p.get("model_package_group") or group) if p else None)
