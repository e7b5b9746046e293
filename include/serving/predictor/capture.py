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

import numpy as np
import orjson

logger = logging.getLogger("kserve.predictor.capture")

_DUMPS = orjson.dumps
_OPTS = orjson.OPT_SERIALIZE_NUMPY


def capture_key(model: str, now: float, prefix: str = "capture") -> str:
    """``capture/<model>/<yyyy>/<mm>/<dd>/<hh>/<epoch_ms>-<uuid>.jsonl`` for a flush at ``now``."""
    ts = datetime.fromtimestamp(now, tz=timezone.utc)
    return f"{prefix}/{model}/{ts:%Y/%m/%d/%H}/{int(now * 1000)}-{uuid.uuid4().hex}.jsonl"


_second = [-1, ""]


def iso_time(ts: float) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2026-01-31T12:00:00.123Z``."""
    sec = int(ts)
    if sec != _second[0]:
        _second[:] = [sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))]
    return f"{_second[1]}.{int((ts - sec) * 1000):03d}Z"


def encode_record(request_id: str, ts: float, model: str, version: str, protocol: str,
                  inputs: dict, outputs: dict) -> bytes:
    """One capture line (with its newline). Inputs are the values as sent (bytes become UTF-8 text)."""
    cols = {}
    for k, v in inputs.items():
        if type(v) is list and v and type(v[0]) is bytes:
            v = [x.decode("utf-8", "replace") if type(x) is bytes else x for x in v]
        cols[k] = v
    record = {"id": request_id, "time": iso_time(ts), "model": model, "version": version,
              "protocol": protocol, "inputs": cols, "outputs": outputs}
    try:
        return _DUMPS(record, option=_OPTS) + b"\n"
    except TypeError:  # an exotic array (non-contiguous, object dtype): go through lists
        for part in (cols, outputs):
            for k, v in part.items():
                if isinstance(v, np.ndarray):
                    part[k] = v.tolist()
        return _DUMPS(record, option=_OPTS) + b"\n"


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
    """Buffers request/response pairs in memory; a daemon thread encodes and writes them.

    The request path only appends a tuple. The thread encodes what arrived every
    ``encode_seconds`` in small chunks (so it never holds the interpreter for long and request
    latency stays flat) and writes a file when ``flush_seconds`` have passed or ``max_rows`` rows
    are waiting. :meth:`close` (model stop, SIGTERM, exit) writes the rest.

    :param sink: where files go (``put(key, body)``), e.g. :class:`S3Sink`.
    :param model: model name (record field and key prefix).
    :param version: model version given at start (record field).
    :param flush_seconds: longest a record waits before it is written.
    :param max_rows: rows waiting before an early write.
    :param max_bytes: encoded bytes waiting before an early write (bounds one file's size).
    :param max_pending_rows: rows kept while the sink fails; the oldest are dropped past this.
    :param encode_seconds: how often the thread encodes what arrived.
    """

    CHUNK_ROWS = 1024  # rows encoded between two yields to the request path

    def __init__(self, sink, model: str, version: str, flush_seconds: float = 30.0,
                 max_rows: int = 100_000, max_pending_rows: int = 2_000_000, prefix: str = "capture",
                 encode_seconds: float = 0.05, max_bytes: int = 8 * 1024 * 1024):
        self.sink = sink
        self.model = model
        self.version = version
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._pending_bytes = 0
        self.max_pending_rows = max_pending_rows
        self.prefix = prefix
        self.encode_seconds = min(encode_seconds, flush_seconds)
        self._buf: list[tuple] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        # encoded, not yet written: lines, their request and row counts
        self._lines: list[bytes] = []
        self._line_rows: list[int] = []
        self._pending_rows = 0
        self._last_write = time.monotonic()
        self._flush_lock = threading.Lock()
        self.files_written = 0
        self.records_written = 0
        self._thread = threading.Thread(target=self._loop, name="capture-writer", daemon=True)
        self._closed = False

    def start(self) -> CaptureWriter:
        self._thread.start()
        atexit.register(self.close)
        logger.info("Capturing requests of %s to %s (write every %ss or %d rows)",
                    self.model, getattr(self.sink, "bucket", self.sink), self.flush_seconds, self.max_rows)
        return self

    # request path -----------------------------------------------------------------------------
    def record(self, request_id: str, protocol: str, inputs: dict, outputs: dict, rows: int,
               ts: float | None = None, version: str | None = None) -> None:
        """Queue one request/response pair (an append: no encoding, no I/O).

        ``ts`` (epoch seconds, default now) and ``version`` (default the writer's) serve the logger
        service, which records other processes' requests.
        """
        item = (request_id, ts or time.time(), protocol, inputs, outputs, rows, version)
        with self._lock:
            self._buf.append(item)

    # background -------------------------------------------------------------------------------
    def _encode_waiting(self, yield_between_chunks: bool = True) -> None:
        with self._lock:
            buf, self._buf = self._buf, []
        model, version = self.model, self.version
        since_yield = 0
        for rid, ts, proto, inputs, outputs, rows, ver in buf:
            line = encode_record(rid, ts, model, ver or version, proto, inputs, outputs)
            self._lines.append(line)
            self._pending_bytes += len(line)
            self._line_rows.append(rows)
            self._pending_rows += rows
            since_yield += rows + 8  # per-record overhead counts too
            if since_yield >= self.CHUNK_ROWS and yield_between_chunks:
                time.sleep(0)  # let the event loop in between chunks
                since_yield = 0

    def _write(self) -> bool:
        """Write the encoded lines as one file; keep them on failure."""
        if not self._lines:
            self._last_write = time.monotonic()
            return True
        lines, rows = self._lines, self._line_rows
        key = capture_key(self.model, time.time(), self.prefix)
        try:
            self.sink.put(key, b"".join(lines))
        except Exception as exc:
            logger.error("Capture write of %d requests to %s failed: %s", len(lines), key, exc)
            while self._pending_rows > self.max_pending_rows and lines:
                self._pending_bytes -= len(lines.pop(0))
                self._pending_rows -= rows.pop(0)
                logger.error("Capture backlog over %d rows: dropped the oldest request", self.max_pending_rows)
            return False
        self.files_written += 1
        self.records_written += len(lines)
        logger.debug("Captured %d requests (%d rows) to %s", len(lines), self._pending_rows, key)
        self._lines, self._line_rows, self._pending_rows, self._pending_bytes = [], [], 0, 0
        self._last_write = time.monotonic()
        return True

    def _loop(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.wait(self.encode_seconds)
            self._wake.clear()
            if self._stopping:
                break
            with self._flush_lock:
                self._encode_waiting()
                due = time.monotonic() - self._last_write >= self.flush_seconds * (1 + min(failures, 5))
                full = self._pending_rows >= self.max_rows or self._pending_bytes >= self.max_bytes
                if full or (self._lines and due):
                    failures = 0 if self._write() else failures + 1
                elif not self._lines:
                    self._last_write = time.monotonic()

    def flush(self) -> None:
        """Encode and write everything queued now (blocking)."""
        with self._flush_lock:
            self._encode_waiting(yield_between_chunks=False)
            self._write()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is left and stop the thread (idempotent; also runs at exit)."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.flush()
        logger.info("Capture closed: %d files, %d requests written", self.files_written, self.records_written)
