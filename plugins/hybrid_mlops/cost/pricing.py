"""The pinned SageMaker training price table (``include/pricing/sagemaker-training.json``)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from hybrid_mlops.settings import INCLUDE_DIR

PRICE_TABLE = INCLUDE_DIR / "pricing" / "sagemaker-training.json"


@lru_cache(maxsize=4)
def load_table(path: str | Path = PRICE_TABLE) -> dict:
    table = json.loads(Path(path).read_text())
    if table.get("currency") != "USD" or table.get("unit") != "instance-hour":
        raise ValueError(f"{path}: prices must be USD per instance-hour")
    return table


def pinned_price(region: str, instance_type: str, path: str | Path = PRICE_TABLE) -> float | None:
    """USD per instance-hour of SageMaker training, or None when the table does not list it."""
    price = load_table(str(path))["regions"].get(region, {}).get(instance_type)
    return float(price) if price is not None else None
