"""Beam's DaskRunner with side inputs computed once and reshuffles that spread work over the workers."""
from __future__ import annotations

import dataclasses
import functools
import uuid

import dask
import dask.bag as db
from apache_beam import DoFn, ParDo, pvalue
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import dask_runner
from apache_beam.runners.dask import transform_evaluator as te
from apache_beam.runners.dask.overrides import _Reshuffle
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.sideinputs import SideInputMap
from dask.highlevelgraph import HighLevelGraph
from distributed import Client

# Bag partitions per worker thread after a Reshuffle (and for Create, unless --dask_npartitions
# or --dask_partition_size says otherwise): a few each, so a slow one does not hold up the rest.
PARTITIONS_PER_THREAD = 2
_SPREAD = "clipforge_spread"  # the partition count, passed to the ops with Beam's bag options


def _run_bundle(items, *side_parts, views, invoker_args, invoker_kwargs, receivers):
    """Beam's apply_dofn_to_bundle, with side inputs built from their bags' computed partitions,
    and with what finish_bundle outputs (Beam's collects the results before calling it)."""
    side_inputs = [SideInputMap(view, options, [te.get_windowed_value(v, window_fn) for part in parts for v in part])
                   for (view, options, window_fn), parts in zip(views, side_parts)]
    invoker = DoFnInvoker.create_invoker(*invoker_args, **{**invoker_kwargs, "side_inputs": side_inputs})
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(item)
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return [v.value for v in receivers.values]


class _ParDo(te.ParDo):
    """ParDo whose side inputs are read from their bags' partitions, computed once in the graph,
    and whose finish_bundle outputs are kept (clipforge's shard writer emits its files there).

    Beam's DaskRunner hides each side input's bag inside a SideInputMap, so every task that
    reads it computes the bag again, with everything upstream of it (every decode, every
    sink), in a nested compute. Here each task names the side input's partition keys as its
    arguments, as any dask task names its inputs.
    """

    def apply(self, input_bag, side_inputs=None):
        side_inputs = side_inputs or []
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        receivers = te.OneReceiver()
        handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                                 per_element_output_counter=None, output_batch_converter=None,
                                 process_yields_batches=False, process_batch_yields_elements=False)
        run = functools.partial(
            _run_bundle, views=[(type(si), si._view_options(), si._window_mapping_fn) for si, _ in side_inputs],
            invoker_args=[DoFnSignature(transform.fn), handler], receivers=receivers,
            invoker_kwargs=dict(context=DoFnContext(transform.label, state=None), input_args=list(args),
                                input_kwargs=kwargs, user_state_context=None,
                                bundle_finalizer_param=DoFn.BundleFinalizerParam()))
        main = input_bag.map(te.get_windowed_value, window_fn)
        name = f"pardo-{uuid.uuid4().hex}"
        parts = [[(bag.name, j) for j in range(bag.npartitions)] for _, bag in side_inputs]
        dsk = {(name, i): (run, (main.name, i), *parts) for i in range(main.npartitions)}
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=[main, *(bag for _, bag in side_inputs)])
        return db.Bag(graph, name, main.npartitions)


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
            state = super().wait_until_finish(duration)
            lost = [f for f in self.futures if f.status != "finished"]
            if lost:  # as_completed hands back cancelled futures without raising
                self._state = PipelineState.FAILED
                raise RuntimeError(f"the dask computation did not finish: {lost[0].key} is {lost[0].status}")
            return state
        finally:
            self.client.close()  # else it retries a vanished scheduler for 30 s and logs errors


@dataclasses.dataclass
class _BagVisitor(PipelineVisitor):
    """Beam's DaskBagVisitor, with `_ParDo`, `_Spread` for Reshuffle, and a list of leaves."""

    bag_kwargs: dict
    bags: dict = dataclasses.field(default_factory=dict)
    consumed: set = dataclasses.field(default_factory=set)

    def leaves(self) -> list:
        """The bags no transform reads: computing them computes the whole pipeline."""
        return [bag for node, bag in self.bags.items() if node not in self.consumed and bag is not None]

    def visit_transform(self, node) -> None:
        op = _TRANSLATIONS.get(node.transform.__class__, te.NoOp)(node, bag_kwargs=self.bag_kwargs)
        kws = {"input_bag": None, "side_inputs": None}
        self.consumed.update(v.producer for v in node.inputs)
        self.consumed.update(si.pvalue.producer for si in node.side_inputs)
        if node.inputs:
            bags = []
            for value in node.inputs:
                if isinstance(value, pvalue.PBegin):
                    bags.append(None)
                if value.producer in self.bags:
                    bags.append(self.bags[value.producer])
            kws["input_bag"] = bags[0] if len(bags) == 1 and not isinstance(op, te.Flatten) else bags
        if node.side_inputs:
            kws["side_inputs"] = [(si, self.bags[si.pvalue.producer]) for si in node.side_inputs]
        self.bags[node] = op.apply(**kws)


_TRANSLATIONS = {**te.TRANSLATIONS, ParDo: _ParDo, _Reshuffle: _Spread}


class DaskRunner(dask_runner.DaskRunner):
    """Beam's DaskRunner (same flags: --dask_client_address, --dask_npartitions...), fixed.

    - Side inputs are dependencies in the dask graph instead of nested computes, so each
      stage runs once (with Beam's runner a video is decoded once more for every side
      input downstream of it) and sinks do not race their own re-runs.
    - What a DoFn emits from finish_bundle is kept (Beam's runner drops it).
    - Every leaf of the pipeline is computed, not only the last transform applied.
    - Reshuffle repartitions the bag over the cluster's threads instead of doing nothing,
      and Create spreads its elements likewise unless the dask partition flags say otherwise.
    - The client the runner opens is closed when the pipeline finishes.
    """

    def run_pipeline(self, pipeline, options):
        dask_options = options.view_as(dask_runner.DaskOptions).get_all_options(drop_default=True,
                                                                                 current_only=True)
        bag_kwargs = dask_runner.DaskOptions._extract_bag_kwargs(dask_options)
        client = Client(**dask_options)
        bag_kwargs[_SPREAD] = PARTITIONS_PER_THREAD * (sum(client.nthreads().values()) or 1)
        if "npartitions" not in bag_kwargs and "partition_size" not in bag_kwargs:
            bag_kwargs["npartitions"] = bag_kwargs[_SPREAD]
        pipeline.replace_all(dask_runner.dask_overrides())
        visitor = _BagVisitor(bag_kwargs)
        pipeline.visit(visitor)
        return _Result(client, client.compute(list(dask.optimize(*visitor.leaves()))))
