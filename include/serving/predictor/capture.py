"""Request capture: every request/response pair as one JSON line, batched to S3 off the hot path.

Records have the fields of KServe's logger CloudEvents, joined per request::

    {"id", "time", "model", "version", "protocol", "inputs": {feature: [...]}, "outputs": {"probability": [...]}}

Files land at ``capture/<model>/<yyyy>/<mm>/<dd>/<hh>/<epoch_ms>-<uuid>.jsonl``; a background thread
flushes them on size or interval, and :meth:`CaptureWriter.close` flushes what is left (SIGTERM).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson

logger = logging.getLogger("predictor.capture")

_DUMPS = orjson.dumps
_OPTS = orjson.OPT_SERIALIZE_NUMPY


def capture_key(model: str, now: float, prefix: str = "capture") -> str:
    """``capture/<model>/<yyyy>/<mm>/<dd>/<hh>/<epoch_ms>-<uuid>.jsonl`` for a flush at ``now``."""
    ts = datetime.fromtimestamp(now, tz=timezone.utc)
    return f"{prefix}/{model}/{ts:%Y/%m/%d/%H}/{int(now * 1000)}-{uuid.uuid4().hex}.jsonl"


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(values: Any) -> Any:
    if isinstance(values, list) and values and isinstance(values[0], (bytes, bytearray)):
        return [v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v for v in values]
    if isinstance(values, np.ndarray) and not values.flags.c_contiguous:
        return np.ascontiguousarray(values)
    return values


def encode_record(request_id: str, ts: float, model: str, version: str, protocol: str,
                  inputs: dict, outputs: dict) -> bytes:
    """One capture line (with its newline)."""
    record = {
        "id": request_id,
        "time": iso_time(ts),
        "model": model,
        "version": version,
        "protocol": protocol,
        "inputs": {k: _jsonable(v) for k, v in inputs.items()},
        "outputs": {k: _jsonable(v) for k, v in outputs.items()},
    }
    try:
        return _DUMPS(record, option=_OPTS) + b"\n"
    except TypeError:  # an exotic array (non-native byte order, object dtype): go through lists
        for part in (record["inputs"], record["outputs"]):
            for k, v in part.items():
                if isinstance(v, np.ndarray):
                    part[k] = v.tolist()
        return _DUMPS(record) + b"\n"


class S3Sink:
    """Writes capture files to a bucket with boto3 (``AWS_ENDPOINT_URL`` points it at moto locally).

    .. seealso:: https://boto3.amazonaws.com/v1/documentation/api/latest/reference/services/s3/client/put_object.html

    :param bucket: the artifacts bucket.
    """

    def __init__(self, bucket: str):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.client = boto3.client("s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}))

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson")


class CaptureWriter:
    """Buffers request/response pairs in memory; a daemon thread writes them as JSON lines.

    :param sink: where files go (``put(key, body)``), e.g. :class:`S3Sink`.
    :param model: model name (record field and key prefix).
    :param version: model version given at start (record field).
    :param flush_seconds: longest a record waits in memory.
    :param max_rows: rows buffered before an early flush.
    :param max_pending_rows: rows kept while the sink fails; the oldest are dropped past this.
    """

    def __init__(self, sink, model: str, version: str, flush_seconds: float = 30.0,
                 max_rows: int = 100_000, max_pending_rows: int = 2_000_000, prefix: str = "capture"):
        self.sink = sink
        self.model = model
        self.version = version
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self.max_pending_rows = max_pending_rows
        self.prefix = prefix
        self._buf: list[tuple] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._flush_done = threading.Condition()
        self._flush_requested = 0
        self._flush_completed = 0
        self.files_written = 0
        self.records_written = 0
        self._thread = threading.Thread(target=self._loop, name="capture-writer", daemon=True)
        self._closed = False

    def start(self) -> CaptureWriter:
        self._thread.start()
        atexit.register(self.close)
        logger.info("Capturing requests of %s to %s (flush every %ss or %d rows)",
                    self.model, getattr(self.sink, "bucket", self.sink), self.flush_seconds, self.max_rows)
        return self

    # hot path ---------------------------------------------------------------------------------
    def record(self, request_id: str, protocol: str, inputs: dict, outputs: dict, rows: int) -> None:
        """Queue one request/response pair (cheap: no serialization here)."""
        item = (request_id, time.time(), protocol, inputs, outputs, rows)
        with self._lock:
            self._buf.append(item)
            self._rows += rows
            full = self._rows >= self.max_rows
        if full:
            self._wake.set()

    # background -------------------------------------------------------------------------------
    def _take(self) -> tuple[list[tuple], int]:
        with self._lock:
            buf, rows = self._buf, self._rows
            self._buf, self._rows = [], 0
        return buf, rows

    def _write(self, buf: list[tuple], rows: int) -> bool:
        if not buf:
            return True
        body = b"".join(
            encode_record(rid, ts, self.model, self.version, proto, inputs, outputs)
            for rid, ts, proto, inputs, outputs, _ in buf
        )
        key = capture_key(self.model, time.time(), self.prefix)
        try:
            self.sink.put(key, body)
        except Exception as exc:  # keep the records for the next attempt
            logger.error("Capture write of %d records to %s failed: %s", len(buf), key, exc)
            with self._lock:
                self._buf[:0] = buf
                self._rows += rows
                if self._rows > self.max_pending_rows:
                    dropped = 0
                    while self._buf and self._rows > self.max_pending_rows:
                        item = self._buf.pop(0)
                        self._rows -= item[5]
                        dropped += 1
                    logger.error("Capture buffer over %d rows: dropped the %d oldest requests",
                                 self.max_pending_rows, dropped)
            return False
        self.files_written += 1
        self.records_written += len(buf)
        logger.debug("Captured %d requests (%d rows) to %s", len(buf), rows, key)
        return True

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            with self._flush_done:
                requested = self._flush_requested
            ok = self._write(*self._take())
            if not ok and not self._stopping:
                time.sleep(min(5.0, self.flush_seconds))
            with self._flush_done:
                self._flush_completed = requested
                self._flush_done.notify_all()
            if self._stopping:
                return

    def flush(self, timeout: float = 30.0) -> None:
        """Write everything buffered now and wait for it."""
        with self._flush_done:
            self._flush_requested += 1
            target = self._flush_requested
        self._wake.set()
        with self._flush_done:
            self._flush_done.wait_for(lambda: self._flush_completed >= target or not self._thread.is_alive(), timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush what is left and stop the thread (idempotent; also runs at exit)."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        # whatever arrived after the thread's last pass
        buf, rows = self._take()
        if buf:
            self._write(buf, rows)
        logger.info("Capture closed: %d files, %d requests written", self.files_written, self.records_written)
