"""The training bundle's requirements resolve for the Python of the spec's training image, and do not
reinstall the image's torch (a multi-GB CUDA download) or its numpy. Resolves against the package
index with uv, for the image's platform (manylinux x86_64) and wheels only, as the container installs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "include" / "training" / "requirements.txt"


def image_python(image_uri: str) -> str:
    """``...:2.8.0-gpu-py312-cu129-...`` -> ``3.12``."""
    found = re.search(r"-py3(\d+)", image_uri.rsplit(":", 1)[-1])
    assert found, f"{image_uri}: no -py3NN in the tag; name a PyTorch DLC tag"
    return f"3.{found.group(1)}"


def test_bundle_requirements_resolve_for_the_training_images_python(spec):
    python = image_python(spec.training.image_uri)
    uv = ROOT / ".tools" / "bin" / "uv"
    proc = subprocess.run(
        [str(uv), "pip", "compile", "--quiet", "--no-header", "--python-version", python,
         "--python-platform", "x86_64-manylinux_2_28", "--only-binary", ":all:", str(REQUIREMENTS)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"not installable on Python {python}:\n{proc.stderr[-3000:]}"
    resolved = {line.split("==")[0].lower() for line in proc.stdout.splitlines() if "==" in line}
    assert not {"torch", "nvidia-cudnn-cu12", "triton"} & resolved, f"reinstalls the image's torch: {sorted(resolved)}"
    pinned = [line for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in line for line in pinned), pinned
    assert not any(line.split("==")[0] in ("torch", "numpy") for line in pinned), pinned


def test_the_image_is_a_current_pytorch_dlc(spec):
    tag = spec.training.image_uri.rsplit(":", 1)[-1]
    major, minor = (int(x) for x in tag.split("-")[0].split(".")[:2])
    assert "pytorch-training" in spec.training.image_uri and (major, minor) >= (2, 8), tag
    assert tuple(map(int, image_python(spec.training.image_uri).split("."))) >= (3, 11)  # numpy 2.x, pyarrow 26
