"""Beam's DaskRunner with side inputs computed once and reshuffles that spread work over the workers."""
from __future__ import annotations

import dataclasses
import typing

from apache_beam import pvalue
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.dask import dask_runner
from apache_beam.runners.dask import transform_evaluator as te
from apache_beam.runners.dask.overrides import _Reshuffle
from apache_beam.transforms.sideinputs import SideInputMap

# Bag partitions per worker thread after a Reshuffle (and for Create, unless --dask_npartitions
# or --dask_partition_size says otherwise): a few each, so a slow one does not hold up the rest.
PARTITIONS_PER_THREAD = 2
_SPREAD = "clipforge_spread"  # the partition count, passed to the ops with Beam's bag options


@dataclasses.dataclass
class _Partitions:
    """A side input's values: the bag's partitions, as delayed objects until dask computes them."""

    parts: list
    window_fn: typing.Any

    def __iter__(self):
        for part in self.parts:
            for value in part:
                yield te.get_windowed_value(value, self.window_fn)


@dataclasses.dataclass
class _SideInput(SideInputMap):
    """A SideInputMap that dask can look into.

    Beam's DaskRunner hides each side input's bag inside a SideInputMap, so every task that
    reads it computes the bag again, with everything upstream of it (every decode, every
    sink), in a nested compute. As a dataclass holding the bag's partitions under their own
    keys, dask makes them dependencies, computes them once for the whole graph before the
    tasks that read them, and rebuilds this object around their values.
    """

    view_class: typing.Any
    view_options: dict
    iterable: _Partitions

    def __post_init__(self):
        SideInputMap.__init__(self, self.view_class, self.view_options, self.iterable)


class _Spread(te.DaskBagOp):
    """Reshuffle: splits partitions so their elements (say, a long video's segments) run apart.

    Beam's DaskRunner makes Reshuffle a no-op, which keeps every element in the partition of
    the element it came from, i.e. on the worker that planned it.
    """

    def apply(self, input_bag, side_inputs=None):
        return input_bag.repartition(npartitions=max(self.bag_kwargs.get(_SPREAD, 1), input_bag.npartitions))


class _Result(dask_runner.DaskRunnerResult):
    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            self.client.close()  # else it retries a vanished scheduler for 30 s and logs errors


@dataclasses.dataclass
class _BagVisitor(PipelineVisitor):
    """Beam's DaskBagVisitor, with `_SideInput` for side inputs and `_Spread` for Reshuffle."""

    bag_kwargs: dict
    bags: dict = dataclasses.field(default_factory=dict)

    def visit_transform(self, node) -> None:
        op = _TRANSLATIONS.get(node.transform.__class__, te.NoOp)(node, bag_kwargs=self.bag_kwargs)
        kws = {"input_bag": None, "side_inputs": None}
        if node.inputs:
            bags = []
            for value in node.inputs:
                if isinstance(value, pvalue.PBegin):
                    bags.append(None)
                if value.producer in self.bags:
                    bags.append(self.bags[value.producer])
            kws["input_bag"] = bags[0] if len(bags) == 1 and not isinstance(op, te.Flatten) else bags
        if node.side_inputs:
            kws["side_inputs"] = [
                _SideInput(type(si), si._view_options(),
                           _Partitions(self.bags[si.pvalue.producer].to_delayed(optimize_graph=False),
                                       si._window_mapping_fn))
                for si in node.side_inputs]
        self.bags[node] = op.apply(**kws)


_TRANSLATIONS = {**te.TRANSLATIONS, _Reshuffle: _Spread}


class DaskRunner(dask_runner.DaskRunner):
    """Beam's DaskRunner (same flags: --dask_client_address, --dask_npartitions...) with two fixes.

    Side inputs become dependencies in the dask graph instead of nested computes, so each
    stage runs once (with Beam's runner a video is decoded once per side input downstream of
    it, eight times in clipforge ingest) and sinks do not race their own re-runs. Reshuffle
    repartitions the bag over the cluster's threads instead of doing nothing. The client
    the runner opens is closed when the pipeline finishes.
    """

    @staticmethod
    def to_dask_bag_visitor(bag_kwargs=None) -> PipelineVisitor:
        from distributed import default_client  # the client run_pipeline has just opened
        bag_kwargs = dict(bag_kwargs or {})
        bag_kwargs[_SPREAD] = PARTITIONS_PER_THREAD * (sum(default_client().nthreads().values()) or 1)
        if "npartitions" not in bag_kwargs and "partition_size" not in bag_kwargs:
            bag_kwargs["npartitions"] = bag_kwargs[_SPREAD]
        return _BagVisitor(bag_kwargs)

    def run_pipeline(self, pipeline, options):
        result = super().run_pipeline(pipeline, options)
        return _Result(result.client, result.futures)
