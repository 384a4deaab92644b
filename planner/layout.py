"""Concrete configurations: one choice for every decision, as the evaluators take them.

`TrainingLayout` and `InferenceLayout` are what the solver chooses and what verification
re-evaluates. They hold choices only; every derived quantity is computed by the evaluators.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.enums import Checkpointing, KvPrecision, TrainPrecision, WeightPrecision, ZeroStage


class TrainingLayout(BaseModel):
    """One training configuration on one GPU type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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

    @model_validator(mode="after")
    def _ep_divides_dp(self) -> TrainingLayout:
        if self.dp % self.ep:
            raise ValueError(f"ep={self.ep} must divide dp={self.dp}")
        if self.offload_optimizer and self.zero < ZeroStage.OPTIMIZER:
            raise ValueError("optimizer offload needs ZeRO stage >= 1")
        if self.offload_params and self.zero < ZeroStage.PARAMETERS:
            raise ValueError("parameter offload needs ZeRO stage 3")
        return self

    @property
    def num_gpus(self) -> int:
        """tp x pp x dp."""
        return self.tp * self.pp * self.dp


class InferenceLayout(BaseModel):
    """One serving replica layout on one GPU type, and how many replicas."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu: str = Field(description="GPU id.")
    weight_precision: WeightPrecision = Field(description="Weight precision.")
    kv_precision: KvPrecision = Field(description="KV-cache precision.")
    tp: int = Field(ge=1, description="Tensor-parallel degree of a replica.")
    pp: int = Field(default=1, ge=1, description="Pipeline-parallel degree of a replica.")
    batch: int = Field(ge=1, description="Concurrent sequences per replica.")
    replicas: int = Field(default=1, ge=1, description="Independent replicas.")

    @property
    def gpus_per_replica(self) -> int:
        """tp x pp."""
        return self.tp * self.pp

    @property
    def num_gpus(self) -> int:
        """All GPUs of the fleet."""
        return self.gpus_per_replica * self.replicas
