"""The onnxruntime session: CUDA when the build has it, CPU otherwise."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort

logger = logging.getLogger("kserve.predictor")

DEVICES = ("auto", "cpu", "cuda")


def select_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers in priority order for ``device`` given onnxruntime's ``available`` list.

    :param device: ``auto`` (CUDA if available, else CPU), ``cpu`` or ``cuda`` (an error without it).
    :param available: ``onnxruntime.get_available_providers()``.
    """
    if device not in DEVICES:
        raise ValueError(f"--device={device!r} must be one of {DEVICES}")
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise RuntimeError(
            f"--device=cuda but onnxruntime offers only {available}; install onnxruntime-gpu "
            "(same version) on a CUDA image, or use --device=auto"
        )
    if device != "cpu" and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxScorer:
    """An onnxruntime session over the model's ``numeric`` / ``categorical`` inputs (either may be absent).

    .. seealso:: https://onnxruntime.ai/docs/api/python/api_summary.html#inferencesession

    :param path: the ``model.onnx`` file.
    :param n_numeric: expected width of the ``numeric`` input (0: the graph has none).
    :param n_categorical: expected width of the ``categorical`` input (0: the graph has none).
    :param output: name of the output (``probability``, ``probabilities`` or ``prediction``).
    :param device: ``auto``, ``cpu`` or ``cuda``.
    :param intra_op_threads: onnxruntime intra-op threads (1 keeps small requests fast).
    """

    def __init__(self, path, n_numeric: int, n_categorical: int, output: str = "probability",
                 device: str = "auto", intra_op_threads: int = 1):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = select_providers(device, ort.get_available_providers())
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.provider = self.session.get_providers()[0]
        logger.info("onnxruntime %s: running on %s (requested %s)", ort.__version__, self.provider, providers)
        inputs = {i.name: i for i in self.session.get_inputs()}
        wanted = [(n, w, k) for n, w, k in (("numeric", n_numeric, "tensor(float)"),
                                            ("categorical", n_categorical, "tensor(int64)")) if w]
        for name, width, kind in wanted:
            if name not in inputs:
                raise ValueError(f"{path}: the graph has no input {name!r} (inputs: {sorted(inputs)})")
            if inputs[name].type != kind or inputs[name].shape[-1] not in (width, None) and not isinstance(inputs[name].shape[-1], str):
                raise ValueError(
                    f"{path}: input {name!r} is {inputs[name].type} {inputs[name].shape}; "
                    f"input_schema.json expects {kind} [N, {width}]"
                )
        extra = sorted(set(inputs) - {n for n, _, _ in wanted})
        if extra:
            raise ValueError(f"{path}: the graph takes input(s) {extra} that input_schema.json does not describe")
        self.has_numeric, self.has_categorical = bool(n_numeric), bool(n_categorical)
        outputs = [o.name for o in self.session.get_outputs()]
        if output not in outputs:
            raise ValueError(f"{path}: the graph has no output {output!r} (outputs: {outputs})")
        self.output_names = [output]
        self._run = self.session.run

    def __call__(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        feeds = {}
        if self.has_numeric:
            feeds["numeric"] = numeric
        if self.has_categorical:
            feeds["categorical"] = categorical
        (out,) = self._run(self.output_names, feeds)
        return out if out.ndim == 2 and out.shape[1] > 1 else out.reshape(-1)
