"""Prints the TF_CONFIG of one worker of a Kubernetes Indexed Job, derived from its completion index."""
from __future__ import annotations

import argparse
import json
import os
import sys


def worker_hosts(workers: int, job_name: str, service: str, port: int, namespace: str = "") -> list[str]:
    """The host:port of every worker, in task-index order.

    An Indexed Job names its pods' hosts `<job>-<index>`; with `subdomain: <service>` in the pod spec
    and a headless Service of that name, each one resolves as `<job>-<index>.<service>[.<ns>.svc]`.

    Args:
      workers: number of workers (the Job's `completions` and `parallelism`).
      job_name: the Job's metadata.name.
      service: the headless Service's name (the pods' `subdomain`).
      port: the port TensorFlow's gRPC server listens on in every pod.
      namespace: when given, hosts are qualified with `.<namespace>.svc`, so they resolve whatever
        the pod's DNS search path is.

    Returns:
      ["<job>-0.<service>...:<port>", ...], one per worker.
    """
    suffix = f".{namespace}.svc" if namespace else ""
    return [f"{job_name}-{i}.{service}{suffix}:{port}" for i in range(workers)]


def tf_config(index: int, workers: int, job_name: str, service: str, port: int, namespace: str = "") -> dict:
    """The TF_CONFIG dict of worker `index`: the whole cluster and this pod's task.

    Worker 0 is the chief (there is no separate "chief" task), which is what MultiWorkerMirroredStrategy
    assumes when the cluster holds only workers.

    Raises:
      ValueError: when workers < 1 or index is outside [0, workers).
    """
    if workers < 1:
        raise ValueError(f"workers={workers}: expected at least 1")
    if not 0 <= index < workers:
        raise ValueError(f"index={index} is outside [0, {workers}): the Job's completions and the worker count differ")
    return {"cluster": {"worker": worker_hosts(workers, job_name, service, port, namespace)},
            "task": {"type": "worker", "index": index}}


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="tf_config.py",
        description="Print TF_CONFIG JSON for one worker of an Indexed Job. Every flag defaults to an "
                    "environment variable, so the Job manifest sets them once for all pods.")
    p.add_argument("--index", default=env("JOB_COMPLETION_INDEX"),
                   help="this worker's task index (default: $JOB_COMPLETION_INDEX, set by Kubernetes)")
    p.add_argument("--workers", default=env("CLIPFORGE_WORKERS"),
                   help="number of workers, equal to the Job's completions (default: $CLIPFORGE_WORKERS)")
    p.add_argument("--job-name", default=env("CLIPFORGE_JOB_NAME"),
                   help="the Job's name (default: $CLIPFORGE_JOB_NAME)")
    p.add_argument("--service", default=env("CLIPFORGE_SERVICE"),
                   help="the headless Service that is the pods' subdomain (default: $CLIPFORGE_SERVICE)")
    p.add_argument("--port", default=env("CLIPFORGE_PORT", "2222"),
                   help="TensorFlow gRPC port in every pod (default: $CLIPFORGE_PORT or 2222)")
    p.add_argument("--namespace", default=env("POD_NAMESPACE", ""),
                   help="qualify hosts with .<namespace>.svc (default: $POD_NAMESPACE; empty: unqualified)")
    return p


def _integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected an integer") from None


def main(argv: list[str] | None = None) -> int:
    """Prints TF_CONFIG on stdout; on a missing or bad value prints one line to stderr and returns 2."""
    args = _parser().parse_args(argv)
    missing = [flag for flag, value in (("--index / $JOB_COMPLETION_INDEX", args.index),
                                        ("--workers / $CLIPFORGE_WORKERS", args.workers),
                                        ("--job-name / $CLIPFORGE_JOB_NAME", args.job_name),
                                        ("--service / $CLIPFORGE_SERVICE", args.service)) if not value]
    if missing:
        print(f"tf_config.py: not set: {', '.join(missing)} (run it in a Job with completionMode: Indexed, "
              "or pass the flags)", file=sys.stderr)
        return 2
    try:
        numbers = {name: _integer(name, getattr(args, name)) for name in ("index", "workers", "port")}
        config = tf_config(numbers["index"], numbers["workers"], args.job_name, args.service,
                           numbers["port"], args.namespace)
    except ValueError as e:
        print(f"tf_config.py: {e}", file=sys.stderr)
        return 2
    print(json.dumps(config, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
