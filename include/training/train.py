"""Fraud-detection training entry point (SageMaker PyTorch script mode).

Honours the SageMaker training-container contract, so the same file runs in a SageMaker
training job and, on the ``local`` target, as a subprocess under the same layout:

- hyperparameters arrive as ``--name value`` arguments (and in ``SM_HPS``);
- channels are read from ``SM_CHANNEL_TRAIN`` / ``SM_CHANNEL_VALIDATION`` (Parquet files);
- the model goes to ``SM_MODEL_DIR`` (SageMaker tars it into ``model.tar.gz``);
- checkpoints go to ``--checkpoint-dir`` (``/opt/ml/checkpoints``, synced with
  ``CheckpointConfig.S3Uri``): a reclaimed spot job resumes from the newest one;
- more than one host (``SM_HOSTS``) means distributed data-parallel training (gloo on CPU,
  nccl on GPU), rank 0 writing checkpoints and the model;
- metrics are printed as ``name=value`` lines that the spec's metric definitions parse.

The model directory holds ``model.onnx``, ``input_schema.json``, ``evaluation.json``, the
training baseline (``statistics.json`` and ``constraints.json`` in SageMaker Model Monitor's
shapes) and a Triton model repository (``triton/<model>/``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import metrics  # noqa: E402  (bundled beside this file)
import monitor_format  # noqa: E402  (bundled beside this file)

NUMERIC = ["amount", "avg_amount_30d", "hour", "distance_km", "txn_count_24h", "account_age_days", "card_present"]
CATEGORICAL = ["merchant_category", "channel", "country"]


def log(message: str) -> None:
    print(message, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--model-name", default="fraud-detection")
    p.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    p.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"))
    p.add_argument("--validation", default=os.environ.get("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation"))
    p.add_argument("--checkpoint-dir", default=os.environ.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
    p.add_argument("--output-data-dir", default=os.environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
    # SageMaker passes every hyperparameter; ignore the framework's own (sagemaker_*).
    args, unknown = p.parse_known_args(argv)
    stray = [u for u in unknown if u.startswith("--") and not u.startswith("--sagemaker_")]
    if stray:
        p.error(f"unknown hyperparameter(s): {stray}")
    return args


# ---------------------------------------------------------------- data


def read_channel(path: str) -> dict[str, np.ndarray]:
    files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    if not files:
        raise SystemExit(f"no Parquet files in channel {path}")
    tables = [pq.read_table(f) for f in files]
    cols = {}
    for name in tables[0].column_names:
        parts = [t.column(name).to_numpy(zero_copy_only=False) for t in tables]
        cols[name] = np.concatenate(parts)
    missing = [c for c in NUMERIC + CATEGORICAL + ["label"] if c not in cols]
    if missing:
        raise SystemExit(f"channel {path} lacks column(s) {missing}")
    return cols


def build_vocab(cols: dict[str, np.ndarray]) -> dict[str, list[str]]:
    return {c: sorted({v for v in cols[c].tolist() if v is not None}) for c in CATEGORICAL}


def encode(cols, vocab) -> tuple[np.ndarray, np.ndarray]:
    numeric = np.stack([np.asarray(cols[c], dtype=np.float32) for c in NUMERIC], axis=1)
    codes = np.empty((numeric.shape[0], len(CATEGORICAL)), dtype=np.int64)
    for j, c in enumerate(CATEGORICAL):
        lookup = {v: i for i, v in enumerate(vocab[c])}
        codes[:, j] = np.fromiter((lookup.get(v, -1) for v in cols[c]), dtype=np.int64, count=numeric.shape[0])
    return numeric, codes


# ---------------------------------------------------------------- model


class FraudNet(nn.Module):
    """Raw features in, fraud probability out: imputation, scaling and one-hot live in the graph,
    so the exported ONNX model needs no preprocessing beyond mapping categories to codes."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, cardinalities: list[int], hidden: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.register_buffer("impute", torch.tensor(mean, dtype=torch.float32))
        self.cardinalities = list(cardinalities)
        for j, k in enumerate(cardinalities):
            self.register_buffer(f"levels_{j}", torch.arange(k, dtype=torch.int64))
        width = len(mean) + sum(cardinalities)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 1)
        )

    @staticmethod
    def squash(x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x) * torch.log(torch.abs(x) + 1.0)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Fraud log-odds (training uses these; :class:`Probability` is what gets exported)."""
        x = self.squash(numeric)
        x = torch.where(torch.isnan(x), self.impute, x)
        parts = [(x - self.mean) / self.std]
        for j in range(len(self.cardinalities)):
            levels = getattr(self, f"levels_{j}")
            parts.append((categorical[:, j : j + 1] == levels).to(torch.float32))
        return self.mlp(torch.cat(parts, dim=1)).squeeze(1)


class Probability(nn.Module):
    """The served model: fraud probability from raw features."""

    def __init__(self, net: FraudNet):
        super().__init__()
        self.net = net

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(numeric, categorical))


# ---------------------------------------------------------------- distributed


def distributed_context() -> tuple[int, int]:
    """(rank, world size) from SageMaker's host list; initialises torch.distributed when > 1."""
    hosts = json.loads(os.environ.get("SM_HOSTS", '["algo-1"]'))
    current = os.environ.get("SM_CURRENT_HOST", hosts[0])
    world, rank = len(hosts), hosts.index(current)
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        master = os.environ.get("MASTER_ADDR", hosts[0])
        port = os.environ.get("MASTER_PORT", "29500")
        dist.init_process_group(backend, init_method=f"tcp://{master}:{port}", rank=rank, world_size=world)
        log(f"distributed: rank {rank} of {world} ({backend}, master {master}:{port})")
    return rank, world


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


def export_onnx(model: Probability, path: str, numeric: np.ndarray, codes: np.ndarray) -> float:
    """Export to ONNX and return the largest |onnxruntime - torch| on the given rows."""
    import onnxruntime as ort

    model.eval()
    sample = (torch.from_numpy(numeric[:8]), torch.from_numpy(codes[:8]))
    torch.onnx.export(
        model, sample, path, input_names=["numeric", "categorical"], output_names=["probability"],
        dynamic_axes={"numeric": {0: "batch"}, "categorical": {0: "batch"}, "probability": {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(["probability"], {"numeric": numeric, "categorical": codes})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(numeric), torch.from_numpy(codes)).numpy()
    return float(np.max(np.abs(got - want)))


TRITON_CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: 4096
input [
  {{ name: "numeric" data_type: TYPE_FP32 dims: [ {n_num} ] }},
  {{ name: "categorical" data_type: TYPE_INT64 dims: [ {n_cat} ] }}
]
output [
  {{ name: "probability" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }}
]
instance_group [ {{ kind: KIND_GPU count: 1 }} ]
dynamic_batching {{ max_queue_delay_microseconds: 500 }}
"""


def write_triton_repository(model_dir: str, name: str) -> None:
    version_dir = os.path.join(model_dir, "triton", name, "1")
    os.makedirs(version_dir, exist_ok=True)
    shutil.copyfile(os.path.join(model_dir, "model.onnx"), os.path.join(version_dir, "model.onnx"))
    with open(os.path.join(model_dir, "triton", name, "config.pbtxt"), "w") as f:
        f.write(TRITON_CONFIG.format(name=name, n_num=len(NUMERIC), n_cat=len(CATEGORICAL)))


# ---------------------------------------------------------------- main


def predict(model, numeric, codes, batch=65536) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(numeric), batch):
            out.append(model(torch.from_numpy(numeric[i : i + batch]), torch.from_numpy(codes[i : i + batch])).numpy())
    return np.concatenate(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("SM_LOCAL_WORLD", "1"))))
    rank, world = distributed_context()
    started = time.time()

    train, valid = read_channel(args.train), read_channel(args.validation)
    resume = latest_checkpoint(args.checkpoint_dir)
    state = torch.load(resume, weights_only=False) if resume else None
    vocab = state["vocab"] if state else build_vocab(train)
    x_num, x_cat = encode(train, vocab)
    v_num, v_cat = encode(valid, vocab)
    y = np.asarray(train["label"], dtype=np.float32)
    v_y = np.asarray(valid["label"], dtype=np.float32)

    squashed = np.sign(x_num) * np.log1p(np.abs(x_num))
    mean = np.nanmean(squashed, axis=0)
    std = np.nanstd(squashed, axis=0) + 1e-6
    model = FraudNet(mean, std, [len(vocab[c]) for c in CATEGORICAL], args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    first_epoch = 1
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        first_epoch = state["epoch"] + 1
        log(f"resumed from checkpoint {os.path.basename(resume)}: continuing at epoch {first_epoch}")
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    served = Probability(model)

    # each rank trains on its own shard
    shard = np.arange(rank, len(y), world)
    t_num, t_cat, t_y = torch.from_numpy(x_num[shard]), torch.from_numpy(x_cat[shard]), torch.from_numpy(y[shard])
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(args.seed + rank)
    for epoch in range(first_epoch, args.epochs + 1):
        net.train()
        order = torch.randperm(len(t_y), generator=generator)
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(net(t_num[idx], t_cat[idx]), t_y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        probs = predict(served, v_num, v_cat)
        v_loss = float(np.mean(-(v_y * np.log(np.clip(probs, 1e-7, 1)) + (1 - v_y) * np.log(np.clip(1 - probs, 1e-7, 1)))))
        auc = metrics.roc_auc(v_y, probs)
        if rank == 0:
            log(f"epoch={epoch} train_loss={total / len(order):.6f} validation_loss={v_loss:.6f} "
                f"validation_roc_auc={auc:.6f}")
            save_checkpoint(args.checkpoint_dir, epoch, model, optimizer, vocab)
    if world > 1:
        dist.barrier()
    if rank != 0:
        return 0

    probs = predict(served, v_num, v_cat)
    threshold = metrics.best_f1_threshold(v_y, probs)
    evaluation = metrics.classification_metrics(v_y, probs, threshold)
    if "true_probability" in valid:
        evaluation["oracle_roc_auc"] = metrics.roc_auc(v_y, valid["true_probability"])
    os.makedirs(args.model_dir, exist_ok=True)
    evaluation["onnx_max_abs_diff"] = export_onnx(served, os.path.join(args.model_dir, "model.onnx"), v_num, v_cat)
    evaluation.update(epochs=args.epochs, training_rows=int(len(y)), world_size=world,
                      training_seconds=round(time.time() - started, 3))
    log(" ".join(f"validation_{k}={evaluation[k]:.6f}" for k in ("accuracy", "pr_auc", "precision", "recall", "f1")))
    log(f"oracle_roc_auc={evaluation.get('oracle_roc_auc', float('nan')):.6f} "
        f"onnx_max_abs_diff={evaluation['onnx_max_abs_diff']:.2e}")

    schema = {"model": args.model_name, "numeric": NUMERIC, "categorical": vocab,
              "output": "probability", "threshold": threshold}
    stats = monitor_format.dataset_statistics(train, NUMERIC, CATEGORICAL)
    files = {"input_schema.json": schema, "evaluation.json": evaluation, "statistics.json": stats,
             "constraints.json": monitor_format.suggest_constraints(stats)}
    for name, body in files.items():
        with open(os.path.join(args.model_dir, name), "w") as f:
            json.dump(body, f, indent=2)
    write_triton_repository(args.model_dir, args.model_name)
    os.makedirs(args.output_data_dir, exist_ok=True)
    shutil.copyfile(os.path.join(args.model_dir, "evaluation.json"), os.path.join(args.output_data_dir, "evaluation.json"))
    log(f"model written to {args.model_dir}: {sorted(os.listdir(args.model_dir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
