"""The model's input schema and the request decoders that check every payload against it.

Every error is a :class:`kserve.errors.InvalidInput` whose message names the field and what was
expected, so a bad payload is a 400 and never reaches onnxruntime.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

#: Outputs per task: the graph's output and what the response adds.
TASK_OUTPUTS = {"binary": "probability", "multiclass": "probabilities", "regression": "prediction"}
NUMERIC_DATATYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
}
_UNPACK_LEN = struct.Struct("<I").unpack_from


@dataclass
class Batch:
    """One decoded request: model tensors plus what request capture records.

    :param request_id: the request's id (echoed in the response and in capture).
    :param protocol: ``"v1"`` or ``"v2"``.
    :param numeric: float32 [N, len(numeric features)], NaN = missing.
    :param categorical: int64 [N, len(categorical features)], -1 = unknown.
    :param columns: feature (and the id column) -> the values as sent.
    """

    request_id: str
    protocol: str
    numeric: np.ndarray
    categorical: np.ndarray
    columns: dict[str, Any]
    binary_output: bool = False
    requested_outputs: tuple[str, ...] | None = None
    scores: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return self.numeric.shape[0]


class InputSchema:
    """``input_schema.json`` of a model artifact, with the lookups the decoders need.

    :param spec: the parsed JSON: ``model``, ``task`` (binary, multiclass, regression), ``numeric``
        (names in column order), ``categorical`` (feature -> vocabulary in code order), ``output``,
        ``classes`` (multiclass), ``threshold`` (binary) and ``id`` (the optional id column).
    :param max_rows: the most rows one request may carry.
    :param id_column: the id column when the schema names none (the model spec's ``schema.id``).
    """

    def __init__(self, spec: dict, max_rows: int = 100_000, id_column: str | None = None):
        try:
            self.task = str(spec.get("task", "binary"))
            self.numeric = tuple(spec.get("numeric") or ())
            self.vocab = {name: tuple(values) for name, values in (spec.get("categorical") or {}).items()}
            self.output = str(spec.get("output", TASK_OUTPUTS.get(self.task, "")))
            self.threshold = float(spec.get("threshold", 0.5))
            self.classes = tuple(str(c) for c in spec.get("classes") or ())
            self.id_column = spec.get("id") or id_column
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(
                f"input_schema.json: {exc!r}; expected keys task, numeric (list), categorical (dict of lists), "
                "output (str), classes (multiclass), threshold (binary)"
            ) from exc
        if self.task not in TASK_OUTPUTS:
            raise ValueError(f"input_schema.json: task={self.task!r} must be one of {sorted(TASK_OUTPUTS)}")
        if not self.numeric and not self.vocab:
            raise ValueError("input_schema.json: the model has no features (numeric and categorical both empty)")
        if self.task == "multiclass" and len(self.classes) < 2:
            raise ValueError("input_schema.json: a multiclass model needs its classes, in output order")
        self.model = spec.get("model")
        self.max_rows = max_rows
        self.categorical = tuple(self.vocab)
        self.features = self.numeric + self.categorical
        self.feature_set = frozenset(self.features)
        self.accepted = self.feature_set | ({self.id_column} if self.id_column else set())
        self.numeric_index = {name: i for i, name in enumerate(self.numeric)}
        self.categorical_index = {name: i for i, name in enumerate(self.categorical)}
        # str and bytes -> code; None (missing) -> -1 like an unseen category
        self.lookup = {name: {v: i for i, v in enumerate(values)} for name, values in self.vocab.items()}
        self.lookup_bytes = {
            name: {v.encode(): i for i, v in enumerate(values)} for name, values in self.vocab.items()
        }
        self._expected = (
            f"numeric features {list(self.numeric)} and categorical features {list(self.categorical)}"
        )
        self._optional = f" (and optionally {self.id_column!r})" if self.id_column else ""

    @classmethod
    def from_file(cls, path: str | Path, max_rows: int = 100_000, id_column: str | None = None) -> InputSchema:
        with open(path) as f:
            return cls(json.load(f), max_rows=max_rows, id_column=id_column)

    # ------------------------------------------------------------------ v2 metadata
    def v2_inputs(self) -> list[dict]:
        specs = [{"name": n, "datatype": "FP32", "shape": [-1]} for n in self.numeric]
        specs += [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in self.categorical]
        return specs

    def v2_outputs(self) -> list[dict]:
        if self.task == "regression":
            return [{"name": self.output, "datatype": "FP32", "shape": [-1]}]
        if self.task == "multiclass":
            return [{"name": self.output, "datatype": "FP32", "shape": [-1, len(self.classes)]},
                    {"name": "label", "datatype": "BYTES", "shape": [-1]}]
        return [{"name": self.output, "datatype": "FP32", "shape": [-1]},
                {"name": "label", "datatype": "INT8", "shape": [-1]}]

    def output_names(self) -> tuple[str, ...]:
        return tuple(o["name"] for o in self.v2_outputs())

    # ------------------------------------------------------------------ shared checks
    def _rows(self, n: int, where: str) -> int:
        if n < 1:
            raise InvalidInput(f"{where}: no rows; send at least one")
        if n > self.max_rows:
            raise InvalidInput(f"{where}: {n} rows is more than the limit of {self.max_rows} per request; split it")
        return n

    def _numeric_column(self, name: str, values: Any, where: str) -> np.ndarray:
        """A JSON list of numbers (null = missing) -> float64 array."""
        if not isinstance(values, list):
            raise InvalidInput(f"{where}: expected a list of numbers, got {type(values).__name__}")
        try:
            arr = np.asarray(values)
        except ValueError as exc:  # ragged nesting
            raise InvalidInput(f"{where}: expected a flat list of numbers ({exc})") from None
        kind = arr.dtype.kind
        if kind in "fiu":
            return arr.astype(np.float64, copy=False).reshape(-1)
        if kind == "O":
            flat = arr.reshape(-1)
            for v in flat:
                if v is not None and (type(v) not in (int, float)):
                    raise InvalidInput(f"{where}: {v!r} is not a number (null means missing)")
            return np.array(flat, dtype=np.float64)
        sample = next((v for v in arr.reshape(-1) if not isinstance(v, (int, float)) or isinstance(v, bool)), None)
        raise InvalidInput(f"{where}: {sample!r} is not a number; {name} takes numbers (null means missing)")

    def _categorical_codes(self, name: str, values: list, where: str) -> np.ndarray:
        """Strings (or UTF-8 bytes; null = missing) -> int64 codes, -1 for unknown or missing."""
        if not isinstance(values, list):
            raise InvalidInput(f"{where}: expected a list of strings, got {type(values).__name__}")
        lut = self.lookup_bytes[name] if values and isinstance(values[0], bytes) else self.lookup[name]
        try:
            codes = [lut.get(v, -1) for v in values]
        except TypeError:  # unhashable: a list or an object
            bad = next(v for v in values if isinstance(v, (list, dict)))
            raise InvalidInput(f"{where}: {bad!r} is not a string; {name} takes strings") from None
        arr = np.array(codes, dtype=np.int64)
        unknown = np.flatnonzero(arr < 0)
        if unknown.size:
            slut, blut = self.lookup[name], self.lookup_bytes[name]
            for i in unknown:
                v = values[i]
                if v is None:
                    continue
                if isinstance(v, bytes):
                    arr[i] = blut.get(v, -1)
                elif isinstance(v, str):
                    arr[i] = slut.get(v, -1)
                else:
                    raise InvalidInput(f"{where}: {v!r} is not a string; {name} takes strings")
        return arr

    # ------------------------------------------------------------------ v2
    def decode_v2(self, inputs: list, request_id: str, max_rows: int | None = None) -> Batch:
        """Check and decode v2 inputs (kserve ``InferInput`` objects) into a :class:`Batch`."""
        seen: dict[str, Any] = {}
        for inp in inputs:
            name = inp.name
            if name not in self.accepted:
                raise InvalidInput(f"inputs: unknown input {name!r}; the model takes {self._expected}{self._optional}")
            if name in seen:
                raise InvalidInput(f"inputs: {name!r} given twice")
            seen[name] = inp
        missing = [n for n in self.features if n not in seen]
        if missing:
            raise InvalidInput(f"inputs: missing feature(s) {missing}; the model takes {self._expected}")

        n_rows = None
        numeric = None
        categorical = None
        columns: dict[str, Any] = {}
        for name, inp in seen.items():
            where = f"input {name!r}"
            shape = inp.shape
            if (
                not isinstance(shape, (list, tuple))
                or not 1 <= len(shape) <= 2
                or not all(type(d) is int for d in shape)
                or (len(shape) == 2 and shape[1] != 1)
            ):
                raise InvalidInput(f"{where}: shape {shape!r} must be [N] or [N, 1]")
            n = shape[0]
            if n_rows is None:
                n_rows = self._rows(n, where)
                numeric = np.empty((n_rows, len(self.numeric)), dtype=np.float32)
                categorical = np.empty((n_rows, len(self.categorical)), dtype=np.int64)
            elif n != n_rows:
                raise InvalidInput(f"{where}: shape {shape} has {n} rows but other inputs have {n_rows}")
            datatype = inp.datatype
            raw = inp._raw_data
            if name in self.numeric_index:
                if datatype not in NUMERIC_DATATYPES:
                    raise InvalidInput(f"{where}: datatype {datatype} is not numeric; send FP32 or FP64")
                if raw is not None:
                    dtype = np.dtype(NUMERIC_DATATYPES[datatype])
                    if len(raw) != n * dtype.itemsize:
                        raise InvalidInput(
                            f"{where}: {len(raw)} binary bytes, expected {n * dtype.itemsize} "
                            f"({n} x {datatype})"
                        )
                    col = np.frombuffer(raw, dtype=dtype)
                    kept = col
                else:
                    data = inp.data
                    col = self._numeric_column(name, data, where)
                    if col.size != n:
                        raise InvalidInput(f"{where}: {col.size} values for shape {shape}")
                    kept = data if not isinstance(data[0], list) else col  # capture the values as sent
                numeric[:, self.numeric_index[name]] = col
                columns[name] = kept
            else:
                if datatype != "BYTES":
                    raise InvalidInput(f"{where}: datatype {datatype} must be BYTES (strings)")
                if raw is not None:
                    values = _split_bytes(raw, n, where)
                else:
                    values = inp.data
                    if isinstance(values, list) and values and isinstance(values[0], list):
                        values = [v for row in values for v in (row if isinstance(row, list) else [row])]
                    if not isinstance(values, list):
                        raise InvalidInput(f"{where}: expected a list of strings, got {type(values).__name__}")
                    if len(values) != n:
                        raise InvalidInput(f"{where}: {len(values)} values for shape {shape}")
                if name != self.id_column:
                    categorical[:, self.categorical_index[name]] = self._categorical_codes(name, values, where)
                elif not all(isinstance(v, (str, bytes)) for v in values):
                    raise InvalidInput(f"{where}: ids must be strings")
                columns[name] = values
        return Batch(request_id, "v2", numeric, categorical, columns)

    # ------------------------------------------------------------------ v1
    def decode_v1(self, body: Any, request_id: str) -> Batch:
        """Check and decode a v1 ``{"instances": [{feature: value, ...}, ...]}`` body."""
        if not isinstance(body, dict):
            raise InvalidInput(f'body: expected a JSON object {{"instances": [...]}}, got {type(body).__name__}')
        instances = body.get("instances")
        if not isinstance(instances, list):
            raise InvalidInput('body: "instances" must be a list of objects, one per row')
        n = self._rows(len(instances), "instances")
        plain, with_id = self.feature_set, self.accepted
        for i, row in enumerate(instances):
            if not isinstance(row, dict):
                raise InvalidInput(f"instances[{i}]: expected an object of features, got {type(row).__name__}")
            keys = row.keys()
            if keys != plain and keys != with_id:
                self._check_row_keys(i, row)
        numeric = np.empty((n, len(self.numeric)), dtype=np.float32)
        categorical = np.empty((n, len(self.categorical)), dtype=np.int64)
        columns: dict[str, Any] = {}
        for name, j in self.numeric_index.items():
            values = [row[name] for row in instances]
            numeric[:, j] = self._numeric_column(name, values, f"instances[*].{name}")
            columns[name] = values
        for name, j in self.categorical_index.items():
            values = [row[name] for row in instances]
            categorical[:, j] = self._categorical_codes(name, values, f"instances[*].{name}")
            columns[name] = values
        if self.id_column and self.id_column in instances[0]:
            ids = [row.get(self.id_column) for row in instances]
            if not all(isinstance(v, str) for v in ids):
                raise InvalidInput(f"instances[*].{self.id_column}: must be a string on every row, or on none")
            columns[self.id_column] = ids
        return Batch(request_id, "v1", numeric, categorical, columns)

    def _check_row_keys(self, i: int, row: dict) -> None:
        keys = set(row)
        missing = [n for n in self.features if n not in keys]
        if missing:
            raise InvalidInput(f"instances[{i}]: missing feature(s) {missing}; each instance needs {self._expected}")
        unknown = sorted(keys - self.accepted)
        if unknown:
            raise InvalidInput(f"instances[{i}]: unknown field(s) {unknown}; each instance takes {self._expected}"
                               f"{self._optional}")


def _split_bytes(raw: bytes, n: int, where: str) -> list[bytes]:
    """The v2 binary BYTES layout (4-byte little-endian length, then the bytes) -> ``n`` items."""
    out = []
    append = out.append
    off = 0
    end = len(raw)
    try:
        for _ in range(n):
            (length,) = _UNPACK_LEN(raw, off)
            off += 4
            if off + length > end:
                raise struct.error("element runs past the end")
            append(raw[off : off + length])
            off += length
    except struct.error as exc:
        raise InvalidInput(f"{where}: malformed binary BYTES tensor ({exc}); expected {n} length-prefixed strings") from None
    if off != end:
        raise InvalidInput(f"{where}: {end - off} trailing bytes after {n} length-prefixed strings")
    return out

