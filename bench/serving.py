"""Serving benchmark: the project predictor against a plain ``kserve.Model`` on the same ONNX model.

    .venv/bin/python bench/serving.py [--seconds 8] [--model-dir DIR] [--check]

Starts a moto server (capture target), the predictor (``python -m predictor`` with capture on) and
``bench/plain_kserve_model.py`` as subprocesses, drives both with ``wrk`` over loopback for a bounded
time per scenario, and prints a table with the predictor/plain ratio. Bodies are generated
transactions (``hybrid_mlops.data.generator``), rotated per request. Scenarios:

- v2 REST single row, JSON, 1 connection (bar: >= 1,000 req/s and p99 <= 10 ms) and 4 connections;
- v2 REST 1,000-row JSON batches;
- v2 REST 10,000-row batches in the binary tensor extension (bar: >= 200,000 rows/s);
- v1 REST single row (predictor only: the plain model speaks v2).

Without ``--model-dir`` it exports a stand-in MLP with the training contract (``model.onnx`` +
``input_schema.json``); pass ``--model-dir`` to bench an extracted ``model.tar.gz`` from training.
p99 on a shared 2-core box moves with whatever else runs: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "tests")]


from hybrid_mlops.data.generator import generate  # noqa: E402
from hybrid_mlops.local.moto import MotoServer  # noqa: E402
from serving_helpers import (  # noqa: E402
    SERVE_PYTHON,
    PredictorProcess,
    build_standin_model,
    v1_json,
    v2_binary,
    v2_json,
)

OUT = ROOT / "bench" / "out"
MODEL = "fraud-detection"
BUCKET = "hybrid-mlops-bench"

LUA = r"""
local bodies = {}
local headers = {}
init = function(args)
  local f = io.open(args[1], "rb")
  local data = f:read("*a")
  f:close()
  -- file: repeated [4-byte big-endian json length][4-byte big-endian total length][body]
  local function u32(p)
    local a, b, c, d = string.byte(data, p, p + 3)
    return ((a * 256 + b) * 256 + c) * 256 + d
  end
  local pos = 1
  while pos <= #data do
    local jl = u32(pos)
    local tl = u32(pos + 4)
    local body = string.sub(data, pos + 8, pos + 7 + tl)
    local h = {["Content-Type"] = args[2]}
    if args[2] == "application/octet-stream" then h["Inference-Header-Content-Length"] = tostring(jl) end
    table.insert(bodies, wrk.format("POST", wrk.path, h, body))
    pos = pos + 8 + tl
  end
  idx = 0
end
request = function()
  idx = idx % #bodies + 1
  return bodies[idx]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "\nRESULT {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, \"errors\": %d, \"status_errors\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def _write_bodies(path: Path, bodies: list[tuple[bytes, int]]) -> Path:
    with open(path, "wb") as f:
        for body, json_len in bodies:
            f.write(struct.pack(">II", json_len, len(body)))
            f.write(body)
    return path


def build_bodies(workdir: Path) -> dict[str, tuple[Path, str, int]]:
    """scenario body files: name -> (file, content type, rows per request)."""
    cols = generate(20_000, seed=11)
    single = [(v2_json(cols, i, i + 1), 0) for i in range(200)]
    v1 = [(v1_json(cols, i, i + 1), 0) for i in range(200)]
    batch_json = [(v2_json(cols, i * 1000, (i + 1) * 1000), 0) for i in range(8)]
    batch_bin = [v2_binary(cols, 0, 10_000), v2_binary(cols, 10_000, 20_000)]
    return {
        "single": (_write_bodies(workdir / "single.bin", single), "application/json", 1),
        "v1": (_write_bodies(workdir / "v1.bin", v1), "application/json", 1),
        "json1000": (_write_bodies(workdir / "json1000.bin", batch_json), "application/json", 1000),
        "bin10000": (_write_bodies(workdir / "bin10000.bin", batch_bin), "application/octet-stream", 10_000),
    }


def run_wrk(url: str, lua: Path, bodies: Path, ctype: str, connections: int, seconds: float) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s", "-s", str(lua), url, "--",
           str(bodies), ctype]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"wrk gave no result: {proc.stdout}\n{proc.stderr}")


def start_plain(model_dir: Path, log: Path) -> PredictorProcess:
    """The plain server with the same readiness wait (its CLI is KServe's own underscore options)."""
    proc = PredictorProcess(model_dir, log_path=log)
    proc.command = lambda: [  # type: ignore[method-assign]
        str(SERVE_PYTHON), str(ROOT / "bench" / "plain_kserve_model.py"), "--model_name", MODEL,
        "--model_dir", str(model_dir), "--http_port", str(proc.http_port), "--grpc_port", str(proc.grpc_port),
    ]
    return proc.start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per scenario")
    parser.add_argument("--model-dir", type=Path, default=None, help="extracted model artifact")
    parser.add_argument("--no-capture", action="store_true", help="run the predictor without request capture")
    parser.add_argument("--check", action="store_true", help="exit 1 when a speed bar is missed")
    args = parser.parse_args()

    load_before = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "serving"  # bodies, wrk script and the servers' logs of the last run
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    model_dir = (args.model_dir or build_standin_model(OUT / "standin-model")).resolve()
    lua = work / "bench.lua"
    lua.write_text(LUA)
    bodies = build_bodies(work)

    moto = MotoServer(log_path=work / "moto.log").start()
    # moto stands in for S3, which is off the box in production: at the lowest CPU priority it
    # still stores every capture file but does not take the predictor's cores while it does
    os.setpriority(os.PRIO_PROCESS, moto._proc.pid, 19)
    env = moto.environ()
    import boto3

    boto3.client("s3", endpoint_url=moto.url, region_name="us-west-2", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    capture = [] if args.no_capture else ["--capture-bucket", BUCKET, "--capture-flush-seconds", "5"]
    predictor = PredictorProcess(model_dir, env=env, args=capture, log_path=work / "predictor.log")
    plain = None
    rows = []
    try:
        predictor.start()
        plain = start_plain(model_dir, work / "plain.log")
        servers = {"predictor": predictor, "plain kserve.Model": plain}
        scenarios = [
            ("v2 REST 1 row JSON", "single", 1, ("predictor", "plain kserve.Model"), "v2"),
            ("v2 REST 1 row JSON", "single", 4, ("predictor", "plain kserve.Model"), "v2"),
            ("v1 REST 1 row JSON", "v1", 1, ("predictor",), "v1"),
            ("v2 REST 1,000-row JSON", "json1000", 2, ("predictor", "plain kserve.Model"), "v2"),
            ("v2 REST 10,000-row binary", "bin10000", 2, ("predictor", "plain kserve.Model"), "v2"),
        ]
        for label, key, conns, names, proto in scenarios:
            body_file, ctype, n_rows = bodies[key]
            for name in names:
                srv = servers[name]
                url = (f"{srv.url}/v2/models/{MODEL}/infer" if proto == "v2"
                       else f"{srv.url}/v1/models/{MODEL}:predict")
                run_wrk(url, lua, body_file, ctype, conns, 1)  # warm-up
                r = run_wrk(url, lua, body_file, ctype, conns, args.seconds)
                rps = r["requests"] / (r["duration_us"] / 1e6)
                rows.append({"scenario": label, "conns": conns, "server": name, "req_s": rps,
                             "rows_s": rps * n_rows, "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
                             "errors": r["errors"] + r["status_errors"]})
        time.sleep(0.5)
    finally:
        predictor.stop()
        if plain is not None:
            plain.stop()
        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-west-2", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="capture/")
                for o in p.get("Contents", [])]
        captured = sum(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read().count(b"\n") for k in keys)
        moto.stop()

    print()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Serving benchmark: {os.cpu_count()} CPUs (load average {load_before} before, {load} after), "
          f"wrk 1 thread, {args.seconds:g}s per run, model {model_dir}")
    print(f"predictor: python -m predictor, capture {'off' if args.no_capture else 'on (moto S3 at nice 19, 5 s flush)'}; "
          "plain: bench/plain_kserve_model.py on kserve.ModelServer defaults")
    header = f"{'scenario':<28}{'conns':>6}  {'server':<20}{'req/s':>10}{'rows/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    base = {(r["scenario"], r["conns"]): r for r in rows if r["server"] != "predictor"}
    for r in rows:
        ratio = ""
        if r["server"] == "predictor" and (r["scenario"], r["conns"]) in base:
            ratio = f"{r['rows_s'] / base[(r['scenario'], r['conns'])]['rows_s']:.1f}x"
        print(f"{r['scenario']:<28}{r['conns']:>6}  {r['server']:<20}{r['req_s']:>10,.0f}{r['rows_s']:>12,.0f}"
              f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}{ratio:>8}")
    print(f"capture: {len(keys)} files, {captured:,} request records in s3://{BUCKET}/capture/")

    mine = [r for r in rows if r["server"] == "predictor"]
    single = [r for r in mine if r["scenario"] == "v2 REST 1 row JSON" and r["conns"] == 1]
    best_batch = max(r["rows_s"] for r in mine if "row" in r["scenario"] and "1 row" not in r["scenario"])
    bars = [
        ("single-row v2 REST >= 1,000 req/s (1 connection)", all(r["req_s"] >= 1000 for r in single)),
        ("single-row v2 REST p99 <= 10 ms (1 connection)", all(r["p99_ms"] <= 10 for r in single)),
        ("batched >= 200,000 rows/s", best_batch >= 200_000),
        ("no errors", all(r["errors"] == 0 for r in mine)),
    ]
    for text, ok in bars:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    return 0 if (all(ok for _, ok in bars) or not args.check) else 1


if __name__ == "__main__":
    sys.exit(main())
