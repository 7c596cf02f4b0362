"""Distribution: the tf.distribute strategy of a run, this worker's role, and a lost peer explained."""
from __future__ import annotations

import dataclasses
import json
import os
import re

import tensorflow as tf

from schemas.configs import ConfigError
from trainer import TrainerError

# What a collective op raises when a peer worker died, was preempted or timed out.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.CancelledError, tf.errors.AbortedError)


def select_strategy(name: str, collective_timeout: float = 0.0) -> tf.distribute.Strategy:
    """auto: MirroredStrategy over local GPUs when there are several, else the default strategy.

    mirrored: all local GPUs, or all logical CPU devices when there is no GPU.
    multiworker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG; a collective that
      waits longer than `collective_timeout` seconds (0: no limit) for another worker fails.
    """
    if name == "multiworker":
        raw = os.environ.get("TF_CONFIG", "")
        try:
            spec = json.loads(raw)
            ok = isinstance(spec, dict) and "cluster" in spec and "task" in spec
        except json.JSONDecodeError:
            ok = False
        if not ok:
            raise ConfigError(f"strategy=multiworker needs TF_CONFIG with 'cluster' and 'task' "
                              f"(JSON), got {raw[:200]!r}")
        # Nothing may touch the TF runtime before this: collectives are configured at start-up.
        # A killed peer is noticed by the strategy's health check (connection refused); the
        # timeout also bounds the wait on a peer that hangs or is cut off without dying.
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout or None)
        return _MultiWorkerStrategy(communication_options=options)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """This process's place in a multi-worker run (one worker, the chief, otherwise)."""

    num_workers: int = 1
    index: int = 0
    is_chief: bool = True
    name: str = ""


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy with the reduce() that Keras 3's fit() expects of it.

    Keras 3 (keras-team/keras#20585) calls reduce() on a whole (x, y) batch structure, which
    only MirroredStrategy maps over, and reduces scalar metric logs with axis=0. Reducing leaf
    by leaf, and scalars without an axis (metrics are already synchronised), fixes both.
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def leaf(v):
            first = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
            rank = getattr(getattr(first, "shape", None), "rank", None)
            return parent.reduce(reduce_op, v, None if rank == 0 else axis)

        return tf.nest.map_structure(leaf, value)


def worker_role(strategy) -> WorkerRole:
    """The role of this process; the chief writes WORKDIR, the others WORKDIR/workers/<name>."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return WorkerRole()
    jobs = resolver.cluster_spec().as_dict()
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    # Input shards are dealt out in chief, worker 0, worker 1, ... order.
    order = [("chief", i) for i in range(len(jobs.get("chief", [])))] + \
            [("worker", i) for i in range(len(jobs.get("worker", [])))]
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in jobs)
    return WorkerRole(len(order), order.index((task_type, task_id)), chief, f"{task_type}_{task_id}")


class PeerLostError(TrainerError):
    """A multi-worker run lost a peer. TensorFlow's collective runtime then still holds threads
    blocked on the dead worker (and an eager all-reduce's thread pool), so `clipforge train` leaves
    with os._exit after reporting (schemas.errors `hard_exit`): an ordinary interpreter shutdown
    can hang on them or print their teardown errors over the one-line message."""

    hard_exit = True


def lost_peer(error, workdir: str) -> PeerLostError:
    """The message for a multi-worker run whose collective ops lost a peer."""
    detail = " ".join(line.strip() for line in re.sub(r"\{\{.*?\}\}", "", str(error)).splitlines()
                      if line.strip() and not line.strip().startswith(("[[", "Detected at")))
    return PeerLostError(
        f"multi-worker training lost contact with another worker ({type(error).__name__}: "
        f"{detail[:300]}). Check that every worker in TF_CONFIG is running, then restart every "
        f"worker with the same command: they resume from the last backup in {workdir}/backup.")
