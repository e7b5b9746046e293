"""Model artifacts in S3: read members of ``model.tar.gz`` without unpacking it to disk."""

from __future__ import annotations

import io
import tarfile

from airflow.providers.amazon.aws.hooks.s3 import S3Hook


class ModelArtifactHook(S3Hook):
    """Reads files out of a SageMaker ``model.tar.gz`` in S3.

    .. seealso::
        https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-output.html
    """

    hook_name = "Hybrid MLOps model artifacts"

    def read_members(self, uri: str, names: list[str]) -> dict[str, bytes]:
        """The named members of the tarball at ``uri``; a clear error names any that are absent."""
        bucket, key = self.parse_s3_url(uri)
        body = self.get_key(key, bucket).get()["Body"].read()
        found: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix("./")
                if name in names and member.isfile():
                    found[name] = tar.extractfile(member).read()
        missing = sorted(set(names) - set(found))
        if missing:
            raise FileNotFoundError(f"{uri} lacks {missing}; it holds {sorted(m.name for m in tar.getmembers())}")
        return found

    def artifact_exists(self, uri: str) -> bool:
        bucket, key = self.parse_s3_url(uri)
        return self.check_for_key(key, bucket)



SMOKE_SAMPLE = "smoke_sample.json"


def smoke_sample_uri(storage_uri: str) -> str:
    """``smoke_sample.json`` beside ``model.tar.gz``: written at evaluation, read at every deploy."""
    return f"{storage_uri.rsplit('/', 1)[0]}/{SMOKE_SAMPLE}"


def read_smoke_sample(storage_uri: str, aws_conn_id: str | None = None) -> dict:
    """The smoke-test sample of a version: its ``input_schema.json`` and rows of its own validation data."""
    import json

    hook = ModelArtifactHook(aws_conn_id=aws_conn_id)
    bucket, key = hook.parse_s3_url(smoke_sample_uri(storage_uri))
    if not hook.check_for_key(key, bucket):
        raise FileNotFoundError(f"{smoke_sample_uri(storage_uri)} is missing: the version was not evaluated by "
                                "retrain_<model>'s evaluate step, so there is nothing to smoke-test it with")
    return json.loads(hook.read_key(key, bucket))
