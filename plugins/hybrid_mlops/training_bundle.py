"""The training source bundle (``sourcedir.tar.gz``) that SageMaker script mode unpacks and runs.

It holds the spec's ``source_dir`` (entry point, requirements.txt) plus the numpy-only metrics module
the project's trainer shares with the Airflow side, so both compute every figure with the same code.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from hybrid_mlops.settings import PROJECT_ROOT

PACKAGE = Path(__file__).resolve().parent
SHARED_MODULES = {"metrics.py": PACKAGE / "metrics.py"}


def build_source_bundle(source_dir: str) -> bytes:
    """A reproducible gzip tarball of the source dir and the shared modules (sorted, mtime 0)."""
    root = (PROJECT_ROOT / source_dir).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"training.source_dir {source_dir!r} is not a directory under {PROJECT_ROOT}")
    members = {p.relative_to(root).as_posix(): p for p in root.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".lock")}
    members.update(SHARED_MODULES)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for name in sorted(members):
            data = members[name].read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
