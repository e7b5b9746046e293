"""The model server: KServe's ``ModelServer`` with a lean HTTP front for the inference routes.

KServe's REST stack parses every v2 body into pydantic models, times it in a middleware and logs
each request; at a thousand single-row requests a second that is most of the CPU. The front below
handles ``POST /v2/models/<name>/infer`` (JSON and the binary tensor extension) and
``POST /v1/models/<name>:predict`` itself: it reads the body with a size limit, builds KServe's
``InferRequest`` and calls the model (preprocess -> validate -> predict -> postprocess) exactly as
the dataplane does, then writes the response with orjson. Every other route (health, readiness,
metadata, metrics, other models) goes to KServe's FastAPI app unchanged, and gRPC is KServe's.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import orjson
from kserve import InferInput, InferRequest, InferResponse, ModelServer
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.infer_type import RequestedOutput
from kserve.protocol.rest.server import RESTServer
from uvicorn.importer import import_from_string

from . import sagemaker

logger = logging.getLogger("kserve.predictor")

_JSON = [(b"content-type", b"application/json")]
_BINARY_HEADER = "inference-header-content-length"
_DUMPS = orjson.dumps
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


class RequestTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


def _error(status: int, message: str) -> tuple[int, bytes, list]:
    return status, _DUMPS({"error": message}), _JSON


def parse_v2(body: bytes, headers: dict[str, str], model_name: str) -> InferRequest:
    """A v2 REST body (JSON, or JSON + binary tensors) -> KServe ``InferRequest``, checking its structure."""
    header_len = headers.get(_BINARY_HEADER)
    binary = b""
    if header_len is not None:
        try:
            json_len = int(header_len)
        except ValueError:
            raise InvalidInput(f"header {_BINARY_HEADER}: {header_len!r} is not an integer") from None
        if not 0 < json_len <= len(body):
            raise InvalidInput(f"header {_BINARY_HEADER}: {json_len} is outside the body (length {len(body)})")
        binary = memoryview(body)[json_len:]
        body = body[:json_len]
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body: not valid JSON ({exc}); send a v2 inference request") from None
    if not isinstance(req, dict):
        raise InvalidInput(f'body: expected a JSON object with "inputs", got {type(req).__name__}')
    raw_inputs = req.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput('body: "inputs" must be a non-empty list of tensors {name, shape, datatype, data}')
    inputs = []
    offset = 0
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise InvalidInput(f"inputs[{i}]: expected an object, got {type(item).__name__}")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str):
            raise InvalidInput(f'inputs[{i}]: "name" must be a string')
        if not isinstance(datatype, str):
            raise InvalidInput(f'input {name!r}: "datatype" must be a string such as "FP32" or "BYTES"')
        if not isinstance(shape, list):
            raise InvalidInput(f'input {name!r}: "shape" must be a list such as [N]')
        params = item.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise InvalidInput(f'input {name!r}: "parameters" must be an object')
        inp = InferInput(name, shape, datatype, data=item.get("data"), parameters=params)
        if inp.data is None:
            size = params.get("binary_data_size") if params else None
            if size is None:
                raise InvalidInput(f'input {name!r}: no "data" and no "binary_data_size" parameter')
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size={size!r} runs past the {len(binary)} binary bytes"
                )
            inp._raw_data = bytes(binary[offset : offset + size])
            offset += size
        inputs.append(inp)
    if offset != len(binary):
        raise InvalidInput(f"body: {len(binary) - offset} binary bytes not claimed by any input's binary_data_size")
    params = req.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise InvalidInput('body: "parameters" must be an object')
    outputs = req.get("outputs")
    requested = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
            raise InvalidInput('body: "outputs" must be a list of {"name": ...} objects')
        requested = [RequestedOutput(o["name"], o.get("parameters") or {}) for o in outputs]
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidInput('body: "id" must be a string')
    return InferRequest(model_name, inputs, request_id=rid, parameters=params, request_outputs=requested)


def encode_v2(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """``InferResponse`` -> body bytes (and the JSON length when tensors go binary)."""
    default_binary = bool(request.parameters and request.parameters.get("binary_data_output"))
    per_output = {}
    if request.request_outputs:
        for o in request.request_outputs:
            per_output[o.name] = bool((o.parameters or {}).get("binary_data", default_binary))
    outputs = []
    raw = []
    for out in response.outputs:
        data = out.data
        entry = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if per_output.get(out.name, default_binary):
            blob = np.ascontiguousarray(data).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            raw.append(blob)
        else:
            entry["data"] = data
        outputs.append(entry)
    doc = {"id": response.id, "model_name": response.model_name, "model_version": response.model_version,
           "outputs": outputs}
    head = _DUMPS(doc, option=_NUMPY)
    if raw:
        return b"".join([head, *raw]), len(head)
    return head, None


class InferenceFront:
    """ASGI app in front of KServe's FastAPI app: the inference routes of one model, fast.

    :param app: KServe's FastAPI application (every other route).
    :param model: the registered model.
    :param max_body_bytes: larger bodies are refused with 413 before they are read.
    """

    def __init__(self, app, model, max_body_bytes: int):
        self.app = app
        self.model = model
        self.max_body_bytes = max_body_bytes
        name = model.name
        self.routes = {
            f"/v2/models/{name}/infer": "v2",
            f"/v2/models/{name}/versions/{model.version}/infer": "v2",
            f"/v1/models/{name}:predict": "v1",
            "/invocations": "sagemaker",  # SageMaker's container contract (predictor/sagemaker.py)
        }

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/ping":
            status = 200 if self.model.ready else 503  # SageMaker's health check
            body = _DUMPS({"status": "ok" if status == 200 else "loading"})
            await send({"type": "http.response.start", "status": status,
                        "headers": [*_JSON, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            protocol = self.routes.get(scope["path"])
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            if protocol is not None:
                status, body, extra = await self._handle(protocol, headers, receive)
                await send({"type": "http.response.start", "status": status,
                            "headers": [*extra, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                status, body, extra = self._too_large()
                await send({"type": "http.response.start", "status": status,
                            "headers": [*extra, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _too_large(self):
        return _error(413, f"body: larger than the limit of {self.max_body_bytes} bytes; split the request")

    async def _read(self, headers, receive) -> bytes:
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise RequestTooLarge
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > self.max_body_bytes:
                raise RequestTooLarge
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise RequestTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _handle(self, protocol: str, headers: dict, receive):
        try:
            body = await self._read(headers, receive)
            if not self.model.ready:
                raise ModelNotReady(self.model.name)
            if protocol == "sagemaker":
                return await sagemaker.invocations(self.model, body, headers)
            if protocol == "v2":
                request = parse_v2(body, headers, self.model.name)
                response, _ = await self.model(request, headers=headers)
                payload, json_len = encode_v2(response, request)
                if json_len is None:
                    return 200, payload, _JSON
                return 200, payload, [(b"content-type", b"application/octet-stream"),
                                      (_BINARY_HEADER.encode(), str(json_len).encode())]
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f'body: not valid JSON ({exc}); send {{"instances": [...]}}') from None
            response, _ = await self.model(doc, headers=headers)
            return 200, _DUMPS(response, option=_NUMPY), _JSON
        except InvalidInput as exc:
            return _error(400, str(exc))
        except RequestTooLarge:
            return self._too_large()
        except ModelNotReady as exc:
            return _error(503, str(exc))
        except ClientGone:
            return _error(499, "client disconnected")
        except Exception as exc:  # a bug, not the client's fault: log it, answer 500, keep serving
            logger.exception("Inference failed")
            return _error(500, f"inference failed: {type(exc).__name__}: {exc}")


class PredictorRESTServer(RESTServer):
    """KServe's REST server with :class:`InferenceFront` in front and per-request logging optional.

    :param front: ``app -> ASGI app`` wrapping KServe's FastAPI app.
    :param access_log: keep uvicorn's access log and KServe's timing middleware (one log line per request).
    """

    def __init__(self, *args, front=None, access_log: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._front = front
        self._access_log = access_log
        self.config.access_log = access_log
        if not access_log:  # uvicorn checks the logger's handlers per connection
            access_logger = logging.getLogger("uvicorn.access")
            access_logger.handlers = []
            access_logger.propagate = False
        self.config.proxy_headers = False

    def _add_middlewares(self, app):
        if self._access_log:
            super()._add_middlewares(app)

    def create_application(self):
        super().create_application()
        if self._front is not None:
            self.config.app = self._front(import_from_string("kserve.model_server:app"))


class PredictorServer(ModelServer):
    """``ModelServer`` that serves REST through :class:`PredictorRESTServer` (one worker) and gRPC as KServe does.

    .. seealso:: https://github.com/kserve/kserve/blob/master/python/kserve/kserve/model_server.py

    :param front: ``app -> ASGI app`` for the REST side.
    :param access_log: log every request.
    :param grpc_options: kserve's parsed arguments (gRPC message limits).
    """

    def __init__(self, *, front=None, access_log: bool = False, grpc_options: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self._front = front
        self._access_log = access_log
        self._grpc_options = grpc_options or {}
        self._models = []

    def start(self, models) -> None:
        self._models = list(models)
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = PredictorRESTServer(
            "kserve.model_server:app",
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
            front=self._front,
            access_log=self._access_log,
        )
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = GRPCServer(
                self.grpc_port, self.dataplane, self.model_repository_extension,
                kwargs=self._grpc_options, grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        try:
            asyncio.run(self._serve())
        finally:
            self._stop_models()

    async def _serve(self):
        # uvicorn returns once it has drained on SIGTERM/SIGINT; then stop gRPC and finish.
        tasks = [asyncio.ensure_future(s) for s in self.servers]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if self._grpc_server is not None:
            await self._grpc_server.stop()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop_models(self) -> None:
        for model in self._models:
            try:
                model.stop()
            except Exception:
                logger.exception("Stopping model %s failed", model.name)

    def stop(self, sig: int) -> None:
        """Signal handler outside uvicorn's own: uvicorn drains and re-raises SIGTERM/SIGINT, after
        which :meth:`_serve` stops gRPC and :meth:`start` stops the models (flushing capture)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not serving yet, or already done
            logger.info("Stopping the model server (signal %s)", sig)
            self._stop_models()
            raise SystemExit(0) from None
