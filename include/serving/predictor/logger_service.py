"""The logger service that an InferenceService's ``spec.predictor.logger.url`` points at (aws target).

KServe's logger sidecar posts every request and response as a binary-mode CloudEvent: ``ce-id`` (the
request id, shared by both halves), ``ce-type`` ``org.kubeflow.serving.inference.request`` or
``...response``, ``ce-inferenceservicename``, and the payload as the body. This receiver joins
the two halves by ``ce-id`` and writes the same JSON lines as the predictor's own capture
(:mod:`predictor.capture`) to ``capture/<model>/...`` of a bucket.

    python -m predictor.logger_service --capture-bucket B --port 8080 [--model-name fraud-detection]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from collections import OrderedDict

import orjson
import uvicorn

from .capture import CaptureWriter, S3Sink

logger = logging.getLogger("predictor.logger_service")

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
_OK = (200, b'{"status":"ok"}')


def request_columns(body) -> tuple[str, dict] | None:
    """(protocol, feature -> values) of a logged request payload, None when it is not one."""
    if isinstance(body, dict) and isinstance(body.get("inputs"), list):
        cols = {}
        for t in body["inputs"]:
            if isinstance(t, dict) and isinstance(t.get("name"), str) and "data" in t:
                data = t["data"]
                if isinstance(data, list) and data and isinstance(data[0], list):
                    data = [v for row in data for v in row]
                cols[t["name"]] = data
        return "v2", cols
    if isinstance(body, dict) and isinstance(body.get("instances"), list):
        rows = [r for r in body["instances"] if isinstance(r, dict)]
        names = list(dict.fromkeys(k for r in rows for k in r))
        return "v1", {n: [r.get(n) for r in rows] for n in names}
    return None


def response_outputs(body, output: str) -> tuple[dict, str | None]:
    """({output: values}, model_version) of a logged response payload."""
    if isinstance(body, dict) and isinstance(body.get("outputs"), list):
        for t in body["outputs"]:
            if isinstance(t, dict) and t.get("name") == output:
                return {output: t.get("data")}, body.get("model_version")
        return {}, body.get("model_version")
    if isinstance(body, dict) and "predictions" in body:
        return {output: body["predictions"]}, None
    return {}, None


class CloudEventJoiner:
    """Pairs request and response events by ``ce-id`` and hands joined records to a writer.

    :param writer_for: model name -> its :class:`CaptureWriter` (made on first use).
    :param default_model: the model of events without ``ce-inferenceservicename``.
    :param output: the probability output's name.
    :param ttl_seconds: a half waiting longer than this is written alone (inputs or outputs only).
    :param max_waiting: the most unmatched halves kept; the oldest are written alone past this.
    """

    def __init__(self, writer_for, default_model: str, output: str = "probability", ttl_seconds: float = 60.0,
                 max_waiting: int = 100_000):
        self.writer_for = writer_for
        self.default_model = default_model
        self.output = output
        self.ttl_seconds = ttl_seconds
        self.max_waiting = max_waiting
        self.waiting: OrderedDict[str, dict] = OrderedDict()
        self.joined = 0
        self.partial = 0

    def add(self, ce_id: str, ce_type: str, body, model: str | None = None, ts: float | None = None) -> None:
        entry = self.waiting.get(ce_id)
        if entry is None:
            entry = self.waiting[ce_id] = {"arrived": time.monotonic(), "time": ts or time.time()}
        if model:
            entry["model"] = model
        if ce_type.endswith(".request"):
            entry["request"] = body
        else:
            entry["response"] = body
        if "request" in entry and "response" in entry:
            del self.waiting[ce_id]
            self._emit(ce_id, entry)
            self.joined += 1
        self.expire()

    def expire(self, everything: bool = False) -> None:
        now = time.monotonic()
        while self.waiting:
            ce_id, entry = next(iter(self.waiting.items()))
            if not (everything or len(self.waiting) > self.max_waiting or now - entry["arrived"] > self.ttl_seconds):
                break
            del self.waiting[ce_id]
            self._emit(ce_id, entry)
            self.partial += 1

    def _emit(self, ce_id: str, entry: dict) -> None:
        parsed = request_columns(entry.get("request"))
        protocol, inputs = parsed if parsed else ("v2", {})
        outputs, version = response_outputs(entry.get("response"), self.output)
        if parsed is None and "request" in entry:
            logger.warning("Request %s: payload is not a v1/v2 JSON request; recording outputs only", ce_id)
        values = next(iter(inputs.values()), None) or next(iter(outputs.values()), None) or []
        self.writer_for(entry.get("model") or self.default_model).record(
            ce_id, protocol, inputs, outputs, rows=len(values) if isinstance(values, list) else 1,
            ts=entry["time"], version=version,
        )


class LoggerApp:
    """ASGI app: ``POST`` any path with a binary-mode CloudEvent; ``GET`` answers health checks."""

    def __init__(self, joiner: CloudEventJoiner, max_body_bytes: int = 64 * 1024 * 1024):
        self.joiner = joiner
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, body = _OK
        if scope["method"] == "POST":
            status, body = await self._event(scope, receive)
        elif scope["method"] != "GET":
            status, body = 405, b'{"error":"use POST for events, GET for health"}'
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _event(self, scope, receive) -> tuple[int, bytes]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 499, b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return 413, b'{"error":"event larger than the body limit"}'
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        ce_id, ce_type = headers.get("ce-id"), headers.get("ce-type", "")
        if not ce_id or ce_type not in (REQUEST, RESPONSE):
            return 400, orjson.dumps({"error": f"expected a binary CloudEvent with ce-id and ce-type {REQUEST} "
                                               f"or {RESPONSE}; got ce-id={ce_id!r} ce-type={ce_type!r}"})
        try:
            payload = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            payload = None  # binary tensors or another format: the event still joins, without values
        self.joiner.add(ce_id, ce_type, payload, model=headers.get("ce-inferenceservicename"))
        return 202, b'{"status":"accepted"}'


async def _expire_loop(joiner: CloudEventJoiner, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        joiner.expire()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m predictor.logger_service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture-bucket", required=True, help="Bucket for capture/<model>/... files.")
    parser.add_argument("--model-name", default="fraud-detection",
                        help="Model name when an event has no ce-inferenceservicename header.")
    parser.add_argument("--model-version", default="unknown",
                        help="Version when the response carries no model_version.")
    parser.add_argument("--output", default="probability", help="The probability output's name.")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--capture-flush-seconds", type=float, default=30.0)
    parser.add_argument("--join-ttl-seconds", type=float, default=60.0,
                        help="How long a half waits for its pair before it is written alone.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    sink = S3Sink(args.capture_bucket)
    writers: dict[str, CaptureWriter] = {}

    def writer_for(model: str) -> CaptureWriter:
        if model not in writers:
            writers[model] = CaptureWriter(sink, model, args.model_version,
                                           flush_seconds=args.capture_flush_seconds).start()
        return writers[model]

    joiner = CloudEventJoiner(writer_for, args.model_name, output=args.output, ttl_seconds=args.join_ttl_seconds)
    config = uvicorn.Config(LoggerApp(joiner), host=args.host, port=args.port, access_log=False,
                            log_level="info", lifespan="on")
    server = uvicorn.Server(config)

    def on_signal(sig, frame):
        # uvicorn handles SIGTERM/SIGINT while serving and re-raises them when it is done; this
        # handler then only asks for the exit that is already under way, so the flush below runs.
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    async def serve():
        expiry = asyncio.create_task(_expire_loop(joiner, max(1.0, args.join_ttl_seconds / 4)))
        try:
            await server.serve()
        finally:
            expiry.cancel()

    try:
        asyncio.run(serve())
    finally:
        joiner.expire(everything=True)
        for writer in writers.values():
            writer.close()
        logger.info("Logger service stopped: %d joined, %d written alone", joiner.joined, joiner.partial)


if __name__ == "__main__":
    main()
