"""Benchmark of core.diversity on CPU: time of all metrics at N=2000, D=1024 and peak memory at N=10,000.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_diversity.py --repeats 3
       /usr/bin/time -v python benchmarks/bench_diversity.py --n 10000 --dim 1024 --repeats 1
Peak memory is the process's maximum resident set size (ru_maxrss), numpy/torch imports included.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

from comfy_aig.core import diversity as dv


def make_sets(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 feature sets [n, dim] with decaying spectra, the second partly collapsed."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(1.0 + np.arange(dim))).astype(np.float32)
    ref = rng.standard_normal((n, dim), dtype=np.float32) * scale
    other = 0.5 * rng.standard_normal((n, dim), dtype=np.float32) * scale + 0.1
    return ref, other


def time_all(ref, other, repeats: int) -> tuple[float, float, dict]:
    """Best wall and process-CPU seconds over repeats of diversity_metrics (SCD, log-SCD, FID, P/R, Vendi x2, cosine)."""
    best_wall, best_cpu, result = float("inf"), float("inf"), {}
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = dv.diversity_metrics(ref, other, k=5)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    ref, other = make_sets(args.n, args.dim)
    seconds, cpu_seconds, metrics = time_all(ref, other, args.repeats)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    report = {"n": args.n, "dim": args.dim, "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
              "threads": os.environ.get("OMP_NUM_THREADS", "default"), "load_avg_1min": os.getloadavg()[0], "peak_rss_mib": round(peak_mib, 1),
              "metrics": {k: round(v, 6) for k, v in metrics.items()}}
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
