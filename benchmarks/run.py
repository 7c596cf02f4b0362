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

SUITES = ("throughput", "baselines", "short", "rss", "storage", "input", "train", "append")


def baselines(workdir: str, seconds: float) -> dict:
    """Benchmark 2: the OpenCV loop and the TFDS Video feature on the throughput corpus.

    Each runs as one process (imports timed) over all clips, then as two processes at once over
    half the clips each, as a user would split the work by hand.
    """
    corpus = os.path.join(workdir, f"corpus_tp{int(seconds)}")
    paths = sorted(os.path.join(corpus, f) for f in os.listdir(corpus))
    res = {}
    for kind in ("opencv", "tfds"):
        out = _baseline(kind, workdir, [paths])[0]
        halves = _baseline(kind, workdir, [paths[0::2], paths[1::2]])
        wall2 = max(h["seconds"] for h in halves)
        imports2 = max(h["import_seconds"] for h in halves)
        res[kind] = {**out, "frames_per_s": round(out["frames"] / out["seconds"], 1),
                     "frames_per_s_after_imports": round(out["frames"] / (out["seconds"] - out["import_seconds"]), 1),
                     "two_processes_frames_per_s": round(sum(h["frames"] for h in halves) / wall2, 1),
                     "two_processes_frames_per_s_after_imports": round(
                         sum(h["frames"] for h in halves) / (wall2 - imports2), 1)}
    return res


def _baseline(kind: str, workdir: str, groups: list[list[str]]) -> list[dict]:
    """Runs one baseline process per group of clips, all at once; returns their JSON results."""
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.baselines", kind,
                               os.path.join(workdir, f"{kind}{i}.tfrecord"), *group],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for i, group in enumerate(groups)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"the {kind} baseline failed")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="make bench", description=__doc__)
    p.add_argument("--workdir", default="bench_out")
    p.add_argument("--only", action="append", choices=SUITES, help="run only these (repeatable)")
    p.add_argument("--seconds", type=float, default=300, help="length of each of the 4 throughput clips")
    args = p.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    results = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
               "date": time.strftime("%Y-%m-%d"), "python": platform.python_version()}
    suites = args.only or list(SUITES)
    if "throughput" in suites or "baselines" in suites:
        results["throughput"] = ingest_bench.throughput(args.workdir, seconds=args.seconds)
        print(json.dumps({"throughput": results["throughput"]}, indent=1), flush=True)
    if "baselines" in suites:
        results["baselines"] = baselines(args.workdir, args.seconds)
        print(json.dumps({"baselines": results["baselines"]}, indent=1), flush=True)
    if "short" in suites:
        results["short_clips"] = ingest_bench.short_clips(args.workdir)
        print(json.dumps({"short_clips": results["short_clips"]}, indent=1), flush=True)
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
        results["input"]["clip"] = input_bench.run_clip(args.workdir)
        print(json.dumps({"input": results["input"]}, indent=1), flush=True)
    if "train" in suites:
        out = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput"], capture_output=True, text=True)
        results["train"] = out.stdout[-4000:]
        print(out.stdout[-4000:], flush=True)
    if "append" in suites:
        from benchmarks import append_bench
        results["append"] = append_bench.run(args.workdir)
        print(json.dumps({"append": results["append"]}, indent=1), flush=True)
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"results: {os.path.join(args.workdir, 'results.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
