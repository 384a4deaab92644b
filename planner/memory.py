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

import functools
import math
from dataclasses import dataclass

import numpy as np

from pydantic import BaseModel, ConfigDict, Field

from planner.catalog import GpuSpec
from planner.enums import Checkpointing, Framework, KvPrecision, Optimizer, TrainingMode, TrainPrecision, WeightPrecision, ZeroStage
from planner.layout import InferenceLayout, TrainingLayout
from planner.modelspec import ModelSpec
from planner.scenario import Assumptions, InferenceWorkload, LoraSettings, TrainingWorkload
from planner.units import BYTES_PER_GIB

Num = float | np.ndarray
"""A scalar (one configuration) or a numpy column (one entry per configuration)."""
Flag = bool | np.ndarray
Columns = dict[str, np.ndarray]
"""Layouts or results as columns: one numpy array per field, one entry per configuration."""


def distinct(column: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a column (np.unique's values; its masked-array check imports numpy.ma, ~10 ms of a
    one-configuration command)."""
    values = np.sort(np.ravel(column))
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def take_columns(cols: Columns, rows: np.ndarray) -> Columns:
    """The rows (a boolean mask or index array) of every column, in their order."""
    return {k: v[rows] for k, v in cols.items()}


def where(condition: Flag, if_true: Num, if_false: Num) -> Num:
    """`np.where` that gives a float for scalar inputs (one configuration) and an array for columns."""
    out = np.where(condition, if_true, if_false)
    return out if out.ndim else float(out)


class MemoryTerm(BaseModel):
    """One line of a per-card memory breakdown."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

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

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    terms: tuple[MemoryTerm, ...] = Field(description="Terms of the most loaded card, reserve included.")
    capacity_bytes: float = Field(description="Usable card memory (after the serving utilisation cap, if any).")
    card_bytes: float = Field(description="Physical card memory as the driver reports it.")
    stage: int = Field(description="Pipeline stage of the most loaded card (0 = first).")
    notes: tuple[str, ...] = Field(default=(), description="Modelling choices worth stating (replicated KV heads, 16-bit embeddings, ...).")
    prefill_total_bytes: float = Field(default=0.0, ge=0, description="Disaggregated serving: per-card total of a prefill replica, "
                                                                         "whose cards the terms (a decode replica's) do not describe; 0 otherwise.")

    @property
    def total_bytes(self) -> float:
        """Sum of all terms (not the largest one)."""
        return sum(t.bytes for t in self.terms)

    @property
    def headroom_bytes(self) -> float:
        """Capacity left on the card the terms describe (a decode replica's when disaggregated: `fits` also checks the
        prefill card); negative when that card overflows."""
        return self.capacity_bytes - self.total_bytes

    @property
    def fits(self) -> bool:
        """True when every card holds its terms (and, disaggregated, a prefill replica's card holds its total)."""
        return self.headroom_bytes >= 0 and self.prefill_total_bytes <= self.capacity_bytes

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
    These are the DeepSpeed/FSDP conventions; a framework that keeps wider gradient buffers
    (Megatron: fp32 main gradients, 4 bytes) raises the gradient bytes (`framework_state_columns`).
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


def stage_params(model: ModelSpec, layers: range, first: bool, last: bool, tp: Num, ep: Num, expert_tp: Num) -> StageParams:
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
    model: ModelSpec, seq_len: int, micro_batch: Num, tp: Num, sequence_parallel: Flag,
    checkpointing: Checkpointing | np.ndarray, flash_attention: Flag, moe_layer: bool,
) -> Num:
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

    Columns: micro_batch, tp, sequence_parallel, checkpointing and flash_attention may be
    numpy arrays (one entry per layout); scalars give a float.
    """
    s, b, h, t = seq_len, micro_batch, model.hidden_size, tp
    sbh = s * b * h
    sp_divisor = where(sequence_parallel, t, 1)
    replicated = (10 if model.dropout else 8) * sbh
    attention = 2 * s * b * (model.q_dim + model.kv_dim + model.v_dim + model.o_dim)
    saved_mlp = 3 if model.gated_mlp else 2
    if moe_layer:
        inner = model.experts_per_token * model.moe_intermediate_size + model.n_shared_experts * model.moe_intermediate_size
        mlp = saved_mlp * 2 * s * b * inner + 2 * sbh * model.experts_per_token
    else:
        mlp = saved_mlp * 2 * s * b * model.intermediate_size
    scores = where(flash_attention, 4 * model.num_heads * s * b,
                   where(checkpointing == Checkpointing.SELECTIVE, 0.0, (5 if model.dropout else 2) * model.num_heads * s * s * b))
    stored = (attention + mlp + scores) / t + replicated / sp_divisor
    return where(checkpointing == Checkpointing.FULL, 2 * sbh / sp_divisor, stored)


def logits_bytes(seq_len: int, micro_batch: int, vocab_size: int, tp: int) -> float:
    """fp32 logits for the loss on the last stage: 4sbv/t (Korthikanti Sec. 4.3, output-layer term)."""
    return 4.0 * seq_len * micro_batch * vocab_size / tp


def in_flight_micro_batches(stage: int, pp: int, grad_accum: Num, interleave_chunks: int) -> Num:
    """Micro-batches whose activations a stage holds under 1F1B: min(p - stage, m) (Narayanan et al. 2021, Sec. 2.2).

    The interleaved schedule holds (1 + (p-1)/(p*v)) times more on the first stage (Korthikanti Eq. 5 note).
    """
    held = np.minimum(pp - stage, grad_accum) * 1.0
    if interleave_chunks > 1 and stage == 0 and pp > 1:
        held = held * (1 + (pp - 1) / (pp * interleave_chunks))
    return held if np.ndim(held) else float(held)


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


TRAIN_PRECISIONS: tuple[TrainPrecision, ...] = tuple(TrainPrecision)
"""Order of the integer codes of the `precision` training column."""

TRAINING_FIELDS = ("precision", "tp", "pp", "dp", "ep", "expert_tp", "zero", "checkpointing", "micro_batch", "grad_accum",
                   "sequence_parallel", "flash_attention", "offload_optimizer", "offload_params", "cp", "framework", "zero_group")
"""Training layout columns (one GPU type per table): TrainingLayout field names; precision as a code into TRAIN_PRECISIONS,
framework as a code into FRAMEWORKS."""

FRAMEWORKS: tuple[Framework, ...] = tuple(Framework)
"""Order of the integer codes of the `framework` training column (the same order as planner.speed.FRAMEWORKS)."""


def training_columns(layouts: list[TrainingLayout]) -> Columns:
    """Layouts (one GPU type) as columns: one numpy array per TrainingLayout field."""
    cols: Columns = {
        "precision": np.array([TRAIN_PRECISIONS.index(lay.precision) for lay in layouts], dtype=np.int64),
        "zero": np.array([int(lay.zero) for lay in layouts], dtype=np.int64),
        "checkpointing": np.array([int(lay.checkpointing) for lay in layouts], dtype=np.int64),
        "framework": np.array([FRAMEWORKS.index(lay.framework) for lay in layouts], dtype=np.int64),
    }
    for name in ("tp", "pp", "dp", "ep", "expert_tp", "micro_batch", "grad_accum", "cp", "zero_group"):
        cols[name] = np.array([getattr(lay, name) for lay in layouts], dtype=np.int64)
    for name in ("sequence_parallel", "flash_attention", "offload_optimizer", "offload_params"):
        cols[name] = np.array([getattr(lay, name) for lay in layouts], dtype=bool)
    return cols


def training_layout_at(cols: Columns, i: int, gpu: str) -> TrainingLayout:
    """Row `i` of training columns as a TrainingLayout."""
    return TrainingLayout(
        gpu=gpu, precision=TRAIN_PRECISIONS[int(cols["precision"][i])], tp=int(cols["tp"][i]), pp=int(cols["pp"][i]),
        dp=int(cols["dp"][i]), ep=int(cols["ep"][i]), expert_tp=int(cols["expert_tp"][i]), zero=ZeroStage(int(cols["zero"][i])),
        checkpointing=Checkpointing(int(cols["checkpointing"][i])), micro_batch=int(cols["micro_batch"][i]),
        grad_accum=int(cols["grad_accum"][i]), sequence_parallel=bool(cols["sequence_parallel"][i]),
        flash_attention=bool(cols["flash_attention"][i]), offload_optimizer=bool(cols["offload_optimizer"][i]),
        offload_params=bool(cols["offload_params"][i]), cp=int(cols["cp"][i]), framework=FRAMEWORKS[int(cols["framework"][i])],
        zero_group=int(cols["zero_group"][i]),
    )


def state_bytes_columns(precision_codes: np.ndarray, optimizer: Optimizer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, gradients, optimizer) bytes per parameter for a column of precision codes (see `state_bytes_per_param`)."""
    table = np.array([[s.weights, s.gradients, s.optimizer] for s in (state_bytes_per_param(p, optimizer) for p in TRAIN_PRECISIONS)])
    rows = table[precision_codes]
    return rows[:, 0], rows[:, 1], rows[:, 2]


def main_grad_bytes(framework_codes: np.ndarray, assumptions: Assumptions) -> np.ndarray:
    """Gradient-buffer bytes per parameter per row, from catalogs/frameworks.csv (with the scenario's calibration overlay):
    Megatron 4 B (fp32 main gradients: Megatron-LM accumulate_allreduce_grads_in_fp32), FSDP and DeepSpeed 2 B."""
    from planner.calibrate import scenario_catalog

    cat = scenario_catalog(assumptions.file)
    return np.array([cat.framework(f.value).main_grad_bytes for f in FRAMEWORKS], dtype=float)[framework_codes]


def zero_shards(cols: Columns) -> np.ndarray:
    """Ranks a ZeRO-sharded model state is divided over: DP × CP (the Megatron distributed optimizer and FSDP shard over
    the data-and-context-parallel group), or the hybrid-sharding group (`zero_group`, ZeRO-3 only) when set."""
    return np.where(cols["zero_group"] > 0, cols["zero_group"], cols["dp"] * cols["cp"])


def training_memory(
    model: ModelSpec, workload: TrainingWorkload, layout: TrainingLayout, gpu: GpuSpec, assumptions: Assumptions
) -> MemoryBreakdown:
    """Per-card memory of a training layout: the most loaded pipeline stage, every term summed (one row of the columns)."""
    cols = training_columns([layout])
    return training_breakdown_at(model, workload, gpu, assumptions, cols, training_memory_columns(model, workload, gpu, assumptions, cols), 0)


def training_memory_columns(model: ModelSpec, workload: TrainingWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns) -> Columns:
    """Per-card memory of many training layouts of one GPU type: each term's bytes on the most loaded stage, per row.

    Output columns: one per term (`TRAINING_TERMS`: weights, gradients, optimizer_states or
    the adapter_* terms for LoRA, zero3_gathered_layers, activations, recompute_working_set,
    logits, reserve), `<term>_over_dp` for the ZeRO-sharded model states (bytes before the
    division by DP), `stage` (most loaded pipeline stage), `total_bytes`, `capacity_bytes`.
    What depends only on (model, pp) is computed once per pipeline degree; the stage is the
    maximum over `candidate_stages` (earliest stage wins ties, as in the per-stage scan).
    """
    weights_b, grads_b, optim_b = state_bytes_columns(cols["precision"], workload.optimizer)
    states = (weights_b, np.maximum(grads_b, main_grad_bytes(cols["framework"], assumptions)), optim_b)
    n = len(cols["tp"])
    out: Columns | None = None
    for pp in distinct(cols["pp"]):
        pp = int(pp)
        single = out is None and bool(np.all(cols["pp"] == pp))
        index = slice(None) if single else np.nonzero(cols["pp"] == pp)[0]
        sub = cols if single else take_columns(cols, index)
        sub_states = states if single else tuple(s[index] for s in states)
        best: Columns | None = None
        ranges = stage_layer_ranges(model.num_layers, pp)
        for stage in candidate_stages(model, pp):
            terms = _training_stage_columns(model, workload, gpu, assumptions, sub, sub_states, stage, ranges[stage], pp)  # type: ignore[arg-type]
            if best is None:
                best = terms
                continue
            heavier = terms["total_bytes"] > best["total_bytes"]
            best = {k: np.where(heavier, terms[k], best[k]) for k in best}
        assert best is not None
        if single:
            out = best
            break
        if out is None:
            out = {k: np.zeros(n, dtype=v.dtype) for k, v in best.items()}
        for k, v in best.items():
            out[k][index] = v
    if out is None:  # no rows: the columns, empty
        out = _training_stage_columns(model, workload, gpu, assumptions, cols, states, 0, range(model.num_layers), 1)
    out["capacity_bytes"] = np.full(n, float(gpu.memory_bytes))
    return out


TRAINING_TERMS = ("weights", "gradients", "optimizer_states", "adapter_weights", "adapter_gradients", "adapter_optimizer_states",
                  "zero3_gathered_layers", "activations", "recompute_working_set", "logits", "reserve")
"""Memory term columns of `training_memory_columns`, in breakdown order (absent terms are 0)."""


def _training_stage_columns(
    model: ModelSpec, workload: TrainingWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns,
    states: tuple[np.ndarray, np.ndarray, np.ndarray], stage: int, layers: range, pp: int,
) -> Columns:
    """Every term of one pipeline stage for rows that share pp (columns of `training_memory_columns`)."""
    n = len(cols["tp"])
    zeros = np.zeros(n)
    first, last = stage == 0, stage == pp - 1
    tp, ep, zero = cols["tp"], cols["ep"], cols["zero"]
    dp = zero_shards(cols)
    params = stage_params(model, layers, first, last, tp, ep, cols["expert_tp"])
    out: Columns = {name: zeros for name in TRAINING_TERMS}
    if workload.mode in (TrainingMode.LORA, TrainingMode.QLORA):
        assert workload.lora is not None
        base_bpp = QLORA_NF4_BYTES_PER_PARAM if workload.mode is TrainingMode.QLORA else 2.0
        base = (params.dense + params.experts) * base_bpp
        if workload.mode is TrainingMode.QLORA:
            embed_on_card = ((model.embedding_params if first else 0) + (model.lm_head_params if last else 0)) / tp
            base = base + embed_on_card * (2.0 - base_bpp)  # bitsandbytes quantises Linear layers only
        # frozen base weights are parameters too: ZeRO-3 / FSDP FULL_SHARD shards them over DP (routed experts over
        # DP/EP) and gathers layers on use (Rajbhandari et al. 2020, Sec. 5.3; PEFT's FSDP/ZeRO-3 recipes shard the base)
        experts_base = params.experts * base_bpp
        shard = zero >= ZeroStage.PARAMETERS
        weights, weights_dp = _sharded(base - experts_base, experts_base, dp, np.maximum(dp // ep, 1), shard)
        out["weights"] = weights + zeros
        out["weights_over_dp"] = weights_dp + zeros
        out["zero3_gathered_layers"] = np.where(shard, zero3_gathered_bytes(model, layers, tp, ep, cols["expert_tp"], base_bpp), 0.0)
        adapters = lora_adapter_params(model, workload.lora) * len(layers) / model.num_layers / tp
        a = ADAPTER_STATE_BYTES
        adapter = model_state_columns(adapters, 0.0, (a.weights, a.gradients, a.optimizer), zero, dp)
        out.update({f"adapter_{k}": v + zeros for k, v in adapter.items()})
    else:
        out.update(model_state_columns(params.dense, params.experts, states, zero, dp, ep, cols["offload_optimizer"], cols["offload_params"]))
        out["zero3_gathered_layers"] = np.where(zero >= ZeroStage.PARAMETERS, zero3_gathered_bytes(model, layers, tp, ep, cols["expert_tp"], states[0]), 0.0)
    out.update(_activation_columns(model, workload, assumptions, cols, stage, layers, pp))
    out["reserve"] = zeros + training_reserve_bytes(gpu, assumptions)
    out["total_bytes"] = sum(out[name] for name in TRAINING_TERMS)
    out["stage"] = np.full(n, stage, dtype=np.int64)
    return out


def zero3_gathered_bytes(model: ModelSpec, layers: range, tp: Num, ep: Num, expert_tp: Num, weight_bytes: Num) -> Num:
    """ZeRO-3 / FSDP working set: the largest layer's parameters gathered whole, for the current and the prefetched layer.

    ZeRO-3 all-gathers each layer's parameters before use (Rajbhandari et al. 2020, Sec. 5.3);
    FSDP keeps the current and the next unit (backward prefetch), so two layers are counted.
    """
    largest: Num = 0.0
    moe_layers = model.moe_layer_prefix[layers.stop] - model.moe_layer_prefix[layers.start]
    for moe in [kind for kind, count in ((True, moe_layers), (False, len(layers) - moe_layers)) if count]:
        index = next(i for i in layers if model.is_moe_layer(i) == moe)
        body = stage_params(model, range(index, index + 1), False, False, tp, ep, expert_tp)
        largest = np.maximum(largest, body.dense + body.experts)
    return 2 * largest * weight_bytes


def _sharded(replicated_bytes: Num, expert_bytes: Num, dp: Num, dp_experts: Num, shard: Flag) -> tuple[Num, Num]:
    """(bytes on the card, bytes before the DP division) of a model-state term, sharded by ZeRO when `shard` (experts over dp/ep)."""
    return (where(shard, replicated_bytes / dp + expert_bytes / dp_experts, replicated_bytes + expert_bytes),
            where(shard, replicated_bytes + expert_bytes * (dp / dp_experts), 0.0))


def model_state_columns(
    replicated_params: Num, expert_params: Num, states: tuple[Num, Num, Num], zero: Num, dp: Num, ep: Num = 1,
    offload_optimizer: Flag = False, offload_params: Flag = False,
) -> Columns:
    """Weights, gradients and optimizer states on one card (ZeRO Sec. 5.1-5.3), with `<term>_over_dp` columns.

    Baseline (2+2+K)Psi; P_os: 4Psi + K*Psi/N_d; P_os+g: 2Psi + (2+K)Psi/N_d; P_os+g+p:
    (2+2+K)Psi/N_d. `replicated_params` are those on the card that every DP rank would hold;
    `expert_params` (routed experts already split by EP) are sharded over dp/ep ranks only.
    ZeRO-Offload (Ren et al. 2021, Sec. 4) moves the optimizer states to CPU memory,
    ZeRO-Infinity (Rajbhandari et al. 2021, Sec. 5) the parameter shards.
    """
    dp_experts = np.maximum(dp // ep, 1)  # a hybrid shard group smaller than EP holds whole experts (no expert sharding)
    weights, weights_dp = _sharded(replicated_params * states[0], expert_params * states[0], dp, dp_experts, zero >= ZeroStage.PARAMETERS)
    gradients, gradients_dp = _sharded(replicated_params * states[1], expert_params * states[1], dp, dp_experts, zero >= ZeroStage.GRADIENTS)
    optimizer, optimizer_dp = _sharded(replicated_params * states[2], expert_params * states[2], dp, dp_experts, zero >= ZeroStage.OPTIMIZER)
    return {
        "weights": where(offload_params, 0.0, weights), "weights_over_dp": where(offload_params, 0.0, weights_dp),
        "gradients": gradients, "gradients_over_dp": gradients_dp,
        "optimizer_states": where(offload_optimizer, 0.0, optimizer), "optimizer_states_over_dp": where(offload_optimizer, 0.0, optimizer_dp),
    }


STATE_SOURCES = {
    "weights": (ZERO, "Rajbhandari et al. 2021, ZeRO-Infinity, Sec. 5"),
    "gradients": (ZERO, ZERO),
    "optimizer_states": (ZERO, "Ren et al. 2021, ZeRO-Offload, Sec. 4"),
}


def _state_term(name: str, bytes_: float, over_dp: float, shard: bool, offloaded: bool, source_prefix: str = "") -> MemoryTerm:
    """A model-state breakdown line from its column values."""
    source = STATE_SOURCES[name][1 if offloaded else 0]
    if offloaded:
        scaling = ("parameter shards in CPU memory (ZeRO-Infinity); gathered layers counted apart" if name == "weights"
                   else "offloaded to CPU memory (ZeRO-Offload, Ren et al. 2021)")
        return MemoryTerm(name=name, bytes=0.0, scaling=scaling, source=source_prefix + source)
    if not shard:
        return MemoryTerm(name=name, bytes=bytes_, fixed_bytes=bytes_, scaling="fixed per card (replicated over DP)", source=source_prefix + source)
    return MemoryTerm(name=name, bytes=bytes_, over_dp_bytes=over_dp, scaling="divided by the data-parallel degree (ZeRO)", source=source_prefix + source)


def model_state_terms(
    replicated_params: float, expert_params: float, states: StateBytes, zero: ZeroStage, dp: int, ep: int = 1,
    offload_optimizer: bool = False, offload_params: bool = False,
) -> list[MemoryTerm]:
    """Weights, gradients and optimizer states on one card as breakdown lines (the columns of `model_state_columns`)."""
    values = model_state_columns(replicated_params, expert_params, (states.weights, states.gradients, states.optimizer), zero, dp, ep,
                                 offload_optimizer, offload_params)
    thresholds = {"weights": ZeroStage.PARAMETERS, "gradients": ZeroStage.GRADIENTS, "optimizer_states": ZeroStage.OPTIMIZER}
    offloaded = {"weights": offload_params, "gradients": False, "optimizer_states": offload_optimizer}
    return [_state_term(name, float(values[name]), float(values[f"{name}_over_dp"]), zero >= thresholds[name], offloaded[name])
            for name in ("weights", "gradients", "optimizer_states")]


def _activation_columns(
    model: ModelSpec, workload: TrainingWorkload, assumptions: Assumptions, cols: Columns, stage: int, layers: range, pp: int,
) -> Columns:
    """Activations of the stage's in-flight micro-batches, the full-recompute working set and the last stage's logits."""
    s, b, t = workload.seq_len, cols["micro_batch"], cols["tp"]
    sp = cols["sequence_parallel"] & (t > 1)
    ckpt, flash = cols["checkpointing"], cols["flash_attention"]
    held = in_flight_micro_batches(stage, pp, cols["grad_accum"], assumptions.pipeline_interleave_chunks)
    moe_layers = model.moe_layer_prefix[layers.stop] - model.moe_layer_prefix[layers.start]
    kinds = [(moe, count) for moe, count in ((True, moe_layers), (False, len(layers) - moe_layers)) if count]
    # ring attention holds s/cp tokens per rank (Liu et al. 2023, arXiv:2310.01889). The per-term derivation is kept for every
    # framework: the MosaicML FSDP rows (fused MPT kernels) that ran on 40 GB cards would not fit with the eager 45·s·b·h
    # coefficient of catalogs/frameworks.csv, which describes unfused HF modules rather than FSDP itself.
    cp = cols["cp"]
    per_mb = sum(count * activation_bytes_per_layer(model, s, b, t, sp, ckpt, flash, moe) for moe, count in kinds) / cp
    working = functools.reduce(np.maximum, [activation_bytes_per_layer(model, s, b, t, sp, Checkpointing.NONE, flash, moe) for moe, _ in kinds])
    return {
        "activations": per_mb * held,
        "recompute_working_set": np.where(ckpt == Checkpointing.FULL, working / cp, 0.0),
        "logits": logits_bytes(s, b, model.vocab_size, t) / cp if stage == pp - 1 else np.zeros(len(t)),
    }


def training_breakdown_at(
    model: ModelSpec, workload: TrainingWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns, memory: Columns, i: int,
) -> MemoryBreakdown:
    """The per-term breakdown, with scaling and sources, of row `i` of `training_memory_columns` (built only for rows shown)."""
    layout = {k: v[i] for k, v in cols.items()}
    value = {k: float(v[i]) for k, v in memory.items()}
    stage, pp, zero = int(value["stage"]), int(layout["pp"]), int(layout["zero"])
    layers = stage_layer_ranges(model.num_layers, pp)[stage]
    terms: list[MemoryTerm] = []
    if workload.mode in (TrainingMode.LORA, TrainingMode.QLORA):
        qlora = workload.mode is TrainingMode.QLORA
        base_source = "QLoRA (Dettmers et al. 2023) Sec. 3: NF4 + double quantisation" if qlora else "LoRA (Hu et al. 2021): frozen 16-bit base"
        if zero >= ZeroStage.PARAMETERS:
            terms.append(MemoryTerm(name="weights", bytes=value["weights"], over_dp_bytes=value["weights_over_dp"],
                                    scaling="split by TP/PP/EP; frozen; divided by the data-parallel degree (ZeRO-3/FSDP)",
                                    source=base_source + "; sharded by ZeRO-3 (Rajbhandari et al. 2020, Sec. 5.3)"))
            terms.append(MemoryTerm(name="zero3_gathered_layers", bytes=value["zero3_gathered_layers"], fixed_bytes=value["zero3_gathered_layers"],
                                    scaling="two layers' frozen parameters on the card, gathered (current + prefetch)",
                                    source="Rajbhandari et al. 2020 (ZeRO) Sec. 5.3; PyTorch FSDP backward prefetch"))
        else:
            terms.append(MemoryTerm(name="weights", bytes=value["weights"], fixed_bytes=value["weights"], scaling="split by TP/PP/EP; frozen",
                                    source=base_source))
        prefix = "LoRA adapters r(d_in+d_out) per projection (Hu et al. 2021); "
        for name, threshold in (("weights", ZeroStage.PARAMETERS), ("gradients", ZeroStage.GRADIENTS), ("optimizer_states", ZeroStage.OPTIMIZER)):
            line = _state_term(name, value[f"adapter_{name}"], value[f"adapter_{name}_over_dp"], zero >= threshold, False, prefix)
            terms.append(line.model_copy(update={"name": f"adapter_{name}"}))
    else:
        for name, threshold, offload in (("weights", ZeroStage.PARAMETERS, "offload_params"), ("gradients", ZeroStage.GRADIENTS, None),
                                         ("optimizer_states", ZeroStage.OPTIMIZER, "offload_optimizer")):
            line = _state_term(name, value[name], value[f"{name}_over_dp"], zero >= threshold, bool(offload and layout[offload]))
            if name == "gradients":
                grad_bytes = float(main_grad_bytes(np.array([int(layout["framework"])]), assumptions)[0])
                framework = FRAMEWORKS[int(layout["framework"])].value
                line = line.model_copy(update={"source": line.source + f"; {framework} gradient buffers of at least {grad_bytes:g} B/param "
                                                                   "(catalogs/frameworks.csv main_grad_bytes; Megatron keeps fp32 main gradients)"})
            terms.append(line)
        if zero >= ZeroStage.PARAMETERS:
            terms.append(MemoryTerm(name="zero3_gathered_layers", bytes=value["zero3_gathered_layers"], fixed_bytes=value["zero3_gathered_layers"],
                                    scaling="two layers' parameters on the card, gathered (current + prefetch)",
                                    source="Rajbhandari et al. 2020 (ZeRO) Sec. 5.3; PyTorch FSDP backward prefetch"))
    held = in_flight_micro_batches(stage, pp, int(layout["grad_accum"]), assumptions.pipeline_interleave_chunks)
    terms.append(MemoryTerm(name="activations", bytes=value["activations"], fixed_bytes=value["activations"],
                            scaling=f"x micro-batch; x {held:g} micro-batches in flight (1F1B); {len(layers)} layers on this stage", source=KORT))
    if int(layout["checkpointing"]) == Checkpointing.FULL:
        terms.append(MemoryTerm(name="recompute_working_set", bytes=value["recompute_working_set"], fixed_bytes=value["recompute_working_set"],
                                scaling="x micro-batch; one layer recomputed at a time", source=KORT + " (full recomputation)"))
    if stage == pp - 1:
        terms.append(MemoryTerm(name="logits", bytes=value["logits"], fixed_bytes=value["logits"], scaling="x micro-batch; last stage only",
                                source="Korthikanti Sec. 4.3: 4sbv/t fp32 logits, counted once"))
    terms.append(MemoryTerm(name="reserve", bytes=value["reserve"], fixed_bytes=value["reserve"], scaling="fixed per card",
                            source="assumptions: runtime_reserve_gib_training + allocator_fragmentation_fraction"))
    return MemoryBreakdown(terms=tuple(terms), capacity_bytes=float(gpu.memory_bytes), card_bytes=float(gpu.memory_bytes), stage=stage)


# ---- inference -----------------------------------------------------------------------------

PAGED = "Kwon et al. 2023 (PagedAttention, arXiv:2309.06180), Sec. 3: 2 x layers x kv_heads x head_dim x bytes per token"
MLA_KV = "DeepSeek-V2 (arXiv:2405.04434) Sec. 2.1.2: (kv_lora_rank + qk_rope_head_dim) x layers x bytes per token, in paged blocks"

WEIGHT_PRECISIONS: tuple[WeightPrecision, ...] = tuple(WeightPrecision)
"""Order of the integer codes of the `weight_precision` serving column."""
KV_PRECISIONS: tuple[KvPrecision, ...] = tuple(KvPrecision)
"""Order of the integer codes of the `kv_precision` serving column."""
POOL_FIELDS = {"prefill_replicas": 0, "decode_replicas": 0, "prefill_tp": 1, "prefill_pp": 1, "prefill_batch": 1, "attention_dp": 1}
"""The optional serving layout columns (disaggregated pools; MoE data-parallel attention) and their defaults (colocated,
TP attention)."""

INFERENCE_FIELDS = ("weight_precision", "kv_precision", "tp", "pp", "batch", "replicas", *POOL_FIELDS)
"""Serving layout columns (one GPU type per table): InferenceLayout field names; precisions as codes. The optional
POOL_FIELDS may be absent (`pool_columns` fills their defaults)."""


def pool_columns(cols: Columns) -> Columns:
    """The disaggregated-pool columns of serving layout columns (`POOL_FIELDS`), the colocated defaults where absent."""
    n = len(cols["tp"])
    return {name: cols[name] if name in cols else np.full(n, default, dtype=np.int64) for name, default in POOL_FIELDS.items()}


def serving_unit_gpus(cols: Columns) -> np.ndarray:
    """GPUs of one serving unit per row: tp x pp (a colocated replica), or prefill_replicas x prefill_tp x prefill_pp +
    decode_replicas x tp x pp (a disaggregated unit), as `InferenceLayout.gpus_per_replica`."""
    pools = pool_columns(cols)
    decode = cols["tp"] * cols["pp"]  # data-parallel attention splits the tp cards, it adds none
    return np.where(pools["prefill_replicas"] > 0,
                    pools["prefill_replicas"] * pools["prefill_tp"] * pools["prefill_pp"] + pools["decode_replicas"] * decode, decode)


def inference_columns(layouts: list[InferenceLayout]) -> Columns:
    """Serving layouts (one GPU type) as columns: one numpy array per InferenceLayout field."""
    cols: Columns = {
        "weight_precision": np.array([WEIGHT_PRECISIONS.index(lay.weight_precision) for lay in layouts], dtype=np.int64),
        "kv_precision": np.array([KV_PRECISIONS.index(lay.kv_precision) for lay in layouts], dtype=np.int64),
    }
    for name in ("tp", "pp", "batch", "replicas"):
        cols[name] = np.array([getattr(lay, name) for lay in layouts], dtype=np.int64)
    if any(lay.disaggregated or lay.attention_dp > 1 for lay in layouts):
        for name in POOL_FIELDS:
            cols[name] = np.array([getattr(lay, name) for lay in layouts], dtype=np.int64)
    return cols


def inference_layout_at(cols: Columns, i: int, gpu: str) -> InferenceLayout:
    """Row `i` of serving columns as an InferenceLayout."""
    return InferenceLayout(gpu=gpu, weight_precision=WEIGHT_PRECISIONS[int(cols["weight_precision"][i])],
                           kv_precision=KV_PRECISIONS[int(cols["kv_precision"][i])], tp=int(cols["tp"][i]), pp=int(cols["pp"][i]),
                           batch=int(cols["batch"][i]), replicas=int(cols["replicas"][i]),
                           **{name: int(cols[name][i]) for name in POOL_FIELDS if name in cols})


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


def kv_heads_on_card(model: ModelSpec, tp: Num) -> Num:
    """KV heads one TP rank stores: ceil(kv_heads / tp), at least one whole (replicated) head; MLA's latent is whole on every rank.

    vLLM/Megatron split KV heads over TP; with tp > kv_heads each rank keeps one whole head.
    """
    if model.is_mla:
        return np.ones(np.shape(tp)) if np.ndim(tp) else 1.0
    return where(tp > model.num_kv_heads, 1.0, -(-model.num_kv_heads // tp))


def kv_heads_per_card(model: ModelSpec, tp: int) -> tuple[float, str]:
    """KV heads one TP rank stores (`kv_heads_on_card`), and a note when heads are replicated."""
    if model.is_mla:
        return 1.0, "MLA latent KV cache is replicated on every TP rank (not split by heads)"
    if tp > model.num_kv_heads:
        return 1.0, f"tp={tp} > kv_heads={model.num_kv_heads}: each rank holds a replicated KV head"
    return float(kv_heads_on_card(model, tp)), ""


def kv_bytes_per_token_columns(model: ModelSpec, kv_codes: np.ndarray, tp: Num, pp: Num) -> Num:
    """KV bytes one card stores per token: the per-token cache split over TP (by heads) and PP (by layers, ceil(L/p))."""
    layers = -(-model.num_layers // pp)
    per_element = np.array([kv_bytes_per_element(p) for p in KV_PRECISIONS])[kv_codes]
    if model.is_mla:
        return (model.kv_lora_rank + model.qk_rope_head_dim) * layers * per_element
    return 2 * layers * kv_heads_on_card(model, tp) * model.head_dim * per_element


def kv_bytes_per_token_per_card(model: ModelSpec, precision: KvPrecision, tp: int, pp: int) -> tuple[float, str]:
    """KV bytes one card stores per token (`kv_bytes_per_token_columns`), with the replication note."""
    _, note = kv_heads_per_card(model, tp)
    return float(kv_bytes_per_token_columns(model, np.array([KV_PRECISIONS.index(precision)]), tp, pp)[0]), note


def paged_tokens(tokens: int, block_tokens: int) -> int:
    """Tokens a sequence occupies in whole KV blocks (PagedAttention Sec. 4.1)."""
    return math.ceil(tokens / block_tokens) * block_tokens


def serving_stage_columns(model: ModelSpec, weight_codes: np.ndarray, tp: np.ndarray, pp: int, assumptions: Assumptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight bytes, 16-bit embedding/LM-head bytes, routed-expert bytes within the weights) of the most loaded serving card.

    Weights are split by TP within a stage and by PP over stages; routed experts over the
    replica's TP ranks (expert parallelism with EP = TP, or expert-TP = TP: same bytes).
    Quantised checkpoints keep the embedding and LM head in 16-bit unless
    `quantize_embeddings` (AutoGPTQ/AutoAWQ default). Rows share one pipeline degree `pp`.
    """
    bpp = np.array([weight_bytes_per_param(p, assumptions.int4_group_size) for p in WEIGHT_PRECISIONS])[weight_codes]
    keep16 = (bpp < 2.0) & (not assumptions.quantize_embeddings)
    zeros = np.zeros(len(weight_codes))
    best = (zeros, zeros, zeros)
    for stage, layers in enumerate(stage_layer_ranges(model.num_layers, pp)):
        first, last = stage == 0, stage == pp - 1
        params = stage_params(model, layers, first, last, tp, tp, 1)
        embed = ((model.embedding_params if first else 0) + (model.lm_head_params if last else 0)) / tp
        body = params.dense + params.experts - np.where(keep16, embed, 0.0)
        candidate = (body * bpp, np.where(keep16, embed * 2.0, 0.0), params.experts * bpp + zeros)
        heavier = candidate[0] + candidate[1] > best[0] + best[1]
        best = tuple(np.where(heavier, c, b) for c, b in zip(candidate, best))  # type: ignore[assignment]
    return best


def serving_stage_bytes(model: ModelSpec, precision: WeightPrecision, tp: int, pp: int, assumptions: Assumptions) -> tuple[float, float, float]:
    """`serving_stage_columns` for one layout."""
    body, embed, experts = serving_stage_columns(model, np.array([WEIGHT_PRECISIONS.index(precision)]), np.array([tp]), pp, assumptions)
    return float(body[0]), float(embed[0]), float(experts[0])


def inference_weight_bytes_per_card(model: ModelSpec, precision: WeightPrecision, tp: int, pp: int, assumptions: Assumptions) -> tuple[float, float]:
    """(weight bytes, 16-bit embedding/LM-head bytes) on the most loaded card of a replica (see `serving_stage_columns`)."""
    body, embed, _ = serving_stage_bytes(model, precision, tp, pp, assumptions)
    return body, embed


def prefill_workspace_bytes(model: ModelSpec, tp: Num, batch: Num, assumptions: Assumptions) -> Num:
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


INFERENCE_TERMS = ("weights", "embeddings_16bit", "kv_cache", "workspace", "reserve")
"""Memory term columns of `inference_memory_columns`, in breakdown order."""


def inference_memory_columns(model: ModelSpec, workload: InferenceWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns) -> Columns:
    """Per-card memory of many serving layouts of one GPU type: one column per term (`INFERENCE_TERMS`), plus
    `expert_bytes` (routed experts within the weights), `kv_bytes_per_token`, `total_bytes` and `capacity_bytes`.

    Weights from `serving_stage_columns` (computed once per pipeline degree), the paged KV
    cache of `batch` sequences of prompt + output tokens (PagedAttention Sec. 3-4.1), the
    prefill workspace and the runtime reserve; capacity is gpu_memory_utilization x the card.
    """
    n = len(cols["tp"])
    body, embed16, experts = np.zeros(n), np.zeros(n), np.zeros(n)
    # MoE data-parallel attention (SGLang --enable-dp-attention): attention and dense layers split by tp / dp and
    # replicated on the dp ranks, routed experts over all tp cards (EP = tp), each DP rank's KV for its batch / dp sequences
    pools = pool_columns(cols)
    dp = pools["attention_dp"]
    attention_tp = cols["tp"] // dp
    for pp in distinct(cols["pp"]):
        rows = cols["pp"] == pp
        b, e, x = serving_stage_columns(model, cols["weight_precision"][rows], attention_tp[rows], int(pp), assumptions)
        body[rows], embed16[rows], experts[rows] = b - x * (1.0 - 1.0 / dp[rows]), e, x / dp[rows]
    kv_token = kv_bytes_per_token_columns(model, cols["kv_precision"], attention_tp, cols["pp"])
    tokens = paged_tokens(workload.prompt_tokens + workload.output_tokens, assumptions.kv_block_tokens)
    per_rank = -(-cols["batch"] // dp)
    out: Columns = {
        "weights": body, "embeddings_16bit": embed16, "kv_cache": kv_token * tokens * per_rank,
        "workspace": prefill_workspace_bytes(model, attention_tp, per_rank, assumptions),
        "reserve": np.full(n, assumptions.runtime_reserve_gib_inference * BYTES_PER_GIB),
        "expert_bytes": experts, "kv_bytes_per_token": kv_token,
    }
    out["total_bytes"] = sum(out[name] for name in INFERENCE_TERMS)
    out["capacity_bytes"] = np.full(n, gpu.memory_bytes * assumptions.gpu_memory_utilization)
    # disaggregated units: the terms above are a decode replica's card; a prefill replica's card must fit too
    out["prefill_total_bytes"] = np.zeros(n)
    split = pools["prefill_replicas"] > 0
    if split.any():
        prefill = prefill_layout_columns(take_columns(cols, split))
        out["prefill_total_bytes"][split] = inference_memory_columns(model, workload, gpu, assumptions, prefill)["total_bytes"]
    return out


def prefill_layout_columns(cols: Columns) -> Columns:
    """The prefill replicas of disaggregated serving rows as colocated layout columns (prefill_tp, prefill_pp,
    prefill_batch as tp, pp, batch; same precisions; one replica each)."""
    pools = pool_columns(cols)
    n = len(cols["tp"])
    return {"weight_precision": cols["weight_precision"], "kv_precision": cols["kv_precision"], "tp": pools["prefill_tp"],
            "pp": pools["prefill_pp"], "batch": pools["prefill_batch"], "replicas": np.ones(n, dtype=np.int64)}


def decode_layout_columns(cols: Columns) -> Columns:
    """The decode replicas of serving rows as colocated layout columns (tp, pp, batch, precisions; one replica each)."""
    return ({k: cols[k] for k in ("weight_precision", "kv_precision", "tp", "pp", "batch")}
            | {"replicas": np.ones(len(cols["tp"]), dtype=np.int64), "attention_dp": pool_columns(cols)["attention_dp"]})


def inference_breakdown_at(model: ModelSpec, workload: InferenceWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns,
                           memory: Columns, i: int) -> MemoryBreakdown:
    """The per-term breakdown, with scaling, sources and notes, of row `i` of `inference_memory_columns`."""
    value = {k: float(v[i]) for k, v in memory.items()}
    precision = WEIGHT_PRECISIONS[int(cols["weight_precision"][i])]
    tokens = paged_tokens(workload.prompt_tokens + workload.output_tokens, assumptions.kv_block_tokens)
    scales = {"int4": f"GPTQ/AWQ group-{assumptions.int4_group_size} scales and zeros", "int8": "per-channel scales",
              "fp8": "128x128 block scales (DeepSeek-V3 Sec. 3.3.2)"}.get(precision.value, "no scales")
    terms = [MemoryTerm(name="weights", bytes=value["weights"], fixed_bytes=value["weights"], scaling="split by TP and PP (experts by EP=TP)",
                        source=f"parameters on the card x bytes per weight ({precision.value}, {scales})")]
    notes = []
    if value["embeddings_16bit"]:
        terms.append(MemoryTerm(name="embeddings_16bit", bytes=value["embeddings_16bit"], fixed_bytes=value["embeddings_16bit"],
                                scaling="split by TP; first/last stage", source="AutoGPTQ/AutoAWQ keep embedding and LM head in 16-bit"))
        notes.append("embedding and LM head kept in 16-bit (assumption quantize_embeddings=false)")
    terms += [
        MemoryTerm(name="kv_cache", bytes=value["kv_cache"], fixed_bytes=value["kv_cache"],
                   scaling=f"x batch x {tokens} tokens (blocks of {assumptions.kv_block_tokens})", source=MLA_KV if model.is_mla else PAGED),
        MemoryTerm(name="workspace", bytes=value["workspace"], fixed_bytes=value["workspace"], scaling="prefill chunk + logits of the batch",
                   source="vLLM profile run (approximation)"),
        MemoryTerm(name="reserve", bytes=value["reserve"], fixed_bytes=value["reserve"], scaling="fixed per card",
                   source="assumptions: runtime_reserve_gib_inference"),
    ]
    dp = int(pool_columns(cols)["attention_dp"][i])
    _, kv_note = kv_heads_per_card(model, int(cols["tp"][i]) // dp)
    if dp > 1:
        notes.append(f"data-parallel attention: attention and dense layers split by TP{int(cols['tp'][i]) // dp} and replicated on {dp} DP "
                     f"ranks, routed experts over EP={int(cols['tp'][i])} cards, KV of {-(-int(cols['batch'][i]) // dp)} sequences per DP rank")
    if kv_note:
        notes.append(kv_note)
    notes.append(f"capacity = {assumptions.gpu_memory_utilization:g} x card memory (gpu_memory_utilization)")
    if value.get("prefill_total_bytes", 0.0) > 0:
        notes.append(f"disaggregated: these terms are a decode replica's card; a prefill replica's card (TP{int(cols['prefill_tp'][i])} "
                     f"PP{int(cols['prefill_pp'][i])}, batch {int(cols['prefill_batch'][i])}) holds {value['prefill_total_bytes'] / BYTES_PER_GIB:,.2f} GiB "
                     f"of {value['capacity_bytes'] / BYTES_PER_GIB:,.2f} GiB")
    return MemoryBreakdown(terms=tuple(terms), capacity_bytes=value["capacity_bytes"], card_bytes=float(gpu.memory_bytes), stage=0, notes=tuple(notes),
                           prefill_total_bytes=value.get("prefill_total_bytes", 0.0))


def inference_memory(
    model: ModelSpec, workload: InferenceWorkload, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions
) -> MemoryBreakdown:
    """Per-card memory of a serving replica with `layout.batch` sequences of prompt+output tokens (one row of the columns)."""
    cols = inference_columns([layout])
    return inference_breakdown_at(model, workload, gpu, assumptions, cols, inference_memory_columns(model, workload, gpu, assumptions, cols), 0)


def max_concurrent_sequences(model: ModelSpec, workload: InferenceWorkload, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions) -> int:
    """Largest batch whose KV cache fits next to the weights, workspace and reserve (0 if none)."""
    probe = inference_memory(model, workload, layout.model_copy(update={"batch": 1}), gpu, assumptions)
    kv_one = probe.term("kv_cache")
    free = probe.capacity_bytes - (probe.total_bytes - kv_one) + 4.0 * model.vocab_size
    best = int(free // (kv_one + 4.0 * model.vocab_size)) if free > 0 else 0
    while best > 0 and inference_memory(model, workload, layout.model_copy(update={"batch": best}), gpu, assumptions).headroom_bytes < 0:
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
