"""Drift throughput, side by side on the same Parquet data: this project's engine, scipy, Evidently.

    .venv/bin/python bench/drift.py [--rows 1000000] [--numeric 30] [--evidently-rows 200000]
    .venv/bin/python bench/drift.py --hourly [--rows 1000000] [--window-rows 100000]

Data: baseline and window of ``--rows`` rows each, ``--numeric`` float64 columns (half of them
shifted in the window) plus 3 categorical columns, written as Parquet (pyarrow's defaults). Every
contender starts from the Parquet files, with its libraries already imported (an import is paid once
per process, not per value). The engine runs on one core (``OMP_NUM_THREADS=1``, single-threaded
numpy) and reads the files one column at a time (``ParquetFile.read(columns=[name])``, categoricals
as dictionaries), so each column's buffers are reused instead of faulting in fresh memory for the
whole table; the scipy loop reads the same way. Evidently (``DataDriftPreset``) runs in its own env,
``.venv-bench`` (built here with ``.tools/bin/uv`` from ``bench/requirements-drift.txt``), reading
with pandas, on ``--evidently-rows`` rows per side when that is smaller, which the output says.
Evidently reads only those rows (the first record batch of that size) and is credited with exactly
what it read; the ratio compares values per second.

``--hourly``: the monitor's hourly shape. The baseline (``--rows``) is prepared once, outside the
clock, as registration does (sorted columns stored as ``.npy``); each regime (no shift, a mild
0.01 sd shift, a strong 0.1 sd shift of half the columns) then times one hourly run: read the
``--window-rows`` window from Parquet, memory-map the prepared baseline, KS (p-value bounded at the
1e-3 threshold) + PSI + JS per feature, credited with baseline + window values. Peak RSS is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

CATS = {"merchant_category": 8, "channel": 4, "country": 8}

EVIDENTLY_SCRIPT = r"""
import json, sys, time
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
t0 = time.perf_counter()
import pyarrow.parquet as pq
n = int(sys.argv[3])  # read only the rows Evidently is credited with
ref = next(pq.ParquetFile(sys.argv[1]).iter_batches(batch_size=n)).to_pandas()
cur = next(pq.ParquetFile(sys.argv[2]).iter_batches(batch_size=n)).to_pandas()
report = Report([DataDriftPreset()])
snap = report.run(reference_data=ref, current_data=cur)
json.dumps(snap.dict(), default=str)
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": len(ref), "cols": ref.shape[1]}))
"""


def make_data(path: Path, rows: int, numeric: int, shifted: float, seed: int) -> None:
    """``shifted``: shift of the even columns in their standard deviations (0: none; True: 0.1)."""
    rng = np.random.default_rng(seed)
    cols = {}
    for i in range(numeric):
        x = rng.lognormal(1.0 + 0.05 * i, 0.6, rows) if i % 2 else rng.normal(i, 1 + i / 10, rows)
        if shifted and i % 2 == 0:
            x = x + (0.1 if shifted is True else float(shifted)) * x.std()
        cols[f"f{i:02d}"] = x
    for name, k in CATS.items():
        p = np.arange(1, k + 1, dtype=float)[::-1]
        codes = rng.choice(k, rows, p=p / p.sum())
        cols[name] = pa.DictionaryArray.from_arrays(codes.astype(np.int32), [f"{name}_{j}" for j in range(k)]).cast(pa.string())
    pq.write_table(pa.table(cols), path)


def open_parquet(path: Path) -> pq.ParquetFile:
    return pq.ParquetFile(path, read_dictionary=list(CATS))


def read_column(f: pq.ParquetFile, name: str) -> np.ndarray:
    """One numeric column as numpy (zero-copy from Arrow when it is one chunk without nulls)."""
    return f.read(columns=[name], use_threads=False).column(0).to_numpy()


def category_counts(f: pq.ParquetFile, name: str) -> dict[str, int]:
    """Value counts of a dictionary-encoded column, counted in Arrow (nulls left out)."""
    vc = f.read(columns=[name], use_threads=False).column(0).value_counts()
    return {k: n for k, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()) if k is not None}


def run_engine(ref_path: Path, cur_path: Path, numeric: list[str]) -> tuple[float, list]:
    import scipy.special  # noqa: F401  (the engine's only scipy import, loaded lazily; before the clock)

    from hybrid_mlops.drift import engine

    t0 = time.perf_counter()
    ref_f, cur_f = open_parquet(ref_path), open_parquet(cur_path)
    out = []
    for name in numeric:
        out.append(engine.numeric_drift(name, read_column(ref_f, name), read_column(cur_f, name)))
    for name in CATS:  # value counts in Arrow, then the 2 x K tests
        ref_counts, cur_counts = category_counts(ref_f, name), category_counts(cur_f, name)
        out.append(engine.categorical_drift_from_counts(name, ref_counts, cur_counts))
    return time.perf_counter() - t0, out


def run_scipy(ref_path: Path, cur_path: Path, numeric: list[str]) -> tuple[float, list]:
    import scipy.stats

    t0 = time.perf_counter()
    ref_f, cur_f = open_parquet(ref_path), open_parquet(cur_path)
    out = [scipy.stats.ks_2samp(read_column(ref_f, n), read_column(cur_f, n)) for n in numeric]
    return time.perf_counter() - t0, out


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_hourly(args) -> None:
    """The hourly regimes against a prepared baseline (see the module docstring)."""
    import scipy.special  # noqa: F401  (loaded before the clock, as in a warm worker)

    from hybrid_mlops.drift import engine

    numeric = [f"f{i:02d}" for i in range(args.numeric)]
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "baseline.parquet"
        make_data(ref, args.rows, args.numeric, 0, 1)
        ref_f = open_parquet(ref)
        prepared_dir = Path(tmp) / "prepared"
        engine.save_prepared(engine.prepare_baseline({n: read_column(ref_f, n) for n in numeric}), prepared_dir)
        for label, shift in (("no shift", 0), ("mild shift 0.01 sd", 0.01), ("strong shift 0.1 sd", 0.1)):
            cur = Path(tmp) / f"window-{shift}.parquet"
            make_data(cur, args.window_rows, args.numeric, shift, 2)
            t0 = time.perf_counter()
            cur_f = open_parquet(cur)
            base = engine.load_prepared(prepared_dir, numeric)
            res = [engine.numeric_drift_prepared(n, base[n], read_column(cur_f, n), ks_alpha=1e-3) for n in numeric]
            secs = time.perf_counter() - t0
            flagged = sum(r.ks_pvalue < 1e-3 for r in res)
            rows.append((label, secs, (args.rows + args.window_rows) * args.numeric / secs, flagged))
    print(f"\nHourly drift: prepared baseline of {args.rows:,} rows, window {args.window_rows:,} rows, "
          f"{args.numeric} numeric, one core (load average {load0} before, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after)")
    print(f"{'regime':<24}{'seconds':>10}{'M values/s':>13}{'flagged':>10}")
    for label, secs, vps, flagged in rows:
        print(f"{label:<24}{secs:>10.3f}{vps / 1e6:>13.1f}{flagged:>7}/{args.numeric}")
    ok = all(vps >= 30e6 for _, _, vps, _ in rows)
    print(f"goal (>= 30 M values/s in every regime): {'met' if ok else 'NOT met'}; peak RSS {peak_rss_mib():.0f} MiB")


def bench_env() -> Path:
    py = ROOT / ".venv-bench" / "bin" / "python"
    if not py.exists():
        uv = ROOT / ".tools" / "bin" / "uv"
        subprocess.run([str(uv), "venv", "--quiet", "--python", "3.11", str(ROOT / ".venv-bench")], check=True)
        subprocess.run([str(uv), "pip", "install", "--quiet", "--python", str(py), "-r",
                        str(ROOT / "bench" / "requirements-drift.txt")], check=True)
    return py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--numeric", type=int, default=30)
    ap.add_argument("--evidently-rows", type=int, default=200_000)
    ap.add_argument("--skip-evidently", action="store_true")
    ap.add_argument("--hourly", action="store_true", help="the hourly regimes against a prepared baseline")
    ap.add_argument("--window-rows", type=int, default=100_000)
    args = ap.parse_args()
    if args.hourly:
        return run_hourly(args)
    numeric = [f"f{i:02d}" for i in range(args.numeric)]
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        ref, cur = Path(tmp) / "baseline.parquet", Path(tmp) / "window.parquet"
        make_data(ref, args.rows, args.numeric, 0, 1)
        make_data(cur, args.rows, args.numeric, True, 2)
        values = 2 * args.rows * (args.numeric + len(CATS))
        rows = []
        t_engine, res = run_engine(ref, cur, numeric)
        rows.append(("engine (KS+PSI+JS, chi2+Linf+JS)", args.rows, t_engine, values / t_engine))
        t_scipy, sres = run_scipy(ref, cur, numeric)
        scipy_values = 2 * args.rows * args.numeric
        rows.append(("scipy ks_2samp loop (numeric only)", args.rows, t_scipy, scipy_values / t_scipy))
        worst = max(max(abs(a.ks_statistic - b.statistic), abs(a.ks_pvalue - b.pvalue)) for a, b in zip(res, sres))
        flagged = sorted(r.feature for r in res[: args.numeric] if r.ks_pvalue < 1e-3)
        ev_note = ""
        if not args.skip_evidently:
            n_ev = min(args.rows, args.evidently_rows)
            py = bench_env()
            done = subprocess.run([str(py), "-c", EVIDENTLY_SCRIPT, str(ref), str(cur), str(n_ev)],
                                  capture_output=True, text=True, check=True)
            ev = json.loads(done.stdout.strip().splitlines()[-1])
            ev_values = 2 * ev["rows"] * ev["cols"]
            rows.append(("evidently DataDriftPreset", ev["rows"], ev["seconds"], ev_values / ev["seconds"]))
            if n_ev < args.rows:
                ev_note = f"(Evidently measured on the first {n_ev:,} rows per side to keep the run short)"
    print(f"\nDrift throughput: {args.rows:,} baseline + {args.rows:,} window rows x {args.numeric} numeric "
          f"+ {len(CATS)} categorical, from Parquet, one core for the engine "
          f"(load average {load0} before, {' '.join(f'{x:.2f}' for x in os.getloadavg())} after)")
    print(f"{'contender':<38}{'rows/side':>12}{'seconds':>10}{'M values/s':>13}")
    for name, n, secs, vps in rows:
        print(f"{name:<38}{n:>12,}{secs:>10.2f}{vps / 1e6:>13.2f}")
    print(f"engine vs scipy loop: {rows[0][3] / rows[1][3]:.1f}x")
    if len(rows) > 2:
        print(f"engine vs Evidently:  {rows[0][3] / rows[2][3]:.1f}x  {ev_note}")
    ok = rows[0][3] >= 10e6 and (len(rows) < 3 or rows[0][3] >= 30 * rows[2][3])
    print(f"goal (>= 10 M values/s on one core, >= 30x Evidently's values/s): {'met' if ok else 'NOT met'}")
    print(f"max |engine - scipy| over KS statistic and p-value: {worst:.2e}; flagged (KS p<1e-3): {len(flagged)} "
          f"of {args.numeric} (shifted: {len(numeric[::2])}); peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
