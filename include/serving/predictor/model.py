"""The project's tabular ``kserve.Model``: load the ONNX artifact, validate, score, capture.

``preprocess`` decodes and validates a v2 ``InferRequest`` (REST or gRPC) or a v1 body against
``input_schema.json``; ``predict`` runs onnxruntime; ``postprocess`` records the pair for request
capture and builds the v2 ``InferResponse`` or the v1 ``{"predictions": [...]}``, by task:

binary      ``probability`` FP32 [N] and ``label`` INT8 (at the schema's threshold)
multiclass  ``probabilities`` FP32 [N, K] and ``label`` BYTES (the most likely class)
regression  ``prediction`` FP32 [N]
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np
import orjson
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest

from . import artifact
from .capture import CaptureWriter
from .runtime import OnnxScorer
from .schema import Batch, InputSchema

logger = logging.getLogger("kserve.predictor")

LABEL = "label"


def request_id_for(headers: dict | None, given: Any = None) -> str:
    """The request's id: the v2 body's ``id``, else ``x-request-id``, else a fresh UUID."""
    if given:
        return str(given)
    if headers:
        rid = headers.get("x-request-id")
        if rid:
            return rid
    return uuid.uuid4().hex


class TabularModel(Model):
    """Serves a registry's ONNX model with schema validation and request capture.

    .. seealso:: https://kserve.github.io/website/latest/modelserving/v1beta1/custom/custom_model/

    :param name: model name on the endpoint paths.
    :param model_uri: directory, ``model.tar.gz`` or ``s3://`` URI of the artifact.
    :param version: version string reported in responses and capture records.
    :param device: ``auto`` (CUDA when onnxruntime has it), ``cpu`` or ``cuda``.
    :param intra_op_threads: onnxruntime intra-op threads.
    :param max_rows: the most rows one request may carry.
    :param capture: where request/response pairs go (None: no capture).
    :param id_column: the optional id input, when ``input_schema.json`` names none.
    """

    def __init__(self, name: str, model_uri: str, version: str = "1", device: str = "auto",
                 intra_op_threads: int = 1, max_rows: int = 100_000, capture: CaptureWriter | None = None,
                 id_column: str | None = None):
        super().__init__(name)
        self.model_uri = model_uri
        self.version = version
        self.device = device
        self.intra_op_threads = intra_op_threads
        self.max_rows = max_rows
        self.capture = capture
        self.id_column = id_column
        self.schema: InputSchema | None = None
        self.scorer: OnnxScorer | None = None

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> bool:
        model_dir = artifact.resolve(self.model_uri)
        self.schema = InputSchema.from_file(model_dir / "input_schema.json", max_rows=self.max_rows,
                                            id_column=self.id_column)
        if self.schema.model and self.schema.model != self.name:
            logger.warning("input_schema.json names model %r; serving it as %r", self.schema.model, self.name)
        self.scorer = OnnxScorer(
            model_dir / "model.onnx",
            n_numeric=len(self.schema.numeric),
            n_categorical=len(self.schema.categorical),
            output=self.schema.output,
            device=self.device,
            intra_op_threads=self.intra_op_threads,
        )
        # one warm-up run so the first request does not pay for lazy initialisation
        self.scorer(
            np.zeros((1, len(self.schema.numeric)), np.float32),
            np.full((1, len(self.schema.categorical)), -1, np.int64),
        )
        self.ready = True
        logger.info("Model %s version %s ready (%s)", self.name, self.version, self.scorer.provider)
        return self.ready

    def stop(self) -> None:
        if self.capture is not None:
            self.capture.close()
        super().stop()

    # ------------------------------------------------------------------ metadata
    def get_input_types(self) -> list[dict]:
        return self.schema.v2_inputs() if self.schema else []

    def get_output_types(self) -> list[dict]:
        return self.schema.v2_outputs() if self.schema else []

    # ------------------------------------------------------------------ inference
    def preprocess(self, payload: InferRequest | dict | bytes, headers: dict[str, str] | None = None) -> Batch:
        if isinstance(payload, ModelInferRequest):
            payload = InferRequest.from_grpc(payload)
        if isinstance(payload, InferRequest):
            batch = self.schema.decode_v2(payload.inputs, request_id_for(headers, payload.id))
            outputs = payload.request_outputs
            if outputs:
                names = tuple(o.name for o in outputs)
                known = self.schema.output_names()
                unknown = [n for n in names if n not in known]
                if unknown:
                    raise InvalidInput(f"outputs: unknown output(s) {unknown}; the model returns {list(known)}")
                batch.requested_outputs = names
            return batch
        if isinstance(payload, (bytes, bytearray)):
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"body: not valid JSON ({exc})") from None
        if isinstance(payload, dict) and "inputs" in payload and "instances" not in payload:
            raise InvalidInput('body: v2 "inputs" sent to the v1 endpoint; POST it to /v2/models/<name>/infer')
        return self.schema.decode_v1(payload, request_id_for(headers))

    def validate(self, payload: Batch) -> Batch:
        return payload  # checked against the schema in preprocess

    def predict(self, batch: Batch, headers: dict[str, str] | None = None) -> Batch:
        batch.scores = self.scorer(batch.numeric, batch.categorical)
        return batch

    def _label(self, scores: np.ndarray) -> np.ndarray | None:
        if self.schema.task == "binary":
            return (scores >= self.schema.threshold).astype(np.int8)
        if self.schema.task == "multiclass":
            return np.asarray(self.schema.classes, dtype=object)[np.argmax(scores, axis=1)]
        return None

    def postprocess(self, batch: Batch, headers: dict[str, str] | None = None,
                    response_headers: dict[str, str] | None = None) -> InferResponse | dict:
        scores = batch.scores
        if self.capture is not None:
            self.capture.record(batch.request_id, batch.protocol, batch.columns, {self.schema.output: scores}, batch.rows)
        if batch.protocol == "v1":
            return {"predictions": scores}
        n = scores.shape[0]
        outputs = [InferOutput(self.schema.output, list(scores.shape), "FP32", data=scores)]
        label = self._label(scores)
        if label is not None:
            outputs.append(InferOutput(LABEL, [n], "INT8" if label.dtype == np.int8 else "BYTES",
                                       data=label if label.dtype == np.int8 else label.tolist()))
        if batch.requested_outputs:
            outputs = [o for o in outputs if o.name in batch.requested_outputs]
        return InferResponse(
            response_id=batch.request_id,
            model_name=self.name,
            model_version=self.version,
            infer_outputs=outputs,
        )
