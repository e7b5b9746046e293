"""The reference architecture as AWS CDK stacks: keys and IAM, network, MLOps, inference."""
