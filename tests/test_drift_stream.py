"""Large windows in bounded memory: StreamedWindow's exact figures from per-slot counts, and the streamed
capture reader on the moto server giving the same rows as the monitor's reader."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import boto3
import numpy as np
import pytest
import scipy.stats

from hybrid_mlops.drift import engine


@pytest.mark.parametrize("seed", range(6))
def test_streamed_window_equals_the_whole_window(seed):
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(50, 3000)), int(rng.integers(50, 3000))
    if seed % 2:  # ties within and across the samples
        ref, cur = rng.integers(0, 12, n).astype(float), rng.integers(0, 14, m).astype(float)
    else:
        ref, cur = rng.normal(size=n), rng.normal(0.1 * seed, 1.2, m)
    cur[rng.random(m) < 0.03] = np.nan
    prepared = engine.prepare_column(ref)
    stream = engine.StreamedWindow("f", prepared)
    for chunk in np.array_split(cur, 7):
        stream.add(chunk)
    got, want = stream.result(), engine.numeric_drift_prepared("f", prepared, cur)
    present = cur[~np.isnan(cur)]
    assert want.ks_statistic == scipy.stats.ks_2samp(prepared.values, present).statistic
    assert got.ks_statistic == pytest.approx(want.ks_statistic, abs=1e-15)
    assert got.ks_pvalue == pytest.approx(want.ks_pvalue, rel=1e-12, abs=1e-15)
    assert (got.window_count, got.window_missing) == (want.window_count, want.window_missing)
    assert got.psi == pytest.approx(want.psi, abs=1e-12) and got.js == pytest.approx(want.js, abs=1e-12)
    assert got.window_mean == pytest.approx(want.window_mean) and got.window_std == pytest.approx(want.window_std)


def test_streamed_capture_reader_matches_the_monitor_reader(aws):
    from hybrid_mlops.drift.capture import capture_key, capture_lines
    from hybrid_mlops.hooks.drift import DriftHook

    hour = datetime(2026, 5, 1, 10, tzinfo=timezone.utc)
    rng = np.random.default_rng(3)
    bucket = os.environ["HYBRID_MLOPS_BUCKET"]
    s3 = boto3.client("s3")
    for part in range(3):
        cols = {"x": rng.normal(size=700), "y": rng.normal(size=700),
                "c": rng.choice(np.array(["a", "b", "c"], dtype=object), 700)}
        cols["x"][::50] = np.nan
        s3.put_object(Bucket=bucket, Key=capture_key("m", hour), Body="\n".join(
            capture_lines(cols, ["x", "y", "c"], model="m", hour=hour, batch=100, outputs=rng.random(700))))
    hook = DriftHook(aws_conn_id=None)
    prefix = "capture/m/2026/05/01/10/"
    whole = hook.read_capture_window(bucket, prefix, ["x", "y"], ["c"])
    batches = list(hook.iter_capture_batches(bucket, prefix, ["x", "y"], ["c"], batch_rows=500))
    assert len(batches) >= 4 and sum(b.num_rows for b in batches) == whole["rows"] == 2100
    for name in ("x", "y"):
        streamed = np.concatenate([b.column(name).to_numpy(zero_copy_only=False) for b in batches])
        assert np.array_equal(np.sort(streamed), np.sort(whole["columns"][name]), equal_nan=True)
    streamed_c = sorted(v for b in batches for v in b.column("c").to_pylist())
    assert streamed_c == sorted(whole["columns"]["c"].tolist())
