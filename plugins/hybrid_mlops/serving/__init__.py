"""Serving: InferenceService manifests for EKS/KServe and the smoke test both targets run."""
