"""Drift throughput, side by side on the same Parquet data: this project's engine, scipy, Evidently.

    .venv/bin/python bench/drift.py [--rows 1000000] [--numeric 30] [--evidently-rows 200000]
    .venv/bin/python bench/drift.py --hourly [--rows 1000000] [--window-rows 100000]
    .venv/bin/python bench/drift.py --capture-rows 10000000 [--capture-numeric 6]

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

The default run uses the prepared baseline too (as the monitor does): the baseline's columns are
prepared once, outside the clock, as registration does (sorted, plus their counts on a uniform grid;
its time is printed), and the clocked run reads
the window from Parquet, memory-maps the prepared baseline and computes KS (p-value bounded at 1e-3),
PSI, JS and the categorical tests, credited with baseline + window values. The engine is also run on
exactly the rows Evidently reads, so the ratio compares the two on the same data.

``--capture-rows N``: a window of N rows (default 10 M) written as capture files (the predictor's
JSON lines) to a moto server on loopback, then read back from S3 with DuckDB in record batches
(:meth:`DriftHook.iter_capture_batches`) into :class:`engine.StreamedWindow` accumulators against a
prepared 1 M-row baseline: rows/s and the process's peak RSS are printed (the files are written by a
child process, so the peak is the reader's).

``--hourly``: the monitor's hourly shape. The baseline (``--rows``) is prepared once, outside the
clock, as registration does (sorted columns and grid counts stored as ``.npy``); each regime (no shift, a mild
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
import pyarrow.parquet as pq
t0 = time.perf_counter()  # libraries imported before the clock, as for the engine
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


def prepare(ref_path: Path, numeric: list[str], directory: Path, rows: int | None = None) -> tuple[float, dict]:
    """Registration's share: the baseline's numeric columns prepared into ``.npy`` files and its category
    counts (``statistics.json`` holds them); returns (seconds, counts). ``rows``: only the first rows."""
    from hybrid_mlops.drift import engine

    t0 = time.perf_counter()
    f = open_parquet(ref_path)
    cols = {n: read_column(f, n)[:rows] for n in numeric}
    engine.save_prepared(engine.prepare_baseline(cols), directory)
    table = f.read(columns=list(CATS), use_threads=False).slice(0, rows)
    counts = {}
    for name in CATS:
        vc = table.column(name).value_counts()
        counts[name] = {k: n for k, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())
                        if k is not None}
    return time.perf_counter() - t0, counts


def run_engine(prepared: Path, ref_counts: dict, cur_path: Path, numeric: list[str],
               rows: int | None = None) -> tuple[float, list]:
    """One window against the prepared baseline. ``rows``: only the window's first rows, read as Evidently
    reads them (the first record batch of that size), so both are credited with what they read."""
    import scipy.special  # noqa: F401  (the engine's only scipy import, loaded lazily; before the clock)

    from hybrid_mlops.drift import engine

    t0 = time.perf_counter()
    cur_f = open_parquet(cur_path)
    base = engine.load_prepared(prepared, numeric)
    if rows is None:
        columns = {n: read_column(cur_f, n) for n in numeric}
        cur_counts = {name: category_counts(cur_f, name) for name in CATS}
    else:
        batch = next(cur_f.iter_batches(batch_size=rows, use_threads=False))
        columns = {n: batch.column(n).to_numpy() for n in numeric}
        cur_counts = {}
        for name in CATS:
            vc = batch.column(name).value_counts()
            cur_counts[name] = {k: c for k, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())
                                if k is not None}
    out = [engine.numeric_drift_prepared(n, base[n], columns[n], ks_alpha=1e-3) for n in numeric]
    for name in CATS:  # value counts in Arrow, then the 2 x K tests
        out.append(engine.categorical_drift_from_counts(name, ref_counts[name], cur_counts[name]))
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
    """Evidently's own env, ``.venv-bench``, built here (never by bin/setup or the suite): uv from
    ``.tools`` (installed there as bin/setup does when missing), then ``bench/requirements-drift.txt``."""
    py = ROOT / ".venv-bench" / "bin" / "python"
    if not py.exists():
        uv = ROOT / ".tools" / "bin" / "uv"
        if not uv.exists():
            if not (ROOT / ".tools" / "bin" / "pip").exists():
                subprocess.run(["python3", "-m", "venv", str(ROOT / ".tools")], check=True)
            subprocess.run([str(ROOT / ".tools" / "bin" / "pip"), "install", "--quiet", "uv==0.13.8"], check=True)
        subprocess.run([str(uv), "venv", "--quiet", "--python", "3.11", str(ROOT / ".venv-bench")], check=True)
        subprocess.run([str(uv), "pip", "install", "--quiet", "--python", str(py), "-r",
                        str(ROOT / "bench" / "requirements-drift.txt")], check=True)
    return py


def write_capture(args) -> None:
    """Child process of ``--capture-rows``: the window as capture files on the moto server."""
    import boto3

    from hybrid_mlops.drift.capture import capture_lines

    s3 = boto3.client("s3", endpoint_url=args.endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="bench")
    rng = np.random.default_rng(2)
    per_file = 100_000  # ~10 MB of JSON lines per file (the predictor flushes smaller files more often)
    numeric = [f"f{i:02d}" for i in range(args.capture_numeric)]
    from datetime import datetime, timezone
    hour = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for k, start in enumerate(range(0, args.capture_rows, per_file)):
        n = min(per_file, args.capture_rows - start)
        cols = {f: np.round(rng.normal(i + (0.1 if i % 2 == 0 else 0), 1 + i / 10, n), 3)
                for i, f in enumerate(numeric)}
        cols["channel"] = rng.choice(np.array(["pos", "online", "mobile", "atm"], dtype=object), n)
        lines = capture_lines(cols, [*numeric, "channel"], model="bench", hour=hour, batch=1000,
                              outputs=np.round(rng.random(n), 4))
        s3.put_object(Bucket="bench", Key=f"capture/bench/2026/01/01/00/{k:05d}.jsonl",
                      Body="\n".join(lines).encode())


def run_capture(args) -> None:
    """``--capture-rows``: stream a large capture window from S3 (moto) against a prepared baseline."""
    import scipy.special  # noqa: F401

    from hybrid_mlops.local.moto import LOCAL_CREDENTIALS, MotoServer

    numeric = [f"f{i:02d}" for i in range(args.capture_numeric)]
    os.environ.update(LOCAL_CREDENTIALS)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with tempfile.TemporaryDirectory() as tmp:
        server = MotoServer(log_path=Path(tmp) / "moto.log").start()
        try:
            os.environ["AWS_ENDPOINT_URL"] = server.url
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--write-capture", "--endpoint", server.url, "--capture-rows",
                            str(args.capture_rows), "--capture-numeric", str(args.capture_numeric)], check=True)
            t_write = time.perf_counter() - t0
            from hybrid_mlops.drift import engine
            from hybrid_mlops.hooks.drift import DriftHook

            rng = np.random.default_rng(1)
            prepared = Path(tmp) / "prepared"
            engine.save_prepared(engine.prepare_baseline(
                {f: rng.normal(i, 1 + i / 10, 1_000_000) for i, f in enumerate(numeric)}), prepared)
            hook = DriftHook(aws_conn_id=None, region_name="us-east-1")
            size = sum(o["Size"] for o in hook.get_conn().list_objects_v2(Bucket="bench")["Contents"])
            rss0 = peak_rss_mib()
            t0 = time.perf_counter()
            base = engine.load_prepared(prepared, numeric)
            acc = {f: engine.StreamedWindow(f, base[f]) for f in numeric}
            channels: dict[str, int] = {}
            rows = batches = 0
            for batch in hook.iter_capture_batches("bench", "capture/bench/2026/01/01/00/", numeric, ["channel"],
                                                   batch_rows=args.batch_rows):
                for f in numeric:
                    acc[f].add(batch.column(f).to_numpy(zero_copy_only=False))
                vc = batch.column("channel").value_counts()
                for k, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
                    channels[k] = channels.get(k, 0) + n
                rows += batch.num_rows
                batches += 1
            res = [acc[f].result(ks_alpha=1e-3) for f in numeric]
            secs = time.perf_counter() - t0
        finally:
            server.stop()
    flagged = [r.feature for r in res if r.ks_pvalue < 1e-3]
    print(f"\nCapture window from S3 (moto server on loopback): {rows:,} rows x {len(numeric)} numeric + 1 "
          f"categorical in {size / 2**20:,.0f} MiB of JSON lines (written in {t_write:.0f} s by a child process), "
          f"streamed in {batches} batches of <= {args.batch_rows:,} rows against a prepared 1,000,000-row baseline, "
          f"one core")
    print(f"read + flatten + drift: {secs:.1f} s, {rows / secs / 1e6:.2f} M rows/s "
          f"({rows * len(numeric) / secs / 1e6:.1f} M numeric values/s)")
    print(f"peak RSS {peak_rss_mib():.0f} MiB (before reading: {rss0:.0f} MiB; the window's numeric columns "
          f"alone would take {rows * len(numeric) * 8 / 2**20:,.0f} MiB as float64); flagged (KS p<1e-3): "
          f"{sorted(flagged)} (shifted: {numeric[::2]}); channel counts {dict(sorted(channels.items()))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--numeric", type=int, default=30)
    ap.add_argument("--evidently-rows", type=int, default=200_000)
    ap.add_argument("--skip-evidently", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="the 1 M x 1 M engine run: best of this many")
    ap.add_argument("--hourly", action="store_true", help="the hourly regimes against a prepared baseline")
    ap.add_argument("--window-rows", type=int, default=100_000)
    ap.add_argument("--capture-rows", type=int, default=0, help="stream a capture window of this many rows from S3")
    ap.add_argument("--capture-numeric", type=int, default=6)
    ap.add_argument("--batch-rows", type=int, default=250_000)
    ap.add_argument("--write-capture", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_capture:
        return write_capture(args)
    if args.capture_rows:
        return run_capture(args)
    if args.hourly:
        return run_hourly(args)
    numeric = [f"f{i:02d}" for i in range(args.numeric)]
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        ref, cur = Path(tmp) / "baseline.parquet", Path(tmp) / "window.parquet"
        make_data(ref, args.rows, args.numeric, 0, 1)
        make_data(cur, args.rows, args.numeric, True, 2)
        t_prep, ref_counts = prepare(ref, numeric, Path(tmp) / "prepared")
        values = 2 * args.rows * (args.numeric + len(CATS))
        rows = []
        # best of --repeat runs (the machine may be shared); the ratio to Evidently below uses single runs of both
        t_engine, res = min((run_engine(Path(tmp) / "prepared", ref_counts, cur, numeric) for _ in range(args.repeat)),
                            key=lambda r: r[0])
        rows.append((f"engine, prepared baseline (best of {args.repeat})", args.rows, t_engine, values / t_engine))
        t_scipy, sres = run_scipy(ref, cur, numeric)
        scipy_values = 2 * args.rows * args.numeric
        rows.append(("scipy ks_2samp loop (numeric only)", args.rows, t_scipy, scipy_values / t_scipy))
        worst_d = max(abs(a.ks_statistic - b.statistic) for a, b in zip(res, sres))
        same_verdict = all((a.ks_pvalue < 1e-3) == (b.pvalue < 1e-3) for a, b in zip(res, sres))
        flagged = sorted(r.feature for r in res[: args.numeric] if r.ks_pvalue < 1e-3)
        ev = None
        if not args.skip_evidently:
            n_ev = min(args.rows, args.evidently_rows)
            py = bench_env()
            done = subprocess.run([str(py), "-c", EVIDENTLY_SCRIPT, str(ref), str(cur), str(n_ev)],
                                  capture_output=True, text=True, check=True)
            ev = json.loads(done.stdout.strip().splitlines()[-1])
            ev_values = 2 * ev["rows"] * ev["cols"]
            rows.append(("evidently DataDriftPreset", ev["rows"], ev["seconds"], ev_values / ev["seconds"]))
            _, small_counts = prepare(ref, numeric, Path(tmp) / "prepared-small", rows=ev["rows"])
            t_small, _ = run_engine(Path(tmp) / "prepared-small", small_counts, cur, numeric, rows=ev["rows"])
            rows.append(("engine on Evidently's rows", ev["rows"], t_small,
                         2 * ev["rows"] * (args.numeric + len(CATS)) / t_small))
    print(f"\nDrift throughput: {args.rows:,} baseline + {args.rows:,} window rows x {args.numeric} numeric "
          f"+ {len(CATS)} categorical, from Parquet, one core for the engine "
          f"(load average {load0} before, {' '.join(f'{x:.2f}' for x in os.getloadavg())} after)")
    print(f"baseline prepared once (registration, outside the clock): {t_prep:.2f} s")
    print(f"{'contender':<46}{'rows/side':>12}{'seconds':>10}{'M values/s':>13}")
    for name, n, secs, vps in rows:
        print(f"{name:<46}{n:>12,}{secs:>10.2f}{vps / 1e6:>13.2f}")
    print(f"engine vs scipy loop: {rows[0][3] / rows[1][3]:.1f}x")
    ok = rows[0][3] >= 30e6
    if ev:
        ratio = rows[3][3] / rows[2][3]
        ok = ok and ratio >= 30
        print(f"engine vs Evidently on the same {ev['rows']:,} rows per side (each credited with the values "
              f"it read): {ratio:.1f}x")
    print(f"goal (>= 30 M values/s on one core at 1 M x 1 M, >= 30x Evidently's values/s): "
          f"{'met' if ok else 'NOT met'}")
    print(f"max |engine - scipy| KS statistic: {worst_d:.2e}; same verdict at p<1e-3 on every feature: "
          f"{same_verdict}; flagged: {len(flagged)} of {args.numeric} (shifted: {len(numeric[::2])}); "
          f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
