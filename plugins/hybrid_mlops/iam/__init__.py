"""The IAM policies of the deployment, in one place: the CDK app deploys them, the least-privilege test proves them."""
