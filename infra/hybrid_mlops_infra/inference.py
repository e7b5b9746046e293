"""Inference: Route 53 geolocation records, one per serving region, in front of the regions' KServe ingress."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_route53 as route53
from constructs import Construct

from .config import Config


class InferenceStack(Stack):
    """``dns.record_name`` answers each caller with the ingress of its continent's (or country's) region;
    the primary region answers everyone else (Route 53's default location ``*``)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Config, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        dns = config["dns"]

        def record(set_id: str, location: dict, target: str) -> None:
            route53.CfnRecordSet(
                self, f"Geo-{set_id}", hosted_zone_id=dns["hosted_zone_id"], name=dns["record_name"],
                type="CNAME", ttl="60", set_identifier=set_id, resource_records=[target],
                geo_location=route53.CfnRecordSet.GeoLocationProperty(
                    continent_code=location.get("continent"), country_code=location.get("country")))

        for region, serving in config.serving_regions.items():
            record(region, serving["geolocation"], serving["ingress"])
        record("default", {"country": "*"}, config.serving_regions[config.primary]["ingress"])
