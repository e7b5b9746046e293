"""The project's tabular trainer (SageMaker PyTorch script mode), driven by the model's schema.

An MLP for any tabular model the spec describes: task ``binary``, ``multiclass`` or ``regression``,
numeric and/or categorical features. It honours the SageMaker training-container contract, so the
same file runs in a SageMaker training job and, on the ``local`` target, as a subprocess under the
same layout:

- hyperparameters arrive as ``--name value`` arguments;
- channels: ``SM_CHANNEL_TRAIN`` / ``SM_CHANNEL_VALIDATION`` (Parquet) and ``SM_CHANNEL_CONFIG``
  (``schema.json``: task, label, features, classes);
- the model goes to ``SM_MODEL_DIR`` (SageMaker tars it into ``model.tar.gz``);
- checkpoints go to ``--checkpoint-dir`` (``/opt/ml/checkpoints``, synced with
  ``CheckpointConfig.S3Uri``): a reclaimed spot job resumes from the newest one;
- more than one host (``SM_HOSTS``) means distributed data-parallel training: NCCL on GPUs, gloo
  on CPUs; model and tensors live on the GPU when there is one;
- metrics are printed as ``name=value`` lines that the job's metric definitions parse.

The model directory holds what the training contract asks of any trainer (README, "Add your
model"): ``model.onnx``, ``input_schema.json``, ``evaluation.json``; plus a Triton model repository
(``triton/<model>/``).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import random
import shutil
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import metrics  # noqa: E402  (bundled beside this file)

OUTPUTS = {"binary": "probability", "multiclass": "probabilities", "regression": "prediction"}


def log(message: str) -> None:
    print(message, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    p.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"))
    p.add_argument("--validation", default=os.environ.get("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation"))
    p.add_argument("--schema", default=os.path.join(os.environ.get("SM_CHANNEL_CONFIG", "/opt/ml/input/data/config"),
                                                    "schema.json"))
    p.add_argument("--checkpoint-dir", default=os.environ.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
    p.add_argument("--output-data-dir", default=os.environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
    # SageMaker passes every hyperparameter; ignore the framework's own (sagemaker_*).
    args, unknown = p.parse_known_args(argv)
    stray = [u for u in unknown if u.startswith("--") and not u.startswith("--sagemaker_")]
    if stray:
        p.error(f"unknown hyperparameter(s): {stray}")
    return args


# ---------------------------------------------------------------- data


class Schema:
    """``schema.json`` of the config channel: what the spec's ``task`` and ``schema`` say."""

    def __init__(self, path: str):
        try:
            with open(path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise SystemExit(f"no schema at {path}: the config channel must carry schema.json") from None
        self.model = doc["model"]
        self.task = doc["task"]
        self.label = doc["label"]
        self.id = doc.get("id")
        self.numeric = list(doc.get("numeric", []))
        self.categorical = list(doc.get("categorical", []))
        self.domains = dict(doc.get("domains") or {})
        self.classes = [str(c) for c in doc["classes"]] if doc.get("classes") else None
        if self.task not in OUTPUTS:
            raise SystemExit(f"schema.json: task={self.task!r} must be one of {sorted(OUTPUTS)}")
        if not self.numeric and not self.categorical:
            raise SystemExit("schema.json: no features")


def read_channel(path: str, columns: list[str]) -> dict[str, np.ndarray]:
    files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    if not files:
        raise SystemExit(f"no Parquet files in channel {path}")
    tables = [pq.read_table(f) for f in files]
    missing = [c for c in columns if c not in tables[0].column_names]
    if missing:
        raise SystemExit(f"channel {path} lacks column(s) {missing}")
    return {c: np.concatenate([t.column(c).to_numpy(zero_copy_only=False) for t in tables]) for c in columns}


def build_vocab(cols, schema: Schema) -> dict[str, list[str]]:
    """Category -> code: the values seen in training plus the spec's declared domain."""
    vocab = {}
    for c in schema.categorical:
        seen = {str(v) for v in cols[c].tolist() if v is not None}
        vocab[c] = sorted(seen | set(schema.domains.get(c) or []))
    return vocab


def encode(cols, schema: Schema, vocab) -> tuple[np.ndarray, np.ndarray]:
    n = len(next(iter(cols.values())))
    numeric = np.empty((n, len(schema.numeric)), dtype=np.float32)
    for j, c in enumerate(schema.numeric):
        numeric[:, j] = np.asarray(cols[c], dtype=np.float64)  # None -> NaN (imputed in the graph)
    codes = np.empty((n, len(schema.categorical)), dtype=np.int64)
    for j, c in enumerate(schema.categorical):
        lookup = {v: i for i, v in enumerate(vocab[c])}
        codes[:, j] = np.fromiter((lookup.get(None if v is None else str(v), -1) for v in cols[c]), np.int64, n)
    return numeric, codes


def encode_labels(values: np.ndarray, schema: Schema) -> np.ndarray:
    """binary: 0/1 floats; multiclass: class indices in ``schema.classes`` order; regression: floats."""
    if schema.task == "multiclass":
        index = {c: i for i, c in enumerate(schema.classes)}
        text = [str(v) for v in values.tolist()]
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise SystemExit(f"label {schema.label!r} has value(s) {unknown[:5]} not in schema.classes {schema.classes}")
        return np.fromiter((index[t] for t in text), np.int64, len(text))
    try:
        y = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise SystemExit(f"label {schema.label!r} must be numeric for task {schema.task!r}") from None
    if np.isnan(y).any():
        raise SystemExit(f"label {schema.label!r} has {int(np.isnan(y).sum())} missing value(s)")
    if schema.task == "binary":
        bad = sorted(set(np.unique(y).tolist()) - {0.0, 1.0})
        if bad:
            raise SystemExit(f"label {schema.label!r} must be 0/1 for task 'binary'; found {bad[:5]}")
    return y.astype(np.float32)


# ---------------------------------------------------------------- model


class TabularNet(nn.Module):
    """Raw features in, the task's raw output out: imputation, scaling and one-hot live in the graph,
    so the exported ONNX model needs no preprocessing beyond mapping categories to codes."""

    def __init__(self, mean, std, cardinalities: list[int], hidden: int, out_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.cardinalities = list(cardinalities)
        for j, k in enumerate(cardinalities):
            self.register_buffer(f"levels_{j}", torch.arange(k, dtype=torch.int64))
        width = len(mean) + sum(cardinalities)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, max(hidden // 2, 2)), nn.ReLU(),
            nn.Linear(max(hidden // 2, 2), out_dim),
        )

    @staticmethod
    def squash(x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x) * torch.log(torch.abs(x) + 1.0)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.mean.numel():
            x = self.squash(numeric)
            x = torch.where(torch.isnan(x), self.mean, x)  # missing -> the training mean
            parts.append((x - self.mean) / self.std)
        for j in range(len(self.cardinalities)):
            parts.append((categorical[:, j : j + 1] == getattr(self, f"levels_{j}")).to(torch.float32))
        return self.mlp(torch.cat(parts, dim=1))


class Served(nn.Module):
    """The exported model: the task's output from whichever inputs the schema has."""

    def __init__(self, net: TabularNet, task: str, y_mean: float, y_std: float, has_numeric: bool,
                 has_categorical: bool):
        super().__init__()
        self.net, self.task = net, task
        self.has_numeric, self.has_categorical = has_numeric, has_categorical
        self.register_buffer("y_mean", torch.tensor(y_mean, dtype=torch.float32))
        self.register_buffer("y_std", torch.tensor(y_std, dtype=torch.float32))

    def head(self, raw: torch.Tensor) -> torch.Tensor:
        if self.task == "binary":
            return torch.sigmoid(raw.squeeze(1))
        if self.task == "multiclass":
            return torch.softmax(raw, dim=1)
        return raw.squeeze(1) * self.y_std + self.y_mean

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        inputs = list(inputs)
        numeric = inputs.pop(0) if self.has_numeric else None
        categorical = inputs.pop(0) if self.has_categorical else None
        n = (numeric if numeric is not None else categorical).shape[0]
        if numeric is None:
            numeric = torch.zeros((n, 0), dtype=torch.float32, device=categorical.device)
        if categorical is None:
            categorical = torch.zeros((n, 0), dtype=torch.int64, device=numeric.device)
        return self.head(self.net(numeric, categorical))

    def input_names(self) -> list[str]:
        return [n for n, has in (("numeric", self.has_numeric), ("categorical", self.has_categorical)) if has]

    def pick(self, numeric, codes) -> tuple:
        return tuple(x for x, has in ((numeric, self.has_numeric), (codes, self.has_categorical)) if has)


# ---------------------------------------------------------------- distributed


def distributed_context() -> tuple[int, int, torch.device]:
    """(rank, world size, device) from SageMaker's host list; initialises torch.distributed when > 1."""
    hosts = json.loads(os.environ.get("SM_HOSTS", '["algo-1"]'))
    current = os.environ.get("SM_CURRENT_HOST", hosts[0])
    world, rank = len(hosts), hosts.index(current)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        master = os.environ.get("MASTER_ADDR", hosts[0])
        port = os.environ.get("MASTER_PORT", "29500")
        dist.init_process_group(backend, init_method=f"tcp://{master}:{port}", rank=rank, world_size=world)
        log(f"distributed: rank {rank} of {world} ({backend} on {device}, master {master}:{port})")
    else:
        log(f"training on {device}")
    return rank, world, device


# ---------------------------------------------------------------- checkpoints


def latest_checkpoint(directory: str) -> str | None:
    found = sorted(glob.glob(os.path.join(directory, "checkpoint-epoch-*.pt")))
    return found[-1] if found else None


def save_checkpoint(directory: str, epoch: int, model, optimizer, vocab, keep: int = 2) -> None:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"checkpoint-epoch-{epoch:04d}.pt")
    tmp = path + ".tmp"
    torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "vocab": vocab, "rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)  # a reclaimed instance never leaves a half-written checkpoint
    for old in sorted(glob.glob(os.path.join(directory, "checkpoint-epoch-*.pt")))[:-keep]:
        os.remove(old)


# ---------------------------------------------------------------- export


def export_onnx(model: Served, path: str, numeric: np.ndarray, codes: np.ndarray) -> float:
    """Export to ONNX (on the CPU); the largest |onnxruntime - torch| / max(1, |torch|) on the given rows."""
    import onnxruntime as ort

    model = model.to("cpu").eval()
    names = model.input_names()
    output = OUTPUTS[model.task]
    sample = tuple(torch.from_numpy(x[:8]) for x in model.pick(numeric, codes))
    torch.onnx.export(
        model, sample, path, input_names=names, output_names=[output],
        dynamic_axes={**{n: {0: "batch"} for n in names}, output: {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run([output], dict(zip(names, model.pick(numeric, codes))))[0]
    with torch.no_grad():
        want = model(*(torch.from_numpy(x) for x in model.pick(numeric, codes))).numpy()
    want = want.astype(np.float64)
    diff = np.abs(got.astype(np.float64) - want) / np.maximum(1.0, np.abs(want))  # relative beyond 1 (regression)
    return float(np.max(diff)) if not np.isnan(diff).any() else float("nan")


def triton_config(name: str, schema: Schema, n_classes: int) -> str:
    inputs = []
    if schema.numeric:
        inputs.append(f'  {{ name: "numeric" data_type: TYPE_FP32 dims: [ {len(schema.numeric)} ] }}')
    if schema.categorical:
        inputs.append(f'  {{ name: "categorical" data_type: TYPE_INT64 dims: [ {len(schema.categorical)} ] }}')
    output = OUTPUTS[schema.task]
    dims = f"dims: [ {n_classes} ]" if schema.task == "multiclass" else "dims: [ 1 ] reshape: { shape: [ ] }"
    return (
        f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 4096\n'
        "input [\n" + ",\n".join(inputs) + "\n]\n"
        f'output [\n  {{ name: "{output}" data_type: TYPE_FP32 {dims} }}\n]\n'
        "instance_group [ { kind: KIND_GPU count: 1 } ]\n"
        "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
    )


def write_triton_repository(model_dir: str, schema: Schema, n_classes: int) -> None:
    version_dir = os.path.join(model_dir, "triton", schema.model, "1")
    os.makedirs(version_dir, exist_ok=True)
    shutil.copyfile(os.path.join(model_dir, "model.onnx"), os.path.join(version_dir, "model.onnx"))
    with open(os.path.join(model_dir, "triton", schema.model, "config.pbtxt"), "w") as f:
        f.write(triton_config(schema.model, schema, n_classes))


# ---------------------------------------------------------------- main


def predict(model: Served, numeric, codes, device, batch=65536) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(numeric), batch):
            x = (torch.from_numpy(a[i : i + batch]).to(device) for a in model.pick(numeric, codes))
            out.append(model(*x).cpu().numpy())
    return np.concatenate(out)


def evaluate(schema: Schema, y: np.ndarray, out: np.ndarray) -> tuple[dict, float | None]:
    """The task's metrics on the validation set (and the binary decision threshold)."""
    if schema.task == "binary":
        threshold = metrics.best_f1_threshold(y, out)
        return metrics.binary_metrics(y, out, threshold), threshold
    if schema.task == "multiclass":
        return metrics.multiclass_metrics(y, out, schema.classes), None
    return metrics.regression_metrics(y, out), None


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("SM_LOCAL_WORLD", "1"))))
    rank, world, device = distributed_context()
    started = time.time()

    schema = Schema(args.schema)
    columns = [*schema.numeric, *schema.categorical, schema.label]
    train, valid = read_channel(args.train, columns), read_channel(args.validation, columns)
    resume = latest_checkpoint(args.checkpoint_dir)
    state = torch.load(resume, weights_only=False, map_location="cpu") if resume else None
    vocab = state["vocab"] if state else build_vocab(train, schema)
    x_num, x_cat = encode(train, schema, vocab)
    v_num, v_cat = encode(valid, schema, vocab)
    y, v_y = encode_labels(train[schema.label], schema), encode_labels(valid[schema.label], schema)
    n_classes = len(schema.classes) if schema.task == "multiclass" else 1
    y_mean, y_std = (float(y.mean()), float(y.std()) or 1.0) if schema.task == "regression" else (0.0, 1.0)

    squashed = np.sign(x_num) * np.log1p(np.abs(x_num))
    mean = np.nan_to_num(np.nanmean(squashed, axis=0)) if x_num.shape[1] else np.zeros(0)
    std = (np.nan_to_num(np.nanstd(squashed, axis=0)) + 1e-6) if x_num.shape[1] else np.zeros(0)
    net = TabularNet(mean, std, [len(vocab[c]) for c in schema.categorical], args.hidden, n_classes).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    first_epoch = 1
    if state:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        first_epoch = state["epoch"] + 1
        log(f"resumed from checkpoint {os.path.basename(resume)}: continuing at epoch {first_epoch}")
    ddp = (nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
           if world > 1 else net)
    served = Served(net, schema.task, y_mean, y_std, bool(schema.numeric), bool(schema.categorical)).to(device)

    # each rank trains on its own shard, on its device
    shard = np.arange(rank, len(y), world)
    t_num = torch.from_numpy(x_num[shard]).to(device)
    t_cat = torch.from_numpy(x_cat[shard]).to(device)
    if schema.task == "multiclass":
        t_y, loss_fn = torch.from_numpy(y[shard]).to(device), nn.CrossEntropyLoss()
    elif schema.task == "binary":
        t_y, loss_fn = torch.from_numpy(y[shard]).to(device).unsqueeze(1), nn.BCEWithLogitsLoss()
    else:
        t_y, loss_fn = torch.from_numpy((y[shard] - y_mean) / y_std).to(device).unsqueeze(1), nn.MSELoss()
    generator = torch.Generator().manual_seed(args.seed + rank)
    for epoch in range(first_epoch, args.epochs + 1):
        ddp.train()
        order = torch.randperm(len(t_y), generator=generator).to(device)
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(ddp(t_num[idx], t_cat[idx]), t_y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        out = predict(served, v_num, v_cat, device)
        v_loss = (metrics.regression_metrics(v_y, out)["rmse"] if schema.task == "regression"
                  else metrics.log_loss(v_y, out))
        if rank == 0:
            log(f"epoch={epoch} train_loss={total / max(len(order), 1):.6f} validation_loss={v_loss:.6f}")
            save_checkpoint(args.checkpoint_dir, epoch, net, optimizer, vocab)
    if world > 1:
        dist.barrier()
    if rank != 0:
        return 0

    out = predict(served, v_num, v_cat, device)
    evaluation, threshold = evaluate(schema, v_y, out)
    os.makedirs(args.model_dir, exist_ok=True)
    evaluation["onnx_max_abs_diff"] = export_onnx(served, os.path.join(args.model_dir, "model.onnx"), v_num, v_cat)
    evaluation.update(task=schema.task, epochs=args.epochs, training_rows=int(len(y)), world_size=world,
                      device=device.type, training_seconds=round(time.time() - started, 3))
    log(" ".join(f"validation_{k}={v:.6f}" for k, v in evaluation.items()
                 if isinstance(v, float) and k != "onnx_max_abs_diff" and not math.isinf(v)))
    log(f"onnx_max_abs_diff={evaluation['onnx_max_abs_diff']:.2e}")

    input_schema = {"model": schema.model, "task": schema.task, "id": schema.id, "numeric": schema.numeric,
                    "categorical": {c: vocab[c] for c in schema.categorical}, "output": OUTPUTS[schema.task]}
    if threshold is not None:
        input_schema["threshold"] = threshold
    if schema.classes:
        input_schema["classes"] = schema.classes
    for name, body in (("input_schema.json", input_schema), ("evaluation.json", evaluation)):
        with open(os.path.join(args.model_dir, name), "w") as f:
            json.dump(body, f, indent=2)
    write_triton_repository(args.model_dir, schema, n_classes)
    os.makedirs(args.output_data_dir, exist_ok=True)
    shutil.copyfile(os.path.join(args.model_dir, "evaluation.json"), os.path.join(args.output_data_dir, "evaluation.json"))
    log(f"model written to {args.model_dir}: {sorted(os.listdir(args.model_dir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
