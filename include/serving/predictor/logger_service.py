"""The logger service that an InferenceService's ``spec.predictor.logger.url`` points at (aws target).

KServe's logger sidecar posts every request and response as a binary-mode CloudEvent: ``ce-id`` (the
request id, shared by both halves), ``ce-type`` ``org.kubeflow.serving.inference.request`` or
``...response``, ``ce-time``, ``ce-inferenceservicename`` (older releases: ``ce-inferenceservice``),
and the payload as the body. This receiver joins the two halves by ``ce-id`` and writes the same
JSON lines as the predictor's own capture (:mod:`predictor.capture`) to ``capture/<model>/...``.

- The record's time is the request's ``ce-time`` (arrival time when the sidecar sends none).
- v1 ``instances`` given as lists (one value per feature) are mapped by the model's input order,
  read from its ``input_schema.json`` (``--input-schema``): numeric features, then categorical.
- Idempotent per event: a redelivered half (same ``ce-id`` and ``ce-type``) writes nothing new. A
  second, different request under a waiting id keeps the first; both are counted and logged.
- A body that is not a v1/v2 JSON request or response is answered 4xx and counted; nothing is stored.

    python -m predictor.logger_service --capture-bucket B --port 8080 [--model-name fraud-detection]
        [--input-schema fraud-detection=s3://bucket/models/.../input_schema.json]

``GET`` answers with the counters (joined, partial, duplicates, conflicts, rejected).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time
from collections import OrderedDict
from datetime import datetime

import orjson
import uvicorn

from .capture import CaptureWriter, S3Sink

logger = logging.getLogger("predictor.logger_service")

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


class BadEvent(ValueError):
    """An event this receiver cannot record; the message names the field (answered 4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def request_columns(body, order: tuple[str, ...] | None = None) -> tuple[str, dict] | None:
    """(protocol, feature -> values) of a logged request payload, None when it is not one.

    v1 rows given as lists are mapped by ``order`` (the model's input order); without it, or when a
    row's length differs from it, :class:`BadEvent` names the row.
    """
    if isinstance(body, dict) and isinstance(body.get("inputs"), list):
        cols = {}
        for t in body["inputs"]:
            if isinstance(t, dict) and isinstance(t.get("name"), str) and "data" in t:
                data = t["data"]
                if isinstance(data, list) and data and isinstance(data[0], list):
                    data = [v for row in data for v in row]
                cols[t["name"]] = data
        return ("v2", cols) if cols else None
    if isinstance(body, dict) and isinstance(body.get("instances"), list) and body["instances"]:
        rows = body["instances"]
        if all(isinstance(r, dict) for r in rows):
            names = list(dict.fromkeys(k for r in rows for k in r))
            return "v1", {n: [r.get(n) for r in rows] for n in names}
        if all(isinstance(r, list) for r in rows):
            if not order:
                raise BadEvent("instances: rows given as lists need the model's input order; start the logger "
                               "with --input-schema <model>=<input_schema.json>", 422)
            for i, r in enumerate(rows):
                if len(r) != len(order):
                    raise BadEvent(f"instances[{i}]: {len(r)} values, expected {len(order)} in the model's input "
                                   f"order {list(order)}", 422)
            return "v1", {n: [r[j] for r in rows] for j, n in enumerate(order)}
        raise BadEvent("instances: every row must be an object of features or a list in the model's input order", 422)
    return None


def event_time(value: str | None) -> float | None:
    """Epoch seconds of a CloudEvent ``time`` (RFC 3339), None when absent."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadEvent(f"ce-time: {value!r} is not an RFC 3339 time") from None


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
    :param input_order: model name -> its input order, for v1 rows given as lists.
    :param remember: how many written ids are remembered, so a redelivered half writes nothing.
    """

    def __init__(self, writer_for, default_model: str, output: str = "probability", ttl_seconds: float = 60.0,
                 max_waiting: int = 100_000, input_order: dict[str, tuple[str, ...]] | None = None,
                 remember: int = 1_000_000):
        self.writer_for = writer_for
        self.default_model = default_model
        self.output = output
        self.ttl_seconds = ttl_seconds
        self.max_waiting = max_waiting
        self.input_order = dict(input_order or {})
        self.remember = remember
        self.waiting: OrderedDict[str, dict] = OrderedDict()
        self.written: OrderedDict[str, frozenset] = OrderedDict()  # id -> the halves already written
        self.joined = 0
        self.partial = 0
        self.duplicates = 0
        self.conflicts = 0
        self.rejected = 0

    def counters(self) -> dict[str, int]:
        return {"joined": self.joined, "partial": self.partial, "duplicates": self.duplicates,
                "conflicts": self.conflicts, "rejected": self.rejected, "waiting": len(self.waiting)}

    def check(self, ce_type: str, body, model: str | None) -> tuple[str, dict] | None:
        """The request's columns (None for a response) once the payload is known to be recordable."""
        model = model or self.default_model
        if ce_type.endswith(".request"):
            parsed = request_columns(body, self.input_order.get(model))
            if parsed is None:
                raise BadEvent('body: not a v2 ({"inputs": [...]}) or v1 ({"instances": [...]}) request', 422)
            return parsed
        if not (isinstance(body, dict) and (isinstance(body.get("outputs"), list) or "predictions" in body)):
            raise BadEvent('body: not a v2 ({"outputs": [...]}) or v1 ({"predictions": [...]}) response', 422)
        return None

    def add(self, ce_id: str, ce_type: str, body, model: str | None = None, ts: float | None = None,
            columns: tuple[str, dict] | None = None) -> str:
        """Take one half; returns ``accepted``, ``duplicate`` (already held or written) or ``conflict``."""
        half = "request" if ce_type.endswith(".request") else "response"
        if half in self.written.get(ce_id, ()):
            self.duplicates += 1
            return "duplicate"
        entry = self.waiting.get(ce_id)
        if entry is None:
            entry = self.waiting[ce_id] = {"arrived": time.monotonic(), "time": None}
        if half in entry:
            if entry[half] == body:
                self.duplicates += 1
                return "duplicate"
            # two different requests under one id: the first one stays, the second is only counted
            self.conflicts += 1
            logger.warning("Event %s: a second, different %s arrived before the pair was complete; kept the "
                           "first, dropped this one (%d such conflicts so far)", ce_id, half, self.conflicts)
            return "conflict"
        if model:
            entry["model"] = model
        if half == "request":  # the request's time is the record's time
            entry["time"] = ts or time.time()
            entry["columns"] = columns
        else:
            entry["time"] = entry["time"] or ts or time.time()
        entry[half] = body
        if "request" in entry and "response" in entry:
            del self.waiting[ce_id]
            self._emit(ce_id, entry)
            self.joined += 1
        self.expire()
        return "accepted"

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
        protocol, inputs = entry.get("columns") or ("v2", {})
        outputs, version = response_outputs(entry.get("response"), self.output)
        values = next(iter(inputs.values()), None) or next(iter(outputs.values()), None) or []
        self.writer_for(entry.get("model") or self.default_model).record(
            ce_id, protocol, inputs, outputs, rows=len(values) if isinstance(values, list) else 1,
            ts=entry["time"], version=version,
        )
        self.written[ce_id] = self.written.get(ce_id, frozenset()) | {h for h in ("request", "response") if h in entry}
        self.written.move_to_end(ce_id)
        while len(self.written) > self.remember:
            self.written.popitem(last=False)


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
        status, body = 200, orjson.dumps({"status": "ok", **self.joiner.counters()})
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
            self.joiner.rejected += 1
            return 400, orjson.dumps({"error": f"expected a binary CloudEvent with ce-id and ce-type {REQUEST} "
                                               f"or {RESPONSE}; got ce-id={ce_id!r} ce-type={ce_type!r}"})
        model = headers.get("ce-inferenceservicename") or headers.get("ce-inferenceservice")
        try:
            try:
                payload = orjson.loads(b"".join(chunks))
            except orjson.JSONDecodeError as exc:
                raise BadEvent(f"body: not JSON ({exc}); the logger records v1/v2 JSON payloads") from None
            ts = event_time(headers.get("ce-time"))
            columns = self.joiner.check(ce_type, payload, model)
        except BadEvent as exc:
            self.joiner.rejected += 1
            logger.warning("Event %s (%s) rejected: %s", ce_id, ce_type.rsplit(".", 1)[-1], exc)
            return exc.status, orjson.dumps({"error": str(exc), "ce-id": ce_id})
        outcome = self.joiner.add(ce_id, ce_type, payload, model=model, ts=ts, columns=columns)
        if outcome == "conflict":
            return 409, orjson.dumps({"error": f"ce-id {ce_id!r} already holds a different "
                                               f"{ce_type.rsplit('.', 1)[-1]}; the first one is kept"})
        return (202, b'{"status":"accepted"}') if outcome == "accepted" else (200, b'{"status":"duplicate"}')


def load_input_orders(items: list[str], default_model: str) -> dict[str, tuple[str, ...]]:
    """``[model=]path-or-s3-uri`` of ``input_schema.json`` files -> model -> input order.

    The order is the predictor's (:class:`predictor.schema.InputSchema`): numeric, then categorical.
    """
    from .schema import InputSchema

    orders = {}
    for item in items:
        if "=" not in item or item.startswith(("s3://", "/", ".")):
            model, where = default_model, item
        else:
            model, where = item.split("=", 1)
        if where.startswith("s3://"):
            import boto3

            bucket, _, key = where[5:].partition("/")
            spec = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
        else:
            with open(where) as f:
                spec = json.load(f)
        orders[model] = InputSchema(spec).features
    return orders


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
    parser.add_argument("--input-schema", action="append", default=[], metavar="[MODEL=]PATH_OR_S3_URI",
                        help="A model's input_schema.json, to map v1 rows given as lists (repeatable).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    input_order = load_input_orders(args.input_schema, args.model_name)

    sink = S3Sink(args.capture_bucket)
    writers: dict[str, CaptureWriter] = {}

    def writer_for(model: str) -> CaptureWriter:
        if model not in writers:
            writers[model] = CaptureWriter(sink, model, args.model_version,
                                           flush_seconds=args.capture_flush_seconds).start()
        return writers[model]

    joiner = CloudEventJoiner(writer_for, args.model_name, output=args.output, ttl_seconds=args.join_ttl_seconds,
                              input_order=input_order)
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
        logger.info("Logger service stopped: %s", " ".join(f"{k}={v}" for k, v in joiner.counters().items()))


if __name__ == "__main__":
    main()
