"""Ordered choices of the domain, one docstring per member.

Ordered enums let the code read as the domain speaks (`zero >= ZeroStage.GRADIENTS`), after
llm-analysis's `DSZeRO`.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class ZeroStage(IntEnum):
    """ZeRO data-parallel sharding stage (Rajbhandari et al. 2020, Sec. 5)."""

    NONE = 0
    """Plain data parallelism: every rank holds all model states."""
    OPTIMIZER = 1
    """P_os: optimizer states sharded over the data-parallel degree."""
    GRADIENTS = 2
    """P_os+g: optimizer states and gradients sharded."""
    PARAMETERS = 3
    """P_os+g+p: optimizer states, gradients and parameters sharded (FSDP FULL_SHARD)."""


class Checkpointing(IntEnum):
    """Activation recomputation (Korthikanti et al. 2022, Sec. 4 and 5)."""

    NONE = 0
    """Store every activation of the forward pass."""
    SELECTIVE = 1
    """Recompute only the attention core (softmax, dropout, scores x V): Korthikanti Sec. 5."""
    FULL = 2
    """Store only each layer's input and recompute the layer in the backward pass."""


class TrainPrecision(str, Enum):
    """Training precision policy: the dtype of weights, gradients and master copies."""

    FP32 = "fp32"
    """Everything in fp32: 4-byte weights and gradients, no master copy."""
    BF16 = "bf16"
    """bf16 mixed precision: 2-byte weights and gradients, fp32 master weights in the optimizer."""
    FP16 = "fp16"
    """fp16 mixed precision with loss scaling; same bytes as bf16 (ZeRO paper Sec. 3.1)."""
    FP8 = "fp8"
    """FP8 GEMMs (Transformer Engine / DeepSeek-V3): bf16 weights plus a transient fp8 copy."""


class Optimizer(str, Enum):
    """Optimizer, which sets the optimizer-state bytes per parameter."""

    ADAMW = "adamw"
    """Adam/AdamW: two fp32 moments (8 bytes), plus the fp32 master copy under mixed precision."""
    ADAMW_8BIT = "adamw_8bit"
    """8-bit Adam (Dettmers et al. 2022): two 1-byte moments, plus the fp32 master copy."""
    SGD_MOMENTUM = "sgd_momentum"
    """SGD with momentum: one fp32 momentum buffer, plus the fp32 master copy."""


class WeightPrecision(str, Enum):
    """Serving precision of the weights."""

    BF16 = "bf16"
    """2 bytes per weight."""
    FP16 = "fp16"
    """2 bytes per weight."""
    FP8 = "fp8"
    """1 byte per weight plus per-block or per-channel scales (needs FP8 tensor cores)."""
    INT8 = "int8"
    """1 byte per weight plus per-channel scales (LLM.int8 / SmoothQuant W8A8)."""
    INT4 = "int4"
    """Half a byte per weight plus group-wise scales and zeros (GPTQ / AWQ)."""


class KvPrecision(str, Enum):
    """Precision of the KV cache."""

    BF16 = "bf16"
    """2 bytes per element."""
    FP16 = "fp16"
    """2 bytes per element."""
    FP8 = "fp8"
    """1 byte per element (vLLM `kv_cache_dtype=fp8`)."""
    INT4 = "int4"
    """Half a byte per element (KIVI-style 4-bit cache)."""


class Framework(str, Enum):
    """Training framework, which sets conventions the evaluator reads from catalogs/frameworks.csv (activation bytes,
    main-gradient dtype, gradient-reduction dtype, overlaps) and which ZeRO stages it offers (`FRAMEWORK_ZERO_STAGES`)."""

    MEGATRON = "megatron"
    """Megatron-Core / NeMo: fused kernels (34·s·b·h activation bytes per layer), fp32 main gradients, distributed optimizer (ZeRO-1)."""
    FSDP = "fsdp"
    """PyTorch FSDP with Hugging Face eager modules: SHARD_GRAD_OP (ZeRO-2), FULL_SHARD (ZeRO-3) or HYBRID_SHARD."""
    DEEPSPEED = "deepspeed"
    """DeepSpeed ZeRO stages 0-3 with Hugging Face eager modules."""


FRAMEWORK_ZERO_STAGES: dict[Framework, tuple[int, ...]] = {
    Framework.MEGATRON: (0, 1), Framework.FSDP: (2, 3), Framework.DEEPSPEED: (0, 1, 2, 3),
}
"""ZeRO stages each framework implements: Megatron's DDP (0) and distributed optimizer (1; Megatron-LM docs,
distrib_optimizer.md); FSDP's SHARD_GRAD_OP (2) and FULL_SHARD (3) (Zhao et al. 2023, Sec. 3); DeepSpeed all four."""


class TrainingMode(str, Enum):
    """What part of the model is trained."""

    PRETRAIN = "pretrain"
    """All parameters trained from scratch."""
    FULL_FINETUNE = "full_finetune"
    """All parameters trained from a checkpoint: same memory as pretraining."""
    LORA = "lora"
    """Frozen 16-bit base weights, low-rank adapters trained (Hu et al. 2021)."""
    QLORA = "qlora"
    """Frozen 4-bit NF4 base weights, low-rank adapters trained (Dettmers et al. 2023)."""


class Objective(str, Enum):
    """What the solver optimises."""

    MIN_COST = "min_cost"
    """Training: dollars to train the tokens. Inference: dollars per hour at the required load."""
    MAX_THROUGHPUT = "max_throughput"
    """Tokens per second (within the budget and the GPU limits)."""
    MIN_GPUS = "min_gpus"
    """Fewest GPUs."""
    MIN_TIME = "min_time"
    """Training only: shortest time to train (within the budget)."""
    MIN_USD_PER_MILLION_TOKENS = "min_usd_per_million_tokens"
    """Serving only: cheapest output tokens at the delivered throughput (replicas meet the load)."""


class PriceTerm(str, Enum):
    """How GPUs are paid for."""

    ON_DEMAND = "on_demand"
    """Cloud, pay per hour, no commitment."""
    SPOT = "spot"
    """Cloud, pre-emptible."""
    RESERVED_1Y = "reserved_1y"
    """Cloud, one-year commitment."""
    RESERVED_3Y = "reserved_3y"
    """Cloud, three-year commitment."""
    ON_PREM = "on_prem"
    """Bought: capex amortised over the expected life plus power (catalogs/onprem.csv)."""
