"""The training entry point under the SageMaker container contract (run in the training env)."""

from __future__ import annotations

import json
import os

from conftest import ROOT, train_locally


def test_model_dir_holds_the_contract(trained_model_dir):
    names = {p.name for p in trained_model_dir.iterdir()}
    assert {"model.onnx", "input_schema.json", "evaluation.json", "triton"} <= names
    assert (trained_model_dir / "triton" / "fraud-detection" / "1" / "model.onnx").exists()
    schema = json.loads((trained_model_dir / "input_schema.json").read_text())
    assert schema["task"] == "binary" and schema["output"] == "probability"
    assert schema["numeric"][0] == "amount" and "online" in schema["categorical"]["channel"]
    evaluation = json.loads((trained_model_dir / "evaluation.json").read_text())
    assert evaluation["onnx_max_abs_diff"] <= 1e-5
    for key in ("accuracy", "roc_auc", "pr_auc", "precision", "recall", "f1", "log_loss", "threshold"):
        assert key in evaluation
    assert evaluation["device"] == "cpu" and evaluation["training_rows"] == 20000


def test_resumes_from_newest_checkpoint(tmp_path):
    _, first = train_locally(tmp_path, rows=8000, epochs=2)
    assert "resumed" not in first and "epoch=2 " in first
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-epoch-0001.pt", "checkpoint-epoch-0002.pt"]
    _, second = train_locally(tmp_path, rows=8000, epochs=4)
    assert "resumed from checkpoint checkpoint-epoch-0002.pt: continuing at epoch 3" in second
    assert "epoch=1 " not in second and "epoch=2 " not in second
    assert "epoch=3 " in second and "epoch=4 " in second


def test_rejects_unknown_hyperparameter(tmp_path):
    try:
        train_locally(tmp_path, rows=2000, epochs=1, extra_args=("--epochz", "3"))
    except AssertionError as err:
        assert "unknown hyperparameter(s): ['--epochz'" in str(err)
    else:
        raise AssertionError("a misspelt hyperparameter must fail the job")


def test_distributed_two_ranks_on_loopback(tmp_path):
    """Two hosts (SM_HOSTS) train data-parallel with gloo over 127.0.0.1; rank 0 writes the model."""
    import os
    import subprocess

    from hybrid_mlops.local.moto import free_port

    train_locally(tmp_path, rows=4000, epochs=1)  # lays out data and code
    port = str(free_port())
    base = {
        "PATH": os.environ["PATH"], "SM_HOSTS": '["algo-1", "algo-2"]', "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port, "SM_LOCAL_WORLD": "2",
        "SM_CHANNEL_TRAIN": str(tmp_path / "train"), "SM_CHANNEL_VALIDATION": str(tmp_path / "validation"),
        "SM_CHANNEL_CONFIG": str(tmp_path / "config"),
    }
    procs = []
    for host in ("algo-1", "algo-2"):
        env = {**base, "SM_CURRENT_HOST": host, "SM_MODEL_DIR": str(tmp_path / f"model-{host}"),
               "SM_CHECKPOINT_DIR": str(tmp_path / f"ck-{host}"), "SM_OUTPUT_DATA_DIR": str(tmp_path / f"out-{host}")}
        procs.append(subprocess.Popen([str(ROOT / ".venv-train" / "bin" / "python"), "train.py", "--epochs", "1",
                                       "--batch-size", "256"], cwd=tmp_path / "code", env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "distributed: rank 0 of 2 (gloo on cpu" in outs[0] and "distributed: rank 1 of 2" in outs[1]
    assert (tmp_path / "model-algo-1" / "model.onnx").exists()
    assert not (tmp_path / "model-algo-2").exists()


def test_gpu_hosts_use_nccl_on_their_cuda_device(tmp_path):
    """No GPU here, so CUDA's presence and the process-group start are patched (nothing else can stand
    in for them): with CUDA, each host trains on cuda:0 and the ranks meet over NCCL, not gloo."""
    import subprocess

    script = (
        "import json, os, sys\n"
        "sys.path.insert(0, os.getcwd())\n"
        "import torch, torch.distributed as dist\n"
        "import train\n"
        "calls = []\n"
        "torch.cuda.is_available = lambda: True\n"
        "torch.cuda.set_device = lambda device: calls.append(('set_device', str(device)))\n"
        "dist.init_process_group = lambda backend, **kw: calls.append(('init', backend, kw['world_size']))\n"
        "rank, world, device = train.distributed_context()\n"
        "print(json.dumps({'rank': rank, 'world': world, 'device': str(device), 'calls': calls}))\n"
    )
    train_locally(tmp_path, rows=2000, epochs=1)  # lays out the code
    env = {"PATH": os.environ["PATH"], "SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}
    out = subprocess.run([str(ROOT / ".venv-train" / "bin" / "python"), "-c", script], cwd=tmp_path / "code",
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"rank": 1, "world": 2, "device": "cuda:0",
                   "calls": [["set_device", "cuda:0"], ["init", "nccl", 2]]}
