"""The search space: every structurally legal configuration, scored by the evaluator.

Structure (what a parallel layout must satisfy) is applied here: TP divides the attention
heads and stays within a node's scale-up domain, PP <= layers, EP divides the routed experts
and the DP degree, micro-batch x DP x accumulation = the global batch, whole nodes beyond one
node, FP8 only on cards that have it. Each legal configuration is evaluated once by
`planner.evaluate`, and configurations that do not fit in memory are dropped (memory is
physics, not a user limit). What remains is a coefficient table: one row per configuration
with its GPU count, cost, time, throughput and latency. User limits (max GPUs, inventory,
budget, deadline, SLOs) are NOT applied here: the CP-SAT model enforces them with
assumption literals, so that infeasibility can be explained.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from planner.catalog import GpuSpec, load_gpus, resolve_gpu
from planner.cost import PriceQuote, price_quote
from planner.enums import Checkpointing, TrainPrecision, WeightPrecision, ZeroStage
from planner.errors import InputError
from planner.evaluate import InferenceEvaluation, TrainingEvaluation, evaluate_inference, evaluate_training
from planner.layout import InferenceLayout, TrainingLayout
from planner.modelspec import ModelSpec
from planner.scenario import Assumptions, InferenceWorkload, Scenario, TrainingWorkload

MAX_GPUS_SEARCHED = 16_384
"""Largest GPU count enumerated when a scenario sets no max_gpus (a 2,048-node cluster)."""

SERVING_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class Space:
    """Candidates that fit, plus what was dropped and why (for explanations)."""

    rows: list[TrainingEvaluation | InferenceEvaluation] = field(default_factory=list)
    structural_count: int = 0
    closest_misfit: TrainingEvaluation | InferenceEvaluation | None = None
    unpriced_gpus: list[str] = field(default_factory=list)
    gpus: list[GpuSpec] = field(default_factory=list)

    def record(self, evaluation: TrainingEvaluation | InferenceEvaluation) -> bool:
        """Count a legal configuration; keep it when it fits, else remember the closest misfit. True when it fits."""
        self.structural_count += 1
        if evaluation.memory.fits:
            self.rows.append(evaluation)
            return True
        old = self.closest_misfit
        if old is None or evaluation.memory.total_bytes / evaluation.memory.capacity_bytes < old.memory.total_bytes / old.memory.capacity_bytes:
            self.closest_misfit = evaluation
        return False


def candidate_gpus(scenario: Scenario) -> list[GpuSpec]:
    """GPUs the scenario allows (whole catalog by default)."""
    if scenario.search.gpus is None:
        return list(load_gpus())
    return [resolve_gpu(name, where="search.gpus") for name in scenario.search.gpus]


def node_size(scenario: Scenario, gpu: GpuSpec) -> int:
    """GPUs per node: the scenario's override or the catalog's usual server."""
    return scenario.search.gpus_per_node or gpu.gpus_per_node


def gpu_cap(scenario: Scenario, gpu: str) -> int:
    """Most GPUs of one type enumerated: generous beyond its limits (max_gpus, its inventory) so a too-small limit can be explained."""
    limits = [scenario.search.max_gpus or 0, scenario.constraints.inventory.get(gpu, 0)]
    return min(MAX_GPUS_SEARCHED, max(8 * max(limits), 512)) if any(limits) else MAX_GPUS_SEARCHED


def tp_values(scenario: Scenario, model: ModelSpec, gpu: GpuSpec) -> list[int]:
    """TP degrees: divide the heads, within the node's scale-up domain unless allowed otherwise."""
    allowed = scenario.search.tp or tuple(2**i for i in range(7))
    out = []
    for tp in allowed:
        if model.num_heads % tp:
            continue
        if scenario.search.tp_within_node and tp > node_size(scenario, gpu):
            continue
        out.append(tp)
    return sorted(set(out))


def pp_values(scenario: Scenario, model: ModelSpec) -> list[int]:
    """PP degrees: at most the layer count (uneven stages allowed; the most loaded stage is what memory checks)."""
    allowed = scenario.search.pp or tuple(2**i for i in range(8))
    return sorted({pp for pp in allowed if 1 <= pp <= model.num_layers})


def ep_values(scenario: Scenario, model: ModelSpec) -> list[int]:
    """EP degrees for MoE: divide the routed experts; 1 for dense models."""
    if not model.is_moe:
        return [1]
    allowed = scenario.search.ep or tuple(2**i for i in range(9))
    return sorted({ep for ep in allowed if model.n_routed_experts % ep == 0})


def whole_nodes(n_gpus: int, node: int) -> bool:
    """A plan uses part of one node, or whole nodes."""
    return n_gpus <= node or n_gpus % node == 0


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def batch_splits(global_batch: int, tolerance: float, micro_batch: int, max_dp: int) -> list[tuple[int, int]]:
    """(DP, accumulation) pairs with micro-batch x DP x accumulation = the global batch, or within the tolerance of it.

    Exact splits use the divisors of global_batch / micro_batch. With a tolerance, every DP up
    to max_dp takes the accumulation that lands nearest the target, kept when within
    tolerance x global_batch (the nearest allowed global batch, as Megatron's
    --global-batch-size must be a multiple of micro-batch x DP).
    """
    splits: dict[int, int] = {}
    if global_batch % micro_batch == 0:
        for dp in _divisors(global_batch // micro_batch):
            if dp <= max_dp:
                splits[dp] = global_batch // (micro_batch * dp)
    if tolerance > 0:
        for dp in range(1, min(max_dp, global_batch // micro_batch) + 1):
            if dp in splits:
                continue
            accum = max(1, round(global_batch / (micro_batch * dp)))
            if abs(micro_batch * dp * accum - global_batch) <= tolerance * global_batch:
                splits[dp] = accum
    return sorted(splits.items())


def priced_gpus(scenario: Scenario, space: Space, assumptions: Assumptions) -> Iterator[tuple[GpuSpec, PriceQuote, int]]:
    """The space's GPUs that have a price for the scenario's term, with their node size; the others are recorded."""
    for gpu in space.gpus:
        quote = price_quote(gpu.name, scenario.pricing, assumptions)
        if quote is None:
            space.unpriced_gpus.append(gpu.name)
            continue
        yield gpu, quote, node_size(scenario, gpu)


def training_space(scenario: Scenario, model: ModelSpec, assumptions: Assumptions) -> Space:
    """All legal training layouts that fit in memory, evaluated."""
    workload = scenario.workload
    assert isinstance(workload, TrainingWorkload)
    space = Space(gpus=candidate_gpus(scenario))
    search = scenario.search
    for gpu, quote, node in priced_gpus(scenario, space, assumptions):
        cap = gpu_cap(scenario, gpu.name)
        precisions = [p for p in search.train_precisions if p is not TrainPrecision.FP8 or gpu.supports_fp8]
        zeros = list(search.zero_stages)
        for tp in tp_values(scenario, model, gpu):
            for pp in pp_values(scenario, model):
                for mb in search.micro_batches:
                    for dp, accum in batch_splits(workload.global_batch_seqs, workload.global_batch_tolerance, mb, cap // (tp * pp)):
                        n = tp * pp * dp
                        if not whole_nodes(n, node):
                            continue
                        for ep in ep_values(scenario, model):
                            if dp % ep:
                                continue
                            for precision in precisions:
                                for zero in zeros:
                                    for ckpt in search.checkpointing:
                                        _add_training(space, model, workload, assumptions, gpu, quote, node, precision,
                                                      tp, pp, dp, ep, zero, ckpt, mb, accum, search.sequence_parallel,
                                                      search.flash_attention, search.allow_offload)
    return space


def _add_training(
    space: Space, model: ModelSpec, workload: TrainingWorkload, assumptions: Assumptions, gpu: GpuSpec, quote: PriceQuote,
    node: int, precision: TrainPrecision, tp: int, pp: int, dp: int, ep: int, zero: ZeroStage, ckpt: Checkpointing,
    mb: int, accum: int, sequence_parallel: bool, flash: bool, allow_offload: bool,
) -> None:
    offloads = [(False, False)]
    if allow_offload and zero >= ZeroStage.OPTIMIZER:
        offloads.append((True, False))
    if allow_offload and zero >= ZeroStage.PARAMETERS:
        offloads.append((True, True))
    for offload_optimizer, offload_params in offloads:
        layout = TrainingLayout(
            gpu=gpu.name, precision=precision, tp=tp, pp=pp, dp=dp, ep=ep, expert_tp=tp if ep == 1 else 1, zero=zero,
            checkpointing=ckpt, micro_batch=mb, grad_accum=accum, sequence_parallel=sequence_parallel,
            flash_attention=flash, offload_optimizer=offload_optimizer, offload_params=offload_params,
        )
        space.record(evaluate_training(model, workload, layout, gpu, assumptions, quote, node))


def inference_space(scenario: Scenario, model: ModelSpec, assumptions: Assumptions) -> Space:
    """All legal serving replica layouts (GPU, precisions, TP, PP, batch) that fit, evaluated with one replica."""
    workload = scenario.workload
    assert isinstance(workload, InferenceWorkload)
    space = Space(gpus=candidate_gpus(scenario))
    search = scenario.search
    batches = sorted(set(search.batch_per_replica or SERVING_BATCHES))
    for gpu, quote, node in priced_gpus(scenario, space, assumptions):
        weight_precisions = [w for w in search.weight_precisions if w is not WeightPrecision.FP8 or gpu.supports_fp8]
        for tp in tp_values(scenario, model, gpu):
            for pp in (search.pp or (1, 2, 4)):
                if pp > model.num_layers or not whole_nodes(tp * pp, node):
                    continue
                for wp in weight_precisions:
                    for kvp in search.kv_precisions:
                        if kvp.value == "fp8" and not gpu.supports_fp8:
                            continue
                        for batch in batches:
                            layout = InferenceLayout(gpu=gpu.name, weight_precision=wp, kv_precision=kvp, tp=tp, pp=pp, batch=batch)
                            if not space.record(evaluate_inference(model, workload, layout, gpu, assumptions, quote, node)):
                                break  # larger batches only need more KV cache
    return space


def build_space(scenario: Scenario, model: ModelSpec, assumptions: Assumptions) -> Space:
    """The scenario's coefficient table."""
    if isinstance(scenario.workload, TrainingWorkload):
        return training_space(scenario, model, assumptions)
    if isinstance(scenario.workload, InferenceWorkload):
        return inference_space(scenario, model, assumptions)
    raise InputError("workload.kind: must be training or inference.")


def _dominance_key(e: TrainingEvaluation | InferenceEvaluation) -> tuple[tuple[str, int], tuple[float, ...]]:
    """(group, quantities to minimise): rows of one group can replace each other one for one."""
    if isinstance(e, TrainingEvaluation):
        return (e.layout.gpu, 0), (float(e.layout.num_gpus), e.cost_usd or 0.0, e.perf.time_to_train_s)
    return (e.layout.gpu, 0), (float(e.layout.gpus_per_replica), e.usd_per_hour or 0.0, -e.perf.output_tokens_per_s,
                               -float(e.layout.batch), e.perf.ttft_s, e.perf.tpot_s)


def prune_dominated(rows: list[TrainingEvaluation | InferenceEvaluation]) -> list[TrainingEvaluation | InferenceEvaluation]:
    """Drop rows another row of the same GPU type beats or equals on every quantity a limit or objective reads.

    Training: GPUs, cost, time to train (throughput is tokens / time). Serving, per replica:
    GPUs, $/h, tokens/s, batch, TTFT, TPOT. Swapping a dominated row for its dominator keeps
    every limit satisfied and no objective worse, so the optimum is unchanged: the pruning is
    exact, not a heuristic. The kept rows keep their enumeration order.
    """
    groups: dict[tuple[str, int], list[tuple[tuple[float, ...], int]]] = {}
    for index, e in enumerate(rows):
        group, values = _dominance_key(e)
        groups.setdefault(group, []).append((values, index))
    keep: set[int] = set()
    for members in groups.values():
        members.sort()
        kept: list[tuple[float, ...]] = []
        for values, index in members:
            if any(all(k <= v for k, v in zip(other, values)) for other in kept):
                continue
            kept.append(values)
            keep.add(index)
    return [e for i, e in enumerate(rows) if i in keep]
