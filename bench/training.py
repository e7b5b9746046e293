"""Model quality against its ceiling: validation ROC AUC of the trained model vs the oracle AUC.

The generator knows each row's true fraud probability, so the oracle ROC AUC of the validation set
is the best any model can do there (the peer this bench compares against). Runs the real training
entry point in the training env on the spec's local budget, for a few seeds, and prints the gap
and the ONNX-vs-PyTorch agreement.

    .venv/bin/python bench/training.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from hybrid_mlops.data.generator import generate, oracle_auc, write_parquet  # noqa: E402
from hybrid_mlops.data.sources import schema_document  # noqa: E402
from hybrid_mlops.specs import load_spec  # noqa: E402
from hybrid_mlops.training_bundle import build_source_bundle  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    spec = load_spec(ROOT / "include" / "models" / "fraud-detection.yaml")
    hp = {**spec.training.hyperparameters, **spec.training.local.hyperparameters}
    source = spec.data.source
    print(f"training rows {source.rows:,}, validation rows {source.validation_rows:,}, "
          f"hyperparameters {hp}")
    print(f"{'seed':>4} {'roc_auc':>8} {'oracle':>8} {'gap':>7} {'pr_auc':>7} {'onnx diff':>10} {'seconds':>8}")
    worst = 0.0
    for seed in range(1, args.seeds + 1):
        work = Path(tempfile.mkdtemp(prefix="bench-train-"))
        tarfile.open(fileobj=io.BytesIO(build_source_bundle("include/training"))).extractall(work / "code", filter="data")
        for name, n, s in (("train", source.rows, 100 + seed), ("validation", source.validation_rows, 200 + seed)):
            (work / name).mkdir()
            data = generate(n, seed=s, fraud_rate=source.positive_rate)
            oracle = oracle_auc(data)
            write_parquet(data, work / name / "part-0.parquet")
        (work / "config").mkdir()
        (work / "config" / "schema.json").write_text(json.dumps(schema_document(spec)))
        env = {"PATH": os.environ["PATH"], "SM_MODEL_DIR": str(work / "model"), "SM_CHANNEL_TRAIN": str(work / "train"),
               "SM_CHANNEL_VALIDATION": str(work / "validation"), "SM_CHANNEL_CONFIG": str(work / "config"),
               "SM_CHECKPOINT_DIR": str(work / "ck"), "SM_OUTPUT_DATA_DIR": str(work / "out")}
        cmd = [str(ROOT / ".venv-train" / "bin" / "python"), "train.py", "--seed", str(seed)]
        for k, v in hp.items():
            cmd += [f"--{k}", str(v)]
        started = time.time()
        subprocess.run(cmd, cwd=work / "code", env=env, check=True, capture_output=True)
        e = json.loads((work / "model" / "evaluation.json").read_text())
        e["oracle_roc_auc"] = oracle  # of the validation set, the last one generated
        gap = e["oracle_roc_auc"] - e["roc_auc"]
        worst = max(worst, gap)
        print(f"{seed:>4} {e['roc_auc']:>8.4f} {e['oracle_roc_auc']:>8.4f} {gap:>7.4f} {e['pr_auc']:>7.4f} "
              f"{e['onnx_max_abs_diff']:>10.2e} {time.time() - started:>8.1f}")
    print(f"\nlargest gap to the oracle: {worst:.4f} (bar 0.02) -> {'OK' if worst <= 0.02 else 'FAIL'}")
    return 0 if worst <= 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
