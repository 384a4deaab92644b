"""Calibrated training speed over numpy columns of layouts: kernel classes, α–β collectives, overlap.

Step time = Σ over kernel classes of FLOPs / (peak(gpu, dtype) × efficiency(gpu, framework, dtype,
class, size)) × (1 + pipeline bubble) + memory-bound time + exposed communication. This is the
roofline decomposition of Williams et al. 2009 applied per kernel class, as in Narayanan et al.
2021 (arXiv:2104.04473, Sec. 3 and Eq. 3) for the FLOPs and Korthikanti et al. 2022
(arXiv:2205.05198) for activations and recomputation.

- Efficiency of a kernel class at size n: e(n) = e_max · n / (n + n_half), so
  1/e = 1/e_max + n_half/(e_max·n): step time is *linear* in (1/e_max, n_half/e_max), which is
  what planner.calibrate fits by least squares.
- FP8 covers linear layers only, as Transformer Engine does (attention and the LM head stay in
  BF16: TE's fp8_autocast applies to te.Linear/LayerNormLinear modules; Micikevicius et al. 2022,
  arXiv:2209.05433, Sec. 4). MFU is quoted against the BF16 dense peak (PaLM, Chowdhery et al.
  2022, App. B convention).
- Collectives are α–β (Hockney 1994): time = base latency + hops × hop latency + bytes /
  (bandwidth × efficiency), hierarchical across nodes (intra-node ring, then one ring per local
  rank over its own NIC: NCCL's tree/ring over nodes, Sanders et al. 2009 two-level collectives).
- Megatron rank order TP innermost, then CP, EP, DP, PP (Megatron-Core parallel_state,
  order "tp-cp-ep-dp-pp"): a group's stride is the product of the degrees inside it.
- Context parallelism is ring attention (Liu et al. 2023, arXiv:2310.01889): each rank holds
  seq/CP tokens and passes K/V chunks around the ring CP-1 times.
- Pipeline stages: the LM head is charged to the last stage, whose pace the pipeline runs at
  (Narayanan et al. 2021, Sec. 2.2; Llama 3, arXiv:2407.21783, Sec. 3.3.2); with the interleaved
  schedule, DP reduce-scatter/all-gather hide behind the cooldown/warm-up of pp·(vp-1)/vp
  micro-batches (Megatron-LM pipeline_parallel/schedules.py, per-chunk grad/param sync).
- MoE: grouped expert GEMMs with their own size-dependent efficiency, a per-routed-copy dispatch
  cost scaled by the card's speed, the EP all-to-all overlapped only where a recipe says so.

Every number comes from catalogs/efficiency.csv, catalogs/interconnect.csv and
catalogs/frameworks.csv (source and as_of per row); a calibration overlay (planner.calibrate)
replaces efficiency rows. Layout fields are numpy arrays of equal length (one entry per
candidate layout); model shape and GPU are scalars.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from planner.catalog import CATALOG_DIR, GpuSpec, resolve_gpu
from planner.enums import Framework
from planner.errors import InputError
from planner.modelspec import ModelSpec

KERNELS = ("gemm", "moe_gemm", "attention", "elementwise", "decode_attention", "moe_dispatch")
FRAMEWORKS = tuple(f.value for f in Framework)  # megatron, fsdp, deepspeed: the codes of the planner's framework column
RECOMPUTE_CODES = {"none": 0, "selective": 1, "full": 2}
LAYOUT_FIELDS = ("num_gpus", "tp", "pp", "cp", "ep", "vp", "micro_batch", "global_batch", "seq_len", "recompute", "fsdp")
OPTIONAL_FIELDS = ("zero", "frozen", "optimizer_bytes", "nf4_base", "shard_group", "a2a_overlap")
"""Optional layout columns: zero (ZeRO stage 0-3; default 3 with fsdp, else 1 with a distributed optimizer, else 0),
frozen (1 = base weights frozen, LoRA: no weight gradients; default 0), optimizer_bytes (HBM bytes per trained
parameter of one optimizer update; default OPTIMIZER_BYTES_PER_PARAM), nf4_base (1 = frozen linear weights stored in
NF4 and de-quantised on use, QLoRA; default 0), shard_group (ZeRO-3 group size of hybrid sharding; 0 = all DP ranks), a2a_overlap
(1 = the EP all-to-all overlapped with another micro-batch's compute, as a recipe states; default 0 = the framework's ep_overlap)."""
NF4_DEQUANT_BYTES_PER_PARAM = 0.5 + 2.0
"""QLoRA de-quantisation traffic per base weight per use: read the 4-bit NF4 value (0.5 B; the double-quantised
constants, 0.127 bit per weight, neglected) and write the BF16 weight the GEMM reads (2 B). bitsandbytes de-quantises
the storage type to the compute type for every forward and backward matmul (Dettmers et al. 2023, arXiv:2305.14314,
Sec. 3, Eq. 5-6); the kernel is a memory-bound element-wise pass."""
DTYPES = ("bf16", "fp16", "fp8", "fp32")
FLASH_BACKWARD_FACTOR = 2.5  # FA backward = 5 matmuls vs 2 in forward (Dao 2023, arXiv:2307.08691, Sec. 3.1.2)
OPTIMIZER_BYTES_PER_PARAM = 30.0  # Adam: read fp32 master, m, v, fp32 grad (16 B), write master, m, v (12 B), bf16 copy (2 B)
ACTIVATION_TRAFFIC_FACTOR = 3.0
"""ASSUMPTION: HBM passes over each stored activation per step (written in forward, read and its gradient written in
backward); norms, activation functions and residual adds are bandwidth-bound (roofline, Williams et al. 2009)."""
DISPATCH_REFERENCE_GPU = "H100-SXM"
"""The card the moe_dispatch row's overhead_us (the cost per routed token copy) is stated on: H100 SXM, whose BF16
dense peak (`dispatch_reference_tflops`, 989 TFLOP/s in catalogs/gpus.csv, NVIDIA datasheet) is the reference; another
card's cost is scaled by reference / its peak. ASSUMPTION: the router, top-k, permutation and padding kernels that make
up the per-copy cost run on the GPU and speed up with its generation as its other kernels do
(NeMo 26.02 Qwen3-30B-A3B: B200 9691 vs H100 5113 tokens/s/GPU, 1.9x, on layouts whose step the per-copy cost dominates).
One constant, fitted across generations (a per-family row is refitted from only the 4-6 MoE runs of that family)."""
MOE_PERMUTE_PASSES = 6.0  # token permute/unpermute: gather+scatter in forward and backward (Megatron-Core moe token dispatcher)
FORBID = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class ModelShape(BaseModel):
    """The transformer dimensions the speed model needs (a ModelSpec, or one row of tests/data)."""

    model_config = FORBID

    layers: int = Field(gt=0, description="Transformer blocks.")
    hidden: int = Field(gt=0, description="Model width h.")
    heads: int = Field(gt=0, description="Query heads.")
    kv_heads: int = Field(gt=0, description="Key/value heads.")
    head_dim: int = Field(gt=0, description="Query/key width per head.")
    v_head_dim: int = Field(gt=0, description="Value width per head.")
    ffn: int = Field(ge=0, description="Dense MLP inner width (0 when every layer is MoE).")
    gated_mlp: bool = Field(description="SwiGLU (3 matrices) instead of 2.")
    vocab: int = Field(gt=0, description="Vocabulary size.")
    experts: int = Field(ge=0, description="Routed experts per MoE layer (0 = dense model).")
    topk: int = Field(ge=0, description="Routed experts per token.")
    moe_ffn: int = Field(ge=0, description="Inner width of one expert.")
    shared_experts: int = Field(ge=0, description="Always-active shared experts per MoE layer.")
    dense_layers: int = Field(ge=0, description="Leading layers with a dense MLP in an MoE model.")
    attn_proj_params: int = Field(ge=0, description="Attention projection parameters per layer (0 = derive from heads).")
    window: int = Field(ge=0, description="Sliding window of every other layer (0 = full attention everywhere).")

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelShape:
        """The shape of a catalog ModelSpec (MLA head widths included)."""
        qk = (spec.qk_nope_head_dim + spec.qk_rope_head_dim) if spec.is_mla else spec.head_dim
        v = spec.v_head_dim if spec.is_mla else spec.head_dim
        return cls(layers=spec.num_layers, hidden=spec.hidden_size, heads=spec.num_heads, kv_heads=spec.num_kv_heads,
                   head_dim=qk, v_head_dim=v, ffn=spec.intermediate_size, gated_mlp=spec.gated_mlp, vocab=spec.vocab_size,
                   experts=spec.n_routed_experts, topk=spec.experts_per_token, moe_ffn=spec.moe_intermediate_size,
                   shared_experts=spec.n_shared_experts, dense_layers=spec.num_layers - spec.num_moe_layers if spec.is_moe else 0,
                   attn_proj_params=spec.attention_params, window=0)

    @property
    def moe_layers(self) -> int:
        """Layers with routed experts."""
        return self.layers - self.dense_layers if self.experts else 0

    @property
    def attention_params(self) -> int:
        """q/k/v/o projection parameters of one layer."""
        if self.attn_proj_params:
            return self.attn_proj_params
        return 2 * self.hidden * self.heads * self.head_dim + 2 * self.hidden * self.kv_heads * self.head_dim

    def mlp_params(self, inner: int) -> int:
        """One MLP of inner width `inner` (3 matrices gated, 2 otherwise)."""
        return (3 if self.gated_mlp else 2) * self.hidden * inner

    @property
    def dense_linear_params(self) -> int:
        """Matmul parameters every token uses, LM head excluded: attention, dense MLPs, shared experts."""
        dense_mlp_layers = self.layers - self.moe_layers
        shared = self.moe_layers * self.mlp_params(self.moe_ffn * self.shared_experts)
        return self.layers * self.attention_params + dense_mlp_layers * self.mlp_params(self.ffn) + shared

    @property
    def expert_linear_params(self) -> int:
        """Routed-expert matmul parameters one token uses (top-k experts on every MoE layer)."""
        return self.moe_layers * self.topk * self.mlp_params(self.moe_ffn)

    @property
    def lm_head_params(self) -> int:
        """Output projection h × vocab."""
        return self.hidden * self.vocab

    @property
    def active_linear_params(self) -> int:
        """Matmul parameters one token uses: dense, its top-k experts and the LM head."""
        return self.dense_linear_params + self.expert_linear_params + self.lm_head_params

    @property
    def total_params(self) -> int:
        """All weights (input embedding and untied LM head counted once each)."""
        experts = self.moe_layers * self.experts * self.mlp_params(self.moe_ffn)
        return self.dense_linear_params + experts + 2 * self.lm_head_params


# ---- catalogs --------------------------------------------------------------------------------


class EfficiencyRow(BaseModel):
    """Efficiency of one kernel class on a GPU family, framework and dtype: e(n) = e_max·n/(n+n_half)."""

    model_config = FORBID

    kernel: str = Field(description="gemm, moe_gemm, attention, elementwise or decode_attention.")
    family: str = Field(description="GPU family name (A100, H100, B200, MI300X, default).")
    gpus: tuple[str, ...] = Field(description="Catalog GPU ids of the family (empty for the default row).")
    framework: str = Field(description="megatron, fsdp, deepspeed or any.")
    dtype: str = Field(description="bf16, fp8 or any.")
    e_max: float = Field(gt=0, le=1.5, description="Asymptotic fraction of the dtype's dense peak (of HBM bandwidth for memory-bound classes).")
    n_half: float = Field(ge=0, description="Size at which half of e_max is reached (GEMM width, sequence tokens).")
    overhead_us: float = Field(ge=0, description="Fixed cost per call, µs (moe_dispatch: per routed token copy per MoE layer).")
    source: str = Field(description="Where the value comes from.")
    as_of: str = Field(description="Date of the source or fit.")

    @property
    def key(self) -> str:
        """Identity of the row: kernel|family|framework|dtype."""
        return f"{self.kernel}|{self.family}|{self.framework}|{self.dtype}"


class LinkRow(BaseModel):
    """α–β constants of one link class."""

    model_config = FORBID

    link: str = Field(description="Scale-up kind from gpus.csv (NVLink4, ...) or 'network'.")
    base_latency_us: float = Field(ge=0, description="Fixed latency per collective call, µs.")
    hop_latency_us: float = Field(ge=0, description="Latency per ring step, µs.")
    bw_efficiency: float = Field(gt=0, le=1, description="Achieved share of the link bandwidth.")
    source: str = Field(description="Where the values come from.")
    as_of: str = Field(description="Date.")


class FrameworkRow(BaseModel):
    """Conventions of a training framework."""

    model_config = FORBID

    framework: str = Field(description="megatron, fsdp or deepspeed.")
    activation_bytes_per_token_layer_h: float = Field(gt=0, description="Stored activation bytes per token per layer, in units of h.")
    main_grad_bytes: int = Field(gt=0, description="Bytes per gradient element kept for accumulation.")
    grad_reduce_bytes: int = Field(gt=0, description="Bytes per gradient element in the DP reduction.")
    distributed_optimizer: bool = Field(description="Optimizer states sharded over data parallel ranks.")
    dp_overlap: float = Field(ge=0, le=1, description="Share of DP/FSDP traffic hidden behind compute.")
    tp_overlap: float = Field(ge=0, le=1, description="Share of TP collectives hidden.")
    ep_overlap: float = Field(ge=0, le=1, description="Share of the MoE all-to-all hidden.")
    pp_overlap: float = Field(ge=0, le=1, description="Share of pipeline sends hidden.")
    cp_overlap: float = Field(ge=0, le=1, description="Share of ring-attention KV exchange hidden.")
    ep_payload_bytes: float = Field(gt=0, description="Bytes per element of the all-to-all payload (1 = FP8 dispatch as in DeepSeek-V3).")
    ep_node_dedup: bool = Field(description="Send each token once per destination node (DeepEP node-limited routing).")
    source: str = Field(description="Where the conventions come from.")
    as_of: str = Field(description="Date.")


class SpeedCatalog(BaseModel):
    """Everything the speed model reads: efficiency, link and framework rows."""

    model_config = FORBID

    efficiency: tuple[EfficiencyRow, ...] = Field(description="Kernel efficiency rows.")
    links: tuple[LinkRow, ...] = Field(description="α–β link rows.")
    frameworks: tuple[FrameworkRow, ...] = Field(description="Framework convention rows.")

    def efficiency_row(self, kernel: str, gpu: str, framework: str, dtype: str) -> EfficiencyRow:
        """Most specific row: the GPU's family before default, the framework before any, the dtype before any."""
        best: tuple[int, EfficiencyRow] | None = None
        for row in self.efficiency:
            if row.kernel != kernel or row.framework not in (framework, "any") or row.dtype not in (dtype, "any"):
                continue
            if row.gpus and gpu not in row.gpus:
                continue
            rank = 4 * bool(row.gpus) + 2 * (row.framework == framework) + (row.dtype == dtype)
            if best is None or rank > best[0]:
                best = (rank, row)
        if best is None:
            raise InputError(f"catalogs/efficiency.csv: no row for kernel {kernel!r}; a 'default' row is required")
        return best[1]

    def link(self, kind: str) -> LinkRow:
        """The α–β row of a link class (scale-up kind or 'network')."""
        for row in self.links:
            if row.link.lower() == kind.lower():
                return row
        allowed = ", ".join(r.link for r in self.links)
        raise InputError(f"catalogs/interconnect.csv: link {kind!r} unknown; allowed: {allowed}")

    def framework(self, name: str) -> FrameworkRow:
        """Conventions of a framework."""
        for row in self.frameworks:
            if row.framework == name:
                return row
        raise InputError(f"framework {name!r} unknown; allowed: {', '.join(r.framework for r in self.frameworks)}")

    def with_efficiency(self, updates: Mapping[str, tuple[float, float, float]], source: str, as_of: str) -> SpeedCatalog:
        """A copy whose rows named in `updates` (row key -> (e_max, n_half, overhead_us)) carry the new values."""
        rows = tuple(r.model_copy(update={"e_max": float(updates[r.key][0]), "n_half": float(updates[r.key][1]), "overhead_us": float(updates[r.key][2]),
                                          "source": source, "as_of": as_of})
                     if r.key in updates else r for r in self.efficiency)
        return self.model_copy(update={"efficiency": rows})


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@lru_cache(maxsize=4)
def load_speed_catalog(directory: Path = CATALOG_DIR) -> SpeedCatalog:
    """The bundled efficiency, interconnect and framework catalogs."""
    eff = tuple(EfficiencyRow(**{**r, "gpus": tuple(g for g in r["gpus"].split(";") if g)}) for r in _read_csv(directory / "efficiency.csv"))
    links = tuple(LinkRow(**r) for r in _read_csv(directory / "interconnect.csv"))
    frames = tuple(FrameworkRow(**r) for r in _read_csv(directory / "frameworks.csv"))
    return SpeedCatalog(efficiency=eff, links=links, frameworks=frames)


# ---- peaks, FLOPs ----------------------------------------------------------------------------


def peak_tflops(gpu: GpuSpec, dtype: str) -> float:
    """Datasheet dense tensor throughput for a compute dtype (bf16, fp16, fp8, int8, tf32, fp32).

    TF32 (what fp32 training runs on tensor cores) is taken as half the BF16 rate (A100: 156 vs
    312; H100: 494.5 vs 989, NVIDIA datasheets). Cards without the dtype fall back to BF16
    (weights are upcast).
    """
    bf16 = gpu.bf16_dense_tflops or gpu.fp16_dense_tflops or 0.0
    if dtype == "fp8":
        return gpu.fp8_dense_tflops if (gpu.supports_fp8 and gpu.fp8_dense_tflops) else bf16
    if dtype == "fp16":
        return gpu.fp16_dense_tflops or bf16
    if dtype == "int8":
        return gpu.int8_dense_tops or bf16
    if dtype in ("tf32", "fp32"):
        return bf16 / 2.0
    return bf16


@lru_cache(maxsize=1)
def dispatch_reference_tflops() -> float:
    """The BF16 dense peak of `DISPATCH_REFERENCE_GPU` (H100 SXM) in the GPU catalog: the card the moe_dispatch row's
    per-copy cost is measured on (`peak_tflops`)."""
    return peak_tflops(resolve_gpu(DISPATCH_REFERENCE_GPU), "bf16")


def attention_keys_per_token(shape: ModelShape, seq_len: np.ndarray) -> np.ndarray:
    """Keys a causal query attends to, averaged over positions and layers: s/2, or the window on windowed layers."""
    full = seq_len / 2.0
    if not shape.window:
        return full
    return 0.5 * full + 0.5 * np.minimum(full, shape.window)


def attention_flops_per_token(shape: ModelShape, seq_len: np.ndarray) -> np.ndarray:
    """Forward+backward FLOPs of the attention scores and their product with V, per token, no causal discount.

    PaLM (Chowdhery et al. 2022) App. B: 6·L·s·(q_dim + o_dim); Narayanan et al. 2021 Eq. 3 has
    16·B·L·s²·h because it includes the recomputed forward (12 without it).
    """
    return 6.0 * shape.layers * seq_len * shape.heads * (shape.head_dim + shape.v_head_dim)


def model_flops_per_token(shape: ModelShape, seq_len: np.ndarray) -> np.ndarray:
    """MFU numerator: 6·N_active + attention (Kaplan et al. 2020 Sec. 2.1; PaLM App. B; llm-foundry convention).

    N_active: matmul parameters per token (active experts only, input embedding excluded).
    """
    return 6.0 * shape.active_linear_params + attention_flops_per_token(shape, seq_len)


def hardware_flops_per_token(shape: ModelShape, seq_len: np.ndarray, recompute: np.ndarray) -> np.ndarray:
    """HFU numerator: model FLOPs plus recomputation (Korthikanti et al. 2022, Sec. 6.3).

    Full recomputation repeats the forward pass (+2N + 1/3 of attention); selective
    recomputation repeats only the attention core's forward (1/3 of the attention term).
    """
    attention = attention_flops_per_token(shape, seq_len)
    extra = np.where(recompute >= 2, 2.0 * shape.active_linear_params + attention / 3.0, np.where(recompute >= 1, attention / 3.0, 0.0))
    return model_flops_per_token(shape, seq_len) + extra


def executed_attention_flops_per_token(shape: ModelShape, seq_len: np.ndarray, recompute: np.ndarray) -> np.ndarray:
    """Attention-core FLOPs the kernels execute per token: causal keys only, backward 2.5× forward, plus recomputed forwards."""
    forward = 2.0 * shape.layers * attention_keys_per_token(shape, seq_len) * shape.heads * (shape.head_dim + shape.v_head_dim)
    return forward * (1.0 + FLASH_BACKWARD_FACTOR + (recompute >= 1))


# ---- collectives (α–β, hierarchical) -----------------------------------------------------------


def ring_step_s(bytes_per_rank: np.ndarray, ranks: np.ndarray, stride: np.ndarray, gpu: GpuSpec, cat: SpeedCatalog,
                gpus_per_node: int) -> np.ndarray:
    """One reduce-scatter or all-gather of `bytes_per_rank` (the full buffer) over `ranks` spaced `stride` apart.

    Ring volume (n-1)/n of the buffer (Patarasuk & Yuan 2009). Within a node the scale-up link;
    across nodes a two-level ring: (k-1)/k over NVLink among the k local members, then
    (m-1)/m of the 1/k slice over each GPU's own NIC among the m nodes.
    """
    ranks = np.maximum(ranks, 1).astype(float)
    local = np.clip(np.floor(gpus_per_node / np.maximum(stride, 1)), 1, None)
    local = np.minimum(local, ranks)
    nodes = np.ceil(ranks / local)
    up, net = cat.link(gpu.scaleup_kind), cat.link("network")
    bw_up = gpu.scaleup_link_gbps * 1e9 * up.bw_efficiency
    bw_net = gpu.network_gbps_per_gpu * 1e9 * net.bw_efficiency
    intra = (local - 1) / local * bytes_per_rank / bw_up + (local - 1) * up.hop_latency_us * 1e-6
    inter = (nodes - 1) / nodes * bytes_per_rank / local / bw_net + (nodes - 1) * net.hop_latency_us * 1e-6
    base = np.where(nodes > 1, net.base_latency_us, up.base_latency_us) * 1e-6
    return np.where(ranks > 1, intra + inter + base, 0.0)


def all_to_all_s(bytes_per_rank: np.ndarray, ranks: np.ndarray, stride: np.ndarray, topk: int, gpu: GpuSpec, cat: SpeedCatalog,
                 gpus_per_node: int, dedup: bool) -> np.ndarray:
    """One all-to-all sending (n-1)/n of `bytes_per_rank` to peers: local peers over NVLink, remote ones over the NIC.

    With node deduplication a token bound for several experts on one node crosses the network
    once (DeepSeek-V3, arXiv:2412.19437, Sec. 3.2.2: each token goes to at most 4 nodes).
    """
    ranks = np.maximum(ranks, 1).astype(float)
    local = np.minimum(np.clip(np.floor(gpus_per_node / np.maximum(stride, 1)), 1, None), ranks)
    nodes = np.ceil(ranks / local)
    remote_share = (ranks - local) / ranks
    if dedup:
        remote_share = remote_share * np.minimum(1.0, (nodes - 1) / max(topk, 1))
    up, net = cat.link(gpu.scaleup_kind), cat.link("network")
    t_local = (local - 1) / ranks * bytes_per_rank / (gpu.scaleup_link_gbps * 1e9 * up.bw_efficiency)
    t_remote = remote_share * bytes_per_rank / (gpu.network_gbps_per_gpu * 1e9 * net.bw_efficiency)
    latency = np.where(nodes > 1, net.base_latency_us, up.base_latency_us) * 1e-6
    return np.where(ranks > 1, np.maximum(t_local, t_remote) + latency, 0.0)


# ---- the step ------------------------------------------------------------------------------------


def _layout(layout: Mapping[str, np.ndarray], distributed_optimizer: bool = True) -> dict[str, np.ndarray]:
    missing = [k for k in LAYOUT_FIELDS if k not in layout]
    if missing:
        raise InputError(f"speed layout: missing field(s) {', '.join(missing)}; required: {', '.join(LAYOUT_FIELDS)}")
    out = {k: np.asarray(layout[k], dtype=float) for k in LAYOUT_FIELDS}
    default_zero = np.where(out["fsdp"] > 0, 3.0, 1.0 if distributed_optimizer else 0.0)
    out["zero"] = np.asarray(layout["zero"], dtype=float) if "zero" in layout else default_zero
    out["frozen"] = np.asarray(layout["frozen"], dtype=float) if "frozen" in layout else np.zeros_like(out["tp"])
    out["optimizer_bytes"] = (np.asarray(layout["optimizer_bytes"], dtype=float) if "optimizer_bytes" in layout
                              else np.full_like(out["tp"], OPTIMIZER_BYTES_PER_PARAM))
    out["nf4_base"] = np.asarray(layout["nf4_base"], dtype=float) if "nf4_base" in layout else np.zeros_like(out["tp"])
    out["shard_group"] = np.asarray(layout["shard_group"], dtype=float) if "shard_group" in layout else np.zeros_like(out["tp"])
    out["a2a_overlap"] = np.asarray(layout["a2a_overlap"], dtype=float) if "a2a_overlap" in layout else np.zeros_like(out["tp"])
    return out


def linear_efficiency_dtype(gpu: GpuSpec, dtype: str) -> str:
    """The efficiency-row dtype of a training dtype's linear layers: fp8 where the card has FP8 tensor cores, else bf16
    (fp16 and TF32 kernels take the BF16 row; Transformer Engine falls back to BF16 GEMMs without FP8 hardware)."""
    return "fp8" if dtype == "fp8" and gpu.supports_fp8 else "bf16"


def training_design(shape: ModelShape, gpu: GpuSpec, dtype: str, framework: str, layout: Mapping[str, np.ndarray],
                    cat: SpeedCatalog, gpus_per_node: int | None = None,
                    trained_params: float | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """The step time as a linear function of the fitted inverse efficiencies: step_s = Σ_k cols[k]·θ_k + fixed_s.

    Keys of `cols` are 'row_key#inv' (θ = 1/e_max), 'row_key#small' (θ = n_half/e_max) and
    'row_key#overhead' (θ = overhead in seconds) of the efficiency rows this layout uses;
    `terms` holds every component in seconds per step (computed with the catalog's current
    values; their sum is the step, `step_from_terms`). Layout fields: num_gpus, tp, pp, cp, ep,
    vp, micro_batch, global_batch (sequences), seq_len, recompute (0 none, 1 selective, 2 full),
    fsdp (1 = parameters sharded over DP, gathered every micro-batch), and OPTIONAL_FIELDS.
    `trained_params`: parameters of the whole model that get gradients when the base is frozen
    (LoRA adapters, Hu et al. 2021); None = every weight is trained.
    """
    if framework not in FRAMEWORKS:
        raise InputError(f"framework {framework!r} unknown; allowed: {', '.join(FRAMEWORKS)}")
    if dtype not in DTYPES:
        raise InputError(f"training dtype {dtype!r} unknown; allowed: {', '.join(DTYPES)}")
    fw = cat.framework(framework)
    lay = _layout(layout, fw.distributed_optimizer)
    node = gpus_per_node or gpu.gpus_per_node
    n, tp, pp, cp, ep, vp = lay["num_gpus"], lay["tp"], lay["pp"], lay["cp"], lay["ep"], lay["vp"]
    b, s, rc, zero = lay["micro_batch"], lay["seq_len"], lay["recompute"], lay["zero"]
    dp = n / (tp * pp * cp)
    micro_batches = np.maximum(lay["global_batch"] / (dp * b), 1.0)
    tokens_per_gpu = lay["global_batch"] * s / n  # work per GPU per step, in tokens
    full = (rc >= 2).astype(float)
    linear_dtype = linear_efficiency_dtype(gpu, dtype)
    bf16_peak = peak_tflops(gpu, "fp32" if dtype == "fp32" else "bf16") * 1e12
    lin_peak = peak_tflops(gpu, dtype) * 1e12
    word = 4.0 if dtype == "fp32" else 2.0  # bytes of a weight / activation element on the wire

    cols: dict[str, np.ndarray] = {}
    terms: dict[str, np.ndarray] = {}

    def add(kernel: str, kdtype: str, flops: np.ndarray, peak: float, size: np.ndarray) -> None:
        row = cat.efficiency_row(kernel, gpu.name, framework, kdtype)
        base = flops / peak
        cols[row.key + "#inv"] = cols.get(row.key + "#inv", 0.0) + base
        cols[row.key + "#small"] = cols.get(row.key + "#small", 0.0) + base / np.maximum(size, 1.0)
        terms[kernel + "_s"] = terms.get(kernel + "_s", 0.0) + base / row.e_max * (1.0 + row.n_half / np.maximum(size, 1.0))

    # forward 2, backward 4 (2 of them weight gradients, skipped for frozen weights), recomputed forward 2 (Narayanan Eq. 3)
    linear_passes = 6.0 + 2.0 * full - 2.0 * lay["frozen"]
    gemm_width = np.minimum(shape.hidden, shape.heads * shape.head_dim / tp)
    add("gemm", linear_dtype, linear_passes * shape.dense_linear_params * tokens_per_gpu, lin_peak, gemm_width)
    # LM head stays BF16 in TE. It runs on the last pipeline stage only, which also holds its share of the layers: the
    # pipeline advances at the pace of that slowest stage (1F1B: every stage waits for its neighbour each micro-batch;
    # Narayanan et al. 2021, Sec. 2.2), so the head is charged whole to the stage (x pp against the per-GPU average), not
    # spread over the stages. Llama 3 (Dubey et al. 2024, arXiv:2407.21783, Sec. 3.3.2) removes a layer from the first and
    # last stages for this imbalance; the layouts here split layers evenly (Megatron's default)
    add("gemm", "bf16", linear_passes * shape.lm_head_params * tokens_per_gpu * pp, bf16_peak, gemm_width)
    if shape.experts:
        dispatch = cat.efficiency_row("moe_dispatch", gpu.name, framework, linear_dtype)
        calls = shape.moe_layers * tokens_per_gpu * shape.topk  # routed token copies per GPU per step, per MoE layer
        calls = calls * dispatch_reference_tflops() / peak_tflops(gpu, "bf16")  # the per-copy cost runs on the GPU: scaled by its speed
        cols[dispatch.key + "#overhead"] = calls
        terms["moe_dispatch_s"] = calls * dispatch.overhead_us * 1e-6
        tokens_per_expert = b * s / cp * shape.topk * ep / shape.experts
        add("moe_gemm", linear_dtype, linear_passes * shape.expert_linear_params * tokens_per_gpu, lin_peak,
            np.minimum(np.minimum(shape.moe_ffn, shape.hidden), tokens_per_expert))
    add("attention", "bf16", executed_attention_flops_per_token(shape, s, rc) * tokens_per_gpu, bf16_peak, s / cp)

    hbm = gpu.hbm_bandwidth_gbps * 1e9 * cat.efficiency_row("elementwise", gpu.name, framework, "any").e_max
    act_bytes = fw.activation_bytes_per_token_layer_h * shape.hidden * shape.layers * tokens_per_gpu  # sequence parallel splits it over TP
    moe_bytes = MOE_PERMUTE_PASSES * shape.topk * shape.hidden * 2.0 * shape.moe_layers * tokens_per_gpu
    bubble = (pp - 1) / (vp * micro_batches)

    dense_params = (shape.dense_linear_params + 2 * shape.lm_head_params) / (tp * pp)
    expert_params = shape.moe_layers * shape.experts * shape.mlp_params(shape.moe_ffn) / (ep * pp)
    # NF4 base (QLoRA): every quantised linear weight on the card is de-quantised in each forward, backward and recomputed forward
    quantised_params = shape.dense_linear_params / (tp * pp) + expert_params
    dequant = lay["nf4_base"] * micro_batches * (2.0 + full) * quantised_params * NF4_DEQUANT_BYTES_PER_PARAM
    elementwise = (ACTIVATION_TRAFFIC_FACTOR * act_bytes + moe_bytes + dequant) / hbm
    if trained_params is None:
        dense_trained, expert_trained = dense_params, expert_params
    else:
        dense_trained, expert_trained = trained_params / (tp * pp), 0.0 * expert_params
    hybrid = lay["shard_group"] > 0
    shard_over = np.where(zero >= 1, np.where(hybrid, lay["shard_group"], dp * cp), 1.0)
    optimizer = lay["optimizer_bytes"] * (dense_trained / shard_over + expert_trained / np.maximum(shard_over / ep, 1.0)) / hbm

    act_msg = b * s / cp * shape.hidden * word  # one micro-batch's activations of a layer
    tp_ops = 8.0 + 4.0 * full  # sequence parallel: AG+RS around attention and MLP, forward and backward
    tp_comm = tp_ops * shape.layers / pp * micro_batches * ring_step_s(act_msg, tp, np.ones_like(tp), gpu, cat, node)
    dp_group, dp_stride = dp * cp, tp
    sharded = zero >= 3

    def data_parallel_s(params: float | np.ndarray, trained: float | np.ndarray, group: np.ndarray, stride: np.ndarray) -> np.ndarray:
        """ZeRO-3/FSDP: all-gather the weights in forward and backward and reduce-scatter the gradients, every
        micro-batch (Zhao et al. 2023, Sec. 3; Rajbhandari et al. 2020, Sec. 7.2.2); ZeRO-2: gradients
        reduce-scattered after every micro-batch's backward (partitioned gradients cannot accumulate locally;
        DeepSpeed issue #2252), updated weights all-gathered once; ZeRO-0/1 and the distributed optimizer:
        reduce-scatter (all-reduce) once per step and all-gather the updated weights once (Sec. 7.1). Frozen
        weights are gathered under ZeRO-3 but never reduced or updated."""
        gather_all = ring_step_s(params * word, group, stride, gpu, cat, node)
        gather_trained = ring_step_s(trained * word, group, stride, gpu, cat, node)
        reduce = ring_step_s(trained * np.maximum(fw.grad_reduce_bytes, word), group, stride, gpu, cat, node)
        return np.where(sharded, micro_batches * (2.0 * gather_all + reduce),
                        np.where(zero >= 2, micro_batches * reduce + gather_trained, gather_trained + reduce))

    def hybrid_s(params: float | np.ndarray, trained: float | np.ndarray, group: np.ndarray, stride: np.ndarray) -> np.ndarray:
        """Hybrid sharding (FSDP HYBRID_SHARD; Zhao et al. 2023, Sec. 3.2.2): ZeRO-3 traffic inside each group of
        shard_group ranks (inner in the rank order, so a node-sized group stays on NVLink), then one all-reduce
        (reduce-scatter + all-gather) per step of each rank's gradient shard across the replicas."""
        g = np.where(hybrid, np.minimum(lay["shard_group"], group), group)
        inside = data_parallel_s(params, trained, g, stride)
        shard = trained / np.maximum(g, 1.0) * np.maximum(fw.grad_reduce_bytes, word)
        across = 2.0 * ring_step_s(shard, group / g, stride * g, gpu, cat, node)
        return inside + np.where(hybrid, across, 0.0)

    dp_comm = hybrid_s(dense_params, dense_trained, dp_group, dp_stride)
    if shape.experts:
        dp_comm = dp_comm + hybrid_s(expert_params, expert_trained, dp_group / ep, dp_stride * ep)
        a2a_bytes = b * s / (cp * tp) * shape.topk * shape.hidden * fw.ep_payload_bytes
        ep_comm = 4.0 * shape.moe_layers / pp * micro_batches * all_to_all_s(a2a_bytes, ep, tp * cp, shape.topk, gpu, cat, node,
                                                                             fw.ep_node_dedup)
    else:
        ep_comm = np.zeros_like(n)
    kv_chunk = b * s / cp * 2.0 * shape.kv_heads * shape.head_dim * word / tp
    two = np.full_like(n, 2.0)  # a send to one neighbour = a 2-rank ring step of twice the bytes
    cp_comm = 3.0 * shape.layers / pp * micro_batches * np.where(cp > 1, (cp - 1) * ring_step_s(2.0 * kv_chunk, two, tp, gpu, cat, node), 0.0)
    pp_comm = 2.0 * vp * micro_batches * np.where(pp > 1, ring_step_s(2.0 * act_msg / tp, two, tp * cp * dp, gpu, cat, node), 0.0)

    scale = 1.0 + bubble
    cols = {k: v * scale for k, v in cols.items()}
    # DP traffic hides behind compute only while there is compute to hide it: with gradient accumulation the distributed
    # optimizer's reduce-scatter overlaps the backward of the last micro-batch and the parameter all-gather the forward of
    # the first (Megatron-LM overlap_grad_reduce / overlap_param_gather, docs/source/api-guide/dist_optimizer.md), i.e. one
    # micro-batch of compute; ZeRO-3/FSDP gathers and reduces every micro-batch, behind all of it (Zhao et al. 2023, Sec. 3.3)
    busy = sum((terms[k] for k in KERNEL_TERMS if k in terms), start=elementwise)
    # With the interleaved schedule (vp > 1) each model chunk's gradients are final, and its reduce-scatter is launched, when
    # its last micro-batch's backward ends, and its parameter all-gather is needed only at its first forward (Megatron-LM
    # megatron/core/pipeline_parallel/schedules.py, forward_backward_pipelining_with_interleaving: grad_sync_func /
    # param_sync_func per chunk, is_last_microbatch_for_model_chunk). The cooldown runs the last pp micro-batches' backward
    # chunk by chunk (Narayanan et al. 2021, Sec. 2.2.2, Fig. 4), so after the first chunk's sync starts there remain about
    # pp·(vp-1)/vp micro-batches of compute to hide it behind, plus the last micro-batch itself
    overlap_micro_batches = np.minimum(micro_batches, 1.0 + pp * (vp - 1.0) / vp)
    window = np.where(sharded, busy, busy * overlap_micro_batches / micro_batches)
    dp_exposed = dp_comm - np.minimum(fw.dp_overlap * dp_comm, window)
    # a2a_overlap = 1: the recipe overlaps the EP all-to-all with the compute of another micro-batch (Megatron-Core
    # overlap_moe_expert_parallel_comm, Megatron-Bridge moe_a2a_overlap, after DeepSeek-V3's DualPipe computation-communication
    # overlap, arXiv:2412.19437, Sec. 3.2.1): exposed only where it outlasts the compute; otherwise the framework's ep_overlap
    ep_exposed = np.where(lay["a2a_overlap"] > 0, ep_comm - np.minimum(ep_comm, busy), (1 - fw.ep_overlap) * ep_comm)
    exposed = {"tp_comm_exposed_s": (1 - fw.tp_overlap) * tp_comm, "dp_comm_exposed_s": dp_exposed,
               "ep_comm_exposed_s": ep_exposed, "cp_comm_exposed_s": (1 - fw.cp_overlap) * cp_comm,
               "pp_comm_exposed_s": (1 - fw.pp_overlap) * pp_comm}
    exposed_total = sum(exposed.values(), start=np.zeros_like(n))
    fixed = elementwise * scale + optimizer + exposed_total
    for kernel in KERNEL_TERMS:
        terms.setdefault(kernel, np.zeros_like(n))
    terms.update(elementwise_s=elementwise, bubble_fraction=bubble, optimizer_s=optimizer, tp_comm_s=tp_comm, dp_comm_s=dp_comm,
                 ep_comm_s=ep_comm, cp_comm_s=cp_comm, pp_comm_s=pp_comm, exposed_comm_s=exposed_total, **exposed)
    return cols, fixed, terms


KERNEL_TERMS = ("gemm_s", "moe_gemm_s", "attention_s", "moe_dispatch_s")
"""The compute terms of `training_design` (FLOP- or call-bound kernels, before the pipeline bubble)."""


def step_from_terms(terms: Mapping[str, np.ndarray]) -> np.ndarray:
    """Seconds per step from the terms of `training_design`: (kernels + elementwise)·(1 + bubble) + optimizer + exposed communication."""
    busy = sum((terms[k] for k in KERNEL_TERMS), start=terms["elementwise_s"])
    return busy * (1.0 + terms["bubble_fraction"]) + terms["optimizer_s"] + terms["exposed_comm_s"]


def parameter_value(row: EfficiencyRow, part: str) -> float:
    """θ of one part of a row: 1/e_max ('inv'), n_half/e_max ('small'), overhead seconds ('overhead')."""
    return {"inv": 1.0 / row.e_max, "small": row.n_half / row.e_max, "overhead": row.overhead_us * 1e-6}[part]


def parameter_vector(cat: SpeedCatalog, keys: list[str]) -> np.ndarray:
    """θ for design keys 'row_key#part'."""
    rows = {r.key: r for r in cat.efficiency}
    return np.array([parameter_value(rows[k.split("#")[0]], k.split("#")[1]) for k in keys])


def training_step_s(shape: ModelShape, gpu: GpuSpec, dtype: str, framework: str, layout: Mapping[str, np.ndarray],
                    cat: SpeedCatalog | None = None, gpus_per_node: int | None = None) -> np.ndarray:
    """Seconds per optimizer step for each layout (the column the evaluator needs)."""
    cat = cat or load_speed_catalog()
    return step_from_terms(training_design(shape, gpu, dtype, framework, layout, cat, gpus_per_node)[2])


def tokens_per_s_per_gpu(shape: ModelShape, gpu: GpuSpec, dtype: str, framework: str, layout: Mapping[str, np.ndarray],
                         cat: SpeedCatalog | None = None, gpus_per_node: int | None = None) -> np.ndarray:
    """Trained tokens per second per GPU: global_batch × seq_len / (num_gpus × step)."""
    lay = _layout(layout)
    step = training_step_s(shape, gpu, dtype, framework, layout, cat, gpus_per_node)
    return lay["global_batch"] * lay["seq_len"] / (lay["num_gpus"] * step)


def mfu(shape: ModelShape, gpu: GpuSpec, seq_len: np.ndarray, tokens_per_s_gpu: np.ndarray) -> np.ndarray:
    """Model FLOPs utilisation against the BF16 dense peak, whatever the training dtype (PaLM App. B convention)."""
    return model_flops_per_token(shape, np.asarray(seq_len, dtype=float)) * tokens_per_s_gpu / (peak_tflops(gpu, "bf16") * 1e12)


def decode_attention_s(kv_bytes_read: np.ndarray, gpu: GpuSpec, cat: SpeedCatalog | None = None) -> np.ndarray:
    """Decode attention time: KV-cache bytes read per step over HBM × the decode_attention efficiency (memory-bound)."""
    cat = cat or load_speed_catalog()
    row = cat.efficiency_row("decode_attention", gpu.name, "any", "any")
    return np.asarray(kv_bytes_read, dtype=float) / (gpu.hbm_bandwidth_gbps * 1e9 * row.e_max)
