"""Load-aware serving: iteration time of a continuous-batching engine and its steady state under load.

Engines modelled: vLLM's scheduler (continuous batching, Yu et al. 2022 'Orca', OSDI, Sec. 4.2:
iteration-level scheduling; Kwon et al. 2023, PagedAttention, Sec. 4.5) with chunked prefill
(Agrawal et al. 2024, 'Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve',
OSDI, Sec. 4.1-4.3: decode tokens first, then prompt chunks up to a token budget per
iteration; vLLM's `max_num_batched_tokens`, SGLang's `chunked_prefill_size`), and the
disaggregated prefill/decode split of DistServe (Zhong et al. 2024, OSDI, Sec. 3-4).

Every function takes numpy columns (one element per layout) or scalars and broadcasts, so the
evaluator can score a whole space at once. An iteration costs, per pipeline stage and card,

    t_stage = fixed + max(weights read + KV read, FLOPs / rate) + per-token communication

the roofline of Pope et al. 2022 (Sec. 2.2) that `planner.perf.decode_step_s` uses for a bare
decode step; `iteration_cost` derives the coefficients from the same memory and perf terms so
that a decode-only iteration equals `decode_step_s` (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

from planner.catalog import GpuSpec
from planner.enums import KvPrecision, WeightPrecision
from planner.layout import InferenceLayout
from planner.memory import kv_bytes_per_token_per_card, kv_tokens_that_fit, serving_stage_bytes
from planner.modelspec import ModelSpec
from planner.perf import group_bandwidth_gbps, matmul_ceiling_tflops, serve_compute_dtype
from planner.scenario import Assumptions, InferenceWorkload
from planner.units import FLOPS_PER_TFLOP

Array = NDArray[np.float64]
Lengths = tuple[NDArray[np.float64], NDArray[np.float64]]
"""Nodes and probability weights of a length distribution (`planner.traffic.TokenLengths.quadrature`)."""

SLOT_STAFFING_BETA = 2.33
"""Halfin-Whitt staffing margin for sequence slots: P(wait for a slot) ~ 1% (Halfin & Whitt 1981, Eq. 1, alpha(2.33))."""

DEFAULT_MAX_SEQUENCES = 256
"""vLLM `max_num_seqs` default (vLLM engine arguments): the scheduler's cap on running sequences."""


def _f(x: ArrayLike) -> Array:
    return np.asarray(x, dtype=float)


def _clip(x: ArrayLike, lo: float, hi: float) -> Array:
    """np.clip's values without its per-call overhead (it dominates on the small columns of the inner loops)."""
    return np.minimum(np.maximum(x, lo), hi)


# ---- per-iteration cost ------------------------------------------------------------------------


@dataclass(frozen=True)
class IterationCost:
    """Coefficients of one engine iteration, per pipeline stage and card (numpy columns or floats).

    `iteration_time_s` turns them into the time of one scheduler iteration in which every running
    sequence advances (one round through all `pp` stages).
    """

    fixed_s: ArrayLike
    """Per stage and iteration: collective latencies and engine overhead (independent of tokens)."""
    large_message_tokens: ArrayLike
    """Tokens per stage above which the TP all-reduce message outgrows the one-shot kernel (`perf.serving_allreduce_s`)."""
    ring_message_tokens: ArrayLike
    """Tokens per stage from which the all-reduce pays the whole NCCL ring latency (linear in between)."""
    large_message_extra_s: ArrayLike
    """Per stage: extra all-reduce latency at and above `ring_message_tokens` (ring hops instead of one shot)."""
    dense_weight_read_s: ArrayLike
    """Per stage: reading the card's non-expert weights from HBM once."""
    expert_weight_read_s: ArrayLike
    """Per stage: reading all routed experts held by the card (scaled by the share a batch touches)."""
    routed_experts: ArrayLike
    """Routed experts per MoE layer (0 = dense model)."""
    experts_per_token: ArrayLike
    """Top-k experts per token."""
    compute_s_per_token: ArrayLike
    """Per stage: matmul FLOPs of one token (2 x active params / cards) over the sustained rate."""
    attention_s_per_context_token: ArrayLike
    """Per stage: attention FLOPs of one query token against one cached token over the rate."""
    kv_read_s_per_context_token: ArrayLike
    """Per stage: reading one cached token's K/V (the card's share) from HBM."""
    comm_s_per_token: ArrayLike
    """Per stage: bandwidth part of TP all-reduces, EP all-to-all and PP sends, per token."""
    pp: ArrayLike
    """Pipeline stages of the replica."""
    chunk_tokens: ArrayLike
    """Token budget per iteration (vLLM max_num_batched_tokens; Sarathi-Serve chunk size)."""
    kv_capacity_tokens: ArrayLike
    """KV-cache tokens the replica holds (whole blocks after weights, workspace and reserve)."""
    max_sequences: ArrayLike
    """Scheduler cap on running sequences (vLLM max_num_seqs)."""
    itl_tail_share_margin: ArrayLike = 1.0
    """Tail ITL percentiles take the share of prefill iterations x this (assumption `serving_itl_tail_share_margin`)."""

    @cached_property
    def prepared(self) -> PreparedCost:
        """The coefficients as float columns, with the terms that are zero for every layout marked (computed once)."""
        return PreparedCost.of(self)

    def take(self, index: int) -> IterationCost:
        """The coefficients of one layout as floats (for the simulator)."""
        shape = _shape(self)
        values = {}
        for f in fields(self):
            column = np.broadcast_to(_f(getattr(self, f.name)), shape)
            values[f.name] = float(column[index]) if shape else float(column)
        return IterationCost(**values)


@dataclass(frozen=True)
class PreparedCost:
    """`IterationCost` as the inner loops read it: float columns, the expert base 1 - k/E, the all-reduce ramp's width,
    and flags for terms that vanish in every layout (dense model, one-shot all-reduce only, no per-token traffic, one
    pipeline stage), so `stage_time_s` skips them. Skipping adds nothing that was not + 0.0: the values are the same."""

    fixed_s: Array
    large_message_tokens: Array
    ramp_tokens: Array
    large_message_extra_s: Array
    dense_weight_read_s: Array
    expert_weight_read_s: Array
    expert_miss: Array
    compute_s_per_token: Array
    attention_s_per_context_token: Array
    kv_read_s_per_context_token: Array
    comm_s_per_token: Array
    pp: Array
    moe: bool
    ramp: bool
    comm: bool
    one_stage: bool

    @classmethod
    def of(cls, cost: IterationCost) -> PreparedCost:
        e, k = _f(cost.routed_experts), _f(cost.experts_per_token)
        extra, comm, pp = _f(cost.large_message_extra_s), _f(cost.comm_s_per_token), _f(cost.pp)
        lo, hi = _f(cost.large_message_tokens), _f(cost.ring_message_tokens)
        return cls(fixed_s=_f(cost.fixed_s), large_message_tokens=lo, ramp_tokens=np.maximum(hi - lo, 1e-9), large_message_extra_s=extra,
                   dense_weight_read_s=_f(cost.dense_weight_read_s), expert_weight_read_s=_f(cost.expert_weight_read_s),
                   expert_miss=1.0 - np.where(e > 0, k / np.maximum(e, 1.0), 0.0), compute_s_per_token=_f(cost.compute_s_per_token),
                   attention_s_per_context_token=_f(cost.attention_s_per_context_token),
                   kv_read_s_per_context_token=_f(cost.kv_read_s_per_context_token), comm_s_per_token=comm, pp=pp,
                   moe=bool(e.any()), ramp=bool(extra.any()), comm=bool(comm.any()), one_stage=bool((pp == 1.0).all()))


def _shape(cost: IterationCost) -> tuple[int, ...]:
    return np.broadcast_shapes(*(np.shape(getattr(cost, f.name)) for f in fields(cost)))


def _slots_ok(cost: IterationCost, in_system: Array) -> NDArray[np.bool_]:
    """Sequence slots by square-root staffing (Halfin & Whitt 1981, Oper. Res. 29(3), Eq. 1): c slots hold an offered load
    of a requests in the system when a + beta sqrt(a) <= c; beta = SLOT_STAFFING_BETA keeps the wait for a slot near 1%."""
    return in_system + SLOT_STAFFING_BETA * np.sqrt(np.maximum(in_system, 0.0)) <= _f(cost.max_sequences)


def slot_capacity(slots: ArrayLike) -> Array:
    """Requests in the system that `slots` sequence slots hold with the margin of `_slots_ok` (its inverse: the a with
    a + beta sqrt(a) = c), slightly below it so the check passes."""
    beta = SLOT_STAFFING_BETA
    return np.maximum(((-beta + np.sqrt(beta**2 + 4.0 * _f(slots))) / 2.0) ** 2 * (1.0 - 1e-6), 1e-9)


def experts_touched_fraction(cost: IterationCost, tokens: ArrayLike) -> Array:
    """Share of a card's routed experts an iteration of `tokens` reads: 1 - (1 - k/E)^tokens (uniform routing).

    As `planner.perf.expected_experts_touched`; 0 for dense models.
    """
    c = cost.prepared
    if not c.moe:  # dense model: no routed experts
        return np.zeros(np.shape(tokens))
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = 1.0 - np.power(c.expert_miss, _f(tokens))
    return np.where(_f(cost.routed_experts) > 0, frac, 0.0)


def stage_terms(cost: IterationCost, decode_seqs: ArrayLike, decode_context_tokens: ArrayLike, prefill_tokens: ArrayLike,
                prefill_context_tokens: ArrayLike = 0.0, tokens_per_decode_seq: ArrayLike = 1.0) -> tuple[Array, Array, Array]:
    """(tokens, memory s, compute s) of one stage of one iteration (`stage_time_s`): the tokens through the weights,
    the HBM time (weights, the routed experts the tokens touch, the decode sequences' KV) and the FLOP time (matmuls and
    attention over the decode and chunk contexts)."""
    c = cost.prepared
    tokens = decode_seqs * tokens_per_decode_seq + prefill_tokens
    if c.moe:
        memory = c.dense_weight_read_s + c.expert_weight_read_s * experts_touched_fraction(cost, tokens) + c.kv_read_s_per_context_token * decode_context_tokens
    else:
        memory = c.dense_weight_read_s + c.kv_read_s_per_context_token * decode_context_tokens
    compute = c.compute_s_per_token * tokens + c.attention_s_per_context_token * (decode_context_tokens * tokens_per_decode_seq + prefill_context_tokens)
    return tokens, memory, compute


def stage_time_s(cost: IterationCost, decode_seqs: ArrayLike, decode_context_tokens: ArrayLike, prefill_tokens: ArrayLike,
                 prefill_context_tokens: ArrayLike = 0.0, tokens_per_decode_seq: ArrayLike = 1.0) -> Array:
    """One stage of one iteration: fixed + max(weights + KV read, compute) + per-token communication.

    `decode_context_tokens` is the sum of the decode sequences' contexts (KV read once per step,
    Pope et al. 2022 Sec. 2.2); `prefill_context_tokens` the sum over prefill-chunk tokens of the
    tokens they attend to (causal attention, L s^2 (q+o) for a whole prompt as in
    `perf.prefill_flops`). Speculative verification runs `tokens_per_decode_seq` tokens per
    sequence through the weights against one KV read (Leviathan et al. 2023, Sec. 3).
    """
    c = cost.prepared
    tokens, memory, compute = stage_terms(cost, decode_seqs, decode_context_tokens, prefill_tokens, prefill_context_tokens, tokens_per_decode_seq)
    total = c.fixed_s
    if c.ramp:
        total = total + c.large_message_extra_s * _clip((tokens - c.large_message_tokens) / c.ramp_tokens, 0.0, 1.0)
    total = total + np.maximum(memory, compute)
    return total + c.comm_s_per_token * tokens if c.comm else total


def iteration_time_s(cost: IterationCost, decode_seqs: ArrayLike, decode_context_tokens: ArrayLike, prefill_tokens: ArrayLike,
                     prefill_context_tokens: ArrayLike = 0.0, tokens_per_decode_seq: ArrayLike = 1.0, pipelined: bool = True) -> Array:
    """Time for every running sequence to advance one step (one inter-token interval).

    pp = 1: one stage. pp > 1 with `pipelined` (vLLM runs `pp` virtual engines, one micro-batch
    each; GPipe, Huang et al. 2019, Sec. 2.2): the batch is split into pp micro-batches that
    stream through the stages, so a round costs pp stage-times at 1/pp of the work each; each
    card re-reads its weights once per micro-batch. Not pipelined: the whole batch passes the pp
    stages one after another (pp stage-times at the full work; what `perf.decode_step_s` models).
    """
    c = cost.prepared
    if c.one_stage:  # pp = 1: the stage is the iteration (share and pp are 1.0)
        return stage_time_s(cost, decode_seqs, decode_context_tokens, prefill_tokens, prefill_context_tokens, tokens_per_decode_seq)
    pp = c.pp
    share = 1.0 / pp if pipelined else 1.0
    return pp * stage_time_s(cost, _f(decode_seqs) * share, _f(decode_context_tokens) * share, _f(prefill_tokens) * share,
                             _f(prefill_context_tokens) * share, tokens_per_decode_seq)


def _rate_flops(gpu: GpuSpec, weight_precision: WeightPrecision, assumptions: Assumptions) -> float:
    return matmul_ceiling_tflops(gpu, serve_compute_dtype(weight_precision, gpu), assumptions) * assumptions.prefill_kernel_efficiency * FLOPS_PER_TFLOP


def iteration_cost(model: ModelSpec, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions, *,
                   prompt_tokens: int = 1024, output_tokens: int = 256, gpus_per_node: int | None = None,
                   max_sequences: int = DEFAULT_MAX_SEQUENCES, engine_overhead_s: float | None = None) -> IterationCost:
    """Coefficients of a TP x PP replica (experts split over its TP ranks) from the roofline terms of perf/memory.

    Weights and KV bytes per card: `memory.serving_stage_bytes`, `memory.kv_bytes_per_token_per_card`;
    rate: `perf.matmul_ceiling_tflops` x prefill_kernel_efficiency; HBM: decode_hbm_efficiency x
    datasheet; TP: two ring all-reduces of 2h bytes per token per layer (Shoeybi et al. 2019,
    Sec. 3; Patarasuk & Yuan 2009); PP: one 2h/tp-byte send per token per stage boundary.
    KV capacity: `memory.kv_tokens_that_fit`. `engine_overhead_s` is a per-iteration scheduler
    and sampler cost (default: the `engine_overhead_s` assumption, which `perf.decode_step_s` adds too,
    so decode-only iterations equal it). TP all-reduces are one-shot (`perf.serving_allreduce_s`).
    """
    node = gpus_per_node or gpu.gpus_per_node
    tp, pp = layout.tp, layout.pp
    body, embed, experts = serving_stage_bytes(model, layout.weight_precision, tp, pp, assumptions)
    kv_token, _ = kv_bytes_per_token_per_card(model, layout.kv_precision, tp, pp)
    workload = InferenceWorkload(kind="inference", model=model.name, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                                 concurrent_sequences=1)
    return iteration_cost_columns(
        model, assumptions, tp=tp, pp=pp, weight_bytes_per_card=body + embed, expert_bytes_per_card=experts,
        kv_bytes_per_token_per_card=kv_token, hbm_gbps=gpu.hbm_bandwidth_gbps,
        matmul_flops_per_s=_rate_flops(gpu, layout.weight_precision, assumptions),
        tp_link_gbps=group_bandwidth_gbps(gpu, tp, 1, node), pp_link_gbps=group_bandwidth_gbps(gpu, pp, tp, node, collective=False),
        kv_capacity_tokens=kv_tokens_that_fit(model, layout, gpu, assumptions, workload), max_sequences=max_sequences,
        engine_overhead_s=engine_overhead_s,
    )


def iteration_cost_columns(model: ModelSpec, assumptions: Assumptions, *, tp: ArrayLike, pp: ArrayLike, weight_bytes_per_card: ArrayLike,
                           expert_bytes_per_card: ArrayLike, kv_bytes_per_token_per_card: ArrayLike, hbm_gbps: ArrayLike,
                           matmul_flops_per_s: ArrayLike, tp_link_gbps: ArrayLike, pp_link_gbps: ArrayLike, kv_capacity_tokens: ArrayLike,
                           max_sequences: ArrayLike = DEFAULT_MAX_SEQUENCES, engine_overhead_s: ArrayLike | None = None) -> IterationCost:
    """`IterationCost` columns from the evaluator's per-layout columns (one model; every argument a column or scalar).

    weight_bytes_per_card: all weights on the most loaded card (16-bit embeddings included);
    expert_bytes_per_card: the routed-expert part of it; matmul_flops_per_s: the sustained
    rate (matmul ceiling x prefill_kernel_efficiency); hbm_gbps: datasheet GB/s (x
    decode_hbm_efficiency here); tp_link_gbps / pp_link_gbps: `perf.group_bandwidth_gbps` of
    the TP group and of the PP point-to-point. Formulas as in `iteration_cost`.
    """
    tp_a, pp_a = _f(tp), _f(pp)
    hbm = _f(hbm_gbps) * 1e9 * assumptions.decode_hbm_efficiency
    rate = _f(matmul_flops_per_s)
    layers = np.ceil(model.num_layers / pp_a)
    allreduce_lat = np.where(tp_a > 1, layers * 2 * assumptions.serving_allreduce_latency_s, 0.0)  # one-shot (perf.serving_allreduce_s)
    ring_extra = np.where(tp_a > 1, layers * 2 * (2 * (tp_a - 1) * assumptions.collective_latency_s - assumptions.serving_allreduce_latency_s), 0.0)
    allreduce_tok = np.where(tp_a > 1, layers * 2 * 2.0 * (tp_a - 1) / tp_a * 2.0 * model.hidden_size / (_f(tp_link_gbps) * 1e9), 0.0)
    pp_tok = np.where(pp_a > 1, 2.0 * model.hidden_size / tp_a / (_f(pp_link_gbps) * 1e9), 0.0)
    experts = _f(expert_bytes_per_card)
    return IterationCost(
        fixed_s=allreduce_lat + (assumptions.engine_overhead_s if engine_overhead_s is None else _f(engine_overhead_s)) / pp_a,
        large_message_tokens=assumptions.serving_oneshot_max_bytes / (2.0 * model.hidden_size) * np.ones_like(tp_a),
        ring_message_tokens=max(assumptions.serving_custom_allreduce_max_bytes, assumptions.serving_oneshot_max_bytes + 1.0) / (2.0 * model.hidden_size) * np.ones_like(tp_a),
        large_message_extra_s=ring_extra,
        dense_weight_read_s=(_f(weight_bytes_per_card) - experts) / hbm,
        expert_weight_read_s=experts / hbm,
        routed_experts=float(model.n_routed_experts),
        experts_per_token=float(model.experts_per_token),
        compute_s_per_token=2.0 * model.matmul_params_per_token / (tp_a * pp_a) / rate,
        attention_s_per_context_token=2.0 * model.num_layers * (model.q_dim + model.o_dim) / (tp_a * pp_a) / rate,
        kv_read_s_per_context_token=_f(kv_bytes_per_token_per_card) / hbm,
        comm_s_per_token=allreduce_tok + pp_tok,
        pp=pp_a,
        chunk_tokens=float(assumptions.prefill_chunk_tokens),
        kv_capacity_tokens=_f(kv_capacity_tokens),
        max_sequences=_f(max_sequences),
        itl_tail_share_margin=float(assumptions.serving_itl_tail_share_margin),
    )


MOE_DISPATCH_BYTES_PER_ELEMENT = 1.0
"""Bytes per element of the MoE dispatch all-to-all (FP8 dispatch, BF16 combine: DeepSeek-V3 report Sec. 3.3)."""


def moe_all_to_all(model: ModelSpec, assumptions: Assumptions, ep: ArrayLike, ep_link_bytes_per_s: ArrayLike,
                   dispatch_bytes_per_element: float = MOE_DISPATCH_BYTES_PER_ELEMENT) -> tuple[Array, Array]:
    """(latency per iteration s, s per token) of the MoE layers' dispatch and combine all-to-alls over `ep` cards: two
    collective latencies per MoE layer, and k x h elements per token each way ((ep-1)/ep leaving the card, dispatch at
    `dispatch_bytes_per_element`, combine in BF16) over the per-card link, shared by the ep cards' tokens (DeepEP;
    DeepSeek-V3 report Sec. 3.3-3.4). Zero where ep = 1. Over columns (`perf.moe_dp_attention_cost`) or one layout."""
    ep = _f(ep)
    latency = np.where(ep > 1, model.num_moe_layers * 2 * assumptions.collective_latency_s, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # one card: no link (the where drops it)
        per_token = np.where(ep > 1, model.num_moe_layers * model.experts_per_token * model.hidden_size * (dispatch_bytes_per_element + 2.0)
                             * (ep - 1) / ep / _f(ep_link_bytes_per_s) / ep, 0.0)
    return latency, per_token


def moe_iteration_cost(model: ModelSpec, gpu: GpuSpec, assumptions: Assumptions, *, weight_precision: WeightPrecision,
                       kv_precision: KvPrecision, attention_tp: int, attention_dp: int, ep: int,
                       gpus_per_node: int | None = None, dispatch_bytes_per_element: float = MOE_DISPATCH_BYTES_PER_ELEMENT,
                       max_sequences_per_dp_rank: int = DEFAULT_MAX_SEQUENCES, engine_overhead_s: float | None = None) -> IterationCost:
    """Coefficients of an MoE replica with data-parallel attention and expert parallelism EP != TP.

    As SGLang (`--enable-dp-attention --ep-size`) and TensorRT-LLM (attention DP, MoE EP) run
    DeepSeek-V3 (DeepSeek-V3 report, arXiv:2412.19437, Sec. 3.4: attention TP4 x DP, experts
    EP32 across nodes for prefill, EP320 for decode): the replica has N = attention_tp x
    attention_dp = ep cards. Attention weights and the dense layers are split by attention_tp
    and replicated over attention_dp; each DP rank keeps the KV of its own 1/dp of the
    sequences (MLA latent replicated over attention_tp). Routed experts are split over ep
    cards. Each MoE layer dispatches every token to k experts and combines them: two
    all-to-alls of k x h elements per token, a share (ep-1)/ep leaving the card, over NVLink
    inside a node and the NIC across nodes (DeepEP; `dispatch_bytes_per_element` 1 = fp8
    dispatch as DeepSeek-V3 Sec. 3.3; the combine is bf16). Coefficients are per card for the
    replica's global batch, balanced over DP ranks and experts.
    """
    weight_precision, kv_precision = WeightPrecision(weight_precision), KvPrecision(kv_precision)
    cards = attention_tp * attention_dp
    if cards != ep:
        raise ValueError(f"attention_tp x attention_dp = {cards} must equal ep = {ep}")
    node = gpus_per_node or gpu.gpus_per_node
    body, embed, experts_on_tp = serving_stage_bytes(model, weight_precision, attention_tp, 1, assumptions)
    expert_bytes_all = experts_on_tp * attention_tp  # all routed experts at this precision
    hbm = gpu.hbm_bandwidth_gbps * 1e9 * assumptions.decode_hbm_efficiency
    rate = _rate_flops(gpu, weight_precision, assumptions)
    kv_token, _ = kv_bytes_per_token_per_card(model, kv_precision, attention_tp, 1)
    tp_bw = group_bandwidth_gbps(gpu, attention_tp, 1, node) * 1e9
    ep_bw = group_bandwidth_gbps(gpu, ep, 1, node, collective=False) * 1e9
    layers, moe_layers = model.num_layers, model.num_moe_layers
    allreduce_lat = 0.0 if attention_tp == 1 else layers * 2 * assumptions.serving_allreduce_latency_s
    ring_extra = 0.0 if attention_tp == 1 else layers * 2 * (2 * (attention_tp - 1) * assumptions.collective_latency_s - assumptions.serving_allreduce_latency_s)
    allreduce_tok = 0.0 if attention_tp == 1 else layers * 2 * 2.0 * (attention_tp - 1) / attention_tp * 2.0 * model.hidden_size / tp_bw / attention_dp
    a2a_lat, a2a_tok = (float(v) for v in moe_all_to_all(model, assumptions, ep, ep_bw, dispatch_bytes_per_element))
    expert_params_active = model.num_moe_layers * model.experts_per_token * model.expert_params
    dense_active = model.matmul_params_per_token - expert_params_active
    compute_tok = (2.0 * dense_active / cards + 2.0 * expert_params_active / ep) / rate
    capacity = gpu.memory_bytes * assumptions.gpu_memory_utilization
    weights_card = body + embed - experts_on_tp + expert_bytes_all / ep
    free = capacity - weights_card - assumptions.runtime_reserve_gib_inference * 2**30
    kv_tokens = max(0.0, free // (kv_token * assumptions.kv_block_tokens) * assumptions.kv_block_tokens) * attention_dp
    return IterationCost(
        fixed_s=allreduce_lat + a2a_lat + (assumptions.engine_overhead_s if engine_overhead_s is None else engine_overhead_s),
        large_message_tokens=assumptions.serving_oneshot_max_bytes / (2.0 * model.hidden_size) * attention_dp,
        ring_message_tokens=max(assumptions.serving_custom_allreduce_max_bytes, assumptions.serving_oneshot_max_bytes + 1.0) / (2.0 * model.hidden_size) * attention_dp,
        large_message_extra_s=ring_extra,
        dense_weight_read_s=(body + embed - experts_on_tp) / hbm,
        expert_weight_read_s=expert_bytes_all / ep / hbm,
        routed_experts=float(model.n_routed_experts),
        experts_per_token=float(model.experts_per_token),
        compute_s_per_token=compute_tok,
        attention_s_per_context_token=2.0 * layers * (model.q_dim + model.o_dim) / cards / rate,
        kv_read_s_per_context_token=kv_token / attention_dp / hbm,
        comm_s_per_token=allreduce_tok + a2a_tok,
        pp=1.0,
        chunk_tokens=float(assumptions.prefill_chunk_tokens * attention_dp),
        kv_capacity_tokens=float(kv_tokens),
        max_sequences=float(max_sequences_per_dp_rank * attention_dp),
        itl_tail_share_margin=float(assumptions.serving_itl_tail_share_margin),
    )


def stack_costs(costs: list[IterationCost]) -> IterationCost:
    """Many layouts' coefficients as one IterationCost of numpy columns."""
    return IterationCost(**{f.name: np.array([float(getattr(c, f.name)) for c in costs]) for f in fields(IterationCost)})


# ---- workload summary ---------------------------------------------------------------------------


def expected_tokens_per_step(proposed_tokens: ArrayLike, acceptance_rate: ArrayLike) -> Array:
    """Tokens a speculative step yields: (1 - a^(k+1)) / (1 - a) (Leviathan et al. 2023, ICML, Eq. 1); k+1 when a = 1."""
    k, a = _f(proposed_tokens), _f(acceptance_rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (1.0 - np.power(a, k + 1.0)) / (1.0 - a)
    return np.where(a >= 1.0, k + 1.0, value)


# ---- steady state of one colocated replica ------------------------------------------------------


@dataclass(frozen=True)
class SteadyState:
    """Load-aware figures of one replica at an arrival rate (numpy columns; NaN where infeasible)."""

    feasible: NDArray[np.bool_]
    """Stable (a fixed point exists) and within KV capacity, max sequences and the chunk budget."""
    itl_mean_s: Array
    """Mean time between decode steps seen by a decoding sequence (one token per step without speculation)."""
    tpot_mean_s: Array
    """Mean time per output token: itl_mean_s / tokens per step (speculative decoding gives > 1 token per step)."""
    itl_p50_s: Array
    itl_p90_s: Array
    itl_p99_s: Array
    ttft_mean_s: Array
    ttft_p50_s: Array
    ttft_p90_s: Array
    ttft_p99_s: Array
    e2e_mean_s: Array
    decode_seqs_in_flight: Array
    """Little's law: rate x output / tokens-per-step x ITL (= output_tokens_per_s x ITL / tokens-per-step)."""
    requests_in_system: Array
    """rate x (TTFT + decode residence): sequences holding KV."""
    output_tokens_per_s: Array
    prefill_iteration_share: Array
    """Share of iterations that carry a prefill chunk."""
    prefill_utilisation: Array
    """rate x marginal time of a prompt in a chunk: the branching factor rho of the iteration chain (`_prefill_cycles`)."""
    kv_tokens_in_use: Array


CHAIN_REFINEMENTS = 3
"""Fixed-point steps from the fluid iteration time to the iteration chain's mean (`steady_state`)."""


def _decode_terms(cost: IterationCost, t: Array, rate: Array, prompt: Array, output: Array, tokens_per_step: Array, verify_tokens: Array,
                  pipelined: bool, cached: Array | float = 0.0) -> tuple[Array, Array, Array, Array, Array]:
    """At mean iteration time t: decode batch B = rate O / tau t (Little), its KV context, chunk budget C - B, the
    decode-only iteration time and the iteration with one prompt chunk. `prompt` is the part of a prompt that is
    prefilled, `cached` the prefix-cache hit before it: decoding sequences read both (context cached + P + O/2), and
    a chunk token attends to the cached prefix and half of its own prompt (`_prefill_context`)."""
    decode = rate * output / tokens_per_step * t
    ctx = decode * (cached + prompt + output / 2.0)
    budget = np.maximum(_f(cost.chunk_tokens) - decode * verify_tokens, 1e-9)
    one = np.minimum(prompt, budget)
    t_d = iteration_time_s(cost, decode, ctx, 0.0, 0.0, verify_tokens, pipelined)
    t_one = iteration_time_s(cost, decode, ctx, one, _prefill_context(one, prompt, cached), verify_tokens, pipelined)
    return decode, ctx, budget, t_d, t_one


def _prefill_context(chunk: Array, prompt: Array, cached: Array | float) -> Array:
    """Tokens attended by a chunk of whole prompts, summed over its tokens: chunk x (cached prefix + P / 2) (causal
    attention over the prompt, `perf.prefill_flops`; a prefix-cache hit's KV is read, not recomputed: vLLM automatic
    prefix caching, docs.vllm.ai "Automatic Prefix Caching"; as `planner.simulate`)."""
    return chunk * (cached + prompt / 2.0)


def _solve_itl(cost: IterationCost, rate: Array, prompt: Array, output: Array, tokens_per_step: Array, verify_tokens: Array,
               pipelined: bool, kv_tokens_per_seq: Array, iterations: int = 16, cached: Array | float = 0.0) -> tuple[Array, ...]:
    """(feasible, T, chunk, pi, t_p): the mean iteration time T with T = pi t_p(T) + (1 - pi) t_d(T) (see `steady_state`), from above within
    2**-iterations of T (bracket [t_lo 2^(k-1), t_lo 2^k], then `shrink_bracket`: bisection over many layouts, a k-ary
    search over few). Feasible where the root lies below the caps (KV capacity, max sequences, chunk budget)."""

    def terms(t: Array) -> tuple[Array, Array, Array, Array]:
        """(chunk, pi, t_d, t_p) at mean iteration time t."""
        decode, ctx, budget, t_d, t_one = _decode_terms(cost, t, rate, prompt, output, tokens_per_step, verify_tokens, pipelined, cached)
        one = np.minimum(prompt, budget)
        chunk0 = np.maximum(np.minimum(budget, np.maximum(one, (1.0 + rate * t_one) * prompt)), 1e-9)  # prompts arriving meanwhile join
        with np.errstate(divide="ignore", invalid="ignore"):
            pi = np.minimum(1.0, rate * prompt * t / chunk0)
        chunk = np.maximum(np.where(pi < 1.0, chunk0, rate * prompt * t), 1e-9)
        t_p = iteration_time_s(cost, decode, ctx, chunk, _prefill_context(chunk, prompt, cached), verify_tokens, pipelined)
        return chunk, pi, t_d, t_p

    t_lo = iteration_time_s(cost, 0.0, 0.0, 0.0, 0.0, verify_tokens, pipelined) * np.ones_like(rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        seq_cap = np.minimum(_f(cost.max_sequences), _f(cost.kv_capacity_tokens) / kv_tokens_per_seq)
        t_cap = seq_cap * tokens_per_step / (rate * output)  # decode seqs reach the cap
        t_chunk = _f(cost.chunk_tokens) / (rate * (prompt + output * verify_tokens / tokens_per_step))  # prefill exceeds the budget
    t_hi = np.minimum(t_cap, t_chunk)

    def gap(t: Array) -> Array:
        _, pi, t_d, t_p = terms(t)
        return pi * t_p + (1.0 - pi) * t_d - t

    feasible = (t_hi > t_lo) & (gap(np.where(t_hi > t_lo, t_hi, t_lo)) < 0)
    # The root's bracket: the first power-of-two multiple of t_lo past it. It does not depend on the caps above (the
    # figures at a rate are the same for any batch cap that holds them) and keeps the precision relative to T itself.
    below_root = lambda t: gap(t) > 0  # noqa: E731
    top = t_lo * first_failing_power(lambda m: feasible & below_root(t_lo * m), np.shape(t_lo))
    _, t = shrink_bracket(below_root, np.where(feasible, top / 2.0, t_lo), np.where(feasible, top, t_lo), iterations)
    chunk, pi, _, t_p = terms(t)
    return feasible, t, chunk, pi, t_p


def _bisect(below: Callable[[Array], NDArray[np.bool_]], lo: Array, hi: Array, iterations: int) -> Array:
    """Bisection per column for the boundary where `below` (true under it) turns false, within (hi - lo) 2**-iterations;
    returns the upper end (the quantile searches read from above)."""
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        under = below(mid)
        lo, hi = np.where(under, mid, lo), np.where(under, hi, mid)
    return hi


def _node_quantile(values: Array, weights: Array, q: float) -> Array:
    """The q-quantile of a quantity over the length distribution's nodes (axis 0, in length order, the quantity growing
    with the length) with their probability weights."""
    reached = np.cumsum(weights * np.ones_like(values), axis=0) >= q - 1e-12
    return np.take_along_axis(values, np.argmax(reached, axis=0)[np.newaxis], axis=0)[0]


def _normal_cdf(z: Array) -> Array:
    """Standard normal CDF via erf of Abramowitz & Stegun 1964, Eq. 7.1.26 (absolute error < 1.5e-7)."""
    x = np.abs(z) / math.sqrt(2.0)
    u = 1.0 / (1.0 + 0.3275911 * x)
    poly = u * (0.254829592 + u * (-0.284496736 + u * (1.421413741 + u * (-1.453152027 + u * 1.061405429))))
    erf = 1.0 - poly * np.exp(-x * x)
    return 0.5 * (1.0 + np.sign(z) * erf)


def _gamma_cdf(x: Array, shape: Array, scale: Array) -> Array:
    """Gamma CDF by the Wilson-Hilferty cube-root normal approximation (Wilson & Hilferty 1931, PNAS 17; Johnson, Kotz &
    Balakrishnan 1994, Continuous Univariate Distributions Vol. 1, Eq. 17.99)."""
    c = 1.0 / (9.0 * shape)
    return _normal_cdf((np.cbrt(np.maximum(x, 0.0) / (shape * scale)) - (1.0 - c)) / np.sqrt(c))


def _gamma_quantile(q: float, shape: Array, scale: Array) -> Array:
    """Inverse of `_gamma_cdf` (Wilson-Hilferty)."""
    from statistics import NormalDist

    c = 1.0 / (9.0 * shape)
    return shape * scale * np.maximum(1.0 - c + NormalDist().inv_cdf(q) * np.sqrt(c), 0.0) ** 3


@dataclass(frozen=True)
class PrefillCycles:
    """TTFT of a replica from its iteration cycles (see `_prefill_cycles`); numpy columns."""

    own_s: Array
    """The prompt's own chunk iterations with no other prompt in them."""
    prefill_time_share: Array
    """Share of time spent in iterations that carry prompt chunks (what a Poisson arrival sees, PASTA)."""
    idle_share: Array
    """Share of arrivals that find the engine idle (no decode batch, no prompt): they wait for nothing."""
    utilisation: Array
    """rate x marginal prefill time of a prompt (rate x s x E[P]): the branching factor of the cycle recursion."""
    decode_iteration_s: Array
    """An arrival during a decode-only iteration waits its residual U(0, t_d) ..."""
    join_probability: Array
    """... plus, with probability 1 - exp(-rate t_d), the marginal time of another prompt joining its chunk ..."""
    join_s: Array
    """... which is s x E[P]."""
    prefill_wait_mean_s: Array
    """Mean wait beyond `own_s` of an arrival during a prefill iteration."""
    prefill_wait_var_s2: Array
    """Its variance (the wait is fitted by a gamma distribution with this mean and variance)."""
    ttft_mean_s: Array
    prefill_iteration_share: Array
    """Share of iterations that carry prompt chunks (the two-state chain's stationary probability)."""
    prefill_iteration_mean_s: Array
    """Mean length of an iteration that carries prompt chunks."""
    prefill_iteration_var_s2: Array
    """Its variance."""
    iteration_mean_s: Array
    """E[T] over iterations (the chain's stationary mean)."""
    iteration_var_s2: Array
    """Var T over iterations."""


def _prefill_cycles(cost: IterationCost, rate: Array, prompt: Array, prompt_moment2: Array, decode: Array, ctx: Array, budget: Array,
                    t_d: Array, own: Array, verify: Array, pipelined: bool, p_start: Array | None = None, iterations: int = 12,
                    cached: Array | float = 0.0) -> PrefillCycles:
    """TTFT of an engine that, at every iteration boundary, puts every waiting prompt into the next iteration's chunk.

    The scheduler (vLLM V1 with chunked prefill, Sarathi-Serve Sec. 4.2-4.3; what `planner.simulate` replays)
    admits the prompts that arrived during iteration k into iteration k+1, FCFS up to the budget C - B. The iteration
    lengths form a Markov chain: T_{k+1} = t_d (decode only) when no prompt arrived during T_k, else
    t_0 + s Y_k with Y_k the prompt tokens that arrived (compound Poisson with mean rate E[P] T_k), t_0 + s P the
    iteration with one prompt and s the marginal time of a prompt token (secant of `iteration_time_s` from one prompt to
    two, the roofline's compute slope once a chunk is compute-bound). This is a branching process with immigration
    (Galton-Watson with immigration; Athreya & Ney 1972, Branching Processes, Ch. VI): with rho = rate s E[P] < 1 its
    stationary moments follow from E[Y^j | T] (compound Poisson: E[Y] = l a1 T, E[Y^2] = l a2 T + l^2 a1^2 T^2,
    E[Y^3] = l a3 T + 3 l^2 a1 a2 T^2 + l^3 a1^3 T^3 with a_j = E[P^j]), giving M_j = E[T^j] for j = 1..3 in closed
    form; the share p of iterations with a prompt is the stationary law of the two-state chain (decode, prefill) with
    P(prefill | previous T) = 1 - E[exp(-rate T)] (the prefill-iteration length taken as gamma for the transform).
    A tagged prompt (Poisson arrivals see time averages, Wolff 1982) lands in an iteration of size-biased length T*
    (density T f(T) / E[T], Feller 1971 Vol. II, Sec. I.4 / Kleinrock 1975 Vol. 1 Sec. 5.2), waits its residual
    U T*, then runs in the next iteration with the prompts that arrived during T*:
    TTFT = own + U T* + s Y(T*); E[U T*] = E[T^2] / (2 E[T]) is the residual term of the Pollaczek-Khinchine mean
    (Kleinrock 1975, Vol. 1, Eq. 5.105 with the iteration as the unit of service). With share q_p = E[T 1{prefill}] / E[T] of time in prefill iterations:
    decode-only arrivals (T* = t_d) wait U(0, t_d), plus s E[P] when another prompt arrived in the same iteration
    (probability 1 - exp(-rate t_d)); an arrival to an idle engine (no decode batch: exp(-B), Poisson occupancy) waits
    nothing; prefill arrivals wait X with
    E[X] = E[T*] (1/2 + rho) and Var X = E[T*^2] / 12 + s^2 rate a2 E[T*] + (1/2 + rho)^2 Var T*, where
    E[T*^j] = E[T^(j+1) 1{prefill}] / E[T 1{prefill}], fitted by a gamma distribution (two-moment fit, as Whitt 1982,
    'Approximating a point process by a renewal process', and the gamma fit of M/G/1 waits, Tijms 2003, A First
    Course in Stochastic Models, Sec. 2.5). E[P^3] is the lognormal value a2^3 / a1^3 (exact P^3 for fixed lengths).
    A prompt longer than the budget spans ceil(P / (C - B)) iterations (`own`); the cycle then counts its
    iterations at s = t(C - B) / (C - B) per token. Not modelled: a chunk spilling past the budget into the next
    iteration when many prompts wait (the budget is 8,192 tokens; at <= 80% utilisation this is rare).
    """
    lam = rate
    a1 = np.maximum(prompt, 1e-9)
    a2 = np.maximum(prompt_moment2, a1**2)
    a3 = a2**3 / a1**3
    one = np.minimum(prompt, budget)
    two = np.minimum(2.0 * prompt, budget)
    t_1 = iteration_time_s(cost, decode, ctx, one, _prefill_context(one, prompt, cached), verify, pipelined)
    t_2 = iteration_time_s(cost, decode, ctx, two, _prefill_context(two, prompt, cached), verify, pipelined)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(two > one + 0.5, (t_2 - t_1) / np.maximum(two - one, 1e-9), t_1 / np.maximum(one, 1e-9))
    t0 = np.maximum(own - s * a1, 0.0)
    rho = lam * s * a1
    ok = rho < 1.0
    r = np.where(ok, rho, 0.0)
    p = _clip(lam * own if p_start is None else p_start, 1e-6, 1.0)

    def first_two(p: Array) -> tuple[Array, Array]:
        m1 = ((1.0 - p) * t_d + p * t0) / (1.0 - r)
        m2 = ((1.0 - p) * t_d**2 + p * t0**2 + (2.0 * t0 * r + s**2 * lam * a2) * m1) / (1.0 - r**2)
        return m1, m2

    for _ in range(iterations):
        m1, m2 = first_two(p)
        mean_p = np.maximum((m1 - (1.0 - p) * t_d) / p, 1e-12)
        var_p = np.maximum((m2 - (1.0 - p) * t_d**2) / p - mean_p**2, 0.0)
        # a prefill iteration lasts at least the one-prompt iteration: own + Gamma(excess mean, var) for the transform
        excess = np.maximum(mean_p - own, 1e-12)
        theta = var_p / excess
        laplace = np.exp(-lam * np.minimum(own, mean_p)) * np.where(
            theta * lam > 1e-9, np.exp(-(excess / np.maximum(theta, 1e-300)) * np.log1p(lam * theta)), np.exp(-lam * excess))
        enter = 1.0 - np.exp(-lam * t_d)  # a prompt arrives during a decode-only iteration
        p = _clip(enter / (enter + laplace), 1e-9, 1.0)
    m1, m2 = first_two(p)
    m3 = ((1.0 - p) * t_d**3 + p * t0**3 + 3.0 * t0**2 * r * m1 + 3.0 * t0 * s**2 * (lam * a2 * m1 + lam**2 * a1**2 * m2)
          + s**3 * (lam * a3 * m1 + 3.0 * lam**2 * a1 * a2 * m2)) / (1.0 - r**3)
    w1 = m1 - (1.0 - p) * t_d
    w2 = np.maximum(m2 - (1.0 - p) * t_d**2, 0.0)
    w3 = np.maximum(m3 - (1.0 - p) * t_d**3, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        share = _clip(w1 / m1, 0.0, 1.0)
        some = (w1 > 1e-12 * m1) & np.isfinite(w2 / w1) & np.isfinite(w3 / w1)  # prefill iterations of negligible share: one prompt
        ts1 = np.where(some, w2 / w1, own)
        ts2 = np.where(some, w3 / w1, own**2)
    wait_p = ts1 * (0.5 + r)
    var_x = ts2 / 12.0 + s**2 * lam * a2 * ts1 + (0.5 + r) ** 2 * np.maximum(ts2 - ts1**2, 0.0)
    join = s * a1
    # an arrival that finds no sequence decoding and no prompt prefilling starts at once: M/G/inf occupancy is 0 with
    # probability exp(-B) (Poisson, Kleinrock 1975, Vol. 1, Sec. 3.8 M/G/infinity)
    idle = (1.0 - share) * np.exp(-np.maximum(decode, 0.0))
    mean = own + (1.0 - share - idle) * t_d * (0.5 + r) + share * wait_p
    nan = np.where(ok, 1.0, np.nan)
    return PrefillCycles(own_s=own, prefill_time_share=share, idle_share=idle, utilisation=rho, decode_iteration_s=t_d,
                         join_probability=-np.expm1(-lam * t_d), join_s=join, prefill_wait_mean_s=wait_p,
                         prefill_wait_var_s2=np.maximum(var_x, 1e-30), ttft_mean_s=mean * nan, prefill_iteration_share=p, iteration_mean_s=m1,
                         prefill_iteration_mean_s=np.where(some, w1 / np.maximum(p, 1e-300), own),
                         prefill_iteration_var_s2=np.where(some, np.maximum(w2 / np.maximum(p, 1e-300) - (w1 / np.maximum(p, 1e-300)) ** 2, 0.0), 0.0),
                         iteration_var_s2=np.maximum(m2 - m1**2, 0.0))


def _ttft_quantile(cycles: PrefillCycles, q: float, iterations: int = 24, own_nodes: Array | None = None,
                   weights: Array | None = None) -> Array:
    """q-quantile of own + W, W ~ idle 0 + (1 - share - idle) [U(0, t_d) + join x Bernoulli] + share Gamma(mean, var) (bisection on the CDF).

    With `own_nodes` (the own chunk iterations of prompts at the length distribution's quadrature nodes, in length
    order, with their probability `weights`), own varies with the tagged prompt, independently of W: the CDF is the
    weighted sum over nodes of P(W <= x - own_k), bracketed by the (1 + q) / 2 quantiles of own and of W.
    """
    share, width, join, pj = cycles.prefill_time_share, cycles.decode_iteration_s, cycles.join_s, cycles.join_probability
    shape = cycles.prefill_wait_mean_s**2 / cycles.prefill_wait_var_s2
    scale = cycles.prefill_wait_var_s2 / np.maximum(cycles.prefill_wait_mean_s, 1e-300)
    w = np.maximum(width, 1e-300)

    def wait_cdf(m: Array) -> Array:
        decode_cdf = (1.0 - pj) * _clip(m / w, 0.0, 1.0) + pj * _clip((m - join) / w, 0.0, 1.0)
        return cycles.idle_share + (1.0 - share - cycles.idle_share) * decode_cdf + share * _gamma_cdf(m, shape, scale)

    if own_nodes is None or weights is None:
        return cycles.own_s + _bisect(lambda m: wait_cdf(m) < q, np.zeros_like(share), width + join + _gamma_quantile(q, shape, scale), iterations)
    tail = 0.5 * (1.0 + q)
    own_tail = _node_quantile(own_nodes, weights, tail)

    def below(x: Array) -> NDArray[np.bool_]:
        after = x - own_nodes
        return (weights * np.where(after >= 0.0, wait_cdf(np.maximum(after, 0.0)), 0.0)).sum(axis=0) < q

    return _bisect(below, np.zeros_like(share), own_tail + width + join + _gamma_quantile(tail, shape, scale), iterations + 6)


def steady_state(cost: IterationCost, rate_rps: ArrayLike, prompt_tokens: ArrayLike, output_tokens: ArrayLike, *,
                 prompt_second_moment: ArrayLike | None = None, prefix_hit_rate: ArrayLike = 0.0,
                 tokens_per_step: ArrayLike = 1.0, verify_tokens: ArrayLike = 1.0, pipelined: bool = True,
                 percentiles: bool | tuple[int, ...] = True, prompt_lengths: Lengths | None = None) -> SteadyState:
    """TTFT, ITL, in-flight sequences and throughput of one colocated replica at `rate_rps` (Poisson arrivals).

    Engine: each iteration runs one step of every decoding sequence, then prompt chunks FCFS up to
    the budget C - B (Sarathi-Serve, Agrawal et al. 2024, OSDI, Sec. 4.2-4.3; vLLM V1 scheduler
    with chunked prefill, docs.vllm.ai "Optimization and Tuning: chunked prefill"); prompts that
    arrive during an iteration are admitted at the next boundary; a prompt's first token comes at
    the end of the iteration that finishes it (what `planner.simulate` replays).

    1. Fluid start and stability (Little's law): decode sequences B = rate x O / tau x T (T the
       mean iteration time, tau tokens per decode step); pi = rate P T / c0 iterations carry a
       chunk c0 = min(C - B, (1 + rate t_1) P); T = pi t_p + (1 - pi) t_d (bisection,
       `_solve_itl`). Infeasible (not a number) when no fixed point exists below the KV capacity
       (P + O tokens reserved per sequence, TensorRT-LLM's GUARANTEED_NO_EVICT policy),
       max_sequences, or the chunk budget, or when prefill work alone fills the time.
    2. Iteration chain (`_prefill_cycles`): the lengths of successive iterations form a
       branching process with immigration (prompts arriving during one iteration make the next
       one longer); its stationary E[T] replaces the fluid T (fixed point in B, Aitken-
       accelerated), giving ITL mean = E[T], B and throughput = B tau / E[T] (consistent by
       construction), the share of iterations that carry prompts, and TTFT: own chunk
       iterations + the residual of the iteration in progress at arrival (size-biased,
       Kleinrock 1975 Vol. 1 Sec. 5.2) + the prompts that join the same chunk. TTFT
       percentiles: the CDF of that mixture (idle engine / decode-only iteration / prefill
       iteration with a gamma-fitted wait), inverted by bisection (`_ttft_quantile`). This
       replaces the M/G/1 (Pollaczek-Khinchine) view of prefill work, which has the same mean
       when prompts are served one at a time but misses that prompts batched into one
       iteration all finish at its end.
    3. ITL percentiles: a token waits one iteration: decode-only (share 1 - pi) with the
       size-biased, over-dispersed decode batch (gamma), or one carrying chunks (the chain's
       prefill-iteration length, gamma); tails take pi x `cost.itl_tail_share_margin`
       (assumption `serving_itl_tail_share_margin`), since p90/p99 jump to the prefill
       iteration once its token share passes 1 - q.

    Prefix-cache hits remove a share of the prompt from prefill, not from the KV footprint nor from
    what attention reads: decoding sequences and chunk tokens attend to the cached prefix too.
    With `prompt_lengths` (quadrature nodes and weights of the prompt-length distribution whose
    mean is `prompt_tokens`), a prompt's own chunk iterations depend on its length (a long prompt
    spans several chunks, each attending to more context), so TTFT's mean and percentiles average
    over the nodes (`_ttft_quantile`); the iteration chain keeps the first two moments.
    `percentiles`: True for p50/p90/p99, a tuple of percentiles (e.g. (90,)) for those only,
    False for means and feasibility only (rate searches); the others are not a number.
    """
    rate = _f(rate_rps)
    prompt_all, output = _f(prompt_tokens), _f(output_tokens)
    prompt = prompt_all * (1.0 - _f(prefix_hit_rate))
    tau, verify = _f(tokens_per_step), _f(verify_tokens)
    rate, prompt, output, prompt_all = np.broadcast_arrays(rate, prompt, output, prompt_all)
    prompt_all = np.asarray(prompt_all, dtype=float)
    cached = prompt_all - prompt  # the prefix-cache hit: read by attention and decode, not prefilled
    feasible, t, chunk, pi, t_p = _solve_itl(cost, rate, prompt, output, tau, verify, pipelined, prompt_all + output, cached=cached)
    # the share of time in prefill iterations stays below 1 (a prompt's chunks at the per-token time of the typical chunk)
    feasible = feasible & (rate * prompt * t_p / chunk < 1.0)
    moment2 = _f(prompt_second_moment) * (1.0 - _f(prefix_hit_rate)) ** 2 if prompt_second_moment is not None else prompt**2
    # The fluid fixed point above (pi = rate P T / chunk) under-states the mean iteration time when prompts arrive in
    # bursts; the iteration chain of `_prefill_cycles` gives E[T] for a given decode batch, and B = rate O / tau E[T]
    # closes the loop (fixed-point iteration from the fluid T, which is below it).
    share = _clip(pi, 1e-6, 1.0)
    work = np.maximum(prompt, 1.0)  # a fully cached prompt still runs one token to sample from (as `planner.simulate`)
    moment2 = np.maximum(moment2, work**2)
    for step in range(CHAIN_REFINEMENTS + 1):
        decode, ctx, budget, t_d, t_one = _decode_terms(cost, t, rate, work, output, tau, verify, pipelined, cached)
        own = np.ceil(work / budget) * t_one  # the prompt's own chunk iterations
        cycles = _prefill_cycles(cost, rate, work, moment2, decode, ctx, budget, t_d, own, verify, pipelined, p_start=share,
                                 iterations=3 if step else 8, cached=cached)
        share = cycles.prefill_iteration_share
        if step < CHAIN_REFINEMENTS:
            good = np.isfinite(cycles.iteration_mean_s) & (cycles.utilisation < 1.0)
            t1_, t = t, np.where(good, np.maximum(cycles.iteration_mean_s, t), t)
            if step % 2 == 0:
                t0_ = t1_
            else:  # Aitken's delta-squared extrapolation of each pair of steps of the monotone iteration (Burden & Faires, Sec. 2.5)
                with np.errstate(divide="ignore", invalid="ignore"):
                    jump = (t - t1_) ** 2 / (t - 2.0 * t1_ + t0_)
                t = np.where(good & np.isfinite(jump) & (t - 2.0 * t1_ + t0_ < 0.0), t - jump, t)
    rho = cycles.utilisation
    feasible = feasible & (rho < 1.0)
    ttft_mean = cycles.ttft_mean_s
    pi = share
    own_nodes = weights = None
    if prompt_lengths is not None and len(prompt_lengths[0]) > 1:  # the tagged prompt's own iterations per length node
        axes = (1,) * np.ndim(rate)
        nodes = np.asarray(prompt_lengths[0], dtype=float).reshape((-1,) + axes)
        weights = np.asarray(prompt_lengths[1], dtype=float).reshape((-1,) + axes)
        fresh = np.maximum(nodes * (1.0 - _f(prefix_hit_rate)), 1.0)
        first = np.minimum(fresh, budget)
        own_nodes = np.ceil(fresh / budget) * iteration_time_s(cost, decode, ctx, first, _prefill_context(first, fresh, nodes - fresh), verify,
                                                               pipelined)
        ttft_mean = ttft_mean - cycles.own_s + (weights * own_nodes).sum(axis=0)

    wanted = (50, 90, 99) if percentiles is True else tuple(percentiles or ())

    def ttft_q(q: float) -> Array:
        if round(q * 100) not in wanted:  # feasibility and means only (rate searches), or another percentile
            return np.full_like(rho, np.nan)
        return _ttft_quantile(cycles, q, own_nodes=own_nodes, weights=weights)

    # The decode batch a token sees. Sequences complete prefill in bursts (the iteration chain above), so the count of
    # sequences that finished prefill within the last O / tau iterations is over-dispersed: with c_k the prompts finished
    # in iteration k (mean rate M1, Var c = rate M1 + rate^2 Var T) and lag-k autocorrelation ~ rho^k (the branching
    # factor of the chain; AR(1) sum, Box & Jenkins 1976, Sec. 3.2), Var B ~ (O / tau) Var c (1 + rho) / (1 - rho);
    # rho = 0 gives the Poisson occupancy of M/G/inf (Kleinrock 1975, Vol. 1). A token sees the batch size-biased
    # (Feller 1971, Vol. II, Sec. I.4): for B ~ Gamma(k, theta) fitted to the mean and variance, Gamma(k + 1, theta).
    r_c = _clip(rho, 0.0, 0.95)
    var_c = rate * cycles.iteration_mean_s + rate**2 * cycles.iteration_var_s2
    var_b = np.maximum(output / tau * var_c * (1.0 + r_c) / (1.0 - r_c), np.maximum(decode, 1e-9))
    theta_b = var_b / np.maximum(decode, 1e-9)
    shape_b = np.maximum(decode, 1e-9) / theta_b

    # ITL percentiles: a token waits one iteration; iterations are decode-only (share 1 - p of the chain) with the
    # size-biased batch, t_d linear in it (secant from max(1, B) to its 99th percentile), or carry prompt chunks, with
    # the chain's prefill-iteration length (mean and variance from M1, M2, plus the batch's share), fitted by a gamma.
    # The batch a token sees is itself + the others: 1 + X, X gamma with the size-biased mean minus 1 (for Poisson
    # occupancy 1 + Poisson(B)). The q-quantile of that mixture by bisection on its CDF.
    others_mean = np.maximum(decode + theta_b - 1.0, 1e-9)
    others_var = (shape_b + 1.0) * theta_b**2
    shape_x, scale_x = others_mean**2 / others_var, others_var / others_mean
    per_seq_ctx = cached + prompt + output / 2.0
    n_a = np.maximum(decode, 1.0)
    n_hi = np.maximum(1.0 + _gamma_quantile(0.99, shape_x, scale_x), n_a + 1.0)
    td_a = iteration_time_s(cost, n_a, n_a * per_seq_ctx, 0.0, 0.0, verify, pipelined)
    td_hi = iteration_time_s(cost, n_hi, n_hi * per_seq_ctx, 0.0, 0.0, verify, pipelined)
    slope_d = np.maximum((td_hi - td_a) / (n_hi - n_a), 1e-15)
    mean_p = cycles.prefill_iteration_mean_s
    var_p = cycles.prefill_iteration_var_s2 + slope_d**2 * var_b
    shape_p, scale_p = mean_p**2 / np.maximum(var_p, 1e-30), np.maximum(var_p, 1e-30) / np.maximum(mean_p, 1e-300)

    def itl_q(q: float) -> Array:
        if round(q * 100) not in wanted:
            return np.full_like(rho, np.nan)
        hi = np.maximum(td_a + slope_d * np.maximum(1.0 + _gamma_quantile(q, shape_x, scale_x) - n_a, 0.0), _gamma_quantile(q, shape_p, scale_p))
        hi = np.maximum(hi, td_a)
        # tails: the token-weighted share of prefill iterations, which the percentile jumps across, x the margin
        share = pi if q <= 0.5 else np.minimum(pi * _f(cost.itl_tail_share_margin), 1.0)

        def below(x: Array) -> NDArray[np.bool_]:
            others = (x - td_a) / slope_d + n_a - 1.0
            decode_cdf = np.where(others < 0.0, 0.0, _gamma_cdf(others, shape_x, scale_x))  # a token's batch holds itself
            return (1.0 - share) * decode_cdf + share * _gamma_cdf(x, shape_p, scale_p) < q

        return _bisect(below, np.zeros_like(t), hi, 24)

    in_system = rate * (ttft_mean + output / tau * t)
    kv_in_use = in_system * (prompt_all + output)
    # Sequence slots: square-root staffing (Halfin & Whitt 1981, Oper. Res. 29(3), Eq. 1): with c slots and an offered
    # load of a requests in the system, c >= a + beta sqrt(a) keeps the probability of waiting for a slot near
    # alpha(beta); beta = SLOT_STAFFING_BETA gives ~1%, so the queue for slots (not modelled) stays out of TTFT.
    slots_ok = _slots_ok(cost, in_system)
    feasible = feasible & (kv_in_use <= _f(cost.kv_capacity_tokens)) & slots_ok
    nan = np.where(feasible, 1.0, np.nan)
    return SteadyState(
        feasible=feasible,
        itl_mean_s=t * nan, tpot_mean_s=t / tau * nan, itl_p50_s=itl_q(0.5) * nan, itl_p90_s=itl_q(0.9) * nan, itl_p99_s=itl_q(0.99) * nan,
        ttft_mean_s=ttft_mean * nan,
        ttft_p50_s=ttft_q(0.5) * nan, ttft_p90_s=ttft_q(0.9) * nan, ttft_p99_s=ttft_q(0.99) * nan,
        e2e_mean_s=(ttft_mean + (output - 1.0) / tau * t) * nan,
        decode_seqs_in_flight=decode * nan, requests_in_system=in_system * nan,
        output_tokens_per_s=rate * output * nan, prefill_iteration_share=pi * nan, prefill_utilisation=rho * nan,
        kv_tokens_in_use=kv_in_use * nan,
    )


SEARCH_GRID_CELLS = 512
"""Most (candidate rate x layout) cells one step of a boundary search evaluates. A numpy pass over a few layouts costs
about the same for 1 or 512 cells, so a table of few rows (one configuration: `planner memory`) tries many rates per
pass and needs few passes; a large table bisects (two candidates per layout, one pass per halving)."""


DOUBLINGS = 2.0 ** np.arange(61, dtype=float)
"""Candidate upper brackets of a stable rate, 1 to 2**60 requests/s."""


def search_fan(shape: tuple[int, ...]) -> int:
    """Sub-intervals a boundary search splits each bracket into per pass, a power of two: 2 (bisection) for large
    tables, up to 64 for one layout."""
    cells = max(2, min(64, SEARCH_GRID_CELLS // max(1, math.prod(shape))))
    return 1 << (cells.bit_length() - 1)


def shrink_bracket(feasible_at: Callable[[Array], NDArray[np.bool_]], lo: Array, hi: Array, halvings: int) -> tuple[Array, Array]:
    """Shrink [lo, hi] per column, feasible at lo and not at hi (a monotone boundary), to (hi - lo) / 2**halvings.

    The candidates are the points lo + (hi - lo) j / 2**halvings (integer j), so the answer, the last feasible one, is
    the same whatever the fan: bisection (fan 2, large tables) and the k-ary search of a few layouts (`search_fan`
    candidates per pass, one `feasible_at` call over a (fan - 1, *shape) grid) evaluate the same numbers, and the
    evaluator's one-row verification of a plan reproduces its table's figures exactly.
    """
    fan = search_fan(lo.shape)
    cells = float(2**halvings)
    width = hi - lo
    if fan == 2:  # bisection: the same candidates as the loop below, without its bookkeeping
        j_lo, step = np.zeros(lo.shape), cells / 2.0
        for _ in range(halvings):
            j = j_lo + step
            j_lo = np.where(np.asarray(feasible_at(lo + width * (j / cells)), dtype=bool), j, j_lo)
            step /= 2.0
        return lo + width * (j_lo / cells), lo + width * ((j_lo + 1.0) / cells)
    j_lo, j_hi = np.zeros(lo.shape), np.full(lo.shape, cells)
    steps = np.arange(1, fan, dtype=float).reshape((fan - 1,) + (1,) * lo.ndim)
    while True:
        gap = j_hi - j_lo
        if not (gap > 1).any():
            break
        sub = np.maximum(1.0, gap / fan)  # powers of two: the candidates stay on the grid
        j = j_lo + sub * steps
        inside = j < j_hi
        ok = np.asarray(feasible_at(lo + width * (np.minimum(j, j_hi) / cells)), dtype=bool) & inside
        k = np.where(ok.all(axis=0), fan - 1, np.argmin(ok, axis=0))  # feasible candidates below the first infeasible one
        j_lo, j_hi = j_lo + sub * k, np.minimum(j_lo + sub * (k + 1), j_hi)
    return lo + width * (j_lo / cells), lo + width * (j_hi / cells)


def first_failing_power(holds: Callable[[Array], NDArray[np.bool_]], shape: tuple[int, ...]) -> Array:
    """Per column, the first power of two in DOUBLINGS (1 to 2**60) at which `holds` fails (2**60 where it never does).

    `holds` receives a (powers, *shape) grid. A block of powers per pass (all 61 at once for a few layouts), so the
    answer is the one doubling a power at a time finds, in fewer passes.
    """
    block = max(2, min(len(DOUBLINGS), 4 * SEARCH_GRID_CELLS // max(1, math.prod(shape))))
    first = np.full(shape, DOUBLINGS[-1])
    open_ = np.ones(shape, dtype=bool)
    for start in range(0, len(DOUBLINGS), block):
        powers = DOUBLINGS[start:start + block]
        ok = np.asarray(holds(np.broadcast_to(powers.reshape((-1,) + (1,) * len(shape)), (len(powers),) + shape)), dtype=bool)
        found = open_ & ~ok.all(axis=0)
        first = np.where(found, powers[np.argmin(ok, axis=0)], first)
        open_ &= ~found
        if not open_.any():
            break
    return first


def max_stable_rate_rps(feasible_at: Callable[[Array], NDArray[np.bool_]], shape: tuple[int, ...], iterations: int = 16) -> Array:
    """Largest arrival rate at which `feasible_at(rate)` holds per column (the first infeasible power of two from 1
    request/s brackets it, `first_failing_power`, then `shrink_bracket` by 2**-iterations), requests/s."""
    lo, _ = shrink_bracket(feasible_at, np.zeros(shape), first_failing_power(feasible_at, shape), iterations)
    return lo


def max_rate_rps(cost: IterationCost, prompt_tokens: ArrayLike, output_tokens: ArrayLike, *, iterations: int = 32,
                 **kwargs: object) -> Array:
    """Largest stable arrival rate of a colocated replica (`max_stable_rate_rps` of `steady_state(...).feasible`),
    requests/s."""
    prompt, output = np.broadcast_arrays(_f(prompt_tokens), _f(output_tokens))
    shape = np.broadcast_shapes(prompt.shape, _shape(cost))
    return max_stable_rate_rps(lambda rate: steady_state(cost, rate, prompt, output, percentiles=False, **kwargs).feasible,  # type: ignore[arg-type]
                               shape, iterations)


def utilisation(cost: IterationCost, rate_rps: ArrayLike, prompt_tokens: ArrayLike, output_tokens: ArrayLike, **kwargs: object) -> Array:
    """Offered load over the replica's capacity: rate / max_rate_rps (Kleinrock 1975, Sec. 2.1, rho = lambda / mu)."""
    return _f(rate_rps) / max_rate_rps(cost, prompt_tokens, output_tokens, **kwargs)


# ---- disaggregated prefill and decode -----------------------------------------------------------


@dataclass(frozen=True)
class DisaggregatedState:
    """Figures of x prefill + y decode replicas at a total arrival rate (DistServe)."""

    feasible: NDArray[np.bool_]
    ttft_p50_s: Array
    ttft_p90_s: Array
    ttft_p99_s: Array
    itl_p50_s: Array
    itl_p90_s: Array
    itl_p99_s: Array
    kv_transfer_s: Array
    decode: SteadyState


def kv_transfer_s(prompt_tokens: ArrayLike, kv_bytes_per_token: ArrayLike, link_gbps: ArrayLike) -> Array:
    """Moving a prompt's KV cache from the prefill to the decode replica: P x bytes/token / bandwidth (DistServe Sec. 4.3)."""
    return _f(prompt_tokens) * _f(kv_bytes_per_token) / (_f(link_gbps) * 1e9)


def disaggregated_state(prefill: IterationCost, decode: IterationCost, rate_rps: ArrayLike, prompt_tokens: ArrayLike,
                        output_tokens: ArrayLike, prefill_replicas: ArrayLike, decode_replicas: ArrayLike,
                        transfer_s: ArrayLike, *, tokens_per_step: ArrayLike = 1.0, verify_tokens: ArrayLike = 1.0,
                        prefix_hit_rate: ArrayLike = 0.0, prompt_lengths: Lengths | None = None) -> DisaggregatedState:
    """x prefill replicas (prompt-only engines, output 1 token) and y decode replicas (no prefill interference).

    DistServe (Zhong et al. 2024, Sec. 3.1): TTFT = queueing + prefill on a prefill replica at
    rate/x (`prefill_only_state`: M/D/1, or M/G/1 over `prompt_lengths`) + the KV transfer `transfer_s` (`kv_transfer_s`);
    decode ITL = `decode_only_state` on a decode replica at rate/y (no prompt work, each
    sequence reading its whole P + O/2 context). What the evaluator scores pool units with
    (`perf.disaggregated_perf_columns`).
    """
    rate, move = _f(rate_rps), _f(transfer_s)
    pre = prefill_only_state(prefill, rate / np.maximum(_f(prefill_replicas), 1.0), prompt_tokens, prefix_hit_rate=prefix_hit_rate,
                             prompt_lengths=prompt_lengths)
    dec = decode_only_state(decode, rate / np.maximum(_f(decode_replicas), 1.0), prompt_tokens, output_tokens, tokens_per_step=tokens_per_step,
                            verify_tokens=verify_tokens)
    feasible = pre.feasible & dec.feasible
    return DisaggregatedState(
        feasible=feasible, ttft_p50_s=pre.ttft_p50_s + move, ttft_p90_s=pre.ttft_p90_s + move, ttft_p99_s=pre.ttft_p99_s + move,
        itl_p50_s=dec.itl_p50_s, itl_p90_s=dec.itl_p90_s, itl_p99_s=dec.itl_p99_s, kv_transfer_s=move, decode=dec,
    )


def decode_only_state(cost: IterationCost, rate_rps: ArrayLike, prompt_tokens: ArrayLike, output_tokens: ArrayLike, *,
                      tokens_per_step: ArrayLike = 1.0, verify_tokens: ArrayLike = 1.0, pipelined: bool = True,
                      iterations: int = 34) -> SteadyState:
    """A decode replica of a disaggregated pool at `rate_rps`: prompts arrive prefilled, every iteration is decode-only.

    DistServe (Zhong et al. 2024, Sec. 3.1) and Splitwise (Patel et al. 2024, Sec. 4): no prefill
    chunk shares a decode iteration. Fixed point as `steady_state` (Little's law, B = rate x
    O / tau x T) with T = t_d(B), where every decoding sequence reads its whole context, the
    prompt's KV that arrived plus half the output (P + O/2; a prefix-cache hit in `steady_state`
    removes the prompt from the prefill work only, here there is no prefill at all). Infeasible
    where no fixed point exists below the KV capacity (P + O reserved per sequence), the slot
    margin of `steady_state` (Halfin & Whitt) or the token budget. ITL percentiles: p50 at the
    mean batch, tails at the size-biased batch 1 + B + z_q sqrt(B) as `steady_state`. TTFT
    fields are 0 (the first token comes from the prefill pool).
    """
    from statistics import NormalDist

    rate, prompt, output = (np.asarray(v, dtype=float) for v in np.broadcast_arrays(_f(rate_rps), _f(prompt_tokens), _f(output_tokens)))
    tau, verify = _f(tokens_per_step), _f(verify_tokens)
    context = prompt + output / 2.0

    def t_d(t: Array) -> Array:
        decode = rate * output / tau * t
        return iteration_time_s(cost, decode, decode * context, 0.0, 0.0, verify, pipelined)

    t_lo = iteration_time_s(cost, 0.0, 0.0, 0.0, 0.0, verify, pipelined) * np.ones_like(rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        seq_cap = np.minimum(_f(cost.max_sequences), _f(cost.kv_capacity_tokens) / (prompt + output))
        t_hi = np.minimum(seq_cap * tau / (rate * output), _f(cost.chunk_tokens) * tau / (rate * output * verify))
    feasible = (t_hi > t_lo) & (t_d(np.where(t_hi > t_lo, t_hi, t_lo)) - np.where(t_hi > t_lo, t_hi, t_lo) < 0)
    t = _bisect(lambda x: t_d(x) > x, t_lo.copy(), np.where(feasible, t_hi, t_lo), iterations)
    decode = rate * output / tau * t
    in_system = decode
    kv_in_use = in_system * (prompt + output)
    slots_ok = _slots_ok(cost, in_system)
    feasible = feasible & (kv_in_use <= _f(cost.kv_capacity_tokens)) & slots_ok

    def tail(q: float) -> Array:
        grown = decode + 1.0 + NormalDist().inv_cdf(q) * np.sqrt(np.maximum(decode, 0.0))
        return iteration_time_s(cost, grown, grown * context, 0.0, 0.0, verify, pipelined)

    nan = np.where(feasible, 1.0, np.nan)
    zero = np.zeros_like(t) * nan
    return SteadyState(
        feasible=feasible, itl_mean_s=t * nan, tpot_mean_s=t / tau * nan, itl_p50_s=t * nan, itl_p90_s=tail(0.9) * nan,
        itl_p99_s=tail(0.99) * nan, ttft_mean_s=zero, ttft_p50_s=zero, ttft_p90_s=zero, ttft_p99_s=zero,
        e2e_mean_s=output / tau * t * nan, decode_seqs_in_flight=decode * nan, requests_in_system=in_system * nan,
        output_tokens_per_s=rate * output * nan, prefill_iteration_share=zero, prefill_utilisation=zero, kv_tokens_in_use=kv_in_use * nan,
    )


def _md1_decay_rate(rate: Array, service: Array, iterations: int = 60) -> Array:
    """theta > 0 with rate (e^(theta S) - 1) = theta: the exponential decay rate of an M/D/1 waiting-time tail
    (Cramer-Lundberg; Asmussen 2003, 'Applied Probability and Queues', Sec. XIII.5), by bisection (NaN where rho >= 1)."""
    rho = rate * service
    lo = np.zeros_like(rho)
    hi = np.where(rho < 1.0, 2.0 * np.log(np.maximum(1.0 / np.maximum(rho, 1e-300), 1.0 + 1e-12)) / np.maximum(service, 1e-300) + 1e-12, np.nan)
    with np.errstate(over="ignore", invalid="ignore"):
        grow = rate * (np.expm1(hi * service)) <= hi
        for _ in range(60):  # make hi a point where the exponential has overtaken the line
            if not np.any(grow & np.isfinite(hi)):
                break
            hi = np.where(grow, hi * 2.0, hi)
            grow = rate * (np.expm1(hi * service)) <= hi
        hi = _bisect(lambda x: rate * np.expm1(x * service) < x, lo, hi, iterations)
    return np.where(rho < 1.0, hi, np.nan)


def prefill_only_state(cost: IterationCost, rate_rps: ArrayLike, prompt_tokens: ArrayLike, *, prefix_hit_rate: ArrayLike = 0.0,
                       pipelined: bool = True, prompt_lengths: Lengths | None = None,
                       percentiles: bool | tuple[int, ...] = True) -> SteadyState:
    """A prefill replica of a disaggregated pool at `rate_rps`: prompts only, one at a time, first come first served.

    DistServe (Zhong et al. 2024, Sec. 3.1 and 4.1) batches prefill only up to the length that
    saturates the GPU; a prompt of P tokens is compute-bound, so the prefill engine runs one
    prompt per iteration (its chunk budget is min(C, P), `perf.pool_costs`) and the replica is
    an M/D/1 queue with service S = ceil(P / C) iterations of min(C, P) tokens
    (`iteration_time_s`, causal attention over P/2 on average). TTFT = W + S: the mean wait is
    Pollaczek-Khinchine's rho S / (2 (1 - rho)) (Kleinrock 1975, Eq. 5.105); percentiles from
    the M/D/1 tail P(W > t) ~ c e^(-theta t), theta from `_md1_decay_rate` and
    c = (1 - rho) / (rate S e^(theta S) - 1) (Asmussen 2003, Sec. XIII.5, Cramer-Lundberg).
    Infeasible where rho >= 1, or the prompts in service or waiting (Little's law, with the
    slot margin of `steady_state`) exceed the replica's sequences or KV capacity (P + 1 each).
    With `prompt_lengths` (nodes and weights of the prompt-length distribution,
    `TokenLengths.quadrature`) of more than one node, the replica is M/G/1 instead
    (`_prefill_only_mg1`); `prompt_tokens` is then unused. `percentiles` as `steady_state`'s.
    """
    if prompt_lengths is not None and len(prompt_lengths[0]) > 1:
        return _prefill_only_mg1(cost, _f(rate_rps), prompt_lengths, _f(prefix_hit_rate), pipelined, percentiles)
    rate, prompt_all = (np.asarray(v, dtype=float) for v in np.broadcast_arrays(_f(rate_rps), _f(prompt_tokens)))
    fresh = prompt_all * (1.0 - _f(prefix_hit_rate))
    prompt = np.maximum(fresh, 1.0)  # a fully cached prompt still runs one token to sample from (as `planner.simulate`)
    chunk = np.maximum(np.minimum(_f(cost.chunk_tokens), prompt), 1.0)
    service = np.ceil(prompt / chunk) * iteration_time_s(cost, 0.0, 0.0, chunk, _prefill_context(chunk, prompt, prompt_all - fresh), 1.0, pipelined)
    rho = rate * service
    stable = rho < 1.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        wait_mean = np.where(stable, rate * service**2 / (2.0 * (1.0 - rho)), np.nan)
        theta = _md1_decay_rate(rate, service)
        c = (1.0 - rho) / (rate * service * np.exp(theta * service) - 1.0)

        def ttft_q(q: float) -> Array:
            return service + np.where(c > 1.0 - q, np.log(c / (1.0 - q)) / theta, 0.0)

    return _prefill_only_result(cost, rate, rho, stable, wait_mean + service, prompt_all, ttft_q)


def _prefill_only_result(cost: IterationCost, rate: Array, rho: Array, stable: Array, ttft_mean: Array, prompt_tokens: ArrayLike,
                         ttft_q: Callable[[float], Array]) -> SteadyState:
    """A prefill replica's SteadyState: feasible where stable and the prompts in the system (Little's law, rate x mean
    TTFT, with the slot margin of `steady_state`) fit its sequences and KV capacity (prompt + 1 tokens each)."""
    in_system = rate * ttft_mean
    slots_ok = _slots_ok(cost, np.nan_to_num(in_system, nan=np.inf))
    kv_ok = np.nan_to_num(in_system, nan=np.inf) * (_f(prompt_tokens) + 1.0) <= _f(cost.kv_capacity_tokens)
    feasible = stable & slots_ok & kv_ok
    nan = np.where(feasible, 1.0, np.nan)
    zero = np.zeros_like(rate) * nan
    return SteadyState(
        feasible=feasible, itl_mean_s=zero, tpot_mean_s=zero, itl_p50_s=zero, itl_p90_s=zero, itl_p99_s=zero,
        ttft_mean_s=ttft_mean * nan, ttft_p50_s=ttft_q(0.5) * nan, ttft_p90_s=ttft_q(0.9) * nan, ttft_p99_s=ttft_q(0.99) * nan,
        e2e_mean_s=ttft_mean * nan, decode_seqs_in_flight=zero, requests_in_system=in_system * nan, output_tokens_per_s=rate * nan,
        prefill_iteration_share=np.ones_like(rate) * nan, prefill_utilisation=rho * nan,
        kv_tokens_in_use=in_system * (_f(prompt_tokens) + 1.0) * nan,
    )


def _prefill_only_mg1(cost: IterationCost, rate: Array, prompt_lengths: Lengths,
                      hit: Array, pipelined: bool, percentiles: bool | tuple[int, ...]) -> SteadyState:
    """`prefill_only_state` when prompt lengths vary: an M/G/1 queue whose service S(P) is the prompt's own chunk
    iterations, averaged over the length distribution's quadrature nodes (S grows faster than P: causal attention).

    rho = rate E[S]; mean wait Pollaczek-Khinchine rate E[S^2] / (2 (1 - rho)) (Kleinrock 1975, Vol. 1, Eq. 5.105) and
    its second moment 2 E[W]^2 + rate E[S^3] / (3 (1 - rho)), the k = 2 term of Takacs' recurrence for the moments of
    the M/G/1 wait, E[W^k] = rate / (1 - rho) sum_i C(k, i) E[S^(i+1)] / (i + 1) E[W^(k-i)] (Takacs 1962,
    Introduction to the Theory of Queues, Ch. 2); the wait is 0
    with probability 1 - rho, else gamma with the conditional mean and variance (the two-moment gamma fit of M/G/1
    waits, Tijms 2003, A First Course in Stochastic Models, Sec. 2.5). TTFT = W + S(P) of the prompt itself, P drawn from
    the distribution independently of W (FCFS), so its CDF is the weighted sum over nodes of P(W <= x - S(P_k)),
    inverted by bisection. At the mean prompt alone (M/D/1) a pool looks stable while the long prompts overload it:
    with mean 8,000 and p50 4,000 tokens, simulated TTFT p90 was 12x the M/D/1 figure at half its stable rate.
    """
    nodes, weights = (np.asarray(v, dtype=float) for v in prompt_lengths)
    axes = (1,) * max(rate.ndim, len(_shape(cost)))
    points, w = nodes.reshape((-1,) + axes), weights.reshape((-1,) + axes)
    fresh = points * (1.0 - hit)
    prompt = np.maximum(fresh, 1.0)  # a fully cached prompt still runs one token (as `planner.simulate`)
    chunk = np.maximum(np.minimum(_f(cost.chunk_tokens), prompt), 1.0)
    service = np.ceil(prompt / chunk) * iteration_time_s(cost, 0.0, 0.0, chunk, _prefill_context(chunk, prompt, points - fresh), 1.0, pipelined)
    s1, s2, s3 = ((w * service**j).sum(axis=0) for j in (1, 2, 3))
    rate = rate * np.ones_like(s1)
    rho = rate * s1
    stable = rho < 1.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        wait_mean = np.where(stable, rate * s2 / (2.0 * (1.0 - rho)), np.nan)
        wait_m2 = 2.0 * wait_mean**2 + rate * s3 / (3.0 * (1.0 - rho))
        busy_mean = wait_mean / np.maximum(rho, 1e-300)  # the wait given that there is one
        busy_var = np.maximum(wait_m2 / np.maximum(rho, 1e-300) - busy_mean**2, 1e-30)
        shape, scale = busy_mean**2 / busy_var, busy_var / np.maximum(busy_mean, 1e-300)
    wanted = (50, 90, 99) if percentiles is True else tuple(percentiles or ())

    def ttft_q(q: float) -> Array:
        if round(q * 100) not in wanted:
            return np.full_like(rho, np.nan)
        # bracket: P(W + S <= s_q' + w_q') >= q with q' = (1 + q) / 2 (each of W, S exceeds its q'-quantile with
        # probability (1 - q) / 2); the nodes are in length order and S grows with the length
        tail = 0.5 * (1.0 + q)

        def below(x: Array) -> NDArray[np.bool_]:
            after = x - service
            return (w * ((1.0 - rho) * (after >= 0.0) + rho * np.where(after > 0.0, _gamma_cdf(after, shape, scale), 0.0))).sum(axis=0) < q

        return _bisect(below, np.zeros_like(rho), _node_quantile(service, w, tail) + _gamma_quantile(tail, shape, scale), 40)

    return _prefill_only_result(cost, rate, rho, stable, wait_mean + s1, float((weights * nodes).sum()), ttft_q)


def fewest_replicas(ok: Callable[[Array], NDArray[np.bool_]], shape: tuple[int, ...], max_replicas: int,
                    at_least: ArrayLike = 1) -> NDArray[np.int64]:
    """Smallest n per column with ok(n) (ok must hold for every count above it); 0 where even `max_replicas` fail.

    Doubling from `at_least` (a count known to be needed) brackets n, then a k-ary search over the integers between
    (`search_fan` candidates per pass, all columns at once in one `ok` call over a (fan - 1, *shape) grid; bisection
    for large tables) narrows the bracket to one. When the first doubling leaves some columns failing, one call at
    `max_replicas` finds those that never pass, and they stop doubling (0) instead of doubling all the way there.
    """
    lo = np.broadcast_to(np.maximum(_f(at_least) - 1.0, 0.0), shape).astype(float)  # fails (or is 0)
    hi = np.minimum(np.maximum(lo * 2.0, lo + 1.0), float(max_replicas))
    good = ok(hi)
    reachable = np.ones(shape, dtype=bool)
    if (~good & (hi < max_replicas)).any():  # rows that fail even at max_replicas do not double all the way there
        reachable = np.asarray(ok(np.full(shape, float(max_replicas))), dtype=bool)
    while True:
        grow = ~good & (hi < max_replicas) & reachable
        if not grow.any():
            break
        lo = np.where(grow, hi, lo)
        hi = np.where(grow, np.minimum(hi * 2.0, float(max_replicas)), hi)
        good = np.where(grow, ok(hi), good)
    possible = np.asarray(good, dtype=bool) & reachable
    fan = search_fan(shape)
    fractions = (np.arange(1, fan, dtype=float) / fan).reshape((fan - 1,) + (1,) * len(shape))
    while True:
        gap = possible & ((hi - lo) > 1)
        if not gap.any():
            break
        points = np.where(gap, np.minimum(lo + np.maximum(1.0, np.floor((hi - lo) * fractions)), hi - 1.0), hi)
        passed = np.asarray(ok(np.maximum(points, 1.0)), dtype=bool)
        first = np.argmax(passed, axis=0)  # the first candidate that passes, where any does
        any_pass = passed.any(axis=0)
        at_first = np.take_along_axis(points, first[np.newaxis], axis=0)[0]
        before_first = np.where(first > 0, np.take_along_axis(points, np.maximum(first - 1, 0)[np.newaxis], axis=0)[0], lo)
        hi = np.where(gap & any_pass, at_first, hi)
        lo = np.where(gap, np.where(any_pass, before_first, points[-1]), lo)
    return np.where(possible, hi, 0).astype(np.int64)


def _meets(state: SteadyState, percentile: int, ttft_slo_s: float | None, tpot_slo_s: float | None, *,
           ttft_extra_s: ArrayLike = 0.0, tokens_per_step: ArrayLike = 1.0) -> NDArray[np.bool_]:
    """Where a state is feasible and meets the SLOs at the percentile: TTFT (+ `ttft_extra_s`, a KV transfer) and ITL per
    token (ITL / tokens per step); a figure that is not a number (infeasible) meets nothing. The one test the replica
    searches (`replicas_needed`, `prefill_replicas_needed`, `decode_replicas_needed`) apply."""
    good = np.asarray(state.feasible, dtype=bool).copy()
    if ttft_slo_s is not None:
        good &= np.nan_to_num(getattr(state, f"ttft_p{percentile}_s"), nan=np.inf) + ttft_extra_s <= ttft_slo_s
    if tpot_slo_s is not None:
        good &= np.nan_to_num(getattr(state, f"itl_p{percentile}_s") / tokens_per_step, nan=np.inf) <= tpot_slo_s
    return good


def prefill_replicas_needed(cost: IterationCost, rate_rps: float, prompt_tokens: float, kv_transfer_s: ArrayLike, *, percentile: int = 90,
                            ttft_slo_s: float | None = None, max_replicas: int = 4096, prefix_hit_rate: float = 0.0,
                            prompt_lengths: Lengths | None = None) -> NDArray[np.int64]:
    """Fewest prefill-only replicas per layout (`prefill_only_state` at rate / n) that are stable and whose TTFT at the
    percentile plus the KV transfer meets the TTFT SLO."""
    move = _f(kv_transfer_s)

    def ok(n: Array) -> NDArray[np.bool_]:
        state = prefill_only_state(cost, rate_rps / n, prompt_tokens, prefix_hit_rate=prefix_hit_rate, prompt_lengths=prompt_lengths,
                                   percentiles=(percentile,) if ttft_slo_s is not None else False)
        return _meets(state, percentile, ttft_slo_s, None, ttft_extra_s=move)

    return fewest_replicas(ok, np.broadcast_shapes(_shape(cost), np.shape(move)), max_replicas)


def decode_replicas_needed(cost: IterationCost, rate_rps: float, prompt_tokens: float, output_tokens: float, *, percentile: int = 90,
                           tpot_slo_s: float | None = None, max_replicas: int = 4096, tokens_per_step: float = 1.0,
                           verify_tokens: float = 1.0) -> NDArray[np.int64]:
    """Fewest decode-only replicas per layout (`decode_only_state` at rate / n) that are stable and meet the TPOT SLO
    (ITL at the percentile / tokens per step)."""

    def ok(n: Array) -> NDArray[np.bool_]:  # 24 bisection steps: the ITL from above within 2^-24 of its bracket (conservative)
        state = decode_only_state(cost, rate_rps / n, prompt_tokens, output_tokens, tokens_per_step=tokens_per_step, verify_tokens=verify_tokens,
                                  iterations=24)
        return _meets(state, percentile, None, tpot_slo_s, tokens_per_step=tokens_per_step)

    return fewest_replicas(ok, _shape(cost), max_replicas)


def decode_max_rate_rps(cost: IterationCost, prompt_tokens: float, output_tokens: float, *, iterations: int = 16, **kwargs: object) -> Array:
    """Largest stable arrival rate of a decode-only replica (`decode_only_state`), requests/s."""
    return max_stable_rate_rps(lambda r: decode_only_state(cost, r, prompt_tokens, output_tokens, **kwargs).feasible,  # type: ignore[arg-type]
                               _shape(cost), iterations)


def prefill_max_rate_rps(cost: IterationCost, prompt_tokens: float, *, iterations: int = 16, prefix_hit_rate: float = 0.0,
                         prompt_lengths: Lengths | None = None) -> Array:
    """Largest stable arrival rate of a prefill-only replica (`prefill_only_state`), requests/s."""
    return max_stable_rate_rps(lambda r: prefill_only_state(cost, r, prompt_tokens, prefix_hit_rate=prefix_hit_rate, prompt_lengths=prompt_lengths,
                                                            percentiles=False).feasible,
                               _shape(cost), iterations)


@dataclass(frozen=True)
class PoolSizing:
    """Replicas and GPUs a load needs, colocated or disaggregated (0 replicas = none up to the limit)."""

    colocated_replicas: int
    colocated_gpus: int
    prefill_replicas: int
    decode_replicas: int
    disaggregated_gpus: int

    @property
    def disaggregate(self) -> bool:
        """True when the disaggregated pools need fewer GPUs than colocated replicas (and exist)."""
        if self.disaggregated_gpus == 0:
            return False
        return self.colocated_gpus == 0 or self.disaggregated_gpus < self.colocated_gpus


def size_pools(cost: IterationCost, gpus_per_replica: int, rate_rps: float, prompt_tokens: float, output_tokens: float, *,
               kv_bytes_per_token: float, link_gbps: float, percentile: int = 90, ttft_slo_s: float | None = None,
               tpot_slo_s: float | None = None, max_replicas: int = 256, prefill_cost: IterationCost | None = None,
               prefill_gpus_per_replica: int | None = None) -> PoolSizing:
    """Fewest replicas meeting the SLOs: n colocated, or x prefill + y decode (DistServe Sec. 4.1 sizes the two independently).

    Colocated: `replicas_needed` (the smallest n with `steady_state` at rate/n meeting TTFT and
    TPOT at the percentile). Disaggregated: `pool_replicas_needed` (the smallest x meeting TTFT,
    prefill + KV transfer, and the smallest y meeting TPOT; x and y do not interact, decode sees
    no prompts): the searches the evaluator sizes plans with, for one layout.
    """
    n_colo = int(replicas_needed(cost, rate_rps, prompt_tokens, output_tokens, percentile=percentile, ttft_slo_s=ttft_slo_s,
                                 tpot_slo_s=tpot_slo_s, max_replicas=max_replicas))
    pgpus = prefill_gpus_per_replica or gpus_per_replica
    x, y = (int(v) for v in pool_replicas_needed(prefill_cost or cost, cost, rate_rps, prompt_tokens, output_tokens,
                                                 kv_transfer_s(prompt_tokens, kv_bytes_per_token, link_gbps), percentile=percentile,
                                                 ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, max_replicas=max_replicas))
    disagg = x * pgpus + y * gpus_per_replica if x and y else 0
    return PoolSizing(colocated_replicas=n_colo, colocated_gpus=n_colo * gpus_per_replica, prefill_replicas=x, decode_replicas=y,
                      disaggregated_gpus=disagg)


def pool_replicas_needed(prefill: IterationCost, decode: IterationCost, rate_rps: float, prompt_tokens: float, output_tokens: float,
                         kv_transfer_s: ArrayLike, *, percentile: int = 90, ttft_slo_s: float | None = None,
                         tpot_slo_s: float | None = None, max_replicas: int = 4096, prefix_hit_rate: float = 0.0,
                         tokens_per_step: float = 1.0, verify_tokens: float = 1.0,
                         prompt_lengths: Lengths | None = None) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Fewest prefill replicas x and decode replicas y per layout pair (numpy columns) carrying `rate_rps` with the SLOs met.

    As `size_pools` (DistServe Sec. 4.1 sizes the two pools independently), over columns and with
    the workload's traffic terms: x is the fewest prompt-only replicas (`prefill_replicas_needed`)
    whose TTFT at the percentile plus the KV transfer meets the TTFT SLO, y the fewest decode-only replicas (`decode_only_state`: the prompt's KV
    arrives, no prefill chunk) whose ITL per token meets the TPOT SLO. Without an SLO a pool is sized for stability. 0
    where no count up to `max_replicas` does (then the pair is not a plan).
    """
    x = prefill_replicas_needed(prefill, rate_rps, prompt_tokens, kv_transfer_s, percentile=percentile, ttft_slo_s=ttft_slo_s,
                                max_replicas=max_replicas, prefix_hit_rate=prefix_hit_rate, prompt_lengths=prompt_lengths)
    y = decode_replicas_needed(decode, rate_rps, prompt_tokens, output_tokens, percentile=percentile, tpot_slo_s=tpot_slo_s,
                               max_replicas=max_replicas, tokens_per_step=tokens_per_step, verify_tokens=verify_tokens)
    return x, y


def replicas_needed(cost: IterationCost, rate_rps: ArrayLike, prompt_tokens: ArrayLike, output_tokens: ArrayLike, *,
                    percentile: int = 90, ttft_slo_s: float | None = None, tpot_slo_s: float | None = None,
                    max_replicas: int = 4096, at_least: ArrayLike = 1, **kwargs: object) -> NDArray[np.int64]:
    """Fewest replicas per layout (numpy column) that carry `rate_rps` in total with the SLOs met at the percentile.

    Each replica takes rate / n (a load balancer spreading Poisson arrivals keeps them Poisson).
    Latency falls as n grows, so the smallest n is found by `fewest_replicas` (doubling from
    `at_least`, a count known to be needed, e.g. ceil(rate / max_rate_rps), then a search over
    integers), all layouts at once; 0 where even `max_replicas` do not meet the SLOs (e.g. a TPOT below the bare decode
    step). This is the coefficient the solver needs in place of `ceil(target / throughput)`.
    `tpot_slo_s` is compared with the inter-token latency per token (ITL / tokens per step).
    """
    tau = _f(kwargs.get("tokens_per_step", 1.0))  # type: ignore[arg-type]

    def ok(n: Array) -> NDArray[np.bool_]:
        state = steady_state(cost, _f(rate_rps) / n, prompt_tokens, output_tokens, percentiles=(percentile,) if ttft_slo_s is not None or tpot_slo_s is not None else False,
                             **kwargs)  # type: ignore[arg-type]
        return _meets(state, percentile, ttft_slo_s, tpot_slo_s, tokens_per_step=tau)

    shape = np.broadcast_shapes(_shape(cost), np.shape(rate_rps), np.shape(prompt_tokens), np.shape(output_tokens))
    return fewest_replicas(ok, shape, max_replicas, at_least)


def iteration_time_scalar_s(cost: IterationCost, decode_seqs: float, decode_context_tokens: float, prefill_tokens: float,
                            prefill_context_tokens: float = 0.0, tokens_per_decode_seq: float = 1.0, pipelined: bool = True) -> float:
    """`iteration_time_s` for one layout in plain floats (the simulator's inner loop; equal to it, tested)."""
    pp = float(cost.pp)  # type: ignore[arg-type]
    share = 1.0 / pp if pipelined else 1.0
    d, dc, p, pc = decode_seqs * share, decode_context_tokens * share, prefill_tokens * share, prefill_context_tokens * share
    tokens = d * tokens_per_decode_seq + p
    e = float(cost.routed_experts)  # type: ignore[arg-type]
    touched = 1.0 - (1.0 - float(cost.experts_per_token) / e) ** tokens if e > 0 else 0.0  # type: ignore[arg-type]
    memory = float(cost.dense_weight_read_s) + float(cost.expert_weight_read_s) * touched + float(cost.kv_read_s_per_context_token) * dc  # type: ignore[arg-type]
    compute = float(cost.compute_s_per_token) * tokens + float(cost.attention_s_per_context_token) * (dc * tokens_per_decode_seq + pc)  # type: ignore[arg-type]
    lo, hi = float(cost.large_message_tokens), float(cost.ring_message_tokens)  # type: ignore[arg-type]
    extra = float(cost.large_message_extra_s) * min(1.0, max(0.0, (tokens - lo) / max(hi - lo, 1e-9)))  # type: ignore[arg-type]
    return pp * (float(cost.fixed_s) + extra + max(memory, compute) + float(cost.comm_s_per_token) * tokens)  # type: ignore[arg-type]


def rate_for_concurrency(cost: IterationCost, concurrency: ArrayLike, prompt_tokens: ArrayLike, output_tokens: ArrayLike, *,
                         iterations: int = 50, max_rate: ArrayLike | None = None, **kwargs: object) -> Array:
    """Arrival rate at which a closed loop of `concurrency` users keeps that many requests in the system.

    Little's law, N = rate x (TTFT + O x ITL / tau) (Little 1961), solved for the rate by
    bisection below `max_rate_rps` (or `max_rate`, when the caller has it); NaN where N exceeds what the replica
    holds stably.
    """
    n = _f(concurrency)
    top = max_rate_rps(cost, prompt_tokens, output_tokens, iterations=16, **kwargs) if max_rate is None else _f(max_rate)
    hi = top * np.ones_like(n)

    def below(rate: Array) -> NDArray[np.bool_]:
        state = steady_state(cost, rate, prompt_tokens, output_tokens, percentiles=False, **kwargs)  # type: ignore[arg-type]
        return np.nan_to_num(state.requests_in_system, nan=np.inf) < n

    lo, _ = shrink_bracket(below, np.zeros_like(hi), hi, iterations)
    state = steady_state(cost, lo, prompt_tokens, output_tokens, percentiles=False, **kwargs)  # type: ignore[arg-type]
    return np.where(np.abs(state.requests_in_system / n - 1.0) < 0.02, lo, np.nan)
