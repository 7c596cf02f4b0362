"""`make bench`: every benchmark figure of BENCHMARKS.md, printed and saved to WORKDIR/results.json."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from benchmarks import ingest_bench

SUITES = ("throughput", "baselines", "rss", "storage", "input", "train")


def baselines(workdir: str, seconds: float) -> dict:
    """Benchmark 2: the OpenCV loop on the throughput corpus, in its own process (imports timed)."""
    corpus = os.path.join(workdir, f"corpus_tp{int(seconds)}")
    paths = sorted(os.path.join(corpus, f) for f in os.listdir(corpus))
    out = subprocess.run([sys.executable, "-m", "benchmarks.baselines", os.path.join(workdir, "opencv.tfrecord"), *paths],
                         capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["frames_per_s"] = round(res["frames"] / res["seconds"], 1)
    res["frames_per_s_after_imports"] = round(res["frames"] / (res["seconds"] - res["import_seconds"]), 1)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="make bench", description=__doc__)
    p.add_argument("--workdir", default="bench_out")
    p.add_argument("--only", action="append", choices=SUITES, help="run only these (repeatable)")
    p.add_argument("--seconds", type=float, default=120, help="length of each of the 4 throughput clips")
    args = p.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    results = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
               "date": time.strftime("%Y-%m-%d"), "python": platform.python_version()}
    suites = args.only or list(SUITES)
    if "throughput" in suites or "baselines" in suites:
        results["throughput"] = ingest_bench.throughput(args.workdir, seconds=args.seconds)
        print(json.dumps({"throughput": results["throughput"]}, indent=1), flush=True)
    if "baselines" in suites:
        results["opencv_loop"] = baselines(args.workdir, args.seconds)
        print(json.dumps({"opencv_loop": results["opencv_loop"]}, indent=1), flush=True)
    if "rss" in suites:
        results["rss"] = ingest_bench.rss_vs_length(args.workdir)
        print(json.dumps({"rss": results["rss"]}, indent=1), flush=True)
    if "storage" in suites:
        results["storage"] = ingest_bench.storage(args.workdir)
        results["storage"]["jpeg_psnr_db"] = ingest_bench.jpeg_psnr(args.workdir)
        print(json.dumps({"storage": results["storage"]}, indent=1), flush=True)
    if "input" in suites:
        from benchmarks import input_bench
        results["input"] = input_bench.run(args.workdir)
        print(json.dumps({"input": results["input"]}, indent=1), flush=True)
    if "train" in suites:
        out = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput"], capture_output=True, text=True)
        results["train"] = out.stdout[-4000:]
        print(out.stdout[-4000:], flush=True)
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"results: {os.path.join(args.workdir, 'results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
