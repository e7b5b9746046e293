"""The ``local`` target's Batch Transform: the job's own request, scored by the project's predictor.

:func:`run_transform_job` reads everything from the ``CreateModel`` / ``CreateTransformJob`` pair the
``aws`` target sends (model data, the predictor's environment, input prefix, content type, payload
limit, the DataProcessing filters, output path), starts a predictor for the version on 127.0.0.1
(:meth:`~hybrid_mlops.local.serving.LocalServing.standalone`), and does what Batch Transform does
with ``SplitType: Line``, ``BatchStrategy: MultiRecord`` and ``JoinSource: Input``: each input
object's lines go to ``POST /invocations`` in calls of at most ``MaxPayloadInMB``, and each output
line is joined to its input line, into ``<S3OutputPath>/<input key relative to the prefix>.out``.

CSV: ``InputFilter: $[1:]`` drops the first column (the id) from what the predictor gets; JSON lines:
the whole record goes (the predictor ignores the id), and the output is the record with
``SageMakerOutput`` added.
"""

from __future__ import annotations

import csv
import io
import time
import urllib.error
import urllib.request

from hybrid_mlops.layout import split_s3_uri
from hybrid_mlops.serving import sagemaker as s


def input_keys(s3, uri: str) -> list[str]:
    """Object keys under an ``S3Prefix`` data source (SageMaker's prefix match, folders left out)."""
    bucket, prefix = split_s3_uri(uri)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/") and o["Size"] > 0]
    return sorted(keys)


def output_key(input_uri: str, key: str, output_uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of an input object's output: ``<S3OutputPath>/<key relative to the prefix>.out``."""
    _, prefix = split_s3_uri(input_uri)
    relative = key[len(prefix):].lstrip("/") if key != prefix else key.rsplit("/", 1)[-1]
    out_bucket, out_prefix = split_s3_uri(output_uri)
    return out_bucket, f"{out_prefix.rstrip('/')}/{relative}.out".lstrip("/")


def outputs_complete(s3, transform: dict) -> bool:
    """Every input object of the job has its ``.out`` object (a rerun reuses the job)."""
    source = transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    out = transform["TransformOutput"]["S3OutputPath"]
    from botocore.exceptions import ClientError

    for key in input_keys(s3, source):
        bucket, okey = output_key(source, key, out)
        try:
            s3.head_object(Bucket=bucket, Key=okey)
        except ClientError:
            return False
    return True


def _filtered(content_type: str, line: bytes, processing: dict) -> bytes:
    if content_type == s.CSV and processing.get("InputFilter") == "$[1:]":
        row = next(csv.reader([line.decode("utf-8")]))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(row[1:])
        return buf.getvalue().encode()
    return line


def _post(url: str, body: bytes, content_type: str, timeout: float) -> bytes:
    req = urllib.request.Request(f"{url}/invocations", data=body, method="POST",
                                 headers={"Content-Type": content_type, "Accept": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"POST /invocations -> {err.code}: {err.read()[:500].decode(errors='replace')}") from None


def score_lines(url: str, lines: list[bytes], *, content_type: str, processing: dict, max_payload_bytes: int,
                timeout: float = 600.0) -> list[bytes]:
    """``lines`` scored in MultiRecord calls of at most ``max_payload_bytes``; the joined output lines."""
    out: list[bytes] = []
    start = 0
    while start < len(lines):
        batch, size = [], 0
        while start + len(batch) < len(lines):
            line = lines[start + len(batch)]
            sent = _filtered(content_type, line, processing)
            if batch and size + len(sent) + 1 > max_payload_bytes:
                break
            batch.append(sent)
            size += len(sent) + 1
        answer = [a for a in _post(url, b"\n".join(batch) + b"\n", content_type, timeout).splitlines() if a.strip()]
        if len(answer) != len(batch):
            raise RuntimeError(f"the predictor answered {len(answer)} lines for {len(batch)} records")
        for i, result in enumerate(answer):
            line = lines[start + i]
            out.append(s.join_output(content_type, line, result) if processing.get("JoinSource") == "Input" else result)
        start += len(batch)
    return out


def run_transform_job(model: dict, transform: dict, s3, *, fetch, state_dir=None, python=None,
                      serving_dir=None, ready_timeout: float = 120.0, log=print) -> dict:
    """Score the job's input prefix with the job's model, as Batch Transform would; returns figures.

    :param model: the ``CreateModel`` request (or DescribeModel answer) of the job's ``ModelName``.
    :param transform: the ``CreateTransformJob`` request.
    :param s3: an S3 client (the moto server on ``local``).
    :param fetch: ``fetch(s3_uri, path)`` for the model data.
    """
    from hybrid_mlops import settings
    from hybrid_mlops.local.serving import LocalServing

    container = model["PrimaryContainer"]
    env = container.get("Environment") or {}
    name, version = env["HYBRID_MLOPS_MODEL_NAME"], int(env.get("HYBRID_MLOPS_MODEL_VERSION", "1"))
    content_type = transform["TransformInput"]["ContentType"]
    processing = transform.get("DataProcessing") or {}
    source = transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    output = transform["TransformOutput"]["S3OutputPath"]
    max_payload = int(transform.get("MaxPayloadInMB", 6)) * 1024 * 1024
    serving = LocalServing(name, state_dir=state_dir or settings.local_state_dir() / "batch" / name, python=python,
                           serving_dir=serving_dir, ready_timeout=ready_timeout, id_column=env.get("HYBRID_MLOPS_ID_COLUMN"))
    keys = input_keys(s3, source)
    if not keys:
        raise ValueError(f"input_uri={source}: no objects under that prefix")
    records, started = 0, time.perf_counter()
    with serving.standalone(version, container["ModelDataUrl"], fetch=fetch) as url:
        log(f"Predictor for {name} version {version} at {url}: scoring {len(keys)} object(s) under {source}")
        scoring = time.perf_counter()
        for key in keys:
            bucket, _ = split_s3_uri(source)
            lines = [line for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines() if line.strip()]
            joined = score_lines(url, lines, content_type=content_type, processing=processing, max_payload_bytes=max_payload)
            out_bucket, out_key = output_key(source, key, output)
            s3.put_object(Bucket=out_bucket, Key=out_key, Body=b"\n".join(joined) + b"\n", ContentType=content_type)
            records += len(lines)
            log(f"s3://{bucket}/{key}: {len(lines)} records -> s3://{out_bucket}/{out_key}")
        seconds = time.perf_counter() - scoring
    return {"objects": len(keys), "records": records, "output_uri": output, "scoring_seconds": round(seconds, 3),
            "records_per_second": round(records / seconds, 1) if seconds else None,
            "total_seconds": round(time.perf_counter() - started, 3)}
