"""Network: a VPC with private subnets and the endpoints that keep AWS API traffic off the internet."""

from __future__ import annotations

from aws_cdk import Fn, Stack
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from .config import Config

#: Interface endpoints (service name suffixes) the DAGs, training jobs and MWAA reach privately.
INTERFACE_ENDPOINTS = {
    "SageMakerApi": "sagemaker.api",
    "SageMakerRuntime": "sagemaker.runtime",
    "EcrApi": "ecr.api",
    "EcrDocker": "ecr.dkr",
    "CloudWatchLogs": "logs",
    "CloudWatchMonitoring": "monitoring",
    "Sts": "sts",
}


class NetworkStack(Stack):
    """Two AZs of private subnets (egress through one NAT gateway for the APIs without an endpoint here:
    Cost Explorer, EKS, Athena), an S3 gateway endpoint and the interface endpoints above."""

    @property
    def availability_zones(self) -> list[str]:
        """The region's first two AZs, resolved by CloudFormation (``Fn::GetAZs``): no account lookup at synth."""
        return [Fn.select(i, Fn.get_azs()) for i in range(2)]

    def __init__(self, scope: Construct, construct_id: str, *, config: Config, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.vpc = ec2.Vpc(
            self, "Vpc", ip_addresses=ec2.IpAddresses.cidr(config["vpc_cidr"]), max_azs=2, nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                                        cidr_mask=20),
            ])
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[private])
        self.endpoint_sg = ec2.SecurityGroup(self, "EndpointsSg", vpc=self.vpc, allow_all_outbound=False,
                                             description="Interface endpoints: HTTPS from the VPC")
        self.endpoint_sg.add_ingress_rule(ec2.Peer.ipv4(self.vpc.vpc_cidr_block), ec2.Port.tcp(443))
        for name, service in INTERFACE_ENDPOINTS.items():
            self.vpc.add_interface_endpoint(
                name, service=ec2.InterfaceVpcEndpointAwsService(service),
                subnets=private, security_groups=[self.endpoint_sg], private_dns_enabled=True)
        self.private_subnets = self.vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
