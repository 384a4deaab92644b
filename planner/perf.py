"""Step time, tokens per second and latency of one concrete configuration, over columns of layouts.

Training is planner.speed's calibrated per-kernel model (the only training time model: kernel
classes with size-dependent efficiency fitted by planner.calibrate, α–β hierarchical
collectives, framework overlaps); this module maps the planner's layout columns onto it and
adds the planner-only terms (offload traffic) and the TrainingPerf breakdown. Serving follows
the roofline view of decoding (Pope et al. 2022, 'Efficiently Scaling Transformer Inference',
Sec. 2): each decode step reads the weights and the KV cache, bounded below by compute; its
efficiency factors are assumptions from catalogs/assumptions.yaml.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from planner.catalog import GpuSpec
from planner.errors import InputError
from planner.enums import Checkpointing, Optimizer, TrainingMode, TrainPrecision, WeightPrecision, ZeroStage
from planner.layout import InferenceLayout, TrainingLayout
from planner.memory import (
    TRAIN_PRECISIONS, WEIGHT_PRECISIONS, Columns, Num, decode_layout_columns, distinct, inference_columns, inference_memory_columns,
    kv_bytes_per_token_columns, lora_adapter_params, pool_columns, prefill_layout_columns, serving_stage_columns, serving_unit_gpus,
    state_bytes_total, take_columns, training_columns, where,
)
from planner.modelspec import ModelSpec
from planner.scenario import Assumptions, InferenceWorkload, TrainingWorkload
from planner import speed
from planner.speed import ModelShape, peak_tflops
from planner.units import FLOPS_PER_TFLOP, SECONDS_PER_HOUR

# ---- FLOPs (planner.speed holds the formulas; these read a ModelSpec) -----------------------


def model_shape(model: ModelSpec) -> ModelShape:
    """The dimensions planner.speed reads, from a catalog ModelSpec."""
    return ModelShape.from_spec(model)


def model_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    """Model FLOPs per trained token (MFU numerator): `planner.speed.model_flops_per_token` of the spec's shape."""
    return float(speed.model_flops_per_token(model_shape(model), np.float64(seq_len)))


def hardware_flops_per_token(model: ModelSpec, seq_len: int, checkpointing: Checkpointing | np.ndarray) -> Num:
    """Hardware FLOPs per token (HFU numerator): `planner.speed.hardware_flops_per_token` of the spec's shape."""
    out = speed.hardware_flops_per_token(model_shape(model), np.float64(seq_len), np.asarray(checkpointing))
    return float(out) if np.ndim(out) == 0 else out


# ---- rates ---------------------------------------------------------------------------------


def matmul_ceiling_tflops(gpu: GpuSpec, dtype: str, assumptions: Assumptions) -> float:
    """Achievable matmul throughput when serving: the measured ceiling where the catalog has one, else peak x a fraction.

    Measured ceilings (stas00/ml-engineering, via shared/reference/gpus.csv) are 0.78-0.87 of
    the datasheet for NVIDIA parts and 0.51 for MI300X. A dtype without its own measurement
    takes the card's measured BF16 fraction (kernel maturity is a property of the card's
    software stack), else the `matmul_ceiling_fraction` assumption.
    """
    peak = peak_tflops(gpu, dtype)
    measured = {"bf16": gpu.measured_bf16_matmul_tflops, "fp16": gpu.measured_bf16_matmul_tflops,
                "fp8": gpu.measured_fp8_matmul_tflops if dtype == "fp8" and gpu.supports_fp8 else None}.get(dtype)
    if measured:
        return min(measured, peak)
    bf16_peak = peak_tflops(gpu, "bf16")
    if gpu.measured_bf16_matmul_tflops and bf16_peak:
        return peak * min(1.0, gpu.measured_bf16_matmul_tflops / bf16_peak)
    return peak * assumptions.matmul_ceiling_fraction


def serve_compute_dtype(precision: WeightPrecision, gpu: GpuSpec) -> str:
    """GEMM dtype when serving: fp8 W8A8 on FP8 cards, int8 W8A8 (SmoothQuant), int4 is W4A16 (bf16 GEMMs)."""
    if precision is WeightPrecision.FP8:
        return "fp8" if gpu.supports_fp8 else "bf16"
    if precision is WeightPrecision.INT8:
        return "int8"
    return "bf16"


# ---- communication (serving) -----------------------------------------------------------------


def ring_allreduce_s(message_bytes: Num, ranks: Num, bandwidth_gbps: Num, latency_s: float) -> Num:
    """Ring all-reduce: 2(n-1)/n x bytes over the per-rank bandwidth, plus 2(n-1) latency hops (Patarasuk & Yuan 2009)."""
    return where(ranks <= 1, 0.0, 2.0 * (ranks - 1) / ranks * message_bytes / (bandwidth_gbps * 1e9) + 2 * (ranks - 1) * latency_s)


def allreduce_ring_share(message_bytes: Num, assumptions: Assumptions) -> Num:
    """Share of the ring latency a serving all-reduce of `message_bytes` pays: 0 up to the one-shot size, 1 from the
    custom all-reduce's largest size, linear between (`serving_allreduce_s`)."""
    lo, hi = assumptions.serving_oneshot_max_bytes, max(assumptions.serving_custom_allreduce_max_bytes, assumptions.serving_oneshot_max_bytes + 1.0)
    return np.clip((message_bytes - lo) / (hi - lo), 0.0, 1.0)


def serving_allreduce_s(message_bytes: Num, ranks: Num, bandwidth_gbps: Num, assumptions: Assumptions) -> Num:
    """All-reduce of the serving path: the 2(n-1)/n x bytes volume over the per-rank bandwidth (Patarasuk & Yuan 2009)
    plus a latency that depends on the message size.

    Small messages (decode of modest batches, a few KB per layer) go through a one-shot custom
    kernel, every rank writing its shard to all peers in one round (TensorRT-LLM
    `customAllReduceKernels.cu` ONESHOT; vLLM `custom_all_reduce.cuh` one-stage): one
    `serving_allreduce_latency_s`, not 2(n-1) ring hops. From `serving_oneshot_max_bytes` to
    `serving_custom_allreduce_max_bytes` the latency moves linearly to the NCCL ring's 2(n-1)
    hops of `collective_latency_s`, which larger messages pay (`allreduce_ring_share`).
    """
    ring = 2 * (ranks - 1) * assumptions.collective_latency_s
    one = assumptions.serving_allreduce_latency_s
    latency = one + (ring - one) * allreduce_ring_share(message_bytes, assumptions)
    return where(ranks <= 1, 0.0, 2.0 * (ranks - 1) / ranks * message_bytes / (bandwidth_gbps * 1e9) + latency)


def group_bandwidth_gbps(gpu: GpuSpec, size: Num, stride: Num, gpus_per_node: int, collective: bool = True) -> Num:
    """Per-GPU bandwidth of a serving group of `size` ranks spaced `stride` apart (the inner parallel degrees), GB/s.

    Inside one node: the scale-up link. Across nodes, a ring collective (all-reduce, all-gather,
    reduce-scatter) runs one ring per group member on a node, each over its own NIC, so it gets
    the NIC bandwidth times the members per node, capped by the scale-up link (NCCL's
    multi-node bus bandwidth approaches the node's aggregate NIC rate: nccl-tests PERFORMANCE.md,
    'bus bandwidth'). Point-to-point sends and all-to-all get one NIC per GPU.
    """
    if not collective:
        across = gpu.network_gbps_per_gpu + 0.0 * size
    else:
        members_per_node = np.maximum(1, np.minimum(size, gpus_per_node // stride))
        across = np.minimum(gpu.scaleup_link_gbps, gpu.network_gbps_per_gpu * members_per_node)
    return where(size * stride <= gpus_per_node, gpu.scaleup_link_gbps, across)


# ---- training ------------------------------------------------------------------------------


def speed_catalog(assumptions: Assumptions) -> speed.SpeedCatalog:
    """The speed catalog the evaluator uses: catalogs/efficiency.csv with the shipped calibration
    (catalogs/calibration.yaml) and the scenario's overlay (`assumptions: {file: ...}`) applied."""
    from planner.calibrate import scenario_catalog

    return scenario_catalog(assumptions.file)


class TrainingPerf(BaseModel):
    """Predicted speed of a training layout (the terms of `planner.speed.training_design`)."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    step_time_s: float = Field(description="One optimizer step, seconds.")
    compute_s: float = Field(description="FLOP-bound kernels per step (GEMMs, grouped MoE GEMMs, attention, MoE dispatch), bubble excluded.")
    elementwise_s: float = Field(description="Bandwidth-bound norms, activations, residuals and MoE permutes per step.")
    bubble_s: float = Field(description="Pipeline bubble per step.")
    tp_comm_s: float = Field(description="Tensor-parallel collectives not hidden behind compute.")
    pp_comm_s: float = Field(description="Pipeline point-to-point sends not hidden.")
    cp_comm_s: float = Field(description="Context-parallel (ring attention) KV exchange not hidden.")
    dp_comm_exposed_s: float = Field(description="Data-parallel / ZeRO traffic not hidden behind compute.")
    ep_comm_s: float = Field(description="MoE all-to-all not hidden.")
    optimizer_s: float = Field(description="Optimizer update (memory-bound) and offload traffic.")
    tokens_per_s: float = Field(description="Trained tokens per second, whole job.")
    tokens_per_s_per_gpu: float = Field(description="Per GPU.")
    mfu: float = Field(description="Model FLOPs utilisation vs the BF16 dense peak, whatever the training dtype (PaLM App. B).")
    hfu: float = Field(description="Hardware FLOPs utilisation vs the BF16 dense peak (recomputation counted).")
    time_to_train_s: float = Field(description="Time to train the workload's tokens.")
    gpu_hours: float = Field(description="GPUs x time to train, hours.")


QLORA_FP8_MESSAGE = ("{field}: fp8 is not allowed with workload.mode qlora (bitsandbytes NF4 de-quantises to bf16/fp16 and has "
                     "no FP8 compute path; Dettmers et al. 2023, Sec. 3); allowed: bf16, fp16, fp32")
"""The one message for a QLoRA layout or scenario asking for FP8."""

SPEED_DTYPES = {TrainPrecision.FP32: "fp32", TrainPrecision.BF16: "bf16", TrainPrecision.FP16: "fp16", TrainPrecision.FP8: "fp8"}
"""planner.speed dtype of each training precision policy (fp32 runs on TF32 tensor cores)."""


def speed_layout(workload: TrainingWorkload, assumptions: Assumptions, cols: Columns, optimizer_bytes: np.ndarray) -> dict[str, np.ndarray]:
    """planner.speed layout columns of planner training columns (num_gpus = TP·PP·CP·DP)."""
    tp, pp, dp, cp = cols["tp"], cols["pp"], cols["dp"], cols["cp"]
    ones = np.ones(len(tp))
    return {"num_gpus": (tp * pp * cp * dp).astype(float), "tp": tp, "pp": pp, "cp": cp, "ep": cols["ep"],
            "vp": ones * assumptions.pipeline_interleave_chunks, "micro_batch": cols["micro_batch"],
            "global_batch": (cols["micro_batch"] * cols["grad_accum"] * dp).astype(float), "seq_len": ones * workload.seq_len,
            "recompute": cols["checkpointing"], "fsdp": (cols["zero"] >= ZeroStage.PARAMETERS).astype(float), "zero": cols["zero"],
            "frozen": ones * (workload.mode in (TrainingMode.LORA, TrainingMode.QLORA)), "optimizer_bytes": optimizer_bytes,
            "nf4_base": ones * (workload.mode is TrainingMode.QLORA), "shard_group": cols["zero_group"]}


def training_perf_columns(
    model: ModelSpec, workload: TrainingWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns, gpus_per_node: int | None = None,
) -> Columns:
    """Step time and throughput of many training layouts of one GPU type; one column per `TrainingPerf` field.

    The step is planner.speed's calibrated model (kernel classes with size-dependent efficiency,
    FP8 on linear layers only, α–β hierarchical collectives, framework overlaps), with the
    catalog of `speed_catalog(assumptions)`, evaluated once per (precision, framework) group.
    Planner-only terms added here: offload traffic over the host link (ZeRO-Offload, Ren et al.
    2021, Sec. 4: gradients down and parameters up per step; ZeRO-Infinity, Rajbhandari et al.
    2021, Sec. 5: the parameter shard fetched in every forward and backward).
    """
    if workload.mode is TrainingMode.QLORA and np.any(cols["precision"] == TRAIN_PRECISIONS.index(TrainPrecision.FP8)):
        raise InputError(QLORA_FP8_MESSAGE.format(field="layout.precision"))
    cat = speed_catalog(assumptions)
    shape = model_shape(model)
    tp, pp, dp = cols["tp"], cols["pp"], cols["dp"]
    n = tp * pp * cols["cp"] * dp
    rows = len(tp)
    s, m = workload.seq_len, cols["grad_accum"]
    tokens_per_step = (s * cols["micro_batch"] * m * dp).astype(float)
    lora = workload.mode in (TrainingMode.LORA, TrainingMode.QLORA)
    trained = None
    if lora:
        assert workload.lora is not None
        trained = lora_adapter_params(model, workload.lora)
    # optimizer update traffic: planner.speed's Adam bytes, scaled by this optimizer's state bytes relative to Adam's
    ratio = np.array([state_bytes_total(p, workload.optimizer) / state_bytes_total(p, Optimizer.ADAMW) for p in TRAIN_PRECISIONS])
    lay = speed_layout(workload, assumptions, cols, speed.OPTIMIZER_BYTES_PER_PARAM * ratio[cols["precision"]])
    fw = cols["framework"]
    names = ("compute_s", "elementwise_s", "bubble_s", "tp_comm_s", "pp_comm_s", "cp_comm_s", "dp_comm_exposed_s", "ep_comm_s", "optimizer_s")
    out = {k: np.zeros(rows) for k in names}
    for code in distinct(cols["precision"]):
        for f in distinct(fw):
            sel = (cols["precision"] == code) & (fw == f)
            if not sel.any():
                continue
            sub = {k: np.asarray(v)[sel] for k, v in lay.items()}
            terms = speed.training_design(shape, gpu, SPEED_DTYPES[TRAIN_PRECISIONS[code]], speed.FRAMEWORKS[f], sub, cat, gpus_per_node,
                                          trained)[2]
            compute = sum((terms[k] for k in speed.KERNEL_TERMS), start=np.zeros(int(sel.sum())))
            out["compute_s"][sel] = compute
            out["elementwise_s"][sel] = terms["elementwise_s"]
            out["bubble_s"][sel] = (compute + terms["elementwise_s"]) * terms["bubble_fraction"]
            out["tp_comm_s"][sel] = terms["tp_comm_exposed_s"]
            out["pp_comm_s"][sel] = terms["pp_comm_exposed_s"]
            out["cp_comm_s"][sel] = terms["cp_comm_exposed_s"]
            out["dp_comm_exposed_s"][sel] = terms["dp_comm_exposed_s"]
            out["ep_comm_s"][sel] = terms["ep_comm_exposed_s"]
            out["optimizer_s"][sel] = terms["optimizer_s"]

    routed = shape.moe_layers * shape.experts * shape.mlp_params(shape.moe_ffn)  # split by EP, not TP
    params_on_card = (trained / (tp * pp) if lora else (shape.total_params - routed) / (tp * pp) + routed / (cols["ep"] * pp)) / cols["cp"]
    host = assumptions.host_link_gbps * 1e9
    out["optimizer_s"] = (out["optimizer_s"]
                          + np.where(cols["offload_optimizer"], 4.0 * params_on_card / dp / host, 0.0)  # gradients down, parameters up
                          + np.where(cols["offload_params"], 2.0 * m * 2.0 * params_on_card / dp / host, 0.0))  # shard fetched per fwd and bwd

    step = sum((out[k] for k in names), start=np.zeros(rows))
    frozen = 2.0 * shape.active_linear_params if lora else 0.0  # no weight gradients for frozen weights
    model_flops = (speed.model_flops_per_token(shape, np.float64(s)) - frozen) * tokens_per_step
    hw_flops = (speed.hardware_flops_per_token(shape, np.float64(s), cols["checkpointing"]) - frozen) * tokens_per_step
    peak = speed.peak_tflops(gpu, "bf16") * FLOPS_PER_TFLOP
    tokens_per_s = tokens_per_step / step
    time_to_train = workload.tokens / tokens_per_s
    return {**out, "step_time_s": step, "tokens_per_s": tokens_per_s, "tokens_per_s_per_gpu": tokens_per_s / n,
            "mfu": model_flops / (step * n * peak), "hfu": hw_flops / (step * n * peak), "time_to_train_s": time_to_train,
            "gpu_hours": n * time_to_train / SECONDS_PER_HOUR}


def training_perf_at(perf: Columns, i: int) -> TrainingPerf:
    """Row `i` of `training_perf_columns` as a TrainingPerf."""
    return TrainingPerf(**{name: float(perf[name][i]) for name in TrainingPerf.model_fields})


def training_perf(
    model: ModelSpec, workload: TrainingWorkload, layout: TrainingLayout, gpu: GpuSpec, assumptions: Assumptions,
    gpus_per_node: int | None = None,
) -> TrainingPerf:
    """Step time and throughput of a training layout (one row of `training_perf_columns`)."""
    return training_perf_at(training_perf_columns(model, workload, gpu, assumptions, training_columns([layout]), gpus_per_node), 0)


# ---- inference -----------------------------------------------------------------------------


class InferencePerf(BaseModel):
    """Predicted speed of one serving replica at the load it carries (`planner.serving.steady_state`), with the bare
    decode-step terms as breakdown."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    percentile: int = Field(description="Percentile of the SLO figures (ttft_s, tpot_s): 50, 90 or 99.")
    replicas_needed: int = Field(description="Fewest replicas meeting the load and SLOs (0: not even stable); the replica's load is rate / this.")
    request_rate_rps: float = Field(description="Arrival rate one replica carries (fleet rate / replicas_needed), requests/s.")
    ttft_s: float = Field(description="Time to first token at the SLO percentile under load, seconds.")
    ttft_p50_s: float = Field(description="Median time to first token under load, seconds.")
    tpot_s: float = Field(description="Time per output token (inter-token latency / tokens per step) at the SLO percentile, seconds.")
    tpot_p50_s: float = Field(description="Median time per output token, seconds.")
    tpot_mean_s: float = Field(description="Mean time per output token, seconds.")
    itl_mean_s: float = Field(description="Mean iteration (inter-token) time seen by a decoding sequence, seconds.")
    decode_seqs_in_flight: float = Field(description="Sequences decoding at once (Little's law).")
    output_tokens_per_s: float = Field(description="Output tokens/s of one replica = sequences in flight x tokens per step / ITL.")
    utilisation: float = Field(description="Replica load over the largest stable rate (rho = lambda / mu).")
    decode_step_s: float = Field(description="Breakdown: one bare decode step of a full batch (no prefill, no queueing), seconds.")
    saturated_output_tokens_per_s: float = Field(description="Breakdown: offline max-throughput of a full batch (prefill of the batch, then the decode steps).")
    decode_bound: str = Field(description="memory or compute: what limits a bare decode step.")
    kv_transfer_s: float = Field(default=0.0, description="Disaggregated serving: moving a prompt's KV cache from the prefill to the "
                                 "decode replica (part of ttft_s), seconds; 0 when colocated.")
    prefill_utilisation: float = Field(default=0.0, description="Disaggregated serving: a prefill replica's load over its largest stable "
                                       "rate (utilisation is the larger of the two pools'); 0 when colocated.")


def expected_experts_touched(model: ModelSpec, tokens: Num) -> Num:
    """Distinct routed experts a decode step reads per MoE layer: E(1 - (1 - k/E)^tokens), uniform routing."""
    if not model.is_moe:
        return 0.0 * tokens
    e, k = model.n_routed_experts, model.experts_per_token
    return e * (1.0 - (1.0 - k / e) ** tokens)


def prefill_flops(model: ModelSpec, prompt_tokens: int) -> float:
    """Forward FLOPs of one prompt: 2 N per token (Kaplan et al. 2020, Table 1) plus causal attention L s^2 (q+o).

    The LM head runs for the last prompt token only (serving engines sample from it alone).
    """
    head = model.vocab_size * model.hidden_size
    body = model.matmul_params_per_token - head
    return 2.0 * body * prompt_tokens + 2.0 * head + model.num_layers * prompt_tokens**2 * (model.q_dim + model.o_dim)


def serving_rate_columns(gpu: GpuSpec, weight_codes: np.ndarray, assumptions: Assumptions) -> np.ndarray:
    """Sustained GEMM FLOP/s per row when serving: `matmul_ceiling_tflops` of `serve_compute_dtype` x prefill_kernel_efficiency."""
    table = np.array([matmul_ceiling_tflops(gpu, serve_compute_dtype(p, gpu), assumptions) * assumptions.prefill_kernel_efficiency * FLOPS_PER_TFLOP
                      for p in WEIGHT_PRECISIONS])
    return table[weight_codes]


def decode_step_columns(
    model: ModelSpec, gpu: GpuSpec, assumptions: Assumptions, cols: Columns, memory: Columns, context_tokens: float,
    gpus_per_node: int | None = None,
) -> Columns:
    """One decode step for each replica's batch: max(bytes read / HBM bandwidth, FLOPs / rate) per stage, plus TP all-reduces.

    Bytes read per card: the weights on the card (for MoE only the experts the batch touches)
    and the KV cache of the batch at `context_tokens` (Pope et al. 2022, Sec. 2.2, memory-
    bound decoding). TP adds two all-reduces per layer (Shoeybi et al. 2019, Sec. 3), small-message
    one-shot all-reduces (`serving_allreduce_s`); the engine adds `engine_overhead_s` per step. PP
    stages run one after another for a given token. `memory` supplies the weight, expert and
    KV-per-token columns of `inference_memory_columns`. Output: decode_step_s, decode_memory_s,
    decode_compute_s (per stage).
    """
    node = gpus_per_node or gpu.gpus_per_node
    tp, pp, b = cols["tp"], cols["pp"], cols["batch"]
    weights = memory["weights"] + memory["embeddings_16bit"]
    if model.is_moe:
        weights = weights - memory["expert_bytes"] * (1.0 - expected_experts_touched(model, b) / model.n_routed_experts)
    kv = memory["kv_bytes_per_token"] * context_tokens * b
    t_mem = (weights + kv) / (gpu.hbm_bandwidth_gbps * 1e9 * assumptions.decode_hbm_efficiency)
    rate = serving_rate_columns(gpu, cols["weight_precision"], assumptions)
    flops = 2.0 * model.matmul_params_per_token * b / (tp * pp)
    flops = flops + 2.0 * model.num_layers * context_tokens * b * (model.q_dim + model.o_dim) / (tp * pp)
    t_compute = flops / rate
    layers_per_stage = -(-model.num_layers // pp)
    bw = group_bandwidth_gbps(gpu, tp, 1, node)
    tp_comm = layers_per_stage * 2 * serving_allreduce_s(2.0 * b * model.hidden_size, tp, bw, assumptions)
    stage = np.maximum(t_mem, t_compute) + tp_comm + assumptions.engine_overhead_s / pp
    return {"decode_step_s": stage * pp, "decode_memory_s": t_mem, "decode_compute_s": t_compute}


def prefill_columns(model: ModelSpec, gpu: GpuSpec, assumptions: Assumptions, cols: Columns, prompt_tokens: int, requests: Num) -> np.ndarray:
    """Prefill time of `requests` prompts on one replica: compute-bound, FLOPs / (TP x sustained rate)."""
    return requests * prefill_flops(model, prompt_tokens) / (cols["tp"] * serving_rate_columns(gpu, cols["weight_precision"], assumptions))


def serving_cost_columns(model: ModelSpec, workload: InferenceWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns,
                         memory: Columns, gpus_per_node: int | None = None):  # -> serving.IterationCost
    """The `serving.IterationCost` columns of serving layouts, from their memory columns: the one per-iteration cost.

    Each replica runs at most `batch` sequences (vLLM max_num_seqs) with KV reserved for batch x
    (prompt + output) tokens, what `inference_memory_columns` sized the card for.
    """
    from planner.serving import iteration_cost_columns

    node = gpus_per_node or gpu.gpus_per_node
    tp, pp, b = cols["tp"], cols["pp"], cols["batch"]
    dp = pool_columns(cols)["attention_dp"]
    attention_tp = tp // dp
    assert workload.prompt_tokens is not None and workload.output_tokens is not None
    cost = iteration_cost_columns(
        model, assumptions, tp=attention_tp, pp=pp, weight_bytes_per_card=memory["weights"] + memory["embeddings_16bit"],
        expert_bytes_per_card=memory["expert_bytes"] if model.is_moe else 0.0, kv_bytes_per_token_per_card=memory["kv_bytes_per_token"],
        hbm_gbps=gpu.hbm_bandwidth_gbps, matmul_flops_per_s=serving_rate_columns(gpu, cols["weight_precision"], assumptions),
        tp_link_gbps=group_bandwidth_gbps(gpu, attention_tp, 1, node), pp_link_gbps=group_bandwidth_gbps(gpu, pp, tp, node, collective=False),
        kv_capacity_tokens=b * (workload.prompt_tokens + workload.output_tokens) * (1.0 + 1e-9), max_sequences=b,
    )
    if not (dp > 1).any():
        return cost
    return moe_dp_attention_cost(model, gpu, assumptions, cost, dp, tp, node)


def moe_dp_attention_cost(model: ModelSpec, gpu: GpuSpec, assumptions: Assumptions, cost, dp: np.ndarray, ep: np.ndarray,
                          gpus_per_node: int):  # -> serving.IterationCost
    """`serving.IterationCost` columns of replicas with data-parallel attention (dp > 1 rows) from the TP-attention columns
    of `iteration_cost_columns` at attention TP = tp / dp: the formulas of `serving.moe_iteration_cost` over columns (equal
    to it, tested). The replica's batch is spread over its dp ranks, so per card the matmul and attention FLOPs, the KV
    read and the TP all-reduce traffic of a token are 1/dp of an attention-TP group's; the prefill chunk budget and the
    one-shot all-reduce limit grow dp-fold (each DP rank runs its own); each MoE layer adds a dispatch and a combine
    all-to-all of k x h elements per token over the EP = tp cards ((ep-1)/ep leaving the card; NVLink within a node,
    one NIC per GPU across nodes, `group_bandwidth_gbps`) and their latency (DeepEP; DeepSeek-V3 report Sec. 3.4)."""
    from dataclasses import replace

    from planner.serving import moe_all_to_all

    on = dp > 1
    scale = np.where(on, 1.0 / dp, 1.0)
    link = group_bandwidth_gbps(gpu, ep, 1, gpus_per_node, collective=False) * 1e9
    a2a_lat, a2a_tok = (np.where(on, v, 0.0) for v in moe_all_to_all(model, assumptions, ep, link))
    growth = np.where(on, dp, 1.0)
    return replace(
        cost, fixed_s=cost.fixed_s + a2a_lat, compute_s_per_token=cost.compute_s_per_token * scale,
        attention_s_per_context_token=cost.attention_s_per_context_token * scale,
        kv_read_s_per_context_token=cost.kv_read_s_per_context_token * scale,
        comm_s_per_token=cost.comm_s_per_token * scale + a2a_tok,
        large_message_tokens=cost.large_message_tokens * growth, ring_message_tokens=cost.ring_message_tokens * growth,
        chunk_tokens=cost.chunk_tokens * growth,
    )


MAX_REPLICAS = 4096
"""Most replicas of one layout the serving model considers (`serving.replicas_needed`)."""


def inference_perf_columns(
    model: ModelSpec, workload: InferenceWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns, memory: Columns,
    gpus_per_node: int | None = None,
) -> Columns:
    """Load-aware serving figures of many replica layouts; one column per `InferencePerf` field (decode_bound as a
    boolean column `decode_memory_bound`), plus the bare decode-step components.

    The fleet's arrival rate comes from the workload (`InferenceWorkload.resolved_traffic`); a
    closed loop of N users is turned into a rate per layout (ceil(N / usable slots) replicas,
    each holding its users: `serving.rate_for_concurrency`, Little 1961). `serving.replicas_needed`
    gives the fewest replicas meeting the SLOs at their percentile (or, when none can, the
    fewest that are stable, with the figures at MAX_REPLICAS: the best the layout reaches);
    each replica carries rate / replicas and its TTFT, ITL, sequences in flight and
    throughput are `serving.steady_state` there (continuous batching with chunked prefill:
    Yu et al. 2022 Orca; Agrawal et al. 2024 Sarathi-Serve). Throughput = sequences in flight
    x tokens per step / mean ITL exactly. Breakdown: the bare decode step of a full batch
    (`decode_step_columns`) and the offline max-throughput of a full batch (one prefill of the
    batch and `output_tokens` steps at the mean context; Kwon et al. 2023, Sec. 6).
    """
    split = pool_columns(cols)["prefill_replicas"] > 0
    if split.any():
        parts = [(rows, (disaggregated_perf_columns if disagg else inference_perf_columns)(
            model, workload, gpu, assumptions, take_columns(cols, rows), take_columns(memory, rows), gpus_per_node))
            for rows, disagg in ((~split, False), (split, True)) if rows.any()]
        out = {}
        for name, column in parts[0][1].items():
            out[name] = np.zeros(len(split), dtype=column.dtype)
            for rows, part in parts:
                out[name][rows] = part[name]
        return out
    from planner import serving

    traffic = workload.resolved_traffic()
    slo = traffic.slo
    p_mean, o_mean = traffic.prompt.mean_tokens(), traffic.output.mean_tokens()
    kwargs = steady_state_options(model, workload)
    cost = serving_cost_columns(model, workload, gpu, assumptions, cols, memory, gpus_per_node)
    b = cols["batch"].astype(float)
    capacity = serving.max_rate_rps(cost, p_mean, o_mean, iterations=16, **kwargs)
    if traffic.request_rate_rps is not None:
        rate = np.full(len(b), traffic.request_rate_rps)
        floor = np.ones(len(b))
    else:
        assert traffic.concurrency is not None
        usable = serving.slot_capacity(b)  # users a replica of b slots holds with the slot margin of `serving.steady_state`
        floor = np.ceil(traffic.concurrency / usable)
        rate = np.nan_to_num(serving.rate_for_concurrency(cost, traffic.concurrency / floor, p_mean, o_mean, iterations=24,
                                                          max_rate=capacity, **kwargs) * floor, nan=0.0)
    rate = np.maximum(rate, 1e-12)
    # stability alone: ceil(rate / capacity), one more where the bisected capacity sits a hair above the true one
    with np.errstate(divide="ignore", invalid="ignore"):
        k_stable = np.where(capacity > 0, np.ceil(rate / capacity), 0.0)
    k_stable = np.where((k_stable > 0) & (k_stable <= MAX_REPLICAS), k_stable, 0.0)
    stable = serving.steady_state(cost, rate / np.maximum(k_stable, 1.0), p_mean, o_mean, percentiles=False, **kwargs).feasible
    k_stable = np.where((k_stable > 0) & ~stable & (k_stable < MAX_REPLICAS), k_stable + 1, k_stable).astype(np.int64)
    k_slo = serving.replicas_needed(cost, rate, p_mean, o_mean, percentile=slo.percentile, ttft_slo_s=slo.ttft_s, tpot_slo_s=slo.tpot_s,
                                    max_replicas=MAX_REPLICAS, at_least=np.maximum(k_stable, 1), **kwargs)
    reachable = k_slo > 0
    replicas = np.where(reachable, np.maximum(k_slo, floor), np.where(k_stable > 0, np.maximum(k_stable, floor), 0)).astype(np.int64)
    per_replica = rate / np.where(reachable, np.maximum(k_slo, floor), MAX_REPLICAS)
    state = serving.steady_state(cost, per_replica, p_mean, o_mean, **kwargs)
    tau = traffic.tokens_per_step
    p, o = workload.prompt_tokens, workload.output_tokens
    assert p is not None and o is not None
    decode = decode_step_columns(model, gpu, assumptions, cols, memory, p + o / 2.0, gpus_per_node)
    dp = pool_columns(cols)["attention_dp"]
    if (dp > 1).any():  # data-parallel attention: the bare decode step is the iteration cost's decode-only iteration
        on, ctx = dp > 1, b * (p + o / 2.0)
        _, memory_s, compute_s = serving.stage_terms(cost, b, ctx, 0.0)
        decode = {"decode_step_s": np.where(on, serving.iteration_time_s(cost, b, ctx, 0.0), decode["decode_step_s"]),
                  "decode_memory_s": np.where(on, memory_s, decode["decode_memory_s"]),
                  "decode_compute_s": np.where(on, compute_s, decode["decode_compute_s"])}
    cycle = prefill_columns(model, gpu, assumptions, cols, p, cols["batch"]) + o * decode["decode_step_s"]
    pct = slo.percentile
    return {**decode, "percentile": np.full(len(b), pct), "replicas_needed": replicas, "request_rate_rps": per_replica,
            "ttft_s": getattr(state, f"ttft_p{pct}_s"), "ttft_p50_s": state.ttft_p50_s,
            "tpot_s": getattr(state, f"itl_p{pct}_s") / tau, "tpot_p50_s": state.itl_p50_s / tau, "tpot_mean_s": state.tpot_mean_s,
            "itl_mean_s": state.itl_mean_s, "decode_seqs_in_flight": state.decode_seqs_in_flight,
            "output_tokens_per_s": state.decode_seqs_in_flight * tau / state.itl_mean_s,
            "utilisation": per_replica / np.where(capacity > 0, capacity, np.nan),
            "saturated_output_tokens_per_s": cols["batch"] * o / cycle,
            "decode_memory_bound": decode["decode_memory_s"] >= decode["decode_compute_s"],
            "kv_transfer_s": np.zeros(len(b)), "prefill_utilisation": np.zeros(len(b))}


# ---- disaggregated prefill and decode pools ----------------------------------------------------


def kv_transfer_link_gbps(gpu: GpuSpec, cols: Columns, gpus_per_node: int) -> np.ndarray:
    """Per-GPU bandwidth that carries a prompt's KV cache from a prefill to a decode replica, GB/s.

    The scale-up link when the whole disaggregated unit (every prefill and decode replica) fits in
    one node (DistServe, Zhong et al. 2024, Sec. 4.3: placement keeps the transfer on NVLink);
    otherwise one NIC per GPU (`GpuSpec.network_gbps_per_gpu`), each card sending its own shard.
    """
    return np.where(serving_unit_gpus(cols) <= gpus_per_node, gpu.scaleup_link_gbps, gpu.network_gbps_per_gpu)


def pool_costs(model: ModelSpec, workload: InferenceWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns, memory: Columns,
               gpus_per_node: int | None = None):  # -> tuple[serving.IterationCost, serving.IterationCost, np.ndarray]
    """(prefill replica cost, decode replica cost, KV transfer seconds) of disaggregated serving rows: the one place that
    turns a unit's layout columns into what `disaggregated_perf_columns` and the pool sizing read.

    `memory` holds the decode replica's memory columns (the table's); the prefill replica's are
    `inference_memory_columns` of `memory.prefill_layout_columns`. KV transfer: the prompt's KV,
    the larger of the two cards' shards (`kv_bytes_per_token` per card), over `kv_transfer_link_gbps`
    (`serving.kv_transfer_s`; not overlapped with the prefill: conservative, DistServe Sec. 4.3).
    """
    from planner import serving

    node = gpus_per_node or gpu.gpus_per_node
    pcols = prefill_layout_columns(cols)
    pmem = inference_memory_columns(model, workload, gpu, assumptions, pcols)
    dcols = decode_layout_columns(cols)
    pcost = prefill_cost_columns(model, workload, gpu, assumptions, pcols, pmem, node)
    dcost = serving_cost_columns(model, workload, gpu, assumptions, dcols, memory, node)
    prompt = workload.resolved_traffic().prompt.mean_tokens()
    move = serving.kv_transfer_s(prompt, np.maximum(pmem["kv_bytes_per_token"], memory["kv_bytes_per_token"]),
                                 kv_transfer_link_gbps(gpu, cols, node))
    return pcost, dcost, move


def prefill_cost_columns(model: ModelSpec, workload: InferenceWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns,
                         memory: Columns, gpus_per_node: int | None = None):  # -> serving.IterationCost
    """`serving_cost_columns` of replicas that run prompts only: one prompt per iteration, the chunk budget min(C, P).

    DistServe (Zhong et al. 2024, Sec. 4.1): batching prompts beyond the length that saturates
    the GPU adds no throughput and delays every prompt in the batch; a prompt's prefill is
    compute-bound, so the prefill engine takes one at a time (`serving.prefill_only_state`).
    """
    from dataclasses import replace

    cost = serving_cost_columns(model, workload, gpu, assumptions, cols, memory, gpus_per_node)
    prompt = workload.resolved_traffic().prompt.mean_tokens()
    return replace(cost, chunk_tokens=np.maximum(np.minimum(cost.chunk_tokens, prompt), 1.0))


def disaggregated_perf_columns(
    model: ModelSpec, workload: InferenceWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns, memory: Columns,
    gpus_per_node: int | None = None,
) -> Columns:
    """Load-aware figures of disaggregated serving units (x prefill + y decode replicas, `InferenceLayout.prefill_replicas`,
    `decode_replicas`), one column per `InferencePerf` field, as `inference_perf_columns` gives for colocated replicas.

    DistServe (Zhong et al. 2024, OSDI, Sec. 3-4) and Splitwise (Patel et al. 2024, ISCA, Sec. 4):
    prefill replicas run prompts only, one at a time, each at rate / x (`serving.prefill_only_state`:
    an M/D/1 queue, `prefill_cost_columns`); the KV cache then moves to a decode replica
    (`pool_costs`); decode replicas, each at rate / y, run decode-only iterations (no prefill
    chunk inflates the ITL: `serving.decode_only_state`). TTFT =
    the prefill replica's TTFT + transfer; TPOT = the decode replica's ITL / tokens per step.
    A unit carries the workload's whole rate: replicas_needed is 1 when both pools are stable,
    0 when not (the SLOs are the solver's limits, as for colocated rows). Throughput = decode
    sequences in flight over all y replicas x tokens per step / mean ITL. Breakdown: the
    decode replica's bare decode step; saturated throughput = y x batch x tokens per step /
    decode step (prompts are prefilled elsewhere). Request-rate loads only (a closed loop of
    users is searched colocated).
    """
    from planner import serving

    traffic = workload.resolved_traffic()
    assert traffic.request_rate_rps is not None, "disaggregated pools are sized for a request rate"
    pct, tau = traffic.slo.percentile, traffic.tokens_per_step
    p_mean, o_mean = traffic.prompt.mean_tokens(), traffic.output.mean_tokens()
    pools = pool_columns(cols)
    x, y = pools["prefill_replicas"].astype(float), pools["decode_replicas"].astype(float)
    pcost, dcost, move = pool_costs(model, workload, gpu, assumptions, cols, memory, gpus_per_node)
    rate = np.full(len(x), traffic.request_rate_rps)
    pre_kwargs, dec_kwargs = pool_options(model, workload)
    state = serving.disaggregated_state(pcost, dcost, rate, p_mean, o_mean, x, y, move, **pre_kwargs, **dec_kwargs)
    dec = state.decode
    p_cap = serving.prefill_max_rate_rps(pcost, p_mean, iterations=8, **pre_kwargs)
    d_cap = serving.decode_max_rate_rps(dcost, p_mean, o_mean, iterations=8, **dec_kwargs)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_util = rate / x / np.where(p_cap > 0, p_cap, np.nan)
        d_util = rate / y / np.where(d_cap > 0, d_cap, np.nan)
    feasible = state.feasible
    seqs = y * dec.decode_seqs_in_flight
    decode = decode_step_columns(model, gpu, assumptions, decode_layout_columns(cols), memory, p_mean + o_mean / 2.0, gpus_per_node)
    return {**decode, "percentile": np.full(len(x), pct), "replicas_needed": feasible.astype(np.int64), "request_rate_rps": rate,
            "ttft_s": getattr(state, f"ttft_p{pct}_s"), "ttft_p50_s": state.ttft_p50_s,
            "tpot_s": getattr(dec, f"itl_p{pct}_s") / tau, "tpot_p50_s": dec.itl_p50_s / tau, "tpot_mean_s": dec.tpot_mean_s,
            "itl_mean_s": dec.itl_mean_s, "decode_seqs_in_flight": seqs, "output_tokens_per_s": seqs * tau / dec.itl_mean_s,
            "utilisation": np.fmax(p_util, d_util), "saturated_output_tokens_per_s": y * cols["batch"] * tau / decode["decode_step_s"],
            "decode_memory_bound": decode["decode_memory_s"] >= decode["decode_compute_s"], "kv_transfer_s": move,
            "prefill_utilisation": p_util}


def steady_state_options(model: ModelSpec, workload: InferenceWorkload) -> dict:
    """The workload's traffic terms of `serving.steady_state` (length moments and nodes, prefix hits, speculation): what
    the evaluator scores replicas with and `planner simulate` compares the simulator against."""
    traffic = workload.resolved_traffic()
    return dict(prompt_second_moment=traffic.prompt.second_moment(), prefix_hit_rate=traffic.prefix_cache_hit_rate,
                tokens_per_step=traffic.tokens_per_step, verify_tokens=traffic.verify_tokens, prompt_lengths=prompt_quadrature(model, workload))


def pool_options(model: ModelSpec, workload: InferenceWorkload) -> tuple[dict, dict]:
    """`steady_state_options` split between a disaggregated unit's pools: (prefill replicas: prefix hits and the
    prompt-length nodes; decode replicas: speculation)."""
    spec = steady_state_options(model, workload)
    return {k: spec[k] for k in ("prefix_hit_rate", "prompt_lengths")}, {k: spec[k] for k in ("tokens_per_step", "verify_tokens")}


def prompt_quadrature(model: ModelSpec, workload: InferenceWorkload):  # -> serving.Lengths
    """The prompt-length distribution's quadrature nodes up to the model's context window (`TokenLengths.quadrature`):
    what a prefill pool's M/G/1 queue averages its service over (`serving.prefill_only_state`)."""
    return workload.resolved_traffic().prompt.quadrature(max_tokens=model.max_position_embeddings)


def size_disaggregated_pools(model: ModelSpec, workload: InferenceWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns,
                             memory: Columns, gpus_per_node: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fewest prefill replicas x and decode replicas y per disaggregated unit (columns; 0 where none up to MAX_REPLICAS):
    `serving.pool_replicas_needed` on the costs of `pool_costs`, the same the evaluator scores the unit with."""
    from planner import serving

    traffic = workload.resolved_traffic()
    assert traffic.request_rate_rps is not None, "disaggregated pools are sized for a request rate"
    pcost, dcost, move = pool_costs(model, workload, gpu, assumptions, cols, memory, gpus_per_node)
    pre_kwargs, dec_kwargs = pool_options(model, workload)
    return serving.pool_replicas_needed(
        pcost, dcost, traffic.request_rate_rps, traffic.prompt.mean_tokens(), traffic.output.mean_tokens(), move,
        percentile=traffic.slo.percentile, ttft_slo_s=traffic.slo.ttft_s, tpot_slo_s=traffic.slo.tpot_s, max_replicas=MAX_REPLICAS,
        **pre_kwargs, **dec_kwargs)


PERF_INT_FIELDS = ("percentile", "replicas_needed")


def inference_perf_at(perf: Columns, i: int) -> InferencePerf:
    """Row `i` of `inference_perf_columns` as an InferencePerf."""
    values = {name: (int(perf[name][i]) if name in PERF_INT_FIELDS else float(perf[name][i]))
              for name in InferencePerf.model_fields if name != "decode_bound"}
    return InferencePerf(**values, decode_bound="memory" if perf["decode_memory_bound"][i] else "compute")


def decode_step_s(
    model: ModelSpec, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions, context_tokens: float,
    gpus_per_node: int | None = None,
) -> tuple[float, str]:
    """One decode step of one layout at `context_tokens` (`decode_step_columns`), and what bounds it."""
    cols = inference_columns([layout])
    memory = _weights_only_memory(model, gpu, assumptions, cols)
    out = decode_step_columns(model, gpu, assumptions, cols, memory, context_tokens, gpus_per_node)
    return float(out["decode_step_s"][0]), ("memory" if out["decode_memory_s"][0] >= out["decode_compute_s"][0] else "compute")


def _weights_only_memory(model: ModelSpec, gpu: GpuSpec, assumptions: Assumptions, cols: Columns) -> Columns:
    """The memory columns a decode step reads, for callers without a workload (KV per token, weights, experts)."""
    body, embed, experts = serving_stage_columns(model, cols["weight_precision"], cols["tp"], int(cols["pp"][0]), assumptions)
    return {"weights": body, "embeddings_16bit": embed, "expert_bytes": experts,
            "kv_bytes_per_token": kv_bytes_per_token_columns(model, cols["kv_precision"], cols["tp"], cols["pp"])}


def prefill_s(model: ModelSpec, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions, prompt_tokens: int, requests: int) -> float:
    """Prefill time of `requests` prompts on one replica (`prefill_columns`)."""
    return float(prefill_columns(model, gpu, assumptions, inference_columns([layout]), prompt_tokens, requests)[0])


def serving_cost(model: ModelSpec, workload: InferenceWorkload, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions,
                 gpus_per_node: int | None = None):  # -> serving.IterationCost
    """The per-iteration cost of one serving layout, exactly as the evaluator uses it (`serving_cost_columns`), as floats:
    what the simulator replays a plan with."""
    cols = inference_columns([layout])
    memory = inference_memory_columns(model, workload, gpu, assumptions, cols)
    return serving_cost_columns(model, workload, gpu, assumptions, cols, memory, gpus_per_node).take(0)


def serving_pool_costs(model: ModelSpec, workload: InferenceWorkload, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions,
                       gpus_per_node: int | None = None):  # -> tuple[serving.IterationCost, serving.IterationCost, float]
    """(prefill replica cost, decode replica cost, KV transfer s) of one disaggregated layout, exactly as the evaluator
    uses them (`pool_costs`), as floats: what the simulator replays a disaggregated plan with."""
    cols = inference_columns([layout])
    memory = inference_memory_columns(model, workload, gpu, assumptions, cols)
    pcost, dcost, move = pool_costs(model, workload, gpu, assumptions, cols, memory, gpus_per_node)
    return pcost.take(0), dcost.take(0), float(move[0])


def inference_perf(
    model: ModelSpec, workload: InferenceWorkload, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions,
    gpus_per_node: int | None = None,
) -> InferencePerf:
    """TTFT, TPOT and steady-state throughput of one replica serving `layout.batch` sequences (one row of the columns)."""
    cols = inference_columns([layout])
    memory = inference_memory_columns(model, workload, gpu, assumptions, cols)
    return inference_perf_at(inference_perf_columns(model, workload, gpu, assumptions, cols, memory, gpus_per_node), 0)
