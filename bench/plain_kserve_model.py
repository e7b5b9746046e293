"""The baseline for bench/serving.py: the same ONNX model behind a plain ``kserve.Model``.

Nothing but KServe defaults and an onnxruntime call (1 intra-op thread): the v2 inputs are turned
into the model's two tensors with ``as_numpy`` and a vocabulary lookup, and the probability goes
back as an FP32 output. No validation beyond KServe's own, no capture.

    .venv-serve/bin/python bench/plain_kserve_model.py --model_name fraud-detection \
        --model_dir DIR --http_port 8080 --grpc_port 8081
"""

from __future__ import annotations

import argparse
import json
import os

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, model_server


class PlainOnnxModel(kserve.Model):
    """Calls onnxruntime on the request's tensors; the bare minimum around it."""

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir

    def load(self) -> bool:
        with open(os.path.join(self.model_dir, "input_schema.json")) as f:
            schema = json.load(f)
        self.numeric = schema["numeric"]
        self.vocab = {k: {v: i for i, v in enumerate(vals)} for k, vals in schema["categorical"].items()}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(self.model_dir, "model.onnx"), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        cols = {i.name: i for i in payload.inputs}
        numeric = np.stack([cols[n].as_numpy().reshape(-1) for n in self.numeric], axis=1).astype(np.float32)
        categorical = np.stack(
            [
                np.array([lut.get(v if isinstance(v, str) else v.decode(), -1) for v in cols[name].as_numpy().reshape(-1)])
                for name, lut in self.vocab.items()
            ],
            axis=1,
        ).astype(np.int64)
        (prob,) = self.session.run(["probability"], {"numeric": numeric, "categorical": categorical})
        out = InferOutput("probability", [prob.shape[0]], "FP32", data=prob)
        return InferResponse(response_id=payload.id or "none", model_name=self.name, infer_outputs=[out])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    model = PlainOnnxModel(args.model_name, args.model_dir)
    model.load()
    kserve.ModelServer().start([model])
