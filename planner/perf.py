"""Step time, tokens per second and latency of one concrete configuration.

Training follows the FLOP accounting of Narayanan et al. 2021 (arXiv:2104.04473, Eq. 3) and
Korthikanti et al. 2022 (Sec. 6.3: model vs hardware FLOPs), the 1F1B pipeline bubble
(p-1)/(v*m) (Narayanan Sec. 2.2), ring all-reduce volume 2(n-1)/n (Patarasuk & Yuan 2009)
and the ZeRO communication volumes (Rajbhandari et al. 2020, Sec. 7). Serving follows the
roofline view of decoding (Pope et al. 2022, 'Efficiently Scaling Transformer Inference',
Sec. 2): each decode step reads the weights and the KV cache, bounded below by compute.
Every efficiency factor is an assumption from catalogs/assumptions.yaml, stated, never fitted
per case.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from planner.catalog import GpuSpec
from planner.enums import Checkpointing, TrainingMode, TrainPrecision, WeightPrecision, ZeroStage
from planner.layout import InferenceLayout, TrainingLayout
from planner.memory import (
    TRAIN_PRECISIONS, WEIGHT_PRECISIONS, Columns, Flag, Num, activation_bytes_per_layer, inference_columns, inference_memory_columns,
    kv_bytes_per_token_columns, lora_adapter_params, serving_stage_columns, stage_layer_ranges, stage_params, state_bytes_total,
    training_columns, where,
)
from planner.modelspec import ModelSpec
from planner.scenario import Assumptions, InferenceWorkload, TrainingWorkload
from planner.units import FLOPS_PER_TFLOP

# ---- FLOPs ---------------------------------------------------------------------------------


def attention_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    """Forward+backward FLOPs of the attention scores and their product with V, per token.

    PaLM (Chowdhery et al. 2022) Appendix B: 12 * L * H * Q * T for MHA, i.e. 6 * L * s *
    (q_dim + o_dim); Narayanan et al. Eq. 3 has 16BLs^2h because it includes the recomputed
    forward (12 without it). Causal masking is not
    discounted, as in the MFU convention of both papers and llm-foundry.
    """
    return 6.0 * model.num_layers * seq_len * (model.q_dim + model.o_dim)


def model_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    """Model FLOPs per trained token: 6 N + attention (Kaplan et al. 2020 Sec. 2.1; PaLM App. B).

    N = parameters in matmuls per token (active parameters for MoE, input embedding excluded).
    This is the MFU numerator; recomputation is not counted.
    """
    return 6.0 * model.matmul_params_per_token + attention_flops_per_token(model, seq_len)


def hardware_flops_per_token(model: ModelSpec, seq_len: int, checkpointing: Checkpointing | np.ndarray) -> Num:
    """Hardware FLOPs per token: model FLOPs plus recomputation (Korthikanti Sec. 6.3, HFU).

    Full recomputation repeats the forward pass (+2N + 1/3 of attention); selective
    recomputation repeats only the attention core's forward (1/3 of the attention term).
    """
    base = model_flops_per_token(model, seq_len)
    attention = attention_flops_per_token(model, seq_len)
    return where(checkpointing == Checkpointing.FULL, base + 2.0 * model.matmul_params_per_token + attention / 3.0,
                 where(checkpointing == Checkpointing.SELECTIVE, base + attention / 3.0, base))


# ---- rates ---------------------------------------------------------------------------------


def peak_tflops(gpu: GpuSpec, dtype: str) -> float:
    """Datasheet dense tensor throughput for a compute dtype (bf16, fp16, fp8, int8, tf32).

    TF32 is taken as half the BF16 rate (A100: 156 vs 312; H100: 494.5 vs 989, NVIDIA
    datasheets). Cards without the dtype fall back to BF16 (weights are upcast).
    """
    bf16 = gpu.bf16_dense_tflops or gpu.fp16_dense_tflops or 0.0
    table = {
        "bf16": bf16,
        "fp16": gpu.fp16_dense_tflops or bf16,
        "fp8": gpu.fp8_dense_tflops if (gpu.supports_fp8 and gpu.fp8_dense_tflops) else bf16,
        "int8": gpu.int8_dense_tops or bf16,
        "tf32": bf16 / 2.0,
    }
    return table[dtype]


def matmul_ceiling_tflops(gpu: GpuSpec, dtype: str, assumptions: Assumptions) -> float:
    """Achievable matmul throughput: the measured ceiling where the catalog has one, else peak x a fraction.

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


def train_compute_dtype(precision: TrainPrecision) -> str:
    """GEMM dtype of a training precision policy (fp32 training uses TF32 tensor cores)."""
    return {TrainPrecision.FP32: "tf32", TrainPrecision.BF16: "bf16", TrainPrecision.FP16: "fp16", TrainPrecision.FP8: "fp8"}[precision]


def serve_compute_dtype(precision: WeightPrecision, gpu: GpuSpec) -> str:
    """GEMM dtype when serving: fp8 W8A8 on FP8 cards, int8 W8A8 (SmoothQuant), int4 is W4A16 (bf16 GEMMs)."""
    if precision is WeightPrecision.FP8:
        return "fp8" if gpu.supports_fp8 else "bf16"
    if precision is WeightPrecision.INT8:
        return "int8"
    return "bf16"


# ---- communication -------------------------------------------------------------------------


def ring_allreduce_s(message_bytes: Num, ranks: Num, bandwidth_gbps: Num, latency_s: float) -> Num:
    """Ring all-reduce: 2(n-1)/n x bytes over the per-rank bandwidth, plus 2(n-1) latency hops (Patarasuk & Yuan 2009)."""
    return where(ranks <= 1, 0.0, 2.0 * (ranks - 1) / ranks * message_bytes / (bandwidth_gbps * 1e9) + 2 * (ranks - 1) * latency_s)


def group_bandwidth_gbps(gpu: GpuSpec, size: Num, stride: Num, gpus_per_node: int, collective: bool = True) -> Num:
    """Per-GPU bandwidth of a group of `size` ranks spaced `stride` apart (the inner parallel degrees), GB/s.

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


def stage_imbalance(num_layers: int, pp: Num) -> Num:
    """How much slower the slowest pipeline stage is than an even split: ceil(L/p) x p / L (1 when p divides L)."""
    return -(-num_layers // pp) * pp / num_layers


def dp_volume_factor(zero: Num, micro_batches: Num) -> Num:
    """Data-parallel traffic per step in units of (d-1)/d x the gradient bytes on a card.

    Plain DP and ZeRO-1 all-reduce (or reduce-scatter + all-gather) once per step: 2
    (Rajbhandari et al. 2020, Sec. 7.1). ZeRO-2 reduce-scatters the gradients after every
    micro-batch's backward (partitioned gradients cannot accumulate locally; DeepSpeed issue
    #2252) and all-gathers the parameters once: m + 1. ZeRO-3 all-gathers the parameters in
    each forward and backward and reduce-scatters the gradients, every micro-batch: 3m
    (Sec. 7.2.2: 1.5x plain DP per micro-batch).
    """
    return where(zero >= ZeroStage.PARAMETERS, 3.0 * micro_batches, where(zero >= ZeroStage.GRADIENTS, micro_batches + 1.0, 2.0))


def elementwise_s(
    model: ModelSpec, seq_len: int, tokens_per_replica: Num, tp: Num, pp: Num, sequence_parallel: Flag, gpu: GpuSpec,
    assumptions: Assumptions,
) -> Num:
    """Bandwidth-bound (non-GEMM) time per step: HBM traffic over the activations each layer stores.

    The stored activations of Korthikanti Table 2 are the outputs of norms, activation
    functions, dropout and residual adds, kernels that are memory-bound (roofline, Williams et
    al. 2009); each is written and read `activation_traffic_factor` times per step. This is
    what makes small models reach a lower MFU than large ones at equal GEMM efficiency.
    """
    per_token_layer = activation_bytes_per_layer(
        model, seq_len, 1, tp, sequence_parallel & (tp > 1), Checkpointing.NONE, True, False,
    ) / seq_len
    layers = -(-model.num_layers // pp)
    traffic = assumptions.activation_traffic_factor * per_token_layer * layers * tokens_per_replica
    return traffic / (gpu.hbm_bandwidth_gbps * 1e9 * assumptions.decode_hbm_efficiency)


class TrainingPerf(BaseModel):
    """Predicted speed of a training layout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_time_s: float = Field(description="One optimizer step, seconds.")
    compute_s: float = Field(description="GEMM-bound compute per step, bubble excluded.")
    elementwise_s: float = Field(description="Bandwidth-bound norms, activations and residuals per step.")
    bubble_s: float = Field(description="Pipeline bubble per step.")
    tp_comm_s: float = Field(description="Tensor-parallel all-reduces (not overlapped).")
    pp_comm_s: float = Field(description="Pipeline point-to-point sends.")
    dp_comm_exposed_s: float = Field(description="Data-parallel / ZeRO traffic not hidden behind compute.")
    ep_comm_s: float = Field(description="MoE all-to-all.")
    optimizer_s: float = Field(description="Optimizer update (memory-bound) and offload traffic.")
    tokens_per_s: float = Field(description="Trained tokens per second, whole job.")
    tokens_per_s_per_gpu: float = Field(description="Per GPU.")
    mfu: float = Field(description="Model FLOPs utilisation vs the dense peak of the compute dtype.")
    hfu: float = Field(description="Hardware FLOPs utilisation (recomputation counted).")
    time_to_train_s: float = Field(description="Time to train the workload's tokens.")
    gpu_hours: float = Field(description="GPUs x time to train, hours.")


def training_compute_rates(gpu: GpuSpec, precision_codes: np.ndarray, assumptions: Assumptions) -> tuple[np.ndarray, np.ndarray]:
    """(sustained GEMM FLOP/s, datasheet peak FLOP/s) per row: `matmul_ceiling_tflops` x training_kernel_efficiency, `peak_tflops`."""
    dtypes = [train_compute_dtype(p) for p in TRAIN_PRECISIONS]
    rate = np.array([matmul_ceiling_tflops(gpu, d, assumptions) * assumptions.training_kernel_efficiency * FLOPS_PER_TFLOP for d in dtypes])
    peak = np.array([peak_tflops(gpu, d) * FLOPS_PER_TFLOP for d in dtypes])
    return rate[precision_codes], peak[precision_codes]


def params_on_first_stage_card(model: ModelSpec, workload: TrainingWorkload, cols: Columns) -> np.ndarray:
    """Trained parameters one card of the first stage holds (what DP reduces and the optimizer updates).

    Computed once per pipeline degree (`stage_params`); LoRA/QLoRA: only the adapters, split
    by PP and TP (Hu et al. 2021).
    """
    tp = cols["tp"]
    if workload.mode in (TrainingMode.LORA, TrainingMode.QLORA):
        assert workload.lora is not None
        return lora_adapter_params(model, workload.lora) / cols["pp"] / tp
    out = np.zeros(len(tp))
    for pp in np.unique(cols["pp"]):
        rows = cols["pp"] == pp
        params = stage_params(model, stage_layer_ranges(model.num_layers, int(pp))[0], True, pp == 1, tp[rows], cols["ep"][rows],
                              cols["expert_tp"][rows])
        out[rows] = params.dense + params.experts
    return out


def training_perf_columns(
    model: ModelSpec, workload: TrainingWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns, gpus_per_node: int | None = None,
) -> Columns:
    """Step time and throughput of many training layouts of one GPU type; one column per `TrainingPerf` field.

    Compute: hardware FLOPs (Narayanan Eq. 3; Korthikanti Sec. 6.3) over GPUs x sustained
    rate, times the stage imbalance; elementwise (`elementwise_s`); 1F1B bubble (p-1)/(v m)
    (Narayanan Sec. 2.2); TP all-reduces per layer (Shoeybi Sec. 3, 4 per layer, 6 with full
    recomputation); PP sends; DP/ZeRO traffic (`dp_volume_factor`) not hidden behind
    `dp_overlap_fraction` of compute; MoE all-to-all (4 per MoE layer per micro-batch);
    optimizer update over HBM, plus offload traffic over the host link (ZeRO-Offload Sec. 4;
    ZeRO-Infinity Sec. 5). Each term is one column, so a calibrated kernel model can replace
    one column without touching the others.
    """
    node = gpus_per_node or gpu.gpus_per_node
    tp, pp, dp, ep = cols["tp"], cols["pp"], cols["dp"], cols["ep"]
    n = tp * pp * dp
    s, b, m = workload.seq_len, cols["micro_batch"], cols["grad_accum"]
    tokens_per_step = (s * b * m * dp).astype(float)
    rate, peak = training_compute_rates(gpu, cols["precision"], assumptions)
    lora = workload.mode in (TrainingMode.LORA, TrainingMode.QLORA)
    frozen = 2.0 * model.matmul_params_per_token if lora else 0.0  # no weight gradients for frozen weights
    model_flops = (model_flops_per_token(model, s) - frozen) * tokens_per_step
    hw_flops = (hardware_flops_per_token(model, s, cols["checkpointing"]) - frozen) * tokens_per_step
    imbalance = stage_imbalance(model.num_layers, pp)
    compute = hw_flops / n / rate * imbalance
    elementwise = elementwise_s(model, s, tokens_per_step / dp, tp, pp, cols["sequence_parallel"], gpu, assumptions) * imbalance
    bubble = (compute + elementwise) * (pp - 1) / (assumptions.pipeline_interleave_chunks * m)

    layers_per_stage = -(-model.num_layers // pp)
    activation_msg = 2.0 * s * b * model.hidden_size
    tp_bw = group_bandwidth_gbps(gpu, tp, 1, node)
    allreduces = np.where(cols["checkpointing"] == Checkpointing.FULL, 6, 4)
    tp_comm = layers_per_stage * m * allreduces * ring_allreduce_s(activation_msg, tp, tp_bw, assumptions.collective_latency_s)

    pp_bw = group_bandwidth_gbps(gpu, pp, tp, node, collective=False)
    pp_comm = np.where(pp == 1, 0.0, 2.0 * m * (activation_msg / tp) / (pp_bw * 1e9))

    params_on_card = params_on_first_stage_card(model, workload, cols)
    fp32 = cols["precision"] == TRAIN_PRECISIONS.index(TrainPrecision.FP32)
    grad_bytes = np.where(fp32, 4.0, 2.0) * params_on_card
    dp_bw = group_bandwidth_gbps(gpu, dp, tp * pp, node)
    dp_comm = np.where(dp > 1, dp_volume_factor(cols["zero"], m) * (dp - 1) / dp * grad_bytes / (dp_bw * 1e9), 0.0)
    dp_exposed = np.maximum(0.0, dp_comm - assumptions.dp_overlap_fraction * compute)

    ep_comm = np.zeros(len(tp))
    if model.is_moe:
        moe_layers_per_stage = -(-model.num_moe_layers // pp)
        dispatch = 2.0 * s * b * model.experts_per_token * model.hidden_size * (ep - 1) / ep
        ep_bw = group_bandwidth_gbps(gpu, ep, tp * pp, node, collective=False)
        ep_comm = np.where(ep > 1, moe_layers_per_stage * m * 4 * dispatch / (ep_bw * 1e9), 0.0)

    state_total = np.array([state_bytes_total(p, workload.optimizer) for p in TRAIN_PRECISIONS])[cols["precision"]]
    state_bytes = params_on_card * state_total / np.where(cols["zero"] >= ZeroStage.OPTIMIZER, dp, 1)
    host = assumptions.host_link_gbps * 1e9
    optimizer = (2.0 * state_bytes / (gpu.hbm_bandwidth_gbps * 1e9)
                 + np.where(cols["offload_optimizer"], 4.0 * params_on_card / dp / host, 0.0)  # gradients down, parameters up
                 + np.where(cols["offload_params"], 2.0 * m * 2.0 * params_on_card / dp / host, 0.0))  # shard fetched per fwd and bwd

    step = compute + elementwise + bubble + tp_comm + pp_comm + dp_exposed + ep_comm + optimizer
    tokens_per_s = tokens_per_step / step
    time_to_train = workload.tokens / tokens_per_s
    return {
        "step_time_s": step, "compute_s": compute, "elementwise_s": elementwise, "bubble_s": bubble, "tp_comm_s": tp_comm,
        "pp_comm_s": pp_comm, "dp_comm_exposed_s": dp_exposed, "ep_comm_s": ep_comm, "optimizer_s": optimizer,
        "tokens_per_s": tokens_per_s, "tokens_per_s_per_gpu": tokens_per_s / n, "mfu": model_flops / (step * n * peak),
        "hfu": hw_flops / (step * n * peak), "time_to_train_s": time_to_train, "gpu_hours": n * time_to_train / 3600.0,
    }


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
    """Predicted speed of one serving replica at its batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_s: float = Field(description="Time to first token of one request (prefill), seconds.")
    tpot_s: float = Field(description="Time per output token at the replica's batch, seconds.")
    decode_step_s: float = Field(description="One decode step of the whole batch, seconds.")
    output_tokens_per_s: float = Field(description="Steady-state output tokens/s of one replica.")
    decode_bound: str = Field(description="memory or compute: what limits a decode step.")


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
    bound decoding). TP adds two all-reduces per layer (Shoeybi et al. 2019, Sec. 3). PP
    stages run one after another for a given token. `memory` supplies the weight, expert and
    KV-per-token columns of `inference_memory_columns`. Output: decode_step_s, decode_memory_s,
    decode_compute_s, decode_tp_comm_s (per stage).
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
    tp_comm = layers_per_stage * 2 * ring_allreduce_s(2.0 * b * model.hidden_size, tp, bw, assumptions.collective_latency_s)
    stage = np.maximum(t_mem, t_compute) + tp_comm
    return {"decode_step_s": stage * pp, "decode_memory_s": t_mem, "decode_compute_s": t_compute, "decode_tp_comm_s": tp_comm}


def prefill_columns(model: ModelSpec, gpu: GpuSpec, assumptions: Assumptions, cols: Columns, prompt_tokens: int, requests: Num) -> np.ndarray:
    """Prefill time of `requests` prompts on one replica: compute-bound, FLOPs / (TP x sustained rate)."""
    return requests * prefill_flops(model, prompt_tokens) / (cols["tp"] * serving_rate_columns(gpu, cols["weight_precision"], assumptions))


def inference_perf_columns(
    model: ModelSpec, workload: InferenceWorkload, gpu: GpuSpec, assumptions: Assumptions, cols: Columns, memory: Columns,
    gpus_per_node: int | None = None,
) -> Columns:
    """TTFT, TPOT and steady-state throughput of many serving replicas; one column per `InferencePerf` field
    (decode_bound as a boolean column `decode_memory_bound`), plus the decode components.

    With continuous batching, a batch of b requests costs one prefill of b prompts and
    `output_tokens` decode steps at the mean context prompt + output/2 (Kwon et al. 2023,
    Sec. 6; Agrawal et al. 2024, Sarathi-Serve, Sec. 2): throughput = b x output / that time.
    TTFT = prefill of one prompt + one decode step.
    """
    p, o = workload.prompt_tokens, workload.output_tokens
    decode = decode_step_columns(model, gpu, assumptions, cols, memory, p + o / 2.0, gpus_per_node)
    step = decode["decode_step_s"]
    cycle = prefill_columns(model, gpu, assumptions, cols, p, cols["batch"]) + o * step
    ttft = prefill_columns(model, gpu, assumptions, cols, p, 1) + step
    return {**decode, "ttft_s": ttft, "tpot_s": step, "output_tokens_per_s": cols["batch"] * o / cycle,
            "decode_memory_bound": decode["decode_memory_s"] >= decode["decode_compute_s"]}


def inference_perf_at(perf: Columns, i: int) -> InferencePerf:
    """Row `i` of `inference_perf_columns` as an InferencePerf."""
    return InferencePerf(ttft_s=float(perf["ttft_s"][i]), tpot_s=float(perf["tpot_s"][i]), decode_step_s=float(perf["decode_step_s"][i]),
                         output_tokens_per_s=float(perf["output_tokens_per_s"][i]),
                         decode_bound="memory" if perf["decode_memory_bound"][i] else "compute")


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


def inference_perf(
    model: ModelSpec, workload: InferenceWorkload, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions,
    gpus_per_node: int | None = None,
) -> InferencePerf:
    """TTFT, TPOT and steady-state throughput of one replica serving `layout.batch` sequences (one row of the columns)."""
    cols = inference_columns([layout])
    memory = inference_memory_columns(model, workload, gpu, assumptions, cols)
    return inference_perf_at(inference_perf_columns(model, workload, gpu, assumptions, cols, memory, gpus_per_node), 0)
