"""Entry point: ``python -m predictor --model-name NAME --model-uri ... --model-version ...``.

Run from ``include/serving`` (the image's working directory). KServe's ``model_server.parser`` is the
argparse parent, so its options (``--max_threads``, ``--grpc_max_receive_message_length``, ...) work too.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys

from kserve import model_server

from .capture import CaptureWriter, S3Sink
from .model import TabularModel
from .runtime import DEVICES
from .sagemaker import serve_argv
from .server import InferenceFront, PredictorServer

logger = logging.getLogger("kserve.predictor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m predictor", parents=[model_server.parser],
        description="KServe predictor for the project's tabular ONNX models.",
    )
    parser.add_argument("--model-name", dest="model_name", required=True,
                        help="Name on the endpoint paths (/v2/models/<name>/infer).")
    parser.add_argument("--id-column", default=None,
                        help="The optional per-row id input (the spec's schema.id) when input_schema.json names none.")
    parser.add_argument("--model-uri", required=True,
                        help="The artifact: a directory, a model.tar.gz, or s3://bucket/key (AWS_ENDPOINT_URL honoured).")
    parser.add_argument("--model-version", default="1", help="Version reported in responses and capture records.")
    parser.add_argument("--http-port", dest="http_port", type=int, default=model_server.args.http_port)
    parser.add_argument("--grpc-port", dest="grpc_port", type=int, default=model_server.args.grpc_port)
    parser.add_argument("--capture-bucket", default=None,
                        help="Bucket for request capture (capture/<model>/<yyyy>/<mm>/<dd>/<hh>/...); none: no capture.")
    parser.add_argument("--capture-flush-seconds", type=float, default=30.0,
                        help="Longest a captured request waits in memory before it is written.")
    parser.add_argument("--capture-max-rows", type=int, default=100_000,
                        help="Rows buffered before capture writes early.")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="onnxruntime device: auto uses CUDA when onnxruntime-gpu finds a GPU.")
    parser.add_argument("--intra-op-threads", type=int, default=1, help="onnxruntime intra-op threads.")
    parser.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024,
                        help="Larger request bodies get 413.")
    parser.add_argument("--max-rows", type=int, default=100_000, help="The most rows one request may carry.")
    parser.add_argument("--access-log", action="store_true",
                        help="Log every request (uvicorn access log and KServe latency lines); off for speed.")
    # the parent's --model_name/--http_port/--grpc_port share these dests; one default for both spellings
    parser.set_defaults(http_port=model_server.args.http_port,
                        grpc_port=model_server.args.grpc_port)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # SageMaker runs the image as `<image> serve`: options from the environment
        argv = serve_argv() + argv[1:]
    args = build_parser().parse_args(argv)
    capture = None
    if args.capture_bucket:
        capture = CaptureWriter(
            S3Sink(args.capture_bucket), args.model_name, args.model_version,
            flush_seconds=args.capture_flush_seconds, max_rows=args.capture_max_rows,
        )
    model = TabularModel(
        args.model_name, args.model_uri, version=args.model_version, device=args.device,
        intra_op_threads=args.intra_op_threads, max_rows=args.max_rows, capture=capture, id_column=args.id_column,
    )
    server = PredictorServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        max_threads=args.max_threads,
        enable_grpc=args.enable_grpc,
        enable_latency_logging=args.access_log,
        event_loop=args.event_loop,
        front=lambda app: InferenceFront(app, model, args.max_body_bytes),
        access_log=args.access_log,
        grpc_options=vars(args),
    )
    model.load()
    if capture is not None:
        capture.start()
    # Everything loaded so far (kserve, fastapi, onnxruntime, the model) lives for the whole process:
    # keep it out of the cyclic collector so full collections stay short and do not show up in p99.
    gc.collect()
    gc.freeze()
    server.start([model])


if __name__ == "__main__":
    main()
