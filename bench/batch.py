"""Batch scoring vs the online path: rows/s of the local Batch Transform next to the front door.

    .venv/bin/python bench/batch.py [--rows 50000] [--single 2000] [--batch-rows 1000]

One moto server, one model version (the stand-in MLP with the training contract, ``model.tar.gz`` in
S3), one run:

- batch: :func:`hybrid_mlops.local.batch.run_transform_job` over ``--rows`` JSON lines in 4 objects
  (the ``CreateTransformJob`` request the ``batch_score`` DAG builds: MultiRecord calls of at most
  ``MaxPayloadInMB``, ids joined), rows/s of the scoring, and with the predictor's start included;
- online, through the local front door (the deployed version): ``--single`` single-row v2 requests
  one after another, and ``--batch-rows``-row v2 requests over ``--rows`` rows.

Everything runs over loopback on this machine; the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "tests")]

MODEL = "fraud-detection"
BUCKET = "hybrid-mlops-bench"
FEATURES = ("amount", "avg_amount_30d", "hour", "distance_km", "txn_count_24h", "account_age_days", "card_present",
            "merchant_category", "channel", "country")


def _post(url: str, body: bytes) -> dict:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _v2(cols: dict, lo: int, hi: int) -> bytes:
    from hybrid_mlops.serving import smoke
    from serving_helpers import fraud_smoke_sample

    sample = {"schema": fraud_smoke_sample(1)["schema"], "rows": {f: cols[f][lo:hi].tolist() for f in FEATURES}}
    return json.dumps(smoke.v2_request(sample)).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--single", type=int, default=2_000, help="single-row online requests")
    parser.add_argument("--batch-rows", type=int, default=1_000, help="rows per batched online request")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        os.environ.update(HYBRID_MLOPS_TARGET="local", HYBRID_MLOPS_BUCKET=BUCKET, HYBRID_MLOPS_LOCAL_DIR=tmp,
                          AWS_DEFAULT_REGION="us-west-2")
        import boto3

        from hybrid_mlops.data.generator import generate
        from hybrid_mlops.local.batch import run_transform_job
        from hybrid_mlops.local.moto import MotoServer
        from hybrid_mlops.local.serving import LocalServing, free_port, s3_fetch
        from hybrid_mlops.serving import sagemaker as s
        from serving_helpers import build_standin_model, make_tarball

        model_dir = build_standin_model(ROOT / "bench" / "out" / "standin-model")
        with MotoServer(log_path=Path(tmp) / "moto.log") as moto:
            moto.apply_environ()
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
            s3.upload_file(str(make_tarball(model_dir, Path(tmp) / "model.tar.gz")), BUCKET, "models/m/model.tar.gz")
            uri = f"s3://{BUCKET}/models/m/model.tar.gz"
            cols = generate(args.rows, seed=3)
            parts = 4
            for p in range(parts):
                lo, hi = p * args.rows // parts, (p + 1) * args.rows // parts
                lines = [json.dumps({"transaction_id": str(cols["transaction_id"][i]),
                                     **{f: (cols[f][i].item() if hasattr(cols[f][i], "item") else cols[f][i])
                                        for f in FEATURES}}) for i in range(lo, hi)]
                s3.put_object(Bucket=BUCKET, Key=f"to-score/part-{p}.jsonl", Body="\n".join(lines).encode())

            model = s.model_request("fraud-detection-v1-batch", image="local", model_data_url=uri,
                                    role_arn="arn:aws:iam::123456789012:role/x", model=MODEL, version=1,
                                    id_column="transaction_id", capture_bucket=None, cost_tags={})
            transform = s.transform_request("bench", "fraud-detection-v1-batch", input_uri=f"s3://{BUCKET}/to-score/",
                                            output_uri=f"s3://{BUCKET}/scores/", content_type=s.JSONLINES,
                                            instance_type="ml.m5.xlarge", instance_count=1, max_payload_mb=6,
                                            cost_tags={})
            started = time.perf_counter()
            figures = run_transform_job(model, transform, s3, fetch=s3_fetch(), log=lambda *_: None)
            batch_total = time.perf_counter() - started

            serving = LocalServing(MODEL, state_dir=Path(tmp) / "online", port=free_port(), drain_seconds=0)
            try:
                serving.deploy(1, uri, fetch=s3_fetch())
                url = f"{serving.url}/v2/models/{MODEL}/infer"
                bodies = [_v2(cols, i, i + 1) for i in range(min(args.single, args.rows))]
                t0 = time.perf_counter()
                for body in bodies:
                    _post(url, body)
                single = len(bodies) / (time.perf_counter() - t0)
                batches = [_v2(cols, lo, min(lo + args.batch_rows, args.rows)) for lo in range(0, args.rows, args.batch_rows)]
                t0 = time.perf_counter()
                for body in batches:
                    _post(url, body)
                batched = args.rows / (time.perf_counter() - t0)
            finally:
                serving.stop()

    print(f"\nfraud-detection stand-in model, {args.rows} rows, one predictor process, loopback "
          f"(load average {os.getloadavg()[0]:.2f})\n")
    print(f"{'path':58s} {'rows/s':>10s}")
    print(f"{'batch: local Batch Transform, JSON lines, MultiRecord (scoring)':58s} {figures['records_per_second']:10,.0f}")
    print(f"{'batch: the same, predictor start included':58s} {args.rows / batch_total:10,.0f}")
    print(f"{'online: front door, v2, 1 row per request (sequential)':58s} {single:10,.0f}")
    print(f"{'online: front door, v2, %d rows per request' % args.batch_rows:58s} {batched:10,.0f}")


if __name__ == "__main__":
    main()
