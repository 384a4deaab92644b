"""Concrete configurations: one choice for every decision, as the evaluators take them.

`TrainingLayout` and `InferenceLayout` are what the solver chooses and what verification
re-evaluates. They hold choices only; every derived quantity is computed by the evaluators.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from typing import Any

from planner.enums import FRAMEWORK_ZERO_STAGES, Checkpointing, Framework, KvPrecision, TrainPrecision, WeightPrecision, ZeroStage


class TrainingLayout(BaseModel):
    """One training configuration on one GPU type."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    gpu: str = Field(description="GPU id.")
    precision: TrainPrecision = Field(description="Precision policy.")
    tp: int = Field(ge=1, description="Tensor-parallel degree.")
    pp: int = Field(ge=1, description="Pipeline-parallel degree.")
    dp: int = Field(ge=1, description="Data-parallel degree.")
    ep: int = Field(default=1, ge=1, description="Expert-parallel degree (divides dp; MoE only).")
    expert_tp: int = Field(default=1, ge=1, description="Tensor-parallel split of each expert (Megatron default: tp when ep=1).")
    zero: ZeroStage = Field(description="ZeRO stage.")
    checkpointing: Checkpointing = Field(description="Activation recomputation.")
    micro_batch: int = Field(ge=1, description="Sequences per micro-batch.")
    grad_accum: int = Field(ge=1, description="Micro-batches per optimizer step per data-parallel rank.")
    sequence_parallel: bool = Field(default=True, description="Megatron sequence parallelism (effective when tp > 1).")
    flash_attention: bool = Field(default=True, description="FlashAttention: no s^2 activations.")
    offload_optimizer: bool = Field(default=False, description="ZeRO-Offload: optimizer states in CPU memory.")
    offload_params: bool = Field(default=False, description="ZeRO-Infinity: parameter shards in CPU memory (ZeRO-3 only).")
    cp: int = Field(default=1, ge=1, description="Context-parallel degree (ring attention: each rank holds seq_len/cp tokens).")
    framework: Framework = Field(default=Framework.MEGATRON, description="Training framework (conventions from catalogs/frameworks.csv); "
                                 "when omitted: fsdp for ZeRO-2/3, megatron otherwise.")
    zero_group: int = Field(default=0, ge=0, description="Hybrid sharding: ZeRO-3 within groups of this many DP ranks, replicated "
                            "across groups (FSDP HYBRID_SHARD, DeepSpeed hpZ/MiCS); 0 = shard over the whole DP group.")

    @model_validator(mode="before")
    @classmethod
    def _default_framework(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("framework") is None and "zero" in data:
            try:
                zero = int(data["zero"])
            except (TypeError, ValueError):
                return data
            return {**data, "framework": Framework.FSDP if zero >= ZeroStage.GRADIENTS else Framework.MEGATRON}
        return data

    @model_validator(mode="after")
    def _ep_divides_dp(self) -> TrainingLayout:
        if self.dp % self.ep:
            raise ValueError(f"ep={self.ep} must divide dp={self.dp}")
        if int(self.zero) not in FRAMEWORK_ZERO_STAGES[self.framework]:
            raise ValueError(f"framework {self.framework.value} offers ZeRO stages {FRAMEWORK_ZERO_STAGES[self.framework]}, not {int(self.zero)}")
        if self.zero_group and (self.zero < ZeroStage.PARAMETERS or self.dp % self.zero_group or self.zero_group >= self.dp):
            raise ValueError(f"zero_group={self.zero_group} needs ZeRO-3 and must be a proper divisor of dp={self.dp}")
        if self.offload_optimizer and self.zero < ZeroStage.OPTIMIZER:
            raise ValueError("optimizer offload needs ZeRO stage >= 1")
        if self.offload_params and self.zero < ZeroStage.PARAMETERS:
            raise ValueError("parameter offload needs ZeRO stage 3")
        return self

    @property
    def num_gpus(self) -> int:
        """tp x pp x cp x dp."""
        return self.tp * self.pp * self.cp * self.dp


class InferenceLayout(BaseModel):
    """One serving replica layout on one GPU type, and how many replicas."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    gpu: str = Field(description="GPU id.")
    weight_precision: WeightPrecision = Field(description="Weight precision.")
    kv_precision: KvPrecision = Field(description="KV-cache precision.")
    tp: int = Field(ge=1, description="Tensor-parallel degree of a replica.")
    pp: int = Field(default=1, ge=1, description="Pipeline-parallel degree of a replica.")
    batch: int = Field(ge=1, description="Concurrent sequences per replica.")
    replicas: int = Field(default=1, ge=1, description="Independent replicas (disaggregated: copies of the whole prefill + decode unit).")
    prefill_replicas: int = Field(default=0, ge=0, description="Disaggregated serving: prefill replicas per unit (0 = colocated: "
                                  "every replica runs prefill and decode). tp, pp and batch then describe a decode replica.")
    decode_replicas: int = Field(default=0, ge=0, description="Disaggregated serving: decode replicas per unit (0 when colocated).")
    prefill_tp: int = Field(default=1, ge=1, description="Disaggregated serving: tensor-parallel degree of a prefill replica.")
    prefill_pp: int = Field(default=1, ge=1, description="Disaggregated serving: pipeline-parallel degree of a prefill replica.")
    prefill_batch: int = Field(default=1, ge=1, description="Disaggregated serving: most prompts a prefill replica holds at once.")
    attention_dp: int = Field(default=1, ge=1, description="MoE serving: data-parallel attention ranks within the tp cards (SGLang "
                              "--enable-dp-attention, TensorRT-LLM attention DP): attention TP = tp / attention_dp, each DP rank "
                              "holding the KV of its own sequences; routed experts split over all tp cards (EP = tp). 1 = TP attention.")

    @model_validator(mode="after")
    def _pools_together(self) -> InferenceLayout:
        if (self.prefill_replicas > 0) != (self.decode_replicas > 0):
            raise ValueError("prefill_replicas and decode_replicas are both 0 (colocated) or both >= 1 (disaggregated)")
        if self.tp % self.attention_dp or (self.attention_dp > 1 and (self.pp > 1 or self.disaggregated)):
            raise ValueError(f"attention_dp={self.attention_dp} must divide tp={self.tp}, with pp=1 and colocated replicas")
        return self

    @property
    def disaggregated(self) -> bool:
        """Separate prefill and decode pools (DistServe, Zhong et al. 2024) rather than colocated replicas."""
        return self.prefill_replicas > 0

    @property
    def stage_gpus(self) -> int:
        """tp x pp: the GPUs of one colocated or decode replica."""
        return self.tp * self.pp

    @property
    def prefill_stage_gpus(self) -> int:
        """prefill_tp x prefill_pp: the GPUs of one prefill replica (disaggregated)."""
        return self.prefill_tp * self.prefill_pp

    @property
    def gpus_per_replica(self) -> int:
        """tp x pp; disaggregated: the whole unit, prefill_replicas x prefill_tp x prefill_pp + decode_replicas x tp x pp."""
        if self.disaggregated:
            return self.prefill_replicas * self.prefill_stage_gpus + self.decode_replicas * self.stage_gpus
        return self.stage_gpus

    @property
    def num_gpus(self) -> int:
        """All GPUs of the fleet."""
        return self.gpus_per_replica * self.replicas
