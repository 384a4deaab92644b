"""The search space: every structurally legal configuration, scored by the column evaluator.

Structure (what a parallel layout must satisfy) is applied here: TP divides the attention
heads and stays within a node's scale-up domain, PP <= layers, EP divides the routed experts
and the DP degree, micro-batch x DP x accumulation = the global batch, whole nodes beyond one
node, FP8 only on cards that have it; serving adds MoE data-parallel attention rows (`dp_attention_values`) and
disaggregated prefill/decode units paired from the best replica layouts (`disaggregated_table`). Legal layouts are enumerated as numpy columns (one chunk
per GPU type and TP degree), evaluated by `planner.evaluate.Table` memory first (configurations
that do not fit are dropped: memory is physics, not a user limit), then speed and cost for the
rows that fit. What remains is a coefficient table per GPU type, pruned by exact dominance on
arrays before any object is built. User limits (budget, deadline, SLOs, and max GPUs and
inventory beyond the enumeration bound) are enforced by the CP-SAT model with assumption
literals, so that infeasibility can be explained. Training GPU counts are enumerated up to the
GPU limits (and past them only to explain an infeasible limit); a search over
MAX_LAYOUTS_SEARCHED is refused before it starts. Evaluated tables are cached per process
(`table_key`), so cases that differ only in price, limits or objective share them.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from planner.catalog import GpuSpec, load_gpus, resolve_gpu
from planner.cost import PriceQuote, price_quote
from planner.enums import FRAMEWORK_ZERO_STAGES, TrainingMode, TrainPrecision, WeightPrecision, ZeroStage
from planner.errors import InputError
from planner.evaluate import InferenceEvaluation, Table, TrainingEvaluation, inference_table, training_table
from planner.memory import (
    FRAMEWORKS, KV_PRECISIONS, TRAIN_PRECISIONS, WEIGHT_PRECISIONS, Columns, decode_layout_columns, pool_columns, serving_unit_gpus, take_columns,
)
from planner.modelspec import ModelSpec
from planner.scenario import Assumptions, InferenceWorkload, Scenario, TrainingWorkload
from planner.units import SECONDS_PER_HOUR

MAX_LAYOUTS_SEARCHED = 25_000_000
"""Most legal layouts one search evaluates (about a minute and a few hundred MB on a 2-core machine at ~3 us per
layout); a larger search is refused before it starts, with its count and how to narrow it (never silently capped)."""

SERVING_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
DEFAULT_TP_DEGREES = tuple(2**i for i in range(7))
"""Tensor-parallel degrees searched when search.tp is not given (1-64; the GPU's node bounds them)."""


@dataclass
class Space:
    """The evaluated table: per GPU type, the rows that fit (columns), plus what was dropped and why (for explanations).

    `tables` hold the fitting rows of each priced GPU type in enumeration order, with speed and
    cost; when built with `prune=True` only the rows kept by exact dominance pruning
    (`dominance_keep`). `rows` builds the pydantic evaluations of those rows on first use.
    """

    tables: list[Table] = field(default_factory=list)
    structural_count: int = 0
    _misfit: tuple[Table, PriceQuote] | None = None
    _closest_misfit: TrainingEvaluation | InferenceEvaluation | None = None
    unpriced_gpus: list[str] = field(default_factory=list)
    gpus: list[GpuSpec] = field(default_factory=list)
    pruned: bool = False
    _rows: list[TrainingEvaluation | InferenceEvaluation] | None = None
    _table_rows: list[list[TrainingEvaluation | InferenceEvaluation]] = field(default_factory=list)

    @property
    def closest_misfit(self) -> TrainingEvaluation | InferenceEvaluation | None:
        """The layout closest to fitting (smallest total / capacity) over every priced GPU type, with its speed and cost:
        built on first use (explanations of a search where nothing fits), as its speed costs as much as a small table's."""
        if self._closest_misfit is None and self._misfit is not None:
            table, quote = self._misfit
            self._closest_misfit = replace(table, price=quote).with_perf().evaluation_at(0)
        return self._closest_misfit

    @property
    def rows(self) -> list[TrainingEvaluation | InferenceEvaluation]:
        """Every row of the tables as an evaluation object (built once, on first use; shared with other cases of the
        same priced table, `priced_table`)."""
        if self._rows is None:
            self._rows = []
            for index, table in enumerate(self.tables):
                shared = self._table_rows[index] if index < len(self._table_rows) else []
                if len(shared) != len(table):
                    shared[:] = [table.evaluation_at(i) for i in range(len(table))]
                self._rows += shared
        return self._rows

    @property
    def row_count(self) -> int:
        """Rows in the tables (without building objects)."""
        return sum(len(t) for t in self.tables)


def candidate_gpus(scenario: Scenario) -> list[GpuSpec]:
    """GPUs the scenario allows (whole catalog by default)."""
    if scenario.search.gpus is None:
        return list(load_gpus())
    return [resolve_gpu(name, where="search.gpus") for name in scenario.search.gpus]


def node_size(scenario: Scenario, gpu: GpuSpec) -> int:
    """GPUs per node: the scenario's override or the catalog's usual server."""
    return scenario.search.gpus_per_node or gpu.gpus_per_node


def gpu_cap(scenario: Scenario, gpu: str, explain: bool = False) -> int | None:
    """Most GPUs of one type a training layout may use: the tighter of max_gpus and that type's inventory (None: no limit).

    Layouts beyond a hard GPU limit can never be chosen, so they are not enumerated; the data-
    parallel degree is bounded by the global batch anyway. `explain=True` lifts the limits, to
    show how many GPUs the best plan would need when a GPU limit makes the scenario infeasible.
    """
    limits = [] if explain else [v for v in (scenario.search.max_gpus, scenario.constraints.inventory.get(gpu)) if v]
    return min(limits) if limits else None


def tp_values(scenario: Scenario, model: ModelSpec, gpu: GpuSpec) -> list[int]:
    """TP degrees: divide the heads, within the node's scale-up domain unless allowed otherwise."""
    allowed = scenario.search.tp or DEFAULT_TP_DEGREES
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


LONG_CONTEXT_TOKENS = 32768
"""Sequence length from which context parallelism is searched by default (cp in {1, 2, 4, 8}); below it only cp = 1.
Llama 3 used CP only for its long-context stage (Dubey et al. 2024, arXiv:2407.21783, Sec. 3.3.2: CP 16 at 131K)."""


def cp_values(scenario: Scenario) -> list[int]:
    """Context-parallel degrees: search.cp, else 1 (and 2, 4, 8 from LONG_CONTEXT_TOKENS); each must split the sequence
    into 2·cp equal chunks (Megatron's load-balanced causal ring attention)."""
    workload = scenario.workload
    assert isinstance(workload, TrainingWorkload)
    default = (1, 2, 4, 8) if workload.seq_len >= LONG_CONTEXT_TOKENS else (1,)
    return sorted({cp for cp in (scenario.search.cp or default) if cp == 1 or workload.seq_len % (2 * cp) == 0})


def framework_zero_pairs(scenario: Scenario) -> list[tuple[int, int]]:
    """(framework code, ZeRO stage) pairs: each searched framework with the allowed ZeRO stages it implements."""
    return [(FRAMEWORKS.index(fw), int(zero)) for fw in scenario.search.frameworks for zero in scenario.search.zero_stages
            if int(zero) in FRAMEWORK_ZERO_STAGES[fw]]


def whole_nodes(n_gpus: int, node: int) -> bool:
    """A plan uses part of one node, or whole nodes."""
    return n_gpus <= node or n_gpus % node == 0


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def batch_split_arrays(global_batch: int, tolerance: float, micro_batch: int, max_dp: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(DP, accumulation) columns, DP ascending, with micro-batch x DP x accumulation = the global batch, or within the tolerance of it.

    Exact splits use the divisors of global_batch / micro_batch. With a tolerance, every DP up
    to max_dp takes the accumulation that lands nearest the target (round half to even, as
    Python's round), kept when within tolerance x global_batch (the nearest allowed global
    batch, as Megatron's --global-batch-size must be a multiple of micro-batch x DP). DP never
    exceeds global_batch / micro_batch; `max_dp=None` sets no other bound.
    """
    top = global_batch // micro_batch if max_dp is None else min(max_dp, global_batch // micro_batch)
    if tolerance > 0:
        dp = np.arange(1, top + 1, dtype=np.int64)
        accum = np.maximum(1, np.rint(global_batch / (micro_batch * dp))).astype(np.int64)
        near = np.abs(micro_batch * dp * accum - global_batch) <= tolerance * global_batch
        return dp[near], accum[near]
    if global_batch % micro_batch:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    dp = np.array([d for d in _divisors(global_batch // micro_batch) if d <= top], dtype=np.int64)
    return dp, global_batch // (micro_batch * dp)


def batch_splits(global_batch: int, tolerance: float, micro_batch: int, max_dp: int | None) -> list[tuple[int, int]]:
    """`batch_split_arrays` as (DP, accumulation) pairs."""
    dp, accum = batch_split_arrays(global_batch, tolerance, micro_batch, max_dp)
    return [(int(d), int(a)) for d, a in zip(dp, accum)]


def priced_gpus(scenario: Scenario, space: Space, assumptions: Assumptions) -> Iterator[tuple[GpuSpec, PriceQuote, int]]:
    """The space's GPUs that have a price for the scenario's term, with their node size; the others are recorded."""
    for gpu in space.gpus:
        quote = price_quote(gpu.name, scenario.pricing, assumptions)
        if quote is None:
            space.unpriced_gpus.append(gpu.name)
            continue
        yield gpu, quote, node_size(scenario, gpu)


# ---- enumeration as columns ----------------------------------------------------------------


def _offloads(zero: ZeroStage, allow_offload: bool) -> list[tuple[bool, bool]]:
    """(offload optimizer, offload parameters) choices legal at a ZeRO stage."""
    out = [(False, False)]
    if allow_offload and zero >= ZeroStage.OPTIMIZER:
        out.append((True, False))
    if allow_offload and zero >= ZeroStage.PARAMETERS:
        out.append((True, True))
    return out


def training_choice_columns(scenario: Scenario, model: ModelSpec, gpu: GpuSpec) -> Columns:
    """The per-layout choices that do not shape the mesh (EP, precision, ZeRO, checkpointing, offload), in loop order, as columns."""
    search = scenario.search
    qlora = scenario.workload.mode is TrainingMode.QLORA  # type: ignore[union-attr]
    # FP8 needs a card with FP8 tensor cores, and never with QLoRA (NF4 de-quantises to bf16: perf.QLORA_FP8_MESSAGE)
    precisions = [p for p in search.train_precisions if p is not TrainPrecision.FP8 or (gpu.supports_fp8 and not qlora)]
    combos = [(ep, TRAIN_PRECISIONS.index(precision), zero, int(ckpt), oo, op, fw)
              for ep in ep_values(scenario, model) for precision in precisions for fw, zero in framework_zero_pairs(scenario)
              for ckpt in search.checkpointing for oo, op in _offloads(ZeroStage(zero), search.allow_offload)]
    table = np.array(combos, dtype=np.int64).reshape(-1, 7)
    return {"ep": table[:, 0], "precision": table[:, 1], "zero": table[:, 2], "checkpointing": table[:, 3],
            "offload_optimizer": table[:, 4].astype(bool), "offload_params": table[:, 5].astype(bool), "framework": table[:, 6]}


def hybrid_group(tp: int, cp: int, node: int) -> int:
    """Size of a node-local hybrid-sharding group: the DP ranks of one node (TP and CP innermost in the rank order)."""
    return max(node // (tp * cp), 1)


def with_hybrid_rows(cols: Columns, group: int, enabled: bool) -> Columns:
    """The rows with zero_group 0, plus (when enabled) a copy of every ZeRO-3 row sharded within `group` DP ranks where
    the group properly divides DP (FSDP HYBRID_SHARD with the shard group one node)."""
    rows = len(cols["dp"])
    cols = {**cols, "zero_group": np.zeros(rows, dtype=np.int64)}
    if not enabled or group < 2:
        return cols
    extra = (cols["zero"] >= ZeroStage.PARAMETERS) & (cols["dp"] % group == 0) & (cols["dp"] > group)
    if not extra.any():
        return cols
    copy = take_columns(cols, extra)
    copy["zero_group"] = np.full(int(extra.sum()), group, dtype=np.int64)
    return {k: np.concatenate([cols[k], copy[k]]) for k in cols}


def training_layout_chunks(scenario: Scenario, model: ModelSpec, gpu: GpuSpec, node: int, explain: bool = False) -> Iterator[Columns]:
    """Every legal training layout on one GPU type, as columns, one chunk per TP degree (enumeration order kept).

    Loop order (the row order the solver breaks ties by): TP, PP, micro-batch, (DP, accumulation),
    EP, precision, ZeRO stage, checkpointing, offload. The DP x choices product is built with
    numpy (repeat/tile) and filtered by `whole_nodes` and EP | DP.
    """
    workload = scenario.workload
    assert isinstance(workload, TrainingWorkload)
    search = scenario.search
    cap = gpu_cap(scenario, gpu.name, explain)
    choices = training_choice_columns(scenario, model, gpu)
    n_choices = len(choices["ep"])
    for tp in tp_values(scenario, model, gpu):
        parts: list[Columns] = []
        for cp in cp_values(scenario):
            for pp in pp_values(scenario, model):
                for mb in search.micro_batches:
                    dp, accum = batch_split_arrays(workload.global_batch_seqs, workload.global_batch_tolerance, mb,
                                                   None if cap is None else cap // (tp * pp * cp))
                    if not len(dp) or not n_choices:
                        continue
                    n = tp * pp * cp * dp
                    whole = (n <= node) | (n % node == 0)
                    dp, accum = dp[whole], accum[whole]
                    if not len(dp):
                        continue
                    cols = {k: np.tile(v, len(dp)) for k, v in choices.items()}
                    cols["dp"] = np.repeat(dp, n_choices)
                    cols["grad_accum"] = np.repeat(accum, n_choices)
                    legal = cols["dp"] % cols["ep"] == 0
                    cols = with_hybrid_rows(take_columns(cols, legal), hybrid_group(tp, cp, node), search.hybrid_shard)
                    rows = len(cols["dp"])
                    if not rows:
                        continue
                    cols.update(tp=np.full(rows, tp), pp=np.full(rows, pp), cp=np.full(rows, cp), micro_batch=np.full(rows, mb),
                                expert_tp=np.where(cols["ep"] == 1, tp, 1), sequence_parallel=np.full(rows, search.sequence_parallel),
                                flash_attention=np.full(rows, search.flash_attention))
                    parts.append(cols)
        if parts:
            yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def inference_layout_columns(scenario: Scenario, model: ModelSpec, gpu: GpuSpec, node: int) -> tuple[Columns, np.ndarray]:
    """Every legal serving replica layout on one GPU type as columns, and the start index of each (TP, PP, precisions) group.

    Loop order: TP, PP, weight precision, KV precision, batch (ascending within a group).
    """
    search = scenario.search
    batches = np.array(sorted(set(search.batch_per_replica or SERVING_BATCHES)), dtype=np.int64)
    weight_precisions = [w for w in search.weight_precisions if w is not WeightPrecision.FP8 or gpu.supports_fp8]
    kv_precisions = [k for k in search.kv_precisions if k.value != "fp8" or gpu.supports_fp8]
    groups = [(tp, pp, WEIGHT_PRECISIONS.index(wp), KV_PRECISIONS.index(kvp), 1)
              for tp in tp_values(scenario, model, gpu) for pp in (search.pp or (1, 2, 4))
              if pp <= model.num_layers and whole_nodes(tp * pp, node) for wp in weight_precisions for kvp in kv_precisions
              if not model.is_moe or 1 in (search.attention_dp or (1,))]
    groups += [(tp, 1, WEIGHT_PRECISIONS.index(wp), KV_PRECISIONS.index(kvp), dp) for tp, dp in dp_attention_values(scenario, model, node)
               if 1 in (search.pp or (1,)) for wp in weight_precisions for kvp in kv_precisions]
    table = np.array(groups, dtype=np.int64).reshape(-1, 5)
    cols = {name: np.repeat(table[:, j], len(batches)) for j, name in enumerate(("tp", "pp", "weight_precision", "kv_precision", "attention_dp"))}
    cols["batch"] = np.tile(batches, len(groups))
    cols["replicas"] = np.ones(len(cols["batch"]), dtype=np.int64)
    cols |= pool_columns(cols)  # colocated: no separate prefill pool
    keep = (cols["attention_dp"] == 1) | (cols["batch"] >= DP_ATTENTION_MIN_SEQS_PER_RANK * cols["attention_dp"])
    group_id = np.repeat(np.arange(len(groups), dtype=np.int64), len(batches))[keep]
    return take_columns(cols, keep), np.flatnonzero(np.diff(group_id, prepend=-1)).astype(np.int64)


DP_ATTENTION_MIN_SEQS_PER_RANK = 8
"""Data-parallel attention rows start at 8 sequences per DP rank: it pays off for large batches, where TP attention
would replicate the MLA cache on every rank (SGLang docs, 'DP, DPA and sgl-router'; Ray Serve LLM, 'Data parallel
attention': high-throughput, KV-limited serving). A search bound (assumption), not a physical limit."""


def dp_attention_values(scenario: Scenario, model: ModelSpec, node: int) -> list[tuple[int, int]]:
    """(tp, attention_dp) pairs of MoE replicas with data-parallel attention (attention_dp > 1), as SGLang and
    TensorRT-LLM serve DeepSeek-V3 (DeepSeek-V3 report, arXiv:2412.19437, Sec. 3.4): tp cards in whole nodes, routed
    experts split over all of them (tp divides the experts; across nodes the all-to-all uses the NIC), attention TP =
    tp / attention_dp dividing the heads and within one node. Dense models: none."""
    if not model.is_moe:
        return []
    allowed = scenario.search.tp or DEFAULT_TP_DEGREES
    dps = scenario.search.attention_dp or tuple(2**i for i in range(1, 7))
    return [(tp, dp) for tp in sorted(set(allowed)) for dp in sorted(set(dps)) if dp > 1 and tp % dp == 0 and whole_nodes(tp, node)
            and model.n_routed_experts % tp == 0 and model.num_heads % (tp // dp) == 0 and tp // dp <= node]


DISAGGREGATED_PREFILL_CANDIDATES = 2
"""Prefill replica layouts per (GPU, precisions) that are paired into disaggregated units (the fewest GPUs for the load)."""
DISAGGREGATED_DECODE_CANDIDATES = 2
"""Decode replica layouts per (GPU, precisions) that are paired into disaggregated units."""
PREFILL_BATCH_CAP = 16
"""Largest batch (prompts held at once) considered for a prefill replica: prompts leave after their first token, so a
prefill replica holds few at a time and a larger batch only takes KV memory."""


def disaggregation_searched(scenario: Scenario) -> bool:
    """Disaggregated units are searched when allowed (`search.disaggregated`) and the load is a request rate (a
    tokens/s target is one), not a closed loop of users or a concurrency target."""
    workload = scenario.workload
    assert isinstance(workload, InferenceWorkload)
    return True in scenario.search.disaggregated and workload.resolved_traffic().request_rate_rps is not None and not workload.concurrent_sequences


def _best_per_group(score: np.ndarray, gpus: np.ndarray, batch: np.ndarray, group: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the `keep` rows with the lowest score (then fewer GPUs, smaller batch, earlier row) in each group; score 0 = none."""
    order = np.lexsort((np.arange(len(score)), batch, gpus, score, group))
    order = order[score[order] > 0]
    chosen, count, last = [], 0, None
    for i in order:
        count = count + 1 if group[i] == last else 1
        last = group[i]
        if count <= keep:
            chosen.append(i)
    return np.array(chosen, dtype=np.int64)


def disaggregated_table(scenario: Scenario, model: ModelSpec, assumptions: Assumptions, gpu: GpuSpec, node: int, table: Table) -> Table | None:
    """Disaggregated units (x prefill + y decode replicas, DistServe) on one GPU type, from its fitting colocated rows.

    The search stays bounded: per (weight, KV precision) the rows are scored alone, as a prefill
    replica (the fewest GPUs, x x tp x pp, of prompt-only replicas meeting the TTFT SLO less a
    transfer over one NIC; per TP and PP the largest batch up to PREFILL_BATCH_CAP) and as a decode replica (the fewest
    GPUs, y x tp x pp, of decode-only replicas meeting the TPOT SLO); the best
    DISAGGREGATED_PREFILL_CANDIDATES x DISAGGREGATED_DECODE_CANDIDATES pairs are then sized
    together (`perf.size_disaggregated_pools`, whose transfer depends on the pair) and scored by
    the evaluator (`perf.disaggregated_perf_columns`). The pools are sized independently, so the
    best pair is among these unless the transfer link changes the order.
    """
    from planner import serving
    from planner.perf import MAX_REPLICAS, pool_options, prefill_cost_columns, serving_cost_columns, size_disaggregated_pools

    workload = scenario.workload
    assert isinstance(workload, InferenceWorkload)
    table = table.take(pool_columns(table.layout)["attention_dp"] == 1)  # pools pair TP-attention replicas
    if not len(table):
        return None
    traffic = workload.resolved_traffic()
    lay, mem = table.layout, table.memory
    rate = float(traffic.request_rate_rps)  # type: ignore[arg-type]
    p_mean, o_mean = traffic.prompt.mean_tokens(), traffic.output.mean_tokens()
    gpus = (lay["tp"] * lay["pp"]).astype(np.int64)
    group = lay["weight_precision"] * len(KV_PRECISIONS) + lay["kv_precision"]
    # one prefill candidate per (TP, PP, precisions): its largest fitting batch up to PREFILL_BATCH_CAP
    shape = (lay["tp"] * 1000 + lay["pp"]) * 100 + group
    capped = np.nonzero(lay["batch"] <= PREFILL_BATCH_CAP)[0]
    order = capped[np.lexsort((-lay["batch"][capped], shape[capped]))]
    small = np.sort(order[np.unique(shape[order], return_index=True)[1]])
    x_alone = np.zeros(len(table), dtype=np.int64)
    pre_kwargs, dec_kwargs = pool_options(model, workload)
    if len(small):
        pcost = prefill_cost_columns(model, workload, gpu, assumptions, decode_layout_columns(take_columns(lay, small)), take_columns(mem, small), node)
        move = serving.kv_transfer_s(p_mean, mem["kv_bytes_per_token"][small], gpu.network_gbps_per_gpu)
        x_alone[small] = serving.prefill_replicas_needed(pcost, rate, p_mean, move, percentile=traffic.slo.percentile,
                                                         ttft_slo_s=traffic.slo.ttft_s, max_replicas=MAX_REPLICAS, **pre_kwargs)
    dcost = serving_cost_columns(model, workload, gpu, assumptions, decode_layout_columns(lay), mem, node)
    y_alone = serving.decode_replicas_needed(dcost, rate, p_mean, o_mean, percentile=traffic.slo.percentile, tpot_slo_s=traffic.slo.tpot_s,
                                             max_replicas=MAX_REPLICAS, **dec_kwargs)
    prefill = _best_per_group(x_alone * gpus, gpus, lay["batch"], group, DISAGGREGATED_PREFILL_CANDIDATES)
    decode = _best_per_group(y_alone * gpus, gpus, lay["batch"], group, DISAGGREGATED_DECODE_CANDIDATES)
    pairs = [(i, j) for j in decode for i in prefill if group[i] == group[j]]
    if not pairs:
        return None
    p_rows, d_rows = np.array([i for i, _ in pairs]), np.array([j for _, j in pairs])
    cols = {k: lay[k][d_rows] for k in ("weight_precision", "kv_precision", "tp", "pp", "batch")}
    ones = np.ones(len(pairs), dtype=np.int64)
    cols |= {"replicas": ones, "prefill_replicas": ones, "decode_replicas": ones, "attention_dp": ones, "prefill_tp": lay["tp"][p_rows],
             "prefill_pp": lay["pp"][p_rows], "prefill_batch": lay["batch"][p_rows]}
    units = inference_table(model, workload, gpu, assumptions, None, cols, node)
    x, y = size_disaggregated_pools(model, workload, gpu, assumptions, units.layout, units.memory, node)
    sized = (x > 0) & (y > 0)
    if not sized.any():
        return None
    # the memory columns read the pool counts only through prefill_replicas > 0, which sizing keeps: only the layout changes
    units = units.take(sized)
    units = replace(units, layout=units.layout | {"prefill_replicas": x[sized].astype(np.int64), "decode_replicas": y[sized].astype(np.int64)})
    units = units.take(units.fits).with_perf()
    return units.take(units.perf["replicas_needed"] > 0)


# ---- building the space ---------------------------------------------------------------------


def count_training_layouts(scenario: Scenario, model: ModelSpec, gpus: list[tuple[GpuSpec, int]], explain: bool = False,
                           stop_above: int | None = None) -> int:
    """Legal training layouts of the GPU types (with their node sizes), counted without enumerating them (stops above `stop_above`)."""
    workload = scenario.workload
    assert isinstance(workload, TrainingWorkload)
    total = 0
    for gpu, node in gpus:
        cap = gpu_cap(scenario, gpu.name, explain)
        choices = training_choice_columns(scenario, model, gpu)
        eps, per_ep = np.unique(choices["ep"], return_counts=True)
        eps3, per_ep3 = np.unique(choices["ep"][choices["zero"] >= ZeroStage.PARAMETERS], return_counts=True)
        for tp in tp_values(scenario, model, gpu):
            for cp in cp_values(scenario):
                group = hybrid_group(tp, cp, node)
                for pp in pp_values(scenario, model):
                    for mb in scenario.search.micro_batches:
                        dp, _ = batch_split_arrays(workload.global_batch_seqs, workload.global_batch_tolerance, mb,
                                                   None if cap is None else cap // (tp * pp * cp))
                        n = tp * pp * cp * dp
                        dp = dp[(n <= node) | (n % node == 0)]
                        total += int(sum(c * np.count_nonzero(dp % ep == 0) for ep, c in zip(eps, per_ep)))
                        if scenario.search.hybrid_shard and group >= 2:
                            hybrid = dp[(dp % group == 0) & (dp > group)]
                            total += int(sum(c * np.count_nonzero(hybrid % ep == 0) for ep, c in zip(eps3, per_ep3)))
                        if stop_above is not None and total > stop_above:
                            return total
    return total


def check_search_size(scenario: Scenario, model: ModelSpec, gpus: list[tuple[GpuSpec, int]], explain: bool = False) -> None:
    """Refuse, before starting, a training search larger than MAX_LAYOUTS_SEARCHED: the count and how to narrow it."""
    from planner.guards import too_large

    count = count_training_layouts(scenario, model, gpus, explain, stop_above=MAX_LAYOUTS_SEARCHED)
    if count > MAX_LAYOUTS_SEARCHED:
        raise too_large(scenario, MAX_LAYOUTS_SEARCHED, f"counted {count:,} before stopping, {len(gpus)} priced GPU types")


@dataclass
class GpuEvaluation:
    """One GPU type's evaluated layouts before pricing: the fitting rows (memory and speed), the count, the closest misfit.

    Memory and speed do not depend on the price, and with `prune` the rows are already reduced
    by a price-free dominance (`dominance_values` without a price: GPU-hours stand for cost,
    which is GPU-hours x one price per GPU type), which keeps every row the priced pruning keeps.
    """

    table: Table | None
    structural_count: int
    misfit_ratio: float = math.inf
    misfit: Table | None = None

    def note_misfit(self, table: Table, misfits: np.ndarray) -> None:
        """Remember the misfit closest to fitting (smallest total / capacity; the earliest on ties)."""
        if not misfits.any():
            return
        index = np.nonzero(misfits)[0]
        ratio = table.memory["total_bytes"][index] / table.memory["capacity_bytes"][index]
        k = int(np.argmin(ratio))
        if ratio[k] < self.misfit_ratio:
            self.misfit_ratio = float(ratio[k])
            self.misfit = table.take(index[k:k + 1])


def _join(parts: list[Table]) -> Table:
    """Tables of one GPU type, one after the other."""
    if len(parts) == 1:
        return parts[0]
    return replace(parts[0], **{name: {k: np.concatenate([getattr(p, name)[k] for p in parts]) for k in getattr(parts[0], name)}
                                for name in ("layout", "memory", "perf", "cost")})


def _pruned(table: Table) -> Table:
    """The rows `dominance_keep` keeps."""
    return table.take(dominance_keep(dominance_values(table)))


def evaluate_training_gpu(scenario: Scenario, model: ModelSpec, assumptions: Assumptions, gpu: GpuSpec, node: int, prune: bool,
                          explain: bool) -> GpuEvaluation:
    """All legal training layouts of one GPU type, chunk by chunk: memory first, speed for the rows that fit, pruned when asked."""
    workload = scenario.workload
    assert isinstance(workload, TrainingWorkload)
    out = GpuEvaluation(table=None, structural_count=0)
    parts = []
    for cols in training_layout_chunks(scenario, model, gpu, node, explain):
        table = training_table(model, workload, gpu, assumptions, None, cols, node)
        out.structural_count += len(table)
        fits = table.fits
        out.note_misfit(table, ~fits)
        table = table.take(fits).with_perf()
        parts.append(_pruned(table) if prune else table)
    if parts:
        out.table = (_pruned(_join(parts)) if prune and len(parts) > 1 else _join(parts)).with_row_ids()
    return out


def evaluate_inference_gpu(scenario: Scenario, model: ModelSpec, assumptions: Assumptions, gpu: GpuSpec, node: int, prune: bool) -> GpuEvaluation:
    """All legal serving replica layouts of one GPU type (GPU, precisions, TP, PP, batch) that fit, with one replica.

    Within a (TP, PP, precisions) group batches ascend and only need more memory, so the
    group stops at its first misfit (counted, and a candidate for the closest misfit).
    """
    workload = scenario.workload
    assert isinstance(workload, InferenceWorkload)
    cols, starts = inference_layout_columns(scenario, model, gpu, node)
    out = GpuEvaluation(table=None, structural_count=0)
    if not len(starts):
        return out
    table = inference_table(model, workload, gpu, assumptions, None, cols, node)
    fits = table.fits
    sizes = np.diff(np.append(starts, len(fits)))
    position = np.arange(len(fits)) - np.repeat(starts, sizes)
    first_misfit = np.minimum.reduceat(np.where(fits, len(fits), position), starts)
    limit = np.repeat(first_misfit, sizes)
    out.structural_count = int(np.minimum(first_misfit + 1, sizes).sum())
    out.note_misfit(table, position == limit)
    table = table.take(position < limit).with_perf()
    units = disaggregated_table(scenario, model, assumptions, gpu, node, table) if disaggregation_searched(scenario) else None
    if False not in scenario.search.disaggregated:
        table = table.take(np.zeros(len(table), dtype=bool))
    table = table.take(table.perf["replicas_needed"] > 0)  # stable under the load with some replica count
    table = replace(table, layout={**table.layout, "replicas": table.perf["replicas_needed"].astype(np.int64)}).priced(None)
    if units is not None and len(units):
        table = _join([table, units.priced(None)])
    out.table = (_pruned(table) if prune else table).with_row_ids()
    return out


TABLE_CACHE_ENTRIES = 32
"""Evaluated GPU tables kept per process, so that study cases differing only in price, limits or objective share them."""
_TABLE_CACHE: OrderedDict[str, GpuEvaluation] = OrderedDict()


def table_key(scenario: Scenario, model: ModelSpec, assumptions: Assumptions, gpu: GpuSpec, node: int, prune: bool, explain: bool) -> str:
    """What a GPU type's evaluated table depends on: model, workload (serving: its load and SLOs too, which set the replica
    count and the load of each replica), search (not max_gpus),
    assumptions, GPU, node size, the training GPU cap (`gpu_cap`) and pruning. Not the price, the limits or the objective."""
    training = isinstance(scenario.workload, TrainingWorkload)
    workload = scenario.workload.model_dump(mode="json")
    cap = gpu_cap(scenario, gpu.name, explain) if training else None
    parts = [model.model_dump(mode="json"), workload, scenario.search.model_dump(mode="json", exclude={"max_gpus", "gpus"}, warnings=False),
             assumptions.model_dump(mode="json"), gpu.model_dump(mode="json"), node, cap, prune]
    return json.dumps(parts, sort_keys=True, default=str)


def evaluated_gpu(scenario: Scenario, model: ModelSpec, assumptions: Assumptions, gpu: GpuSpec, node: int, prune: bool, explain: bool,
                  key: str) -> GpuEvaluation:
    """A GPU type's evaluated table from the per-process cache, or evaluated now (least recently used entries leave first)."""
    if key in _TABLE_CACHE:
        _TABLE_CACHE.move_to_end(key)
        return _TABLE_CACHE[key]
    if isinstance(scenario.workload, TrainingWorkload):
        result = evaluate_training_gpu(scenario, model, assumptions, gpu, node, prune, explain)
    else:
        result = evaluate_inference_gpu(scenario, model, assumptions, gpu, node, prune)
    _TABLE_CACHE[key] = result
    while len(_TABLE_CACHE) > TABLE_CACHE_ENTRIES:
        _TABLE_CACHE.popitem(last=False)
    return result


def build_space(scenario: Scenario, model: ModelSpec, assumptions: Assumptions, prune: bool = False, explain: bool = False) -> Space:
    """The scenario's coefficient table: per priced GPU type, the fitting rows at the scenario's price.

    With `prune`, rows are kept by exact dominance (`dominance_keep`); with `explain`, training
    GPU counts go past the GPU limits (to say what an infeasible limit would need). A training
    search larger than MAX_LAYOUTS_SEARCHED is refused before it starts.
    """
    if not isinstance(scenario.workload, (TrainingWorkload, InferenceWorkload)):
        raise InputError("workload.kind: must be training or inference.")
    if isinstance(scenario.workload, InferenceWorkload) and False not in scenario.search.disaggregated and not disaggregation_searched(scenario):
        raise InputError("search.disaggregated: [true] alone needs a request rate or tokens/s target (a concurrency is served by "
                         "colocated replicas); allowed: [false], [true, false].")
    space = Space(gpus=candidate_gpus(scenario), pruned=prune)
    priced = [(gpu, quote, node, table_key(scenario, model, assumptions, gpu, node, prune, explain))
              for gpu, quote, node in priced_gpus(scenario, space, assumptions)]
    if isinstance(scenario.workload, TrainingWorkload) and any(key not in _TABLE_CACHE for *_, key in priced):
        check_search_size(scenario, model, [(gpu, node) for gpu, _, node, _ in priced], explain)
    best = math.inf
    for gpu, quote, node, key in priced:
        evaluated = evaluated_gpu(scenario, model, assumptions, gpu, node, prune, explain, key)
        space.structural_count += evaluated.structural_count
        if evaluated.misfit is not None and evaluated.misfit_ratio < best:
            best = evaluated.misfit_ratio
            space._misfit = (evaluated.misfit, quote)
        if evaluated.table is not None and len(evaluated.table):
            table, rows = priced_table(evaluated.table, quote, key, prune)
            space.tables.append(table)
            space._table_rows.append(rows)
    return space


PRICED_CACHE_ENTRIES = 32
"""Priced GPU tables kept per process, so that study cases differing only in limits or objective share them."""
_PRICED_CACHE: OrderedDict[tuple[str, PriceQuote], tuple[Table, list[TrainingEvaluation | InferenceEvaluation]]] = OrderedDict()


def priced_table(evaluated: Table, quote: PriceQuote, key: str, prune: bool) -> tuple[Table, list[TrainingEvaluation | InferenceEvaluation]]:
    """A GPU type's evaluated table (`table_key` `key`) at a price, pruned when asked, with the list its evaluation
    objects go into (`Space.rows`), from the per-process cache: the table depends only on the evaluated table and the
    quote (frozen, compared field by field), and the objects are frozen, so cases share both."""
    cache_key = (key, quote)
    if cache_key in _PRICED_CACHE:
        _PRICED_CACHE.move_to_end(cache_key)
        return _PRICED_CACHE[cache_key]
    table = evaluated.priced(quote)
    entry: tuple[Table, list[TrainingEvaluation | InferenceEvaluation]] = (_pruned(table) if prune else table, [])
    _PRICED_CACHE[cache_key] = entry
    while len(_PRICED_CACHE) > PRICED_CACHE_ENTRIES:
        _PRICED_CACHE.popitem(last=False)
    return entry


# ---- exact dominance pruning ---------------------------------------------------------------


def dominance_values(table: Table) -> np.ndarray:
    """Quantities to minimise per row of one GPU type's table (a row can replace another one for one).

    Training: GPUs, cost, time to train (throughput is tokens / time). Serving, per replica:
    GPUs, $/h, -tokens/s, -batch, TTFT, TPOT, and the replicas the load needs (a plan of a
    dominated row with k >= its need maps to the dominator with the same k). Without a price, cost is replaced by what it is
    a price times: GPU-hours (training), or for serving the shape of what a replica rents, since each replica rents its
    own whole instances (`cost.pool_instances`): prefill replicas, GPUs per prefill replica, decode (or colocated)
    replicas and GPUs per replica. A row no larger on each costs no more at any price whose instance cost grows with its
    GPUs, so whatever this drops the priced pruning drops too.
    """
    lay = table.layout
    if table.training:
        n = table.num_gpus
        time = table.cost["time_to_train_s"] if table.price else table.perf["time_to_train_s"]
        cost = table.cost["cost_usd"] if table.price else n * time / SECONDS_PER_HOUR
        return np.column_stack([n.astype(float), cost, time])
    gpus = serving_unit_gpus(lay).astype(float)
    if table.price:
        cost = [table.cost["usd_per_hour"] / lay["replicas"]]
    else:
        pools = pool_columns(lay)
        split = pools["prefill_replicas"] > 0
        cost = [pools["prefill_replicas"].astype(float), np.where(split, pools["prefill_tp"] * pools["prefill_pp"], 0).astype(float),
                np.where(split, pools["decode_replicas"], 1).astype(float), (lay["tp"] * lay["pp"]).astype(float)]
    return np.column_stack([gpus, *cost, -table.perf["output_tokens_per_s"], -lay["batch"].astype(float),
                            table.perf["ttft_s"], table.perf["tpot_s"], table.perf["replicas_needed"].astype(float)])


DOMINANCE_BLOCK_ROWS = 256
"""Rows compared at once by `dominance_keep` beyond three columns (memory: block x kept rows x columns booleans)."""


def dominance_keep(values: np.ndarray) -> np.ndarray:
    """Rows (a boolean mask, enumeration order kept) that no other row beats or equals on every column.

    Rows are visited in lexicographic order of (values, row index); a row is dropped when an
    earlier one is <= on every column (of equal rows the first is kept). Swapping a dominated
    row for its dominator keeps every limit satisfied and no objective worse, so the optimum is
    unchanged: the pruning is exact, not a heuristic. Three columns use a staircase (bisection,
    O(n log n)); more columns compare blocks of rows against the kept rows at once (numpy).
    """
    n = len(values)
    keep = np.zeros(n, dtype=bool)
    if not n:
        return keep
    order = np.lexsort(tuple([np.arange(n)] + [values[:, j] for j in reversed(range(values.shape[1]))]))
    if values.shape[1] == 3:
        costs: list[float] = []
        times: list[float] = []
        for i in order:
            c, t = values[i, 1], values[i, 2]
            at = bisect.bisect_right(costs, c)
            if at and times[at - 1] <= t:
                continue
            keep[i] = True
            end = at
            while end < len(costs) and times[end] >= t:
                end += 1
            costs[at:end] = [c]
            times[at:end] = [t]
        return keep
    # A row is dropped when any earlier row in that order is <= on every column: by transitivity that is the same as
    # comparing with the kept rows only. Blocks of rows are compared at once with the rows kept before the block and
    # with the earlier rows of the block itself.
    ordered = values[order]
    kept_sorted = np.zeros(n, dtype=bool)
    kept = ordered[:0]
    for start in range(0, n, DOMINANCE_BLOCK_ROWS):
        block = ordered[start:start + DOMINANCE_BLOCK_ROWS]
        size = len(block)
        within = (block[np.newaxis, :, :] <= block[:, np.newaxis, :]).all(axis=2)  # [i, j]: row j <= row i everywhere
        dropped = (within & np.tri(size, k=-1, dtype=bool)).any(axis=1)
        for first in range(0, len(kept), DOMINANCE_BLOCK_ROWS * 16):
            dropped |= (kept[np.newaxis, first:first + DOMINANCE_BLOCK_ROWS * 16, :] <= block[:, np.newaxis, :]).all(axis=2).any(axis=1)
        kept_sorted[start:start + size] = ~dropped
        kept = np.concatenate([kept, block[~dropped]])
    keep[order[kept_sorted]] = True
    return keep


def prune_dominated(rows: list[TrainingEvaluation | InferenceEvaluation]) -> list[TrainingEvaluation | InferenceEvaluation]:
    """Evaluation objects kept by `dominance_keep` within each GPU type (enumeration order kept)."""
    keep = np.zeros(len(rows), dtype=bool)
    by_gpu: dict[str, list[int]] = {}
    for index, e in enumerate(rows):
        by_gpu.setdefault(e.layout.gpu, []).append(index)
    for members in by_gpu.values():
        values = np.array([_dominance_key(rows[i]) for i in members], dtype=float)
        keep[np.array(members)[dominance_keep(values)]] = True
    return [e for e, k in zip(rows, keep) if k]


def _dominance_key(e: TrainingEvaluation | InferenceEvaluation) -> tuple[float, ...]:
    """`dominance_values` of one evaluation object."""
    if isinstance(e, TrainingEvaluation):
        return (float(e.layout.num_gpus), e.cost_usd or 0.0, e.perf.time_to_train_s)
    return (float(e.layout.gpus_per_replica), e.usd_per_replica_hour, -e.perf.output_tokens_per_s,
            -float(e.layout.batch), e.perf.ttft_s, e.perf.tpot_s, float(e.perf.replicas_needed))
