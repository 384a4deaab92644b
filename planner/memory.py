"""Per-card memory of one concrete configuration, broken down by term.

Training terms follow the ZeRO paper (Rajbhandari et al. 2020, arXiv:1910.02054, Sec. 3.1 and
5: model states (2+2+K)Psi, sharded by stage over N_d) and Korthikanti et al. 2022
(arXiv:2205.05198, Table 2 and Eq. 5) for activations. Serving terms follow PagedAttention
(Kwon et al. 2023, arXiv:2309.06180, Sec. 3 and 4.1) for the KV cache.

Every term exposes how it scales: `fixed_bytes` per card, `over_dp_bytes` divided by the
data-parallel degree (ZeRO sharding), and the total at the layout's micro-batch. The most
loaded card is the maximum over pipeline stages (the first stage holds the embedding and the
most in-flight micro-batches, the last the LM head and the logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from planner.catalog import GpuSpec
from planner.enums import Checkpointing, KvPrecision, Optimizer, TrainingMode, TrainPrecision, WeightPrecision, ZeroStage
from planner.layout import InferenceLayout, TrainingLayout
from planner.modelspec import ModelSpec
from planner.scenario import Assumptions, InferenceWorkload, LoraSettings, TrainingWorkload
from planner.units import BYTES_PER_GIB


class MemoryTerm(BaseModel):
    """One line of a per-card memory breakdown."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="weights, gradients, optimizer_states, activations, logits, kv_cache, workspace, reserve, ...")
    bytes: float = Field(ge=0, description="Bytes on the most loaded card.")
    fixed_bytes: float = Field(default=0.0, ge=0, description="Part that does not depend on the data-parallel degree.")
    over_dp_bytes: float = Field(default=0.0, ge=0, description="Part divided by the data-parallel degree (ZeRO), given here before the division.")
    scaling: str = Field(description="How the term scales with the choices, in words.")
    source: str = Field(description="Paper and equation the term follows.")

    @property
    def gib(self) -> float:
        """The term in GiB."""
        return self.bytes / BYTES_PER_GIB


class MemoryBreakdown(BaseModel):
    """Memory of the most loaded card against its capacity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terms: tuple[MemoryTerm, ...] = Field(description="Terms of the most loaded card, reserve included.")
    capacity_bytes: float = Field(description="Usable card memory (after the serving utilisation cap, if any).")
    card_bytes: float = Field(description="Physical card memory as the driver reports it.")
    stage: int = Field(description="Pipeline stage of the most loaded card (0 = first).")
    notes: tuple[str, ...] = Field(default=(), description="Modelling choices worth stating (replicated KV heads, 16-bit embeddings, ...).")

    @property
    def total_bytes(self) -> float:
        """Sum of all terms (not the largest one)."""
        return sum(t.bytes for t in self.terms)

    @property
    def headroom_bytes(self) -> float:
        """Capacity left; negative when the configuration does not fit."""
        return self.capacity_bytes - self.total_bytes

    @property
    def fits(self) -> bool:
        """True when every card holds its terms."""
        return self.headroom_bytes >= 0

    def term(self, name: str) -> float:
        """Bytes of a named term (0 when absent)."""
        return sum(t.bytes for t in self.terms if t.name == name)


# ---- bytes per parameter ------------------------------------------------------------------

ZERO = "Rajbhandari et al. 2020 (ZeRO), Sec. 3.1 and Sec. 5, Fig. 1: (2+2+K)Psi, K=12 for mixed-precision Adam"


@dataclass(frozen=True)
class StateBytes:
    """Bytes per trained parameter of weights, gradients and optimizer states."""

    weights: float
    gradients: float
    optimizer: float


def state_bytes_per_param(precision: TrainPrecision, optimizer: Optimizer) -> StateBytes:
    """Bytes per parameter of the model states.

    Mixed precision (ZeRO Sec. 3.1): 2-byte weights and gradients, and K bytes of optimizer
    state: the fp32 master copy (4) plus the optimizer's moments: Adam 8 (K=12), 8-bit Adam 2
    (Dettmers et al. 2022, '8-bit Optimizers via Block-wise Quantization', Sec. 2), SGD momentum
    4. fp32 training has no master copy. FP8 (Micikevicius et al. 2022, 'FP8 Formats for Deep
    Learning'; DeepSeek-V3 report Sec. 3.3.1) keeps bf16 weights plus a transient fp8 copy
    (3 bytes), bf16 gradients and fp32 master + moments: it does not halve persistent memory.
    Megatron keeps fp32 gradient buffers (4 bytes); we count 2, the DeepSpeed/FSDP default.
    """
    moments = {Optimizer.ADAMW: 8.0, Optimizer.ADAMW_8BIT: 2.0, Optimizer.SGD_MOMENTUM: 4.0}[optimizer]
    if precision is TrainPrecision.FP32:
        return StateBytes(weights=4.0, gradients=4.0, optimizer=moments)
    weights = 3.0 if precision is TrainPrecision.FP8 else 2.0
    return StateBytes(weights=weights, gradients=2.0, optimizer=4.0 + moments)


def state_bytes_total(precision: TrainPrecision, optimizer: Optimizer) -> float:
    """Weights + gradients + optimizer states per trained parameter (16 for mixed-precision Adam)."""
    states = state_bytes_per_param(precision, optimizer)
    return states.weights + states.gradients + states.optimizer


def weight_bytes_per_param(precision: WeightPrecision, group_size: int) -> float:
    """Serving bytes per weight including quantisation scales.

    int4 (GPTQ, Frantar et al. 2022; AWQ, Lin et al. 2023): 4 bits plus, per group of
    `group_size` weights, an fp16 scale and a 4-bit zero point: 0.5 + 2.5/group bytes.
    int8 and fp8: 1 byte plus one fp16/fp32 scale per output channel or 128x128 block
    (DeepSeek-V3 Sec. 3.3.2), < 0.1% and counted as 4 bytes per 128x128 block.
    """
    if precision in (WeightPrecision.BF16, WeightPrecision.FP16):
        return 2.0
    if precision in (WeightPrecision.FP8, WeightPrecision.INT8):
        return 1.0 + 4.0 / (128 * 128)
    return 0.5 + 2.5 / group_size


def kv_bytes_per_element(precision: KvPrecision) -> float:
    """Bytes per cached K/V element."""
    return {KvPrecision.BF16: 2.0, KvPrecision.FP16: 2.0, KvPrecision.FP8: 1.0, KvPrecision.INT4: 0.5}[precision]


QLORA_NF4_BYTES_PER_PARAM = 0.5 + 0.127 / 8
"""NF4 with double quantisation: 4 bits + 0.127 bits of constants per parameter (Dettmers et al. 2023, QLoRA, Sec. 3)."""

ADAPTER_STATE_BYTES = StateBytes(weights=2.0, gradients=2.0, optimizer=12.0)
"""Trainable adapter parameters under mixed-precision Adam: 2+2+12 bytes (ZeRO Sec. 3.1)."""


# ---- pipeline stages -----------------------------------------------------------------------


def stage_layer_ranges(num_layers: int, pp: int) -> list[range]:
    """Contiguous layer ranges per pipeline stage, as even as possible; earlier stages get the remainder.

    Megatron-LM assigns L/p layers per stage (Narayanan et al. 2021, Sec. 2.2); when L is not
    divisible the most loaded stage has ceil(L/p) layers, which is what memory must cover.
    """
    assert 1 <= pp <= num_layers
    base, extra = divmod(num_layers, pp)
    ranges, start = [], 0
    for stage in range(pp):
        size = base + (1 if stage < extra else 0)
        ranges.append(range(start, start + size))
        start += size
    return ranges


@dataclass(frozen=True)
class StageParams:
    """Parameters one card of a stage holds, split by how they are sharded."""

    dense: float
    """Attention, norms, dense MLPs, shared experts, routers, embedding/LM head: split by TP."""
    experts: float
    """Routed experts: split by EP x expert-TP."""


def stage_params(model: ModelSpec, layers: range, first: bool, last: bool, tp: int, ep: int, expert_tp: int) -> StageParams:
    """Parameters on one card of a pipeline stage.

    Megatron tensor parallelism (Shoeybi et al. 2019, Sec. 3) splits attention and MLP matrices
    and the vocabulary-parallel embedding/LM head by t; norms are replicated (their share is
    tiny and counted as split). Routed experts are split over EP ranks and, within an expert,
    over expert-TP (Megatron-Core MoE; DeepSpeed-MoE, Rajbhandari et al. 2022, Sec. 4), never
    over TP alone. MLA's down-projections (W^DQ, W^DKV with W^KR) and latent norms are
    replicated on every TP rank, as vLLM and SGLang build them (`ReplicatedLinear`).
    """
    dense_sums, expert_sums = model.layer_prefix_sums
    dense = dense_sums[layers.stop] - dense_sums[layers.start]
    experts = expert_sums[layers.stop] - expert_sums[layers.start]
    replicated = model.mla_replicated_params * len(layers)
    dense -= replicated
    if first:
        dense += model.embedding_params
    if last:
        dense += model.lm_head_params
        if model.tied_embeddings and not first:
            dense += model.embedding_params  # the last stage keeps its own copy of a tied matrix (Megatron, vLLM)
    return StageParams(dense=dense / tp + replicated, experts=experts / (ep * expert_tp))


# ---- activations ---------------------------------------------------------------------------

KORT = "Korthikanti et al. 2022 (arXiv:2205.05198), Sec. 4, Table 2 and Eq. 5"


def activation_bytes_per_layer(
    model: ModelSpec, seq_len: int, micro_batch: int, tp: int, sequence_parallel: bool,
    checkpointing: Checkpointing, flash_attention: bool, moe_layer: bool,
) -> float:
    """Activation bytes one transformer layer stores for one micro-batch, 16-bit activations.

    Korthikanti Table 2 for GPT (4h GELU MLP, MHA, dropout): sbh(34 + 5as/h) without
    parallelism; sbh(10 + 24/t + 5as/(ht)) with TP; sbh(34/t + 5as/(ht)) with TP+SP;
    selective recomputation drops the 5as/h attention-score term; full recomputation keeps
    2sbh (the layer input). Generalised here term by term (Sec. 4.1): outside the TP region
    two LayerNorm inputs (4sbh), the QKV and MLP inputs (4sbh) and, with dropout, two 1-byte
    masks (2sbh); inside it 2sb(q+k+v+o widths) for attention (MHA: Q,K 4 + V 2 + out-proj
    input 2 = 8sbh) and, per MLP, 2sb*I for each saved intermediate (GELU: 2 -> 16sbh at
    I=4h; SwiGLU: 3). Attention scores: softmax output 2as^2b, plus with dropout its mask
    and output (5as^2b in total). MoE layers store the MLP part once per routed expert a
    token visits (top-k) plus the shared experts and a copy of the dispatched input per
    expert. FlashAttention (Dao et al. 2022) stores no s^2 scores, only the softmax
    statistics (4 bytes per head per token). Models whose config sets no dropout (Llama,
    DeepSeek, Qwen, Mixtral, MPT) store no masks.
    """
    s, b, h, t = seq_len, micro_batch, model.hidden_size, tp
    sbh = s * b * h
    if checkpointing is Checkpointing.FULL:
        return 2 * sbh / (t if sequence_parallel else 1)
    replicated = (10 if model.dropout else 8) * sbh
    attention = 2 * s * b * (model.q_dim + model.kv_dim + model.v_dim + model.o_dim)
    saved_mlp = 3 if model.gated_mlp else 2
    if moe_layer:
        inner = model.experts_per_token * model.moe_intermediate_size + model.n_shared_experts * model.moe_intermediate_size
        mlp = saved_mlp * 2 * s * b * inner + 2 * sbh * model.experts_per_token
    else:
        mlp = saved_mlp * 2 * s * b * model.intermediate_size
    if flash_attention:
        scores = 4 * model.num_heads * s * b
    elif checkpointing is Checkpointing.SELECTIVE:
        scores = 0.0
    else:
        scores = (5 if model.dropout else 2) * model.num_heads * s * s * b
    split = (attention + mlp + scores) / t
    return split + replicated / (t if sequence_parallel else 1)


def logits_bytes(seq_len: int, micro_batch: int, vocab_size: int, tp: int) -> float:
    """fp32 logits for the loss on the last stage: 4sbv/t (Korthikanti Sec. 4.3, output-layer term)."""
    return 4.0 * seq_len * micro_batch * vocab_size / tp


def in_flight_micro_batches(stage: int, pp: int, grad_accum: int, interleave_chunks: int) -> float:
    """Micro-batches whose activations a stage holds under 1F1B: min(p - stage, m) (Narayanan et al. 2021, Sec. 2.2).

    The interleaved schedule holds (1 + (p-1)/(p*v)) times more on the first stage (Korthikanti Eq. 5 note).
    """
    held = min(pp - stage, grad_accum)
    if interleave_chunks > 1 and stage == 0 and pp > 1:
        held *= 1 + (pp - 1) / (pp * interleave_chunks)
    return float(held)


# ---- LoRA ----------------------------------------------------------------------------------


def lora_adapter_params(model: ModelSpec, lora: LoraSettings) -> float:
    """Adapter parameters: r x (d_in + d_out) per targeted projection per layer (Hu et al. 2021, Sec. 4).

    MoE layers put adapters on the attention projections and on the shared/dense MLP only.
    """
    h = model.hidden_size
    widths = {
        "q": (h, model.q_dim), "k": (h, model.kv_dim), "v": (h, model.v_dim), "o": (model.o_dim, h),
        "gate": (h, model.intermediate_size), "up": (h, model.intermediate_size), "down": (model.intermediate_size, h),
    }
    per_layer = sum(lora.rank * (widths[m][0] + widths[m][1]) for m in lora.target_modules)
    return float(per_layer * model.num_layers)


# ---- training ------------------------------------------------------------------------------


def candidate_stages(model: ModelSpec, pp: int) -> list[int]:
    """Stages that can be the most loaded: the earliest stage of each (layers, MoE layers, first, last) kind.

    A stage's memory depends only on how many layers and MoE layers it holds, whether it
    holds the embedding (first) or the LM head (last), and its in-flight micro-batches, which
    fall with the stage index under 1F1B. Among stages of one kind the earliest is therefore
    the heaviest, so checking one stage per kind is exact (DeepSeek's leading dense layers
    can make a middle stage the heaviest).
    """
    kinds: dict[tuple[int, int, bool, bool], int] = {}
    for stage, layers in enumerate(stage_layer_ranges(model.num_layers, pp)):
        moe = model.moe_layer_prefix[layers.stop] - model.moe_layer_prefix[layers.start]
        kinds.setdefault((len(layers), moe, stage == 0, stage == pp - 1), stage)
    return sorted(kinds.values())


def training_reserve_bytes(gpu: GpuSpec, assumptions: Assumptions) -> float:
    """Runtime reserve per training card: fixed reserve plus allocator fragmentation (stated, never hidden)."""
    return assumptions.runtime_reserve_gib_training * BYTES_PER_GIB + assumptions.allocator_fragmentation_fraction * gpu.memory_bytes


def training_memory(
    model: ModelSpec, workload: TrainingWorkload, layout: TrainingLayout, gpu: GpuSpec, assumptions: Assumptions
) -> MemoryBreakdown:
    """Per-card memory of a training layout: the most loaded pipeline stage, every term summed."""
    states = state_bytes_per_param(layout.precision, workload.optimizer)
    lora = workload.mode in (TrainingMode.LORA, TrainingMode.QLORA)
    dp_experts = layout.dp // layout.ep
    best: tuple[float, int, list[MemoryTerm]] | None = None
    ranges = stage_layer_ranges(model.num_layers, layout.pp)
    for stage in candidate_stages(model, layout.pp):
        layers = ranges[stage]
        first, last = stage == 0, stage == layout.pp - 1
        params = stage_params(model, layers, first, last, layout.tp, layout.ep, layout.expert_tp)
        embed_on_card = ((model.embedding_params if first else 0) + (model.lm_head_params if last else 0)) / layout.tp
        terms = _model_state_terms(model, workload, layout, params, states, dp_experts, len(layers), lora, embed_on_card)
        if layout.zero >= ZeroStage.PARAMETERS and not lora:
            terms.append(zero3_gathered_term(model, layout, layers, states))
        terms += _activation_terms(model, workload, layout, stage, layers, last, assumptions)
        terms.append(MemoryTerm(
            name="reserve", bytes=training_reserve_bytes(gpu, assumptions), fixed_bytes=training_reserve_bytes(gpu, assumptions),
            scaling="fixed per card", source="assumptions: runtime_reserve_gib_training + allocator_fragmentation_fraction",
        ))
        total = sum(t.bytes for t in terms)
        if best is None or total > best[0]:
            best = (total, stage, terms)
    assert best is not None
    return MemoryBreakdown(terms=tuple(best[2]), capacity_bytes=gpu.memory_bytes, card_bytes=gpu.memory_bytes, stage=best[1])


def _sharded(name: str, replicated_bytes: float, expert_bytes: float, dp: int, dp_experts: int, shard: bool, source: str) -> MemoryTerm:
    """A model-state term, divided by the DP degree when its ZeRO stage shards it (experts over dp/ep)."""
    if not shard:
        total = replicated_bytes + expert_bytes
        return MemoryTerm(name=name, bytes=total, fixed_bytes=total, scaling="fixed per card (replicated over DP)", source=source)
    over_dp = replicated_bytes + expert_bytes * (dp / dp_experts)
    return MemoryTerm(name=name, bytes=replicated_bytes / dp + expert_bytes / dp_experts, over_dp_bytes=over_dp,
                      scaling="divided by the data-parallel degree (ZeRO)", source=source)


def _model_state_terms(
    model: ModelSpec, workload: TrainingWorkload, layout: TrainingLayout, params: StageParams,
    states: StateBytes, dp_experts: int, stage_layers: int, lora: bool, embed_on_card: float,
) -> list[MemoryTerm]:
    dp, zero = layout.dp, layout.zero
    if lora:
        assert workload.lora is not None
        base_bpp = QLORA_NF4_BYTES_PER_PARAM if workload.mode is TrainingMode.QLORA else 2.0
        base_src = "QLoRA (Dettmers et al. 2023) Sec. 3: NF4 + double quantisation" if workload.mode is TrainingMode.QLORA else "LoRA (Hu et al. 2021): frozen 16-bit base"
        base = (params.dense + params.experts) * base_bpp
        if workload.mode is TrainingMode.QLORA:
            base += embed_on_card * (2.0 - base_bpp)  # bitsandbytes quantises Linear layers only
        adapters = lora_adapter_params(model, workload.lora) * stage_layers / model.num_layers / layout.tp
        adapter_terms = model_state_terms(adapters, 0.0, ADAPTER_STATE_BYTES, zero, dp)
        return [MemoryTerm(name="weights", bytes=base, fixed_bytes=base, scaling="split by TP/PP/EP; frozen", source=base_src)] + [
            t.model_copy(update={"name": f"adapter_{t.name}", "source": "LoRA adapters r(d_in+d_out) per projection (Hu et al. 2021); " + t.source})
            for t in adapter_terms
        ]
    return model_state_terms(params.dense, params.experts, states, zero, dp, layout.ep, layout.offload_optimizer, layout.offload_params)


def zero3_gathered_term(model: ModelSpec, layout: TrainingLayout, layers: range, states: StateBytes) -> MemoryTerm:
    """ZeRO-3 / FSDP working set: the largest layer's parameters gathered whole, for the current and the prefetched layer.

    ZeRO-3 all-gathers each layer's parameters before use (Rajbhandari et al. 2020, Sec. 5.3);
    FSDP keeps the current and the next unit (backward prefetch), so two layers are counted.
    """
    largest = 0.0
    moe_layers = model.moe_layer_prefix[layers.stop] - model.moe_layer_prefix[layers.start]
    for moe in [kind for kind, count in ((True, moe_layers), (False, len(layers) - moe_layers)) if count]:
        index = next(i for i in layers if model.is_moe_layer(i) == moe)
        body = stage_params(model, range(index, index + 1), False, False, layout.tp, layout.ep, layout.expert_tp)
        largest = max(largest, body.dense + body.experts)
    gathered = 2 * largest * states.weights
    return MemoryTerm(name="zero3_gathered_layers", bytes=gathered, fixed_bytes=gathered,
                      scaling="two layers' parameters on the card, gathered (current + prefetch)",
                      source="Rajbhandari et al. 2020 (ZeRO) Sec. 5.3; PyTorch FSDP backward prefetch")


def model_state_terms(
    replicated_params: float, expert_params: float, states: StateBytes, zero: ZeroStage, dp: int, ep: int = 1,
    offload_optimizer: bool = False, offload_params: bool = False,
) -> list[MemoryTerm]:
    """Weights, gradients and optimizer states on one card (ZeRO Sec. 5.1-5.3).

    Baseline (2+2+K)Psi; P_os: 4Psi + K*Psi/N_d; P_os+g: 2Psi + (2+K)Psi/N_d; P_os+g+p:
    (2+2+K)Psi/N_d. `replicated_params` are those on the card that every DP rank would hold;
    `expert_params` (routed experts already split by EP) are sharded over dp/ep ranks only.
    """
    dp_experts = dp // ep
    if offload_params:
        weights = MemoryTerm(name="weights", bytes=0.0, scaling="parameter shards in CPU memory (ZeRO-Infinity); gathered layers counted apart",
                             source="Rajbhandari et al. 2021, ZeRO-Infinity, Sec. 5")
    else:
        weights = _sharded("weights", replicated_params * states.weights, expert_params * states.weights, dp, dp_experts,
                           zero >= ZeroStage.PARAMETERS, ZERO)
    terms = [
        weights,
        _sharded("gradients", replicated_params * states.gradients, expert_params * states.gradients, dp, dp_experts,
                 zero >= ZeroStage.GRADIENTS, ZERO),
    ]
    if offload_optimizer:
        terms.append(MemoryTerm(name="optimizer_states", bytes=0.0, scaling="offloaded to CPU memory (ZeRO-Offload, Ren et al. 2021)",
                                source="Ren et al. 2021, ZeRO-Offload, Sec. 4"))
    else:
        terms.append(_sharded("optimizer_states", replicated_params * states.optimizer, expert_params * states.optimizer, dp, dp_experts,
                              zero >= ZeroStage.OPTIMIZER, ZERO))
    return terms


def _activation_terms(
    model: ModelSpec, workload: TrainingWorkload, layout: TrainingLayout, stage: int, layers: range, last: bool,
    assumptions: Assumptions,
) -> list[MemoryTerm]:
    s, b, t = workload.seq_len, layout.micro_batch, layout.tp
    sp = layout.sequence_parallel and t > 1
    held = in_flight_micro_batches(stage, layout.pp, layout.grad_accum, assumptions.pipeline_interleave_chunks)
    moe_layers = model.moe_layer_prefix[layers.stop] - model.moe_layer_prefix[layers.start]
    per_mb = sum(
        count * activation_bytes_per_layer(model, s, b, t, sp, layout.checkpointing, layout.flash_attention, moe)
        for moe, count in ((True, moe_layers), (False, len(layers) - moe_layers)) if count
    )
    terms = [MemoryTerm(
        name="activations", bytes=per_mb * held, fixed_bytes=per_mb * held,
        scaling=f"x micro-batch; x {held:g} micro-batches in flight (1F1B); {len(layers)} layers on this stage", source=KORT,
    )]
    if layout.checkpointing is Checkpointing.FULL:
        working = max(
            activation_bytes_per_layer(model, s, b, t, sp, Checkpointing.NONE, layout.flash_attention, moe)
            for moe, count in ((True, moe_layers), (False, len(layers) - moe_layers)) if count
        )
        terms.append(MemoryTerm(name="recompute_working_set", bytes=working, fixed_bytes=working,
                                scaling="x micro-batch; one layer recomputed at a time", source=KORT + " (full recomputation)"))
    if last:
        logits = logits_bytes(s, b, model.vocab_size, t)
        terms.append(MemoryTerm(name="logits", bytes=logits, fixed_bytes=logits, scaling="x micro-batch; last stage only",
                                source="Korthikanti Sec. 4.3: 4sbv/t fp32 logits, counted once"))
    return terms


# ---- inference -----------------------------------------------------------------------------

PAGED = "Kwon et al. 2023 (PagedAttention, arXiv:2309.06180), Sec. 3: 2 x layers x kv_heads x head_dim x bytes per token"
MLA_KV = "DeepSeek-V2 (arXiv:2405.04434) Sec. 2.1.2: (kv_lora_rank + qk_rope_head_dim) x layers x bytes per token, in paged blocks"


def kv_cache_bytes_per_token(model: ModelSpec, precision: KvPrecision) -> float:
    """KV-cache bytes per token for the whole model.

    MHA/GQA/MQA: 2 (K and V) x layers x kv_heads x head_dim x bytes (Kwon et al. 2023, Sec. 3).
    MLA: (kv_lora_rank + qk_rope_head_dim) x layers x bytes, the compressed latent plus the
    decoupled RoPE key (DeepSeek-V2, arXiv:2405.04434, Sec. 2.1.2, Table 1).
    """
    per_element = kv_bytes_per_element(precision)
    if model.is_mla:
        return (model.kv_lora_rank + model.qk_rope_head_dim) * model.num_layers * per_element
    return 2 * model.num_layers * model.num_kv_heads * model.head_dim * per_element


def kv_heads_per_card(model: ModelSpec, tp: int) -> tuple[float, str]:
    """KV heads one TP rank stores, and a note when heads are replicated.

    vLLM/Megatron split KV heads over TP; with tp > kv_heads each rank keeps one whole head
    (replication). MLA's latent is not split by head: every TP rank keeps all of it.
    """
    if model.is_mla:
        return 1.0, "MLA latent KV cache is replicated on every TP rank (not split by heads)"
    if tp > model.num_kv_heads:
        return 1.0, f"tp={tp} > kv_heads={model.num_kv_heads}: each rank holds a replicated KV head"
    return float(math.ceil(model.num_kv_heads / tp)), ""


def kv_bytes_per_token_per_card(model: ModelSpec, precision: KvPrecision, tp: int, pp: int) -> tuple[float, str]:
    """KV bytes one card stores per token: the per-token cache split over TP (by heads) and PP (by layers)."""
    layers = math.ceil(model.num_layers / pp)
    heads, note = kv_heads_per_card(model, tp)
    per_element = kv_bytes_per_element(precision)
    if model.is_mla:
        return (model.kv_lora_rank + model.qk_rope_head_dim) * layers * per_element, note
    return 2 * layers * heads * model.head_dim * per_element, note


def paged_tokens(tokens: int, block_tokens: int) -> int:
    """Tokens a sequence occupies in whole KV blocks (PagedAttention Sec. 4.1)."""
    return math.ceil(tokens / block_tokens) * block_tokens


def serving_stage_bytes(model: ModelSpec, precision: WeightPrecision, tp: int, pp: int, assumptions: Assumptions) -> tuple[float, float, float]:
    """(weight bytes, 16-bit embedding/LM-head bytes, routed-expert bytes within the weights) of the most loaded serving card.

    Weights are split by TP within a stage and by PP over stages; routed experts over the
    replica's TP ranks (expert parallelism with EP = TP, or expert-TP = TP: same bytes).
    Quantised checkpoints keep the embedding and LM head in 16-bit unless
    `quantize_embeddings` (AutoGPTQ/AutoAWQ default).
    """
    bpp = weight_bytes_per_param(precision, assumptions.int4_group_size)
    keep16 = bpp < 2.0 and not assumptions.quantize_embeddings
    best = (0.0, 0.0, 0.0)
    for stage, layers in enumerate(stage_layer_ranges(model.num_layers, pp)):
        first, last = stage == 0, stage == pp - 1
        params = stage_params(model, layers, first, last, tp, tp, 1)
        embed = ((model.embedding_params if first else 0) + (model.lm_head_params if last else 0)) / tp
        body = params.dense + params.experts - (embed if keep16 else 0.0)
        candidate = (body * bpp, embed * 2.0 if keep16 else 0.0, params.experts * bpp)
        if candidate[0] + candidate[1] > best[0] + best[1]:
            best = candidate
    return best


def inference_weight_bytes_per_card(model: ModelSpec, precision: WeightPrecision, tp: int, pp: int, assumptions: Assumptions) -> tuple[float, float]:
    """(weight bytes, 16-bit embedding/LM-head bytes) on the most loaded card of a replica (see `serving_stage_bytes`)."""
    body, embed, _ = serving_stage_bytes(model, precision, tp, pp, assumptions)
    return body, embed


def prefill_workspace_bytes(model: ModelSpec, tp: int, batch: int, assumptions: Assumptions) -> float:
    """Activation workspace of the largest prefill chunk plus the sampler's logits.

    One layer's transient tensors for `prefill_chunk_tokens` tokens: hidden states and
    residual (2 x h), q/k/v (split by TP) and the MLP intermediates (2 x I / t), 2 bytes
    each, plus fp32 logits for the batch (b x v x 4). This approximates what vLLM's start-up
    profiling run measures (vLLM `Worker.determine_num_available_blocks`).
    """
    n = assumptions.prefill_chunk_tokens
    inner = max(model.intermediate_size, model.experts_per_token * model.moe_intermediate_size)
    per_token = 2 * model.hidden_size + (model.q_dim + 2 * model.kv_dim) / tp + 2 * inner / tp
    return 2.0 * n * per_token + 4.0 * batch * model.vocab_size


def inference_memory(
    model: ModelSpec, workload: InferenceWorkload, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions
) -> MemoryBreakdown:
    """Per-card memory of a serving replica with `layout.batch` sequences of prompt+output tokens."""
    body, embed16 = inference_weight_bytes_per_card(model, layout.weight_precision, layout.tp, layout.pp, assumptions)
    kv_token, kv_note = kv_bytes_per_token_per_card(model, layout.kv_precision, layout.tp, layout.pp)
    tokens = paged_tokens(workload.prompt_tokens + workload.output_tokens, assumptions.kv_block_tokens)
    kv = kv_token * tokens * layout.batch
    workspace = prefill_workspace_bytes(model, layout.tp, layout.batch, assumptions)
    reserve = assumptions.runtime_reserve_gib_inference * BYTES_PER_GIB
    scales = {"int4": f"GPTQ/AWQ group-{assumptions.int4_group_size} scales and zeros", "int8": "per-channel scales",
              "fp8": "128x128 block scales (DeepSeek-V3 Sec. 3.3.2)"}.get(layout.weight_precision.value, "no scales")
    terms = [MemoryTerm(name="weights", bytes=body, fixed_bytes=body, scaling="split by TP and PP (experts by EP=TP)",
                        source=f"parameters on the card x bytes per weight ({layout.weight_precision.value}, {scales})")]
    notes = []
    if embed16:
        terms.append(MemoryTerm(name="embeddings_16bit", bytes=embed16, fixed_bytes=embed16, scaling="split by TP; first/last stage",
                                source="AutoGPTQ/AutoAWQ keep embedding and LM head in 16-bit"))
        notes.append("embedding and LM head kept in 16-bit (assumption quantize_embeddings=false)")
    terms += [
        MemoryTerm(name="kv_cache", bytes=kv, fixed_bytes=kv, scaling=f"x batch x {tokens} tokens (blocks of {assumptions.kv_block_tokens})",
                   source=MLA_KV if model.is_mla else PAGED),
        MemoryTerm(name="workspace", bytes=workspace, fixed_bytes=workspace, scaling="prefill chunk + logits of the batch", source="vLLM profile run (approximation)"),
        MemoryTerm(name="reserve", bytes=reserve, fixed_bytes=reserve, scaling="fixed per card", source="assumptions: runtime_reserve_gib_inference"),
    ]
    if kv_note:
        notes.append(kv_note)
    capacity = gpu.memory_bytes * assumptions.gpu_memory_utilization
    notes.append(f"capacity = {assumptions.gpu_memory_utilization:g} x card memory (gpu_memory_utilization)")
    return MemoryBreakdown(terms=tuple(terms), capacity_bytes=capacity, card_bytes=gpu.memory_bytes, stage=0, notes=tuple(notes))


def max_concurrent_sequences(model: ModelSpec, workload: InferenceWorkload, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions) -> int:
    """Largest batch whose KV cache fits next to the weights, workspace and reserve (0 if none)."""
    probe = inference_memory(model, workload, layout.model_copy(update={"batch": 1}), gpu, assumptions)
    kv_one = probe.term("kv_cache")
    free = probe.capacity_bytes - (probe.total_bytes - kv_one) + 4.0 * model.vocab_size
    best = int(free // (kv_one + 4.0 * model.vocab_size)) if free > 0 else 0
    while best > 0 and not inference_memory(model, workload, layout.model_copy(update={"batch": best}), gpu, assumptions).fits:
        best -= 1
    return max(best, 0)


def kv_tokens_that_fit(model: ModelSpec, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions, workload: InferenceWorkload) -> int:
    """KV-cache tokens a replica can hold, in whole blocks, after weights, workspace (batch 1) and reserve."""
    probe = inference_memory(model, workload, layout.model_copy(update={"batch": 1}), gpu, assumptions)
    free = probe.capacity_bytes - (probe.total_bytes - probe.term("kv_cache"))
    kv_token, _ = kv_bytes_per_token_per_card(model, layout.kv_precision, layout.tp, layout.pp)
    if free <= 0:
        return 0
    blocks = int(free // (kv_token * assumptions.kv_block_tokens))
    return blocks * assumptions.kv_block_tokens


def max_context_for_concurrency(model: ModelSpec, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions, workload: InferenceWorkload, concurrency: int) -> int:
    """Longest context (prompt + output tokens, whole blocks) each of `concurrency` sequences can have."""
    tokens = kv_tokens_that_fit(model, layout, gpu, assumptions, workload) // max(concurrency, 1)
    return (tokens // assumptions.kv_block_tokens) * assumptions.kv_block_tokens
