"""The scenario file: what a user asks planner, validated with pydantic (`extra="forbid"`).

A scenario names a workload (training or inference), a search space (which GPUs, precisions,
parallel degrees the solver may choose), constraints (budget, deadline, GPU limits, inventory),
pricing, an objective, and optional overrides of the default assumptions. YAML or JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from planner.catalog import load_assumption_defaults
from planner.enums import (
    Checkpointing,
    Framework,
    KvPrecision,
    Objective,
    Optimizer,
    PriceTerm,
    TrainingMode,
    TrainPrecision,
    WeightPrecision,
    ZeroStage,
)
from planner.errors import InputError
from planner.files import load_structured, shorten
from planner.traffic import ServingSlo, TokenLengths, Traffic

FORBID = ConfigDict(defer_build=True, extra="forbid", frozen=True, allow_inf_nan=False)

MAX_LIST_VALUES = 64
"""Most values a search list (GPUs, degrees, batch sizes, precisions) may hold: the table grows with their product."""

MAX_GPU_COUNT = 1_000_000
"""Largest GPU count a scenario may state (max_gpus, inventory): far beyond any cluster, small enough for exact integer models."""

MAX_LATENCY_S = 86_400.0
"""Longest latency target accepted (one day); larger values are no target at all."""

MAX_SERVING_BUDGET_USD_PER_HOUR = 1e7
"""Largest serving budget ($/hour) accepted: ten million dollars an hour is beyond any fleet and keeps the integer model exact."""


def canonical_gpu_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    """Keys that name a catalog GPU by an alias become its canonical id (unknown names are kept for the catalog check)."""
    from planner.catalog import resolve_gpu
    from planner.errors import UnknownNameError

    out: dict[str, Any] = {}
    for key, value in mapping.items():
        try:
            name = resolve_gpu(key).name
        except UnknownNameError:
            name = key
        if name in out:
            raise ValueError(f"{key!r} names {name} a second time")
        out[name] = value
    return out


class Assumptions(BaseModel):
    """Efficiencies, reserves and rates the formulas use; defaults and sources in catalogs/assumptions.yaml."""

    model_config = FORBID

    matmul_ceiling_fraction: float = Field(gt=0, le=1, description="Measured-matmul / peak, for cards without a measurement.")
    prefill_kernel_efficiency: float = Field(gt=0, le=1, description="Share of the matmul ceiling prefill sustains.")
    decode_hbm_efficiency: float = Field(gt=0, le=1, description="Share of HBM bandwidth decode sustains.")
    collective_latency_s: float = Field(ge=0, description="Latency of one small collective, seconds.")
    runtime_reserve_gib_training: float = Field(ge=0, description="Per-card runtime reserve in training, GiB.")
    allocator_fragmentation_fraction: float = Field(ge=0, lt=1, description="Share of card memory lost to fragmentation in training.")
    runtime_reserve_gib_inference: float = Field(ge=0, description="Per-card runtime reserve in serving, GiB.")
    gpu_memory_utilization: float = Field(gt=0, le=1, description="Serving engine's cap on card memory (vLLM).")
    kv_block_tokens: int = Field(gt=0, description="Tokens per paged KV block.")
    prefill_chunk_tokens: int = Field(gt=0, description="Tokens per prefill chunk (activation workspace).")
    int4_group_size: int = Field(gt=0, description="Weights per int4 quantisation group.")
    quantize_embeddings: bool = Field(description="Quantise the embedding and LM head too (else keep 16-bit).")
    pue: float = Field(ge=1, description="Power usage effectiveness of the data centre.")
    usd_per_kwh: float = Field(ge=0, description="Electricity price, USD per kWh.")
    pipeline_interleave_chunks: int = Field(ge=1, description="Virtual stages per pipeline rank (1 = plain 1F1B).")
    host_link_gbps: float = Field(gt=0, description="Host<->GPU bandwidth for offload traffic, GB/s.")
    spot_interruptions_per_instance_hour: float = Field(ge=0, le=10, description="Spot preemptions per instance-hour.")
    checkpoint_write_s: float = Field(gt=0, description="Time to write one training checkpoint, seconds (Young/Daly delta).")
    restart_after_preemption_s: float = Field(ge=0, description="Time to get capacity back and resume from a checkpoint, seconds.")
    price_stale_after_days: int = Field(gt=0, description="Price rows older than this many days are flagged as stale.")
    hosting_usd_per_kw_month: float = Field(ge=0, description="Colocation of owned servers, USD per kW of wall power per month.")
    engine_overhead_s: float = Field(ge=0, description="Serving engine's scheduler/sampler time per iteration, seconds.")
    serving_itl_tail_share_margin: float = Field(ge=1, description="Tail ITL percentiles: share of prefill iterations x this margin.")
    serving_allreduce_latency_s: float = Field(ge=0, description="Latency of one small decode all-reduce (one-shot, in a node), seconds.")
    serving_oneshot_max_bytes: float = Field(ge=0, description="Largest all-reduce message the one-shot kernel takes, bytes.")
    serving_custom_allreduce_max_bytes: float = Field(gt=0, description="Largest message of the custom all-reduce; above it NCCL ring latency, bytes.")
    file: str | None = Field(default=None, description="Calibration overlay YAML (as `planner calibrate` writes it) applied over "
                             "catalogs/calibration.yaml; a relative path is resolved against the scenario file.")

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if field is not None and field.annotation is not bool and isinstance(value, bool):
                    raise ValueError(f"{key}: expected a number, got the boolean {value!r}")
        return data

    @classmethod
    def with_overrides(cls, overrides: dict[str, Any] | None = None) -> Assumptions:
        """Catalog defaults, with a scenario's overrides applied."""
        defaults = {key: entry["value"] for key, entry in load_assumption_defaults().items()}
        return cls.model_validate({**defaults, **(overrides or {})})

    @staticmethod
    def source_of(key: str) -> str:
        """The source text of a default assumption."""
        return str(load_assumption_defaults().get(key, {}).get("source", "scenario override"))


class LoraSettings(BaseModel):
    """Low-rank adapters (Hu et al. 2021): rank and the projections they attach to."""

    model_config = FORBID

    rank: int = Field(default=16, gt=0, le=4096, description="Adapter rank r.")
    target_modules: tuple[Literal["q", "k", "v", "o", "gate", "up", "down"], ...] = Field(
        default=("q", "k", "v", "o", "gate", "up", "down"), description="Projections that get an adapter."
    )


class TrainingWorkload(BaseModel):
    """Pretraining or fine-tuning a model on a number of tokens."""

    model_config = FORBID

    kind: Literal["training"] = Field(description="Workload type.")
    mode: TrainingMode = Field(default=TrainingMode.PRETRAIN, description="pretrain, full_finetune, lora or qlora.")
    model: str = Field(min_length=1, max_length=4096, description="Catalog model name or path to a Hugging Face config.json.")
    tokens: float = Field(gt=0, le=1e16, description="Tokens to train on.")
    seq_len: int = Field(gt=0, le=1_048_576, description="Sequence length, tokens.")
    global_batch_seqs: int = Field(gt=0, le=1_048_576, description="Sequences per optimizer step (at most 2^20).")
    global_batch_tolerance: float = Field(
        default=0.0, ge=0, le=0.5,
        description="Accept a global batch within this fraction of global_batch_seqs when it divides better (0 = exact).",
    )
    optimizer: Optimizer = Field(default=Optimizer.ADAMW, description="Optimizer (sets optimizer-state bytes).")
    lora: LoraSettings | None = Field(default=None, description="Adapter settings for lora/qlora.")

    @model_validator(mode="after")
    def _lora_needs_settings(self) -> TrainingWorkload:
        if self.mode in (TrainingMode.LORA, TrainingMode.QLORA) and self.lora is None:
            object.__setattr__(self, "lora", LoraSettings())
        return self


class LatencySlo(BaseModel):
    """Latency targets for serving, at a percentile of requests (TTFT) and of inter-token gaps (TPOT)."""

    model_config = FORBID

    ttft_s: float | None = Field(default=None, gt=0, description="Max time to first token at the percentile, seconds.")
    tpot_s: float | None = Field(default=None, gt=0, description="Max time per output token (inter-token latency) at the percentile, seconds.")
    percentile: Literal[50, 90, 99] = Field(
        default=90, description="Percentile the limits hold at: 50, 90 or 99 (default 90, what a latency target usually means).")


class InferenceWorkload(BaseModel):
    """Serving a model at a load: the short form (lengths, tokens/s or concurrency, `slo`) or a `traffic:` block.

    The short form is turned into a `planner.traffic.Traffic` (`resolved_traffic`): request
    rate = target_output_tokens_per_s / output_tokens, or a closed loop of concurrent_sequences;
    fixed lengths; `slo` at its percentile (90 unless given).
    """

    model_config = FORBID

    kind: Literal["inference"] = Field(description="Workload type.")
    model: str = Field(min_length=1, description="Catalog model name or path to a Hugging Face config.json.")
    prompt_tokens: int | None = Field(default=None, gt=0, description="Prompt length per request, tokens (default: traffic's mean).")
    output_tokens: int | None = Field(default=None, gt=0, description="Generated tokens per request (default: traffic's mean).")
    concurrent_sequences: int | None = Field(default=None, gt=0, le=100_000_000, description="Sequences in flight at once, fleet-wide.")
    target_output_tokens_per_s: float | None = Field(default=None, gt=0, le=1e10, description="Required output tokens/s, fleet-wide.")
    slo: LatencySlo = Field(default_factory=LatencySlo, description="Latency targets at a percentile.")
    traffic: Traffic | None = Field(default=None, description="Load as request rate or concurrency, length distributions, SLOs, prefix cache, speculation.")

    @model_validator(mode="after")
    def _needs_a_load(self) -> InferenceWorkload:
        if self.traffic is None:
            if self.prompt_tokens is None or self.output_tokens is None:
                raise ValueError("give prompt_tokens and output_tokens (or a traffic: block)")
            if self.concurrent_sequences is None and self.target_output_tokens_per_s is None:
                raise ValueError("give concurrent_sequences or target_output_tokens_per_s (or both), or a traffic: block")
            return self
        if self.concurrent_sequences is not None or self.target_output_tokens_per_s is not None:
            raise ValueError("state the load once: traffic.request_rate_rps / traffic.concurrency, not concurrent_sequences or "
                             "target_output_tokens_per_s beside a traffic: block")
        if self.slo != LatencySlo():
            raise ValueError("state the SLOs once: traffic.slo, not slo beside a traffic: block")
        t = self.traffic
        object.__setattr__(self, "slo", LatencySlo(ttft_s=t.slo.ttft_s, tpot_s=t.slo.tpot_s, percentile=t.slo.percentile))
        if self.prompt_tokens is None:
            object.__setattr__(self, "prompt_tokens", max(1, round(t.prompt.mean_tokens())))
        if self.output_tokens is None:
            object.__setattr__(self, "output_tokens", max(1, round(t.output.mean_tokens())))
        return self

    def resolved_traffic(self) -> Traffic:
        """The load as a `Traffic`: the traffic: block, or the short form (rate from tokens/s, else the closed-loop concurrency)."""
        if self.traffic is not None:
            return self.traffic
        assert self.prompt_tokens is not None and self.output_tokens is not None
        rate = self.target_output_tokens_per_s / self.output_tokens if self.target_output_tokens_per_s else None
        return Traffic(request_rate_rps=rate, concurrency=None if rate else self.concurrent_sequences,
                       prompt=TokenLengths(fixed=self.prompt_tokens), output=TokenLengths(fixed=self.output_tokens),
                       slo=ServingSlo(ttft_s=self.slo.ttft_s, tpot_s=self.slo.tpot_s, percentile=self.slo.percentile))


Workload = Annotated[TrainingWorkload | InferenceWorkload, Field(discriminator="kind")]


class SearchSpace(BaseModel):
    """What the solver may choose; a list fixes or restricts a choice, None leaves it open."""

    model_config = FORBID

    gpus: tuple[str, ...] | None = Field(default=None, min_length=1, max_length=MAX_LIST_VALUES, description="GPU ids to consider (None = whole catalog).")
    train_precisions: tuple[TrainPrecision, ...] = Field(
        default=(TrainPrecision.BF16, TrainPrecision.FP8), max_length=MAX_LIST_VALUES, description="Training precision policies to consider."
    )
    weight_precisions: tuple[WeightPrecision, ...] = Field(
        default=(WeightPrecision.BF16, WeightPrecision.FP8, WeightPrecision.INT8, WeightPrecision.INT4),
        max_length=MAX_LIST_VALUES, description="Serving weight precisions to consider.",
    )
    kv_precisions: tuple[KvPrecision, ...] = Field(
        default=(KvPrecision.BF16, KvPrecision.FP8), max_length=MAX_LIST_VALUES, description="KV-cache precisions to consider."
    )
    tp: tuple[int, ...] | None = Field(default=None, max_length=MAX_LIST_VALUES, description="Allowed tensor-parallel degrees.")
    pp: tuple[int, ...] | None = Field(default=None, max_length=MAX_LIST_VALUES, description="Allowed pipeline-parallel degrees.")
    ep: tuple[int, ...] | None = Field(default=None, max_length=MAX_LIST_VALUES, description="Allowed expert-parallel degrees (MoE).")
    zero_stages: tuple[ZeroStage, ...] = Field(default=(0, 1, 2, 3), max_length=MAX_LIST_VALUES, description="Allowed ZeRO stages.")
    cp: tuple[int, ...] | None = Field(default=None, max_length=MAX_LIST_VALUES, description="Allowed context-parallel degrees (None = 1, "
                                       "and 2, 4, 8 from seq_len 32,768; each must split seq_len into 2·cp chunks).")
    frameworks: tuple[Framework, ...] = Field(default=(Framework.MEGATRON, Framework.FSDP), min_length=1, max_length=MAX_LIST_VALUES,
                                              description="Training frameworks to consider, each with the ZeRO stages it offers "
                                              "(megatron 0-1, fsdp 2-3, deepspeed 0-3).")
    hybrid_shard: bool = Field(default=True, description="Also consider ZeRO-3 sharded within one node and replicated across "
                               "nodes (FSDP HYBRID_SHARD).")
    checkpointing: tuple[Checkpointing, ...] = Field(default=(0, 1, 2), max_length=MAX_LIST_VALUES, description="Allowed recomputation modes.")
    micro_batches: tuple[int, ...] = Field(default=(1, 2, 4, 8), max_length=MAX_LIST_VALUES, description="Allowed micro-batch sizes, sequences.")
    batch_per_replica: tuple[int, ...] | None = Field(default=None, max_length=MAX_LIST_VALUES, description="Allowed serving batch sizes per replica.")
    attention_dp: tuple[int, ...] | None = Field(default=None, max_length=MAX_LIST_VALUES, description="MoE serving: data-parallel "
                                                 "attention degrees within a replica's tp cards (experts over all of them); None = "
                                                 "1, 2, 4, ... 64 for MoE models, 1 for dense ones.")
    disaggregated: tuple[bool, ...] = Field(default=(False, True), min_length=1, max_length=2, description="Serving layouts: "
                                            "colocated replicas (false) and/or disaggregated prefill and decode pools (true; "
                                            "searched for request-rate and tokens/s loads, not for a concurrency).")
    sequence_parallel: bool = Field(default=True, description="Use Megatron sequence parallelism with TP > 1.")
    flash_attention: bool = Field(default=True, description="FlashAttention: no s^2 score activations.")
    allow_offload: bool = Field(default=False, description="Allow ZeRO-Offload of optimizer states to CPU.")
    tp_within_node: bool = Field(default=True, description="Keep each TP group inside one node's scale-up domain.")
    max_gpus: int | None = Field(default=None, gt=0, le=MAX_GPU_COUNT, description="Most GPUs a plan may use.")
    gpus_per_node: int | None = Field(default=None, gt=0, le=1024, description="Override of the catalog's GPUs per server.")

    @model_validator(mode="after")
    def _a_framework_offers_a_zero_stage(self) -> SearchSpace:
        from planner.enums import FRAMEWORK_ZERO_STAGES

        if not any(int(z) in FRAMEWORK_ZERO_STAGES[f] for f in self.frameworks for z in self.zero_stages):
            offered = "; ".join(f"{f.value}: {list(FRAMEWORK_ZERO_STAGES[f])}" for f in Framework)
            raise ValueError(f"frameworks {[f.value for f in self.frameworks]} offer none of zero_stages {[int(z) for z in self.zero_stages]}; "
                             f"allowed pairs: {offered}")
        return self

    @field_validator("tp", "pp", "ep", "cp", "micro_batches", "batch_per_replica", "attention_dp")
    @classmethod
    def _positive(cls, values: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if values is not None and (not values or min(values) < 1 or max(values) > MAX_GPU_COUNT):
            raise ValueError(f"must be a non-empty list of integers from 1 to {MAX_GPU_COUNT:,}")
        return values


class Constraints(BaseModel):
    """Limits a plan must respect."""

    model_config = FORBID

    budget_usd: float | None = Field(default=None, gt=0, le=1e12, description="Training: most dollars for the run. Inference: most dollars per hour.")
    deadline_days: float | None = Field(default=None, gt=0, le=36500, description="Training must finish within this many days.")
    inventory: dict[str, int] = Field(default_factory=dict, max_length=MAX_LIST_VALUES, description="Most GPUs available per GPU id (e.g. owned or allocatable).")

    @field_validator("inventory")
    @classmethod
    def _non_negative(cls, inventory: dict[str, int]) -> dict[str, int]:
        for gpu, count in inventory.items():
            if not 0 <= count <= MAX_GPU_COUNT:
                raise ValueError(f"inventory of {shorten(gpu, 40)} must be between 0 and {MAX_GPU_COUNT:,}")
        return canonical_gpu_keys(inventory)


class Pricing(BaseModel):
    """Where GPU prices come from."""

    model_config = FORBID

    term: PriceTerm = Field(default=PriceTerm.ON_DEMAND, description="on_demand, spot, reserved_1y, reserved_3y or on_prem.")
    provider: str | None = Field(default=None, min_length=1, max_length=200, description="Restrict to one provider (None = cheapest row per GPU).")
    price_file: str | None = Field(default=None, description="Path to a price CSV with the catalog's columns.")
    usd_per_gpu_hour: dict[str, float] = Field(default_factory=dict, max_length=MAX_LIST_VALUES, description="Explicit price per GPU id, overriding any row.")
    price_multiplier: float = Field(default=1.0, gt=0, le=1e6, description="Scale every price (what-if studies).")
    allow_placeholder_prices: bool = Field(
        default=False, description="Let rows marked placeholder (no primary or machine-read source) be chosen; off by default.")

    @field_validator("usd_per_gpu_hour")
    @classmethod
    def _canonical_prices(cls, prices: dict[str, float]) -> dict[str, float]:
        for gpu, price in prices.items():
            if not 0 < price < 1e6:
                raise ValueError(f"price of {shorten(gpu, 40)} must be between 0 and 1e6 USD per GPU-hour")
        return canonical_gpu_keys(prices)


class Scenario(BaseModel):
    """One planning question."""

    model_config = FORBID

    name: str = Field(min_length=1, max_length=200, description="Short name of the scenario.")
    description: str = Field(default="", max_length=10_000, description="What the team wants to know.")
    workload: Workload = Field(description="Training or inference workload.")
    search: SearchSpace = Field(default_factory=SearchSpace, description="What the solver may choose.")
    constraints: Constraints = Field(default_factory=Constraints, description="Budget, deadline, GPU limits.")
    pricing: Pricing = Field(default_factory=Pricing, description="Where prices come from.")
    objective: Objective = Field(default=Objective.MIN_COST, description="min_cost, max_throughput, min_gpus or min_time.")
    assumptions: dict[str, Any] = Field(default_factory=dict, description="Overrides of catalogs/assumptions.yaml by key.")

    @field_validator("assumptions")
    @classmethod
    def _known_assumptions(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        for key, value in overrides.items():
            field = Assumptions.model_fields.get(key) if isinstance(key, str) else None
            if field is not None and field.annotation is not bool and isinstance(value, bool):
                raise ValueError(f"{key}: expected a number, got the boolean {value!r}")
        resolved = Assumptions.with_overrides(overrides)
        if resolved.file is not None:
            from planner.perf import speed_catalog

            speed_catalog(resolved)  # a missing or malformed overlay fails at load time, naming assumptions.file
        return overrides

    @model_validator(mode="after")
    def _objective_and_limits_fit_the_workload(self) -> Scenario:
        training = isinstance(self.workload, TrainingWorkload)
        if training and self.objective is Objective.MIN_USD_PER_MILLION_TOKENS:
            raise ValueError("objective: min_usd_per_million_tokens applies to serving; for training use min_cost or min_time")
        if not training and self.objective is Objective.MIN_TIME:
            raise ValueError("objective: min_time applies to training; for serving use min_cost, max_throughput, min_gpus "
                             "or min_usd_per_million_tokens")
        if not training and self.objective is Objective.MAX_THROUGHPUT and not (self.search.max_gpus or self.constraints.budget_usd):
            raise ValueError("objective: max_throughput for serving needs search.max_gpus or constraints.budget_usd (else it is unbounded)")
        budget = self.constraints.budget_usd
        if not training and budget is not None and budget > MAX_SERVING_BUDGET_USD_PER_HOUR:
            raise ValueError(f"constraints.budget_usd: a serving budget is USD per hour, at most {MAX_SERVING_BUDGET_USD_PER_HOUR:g} "
                             f"(got {budget:g})")
        if not training:
            for key, value in getattr(self.workload, "slo", None) or ():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAX_LATENCY_S:
                    raise ValueError(f"workload.slo.{key}: at most {MAX_LATENCY_S:g} s (got {value:g}); leave it out for no target")
        return self

    def resolved_assumptions(self) -> Assumptions:
        """Default assumptions with this scenario's overrides."""
        return Assumptions.with_overrides(self.assumptions)


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("training", "inference")]
    return ".".join(parts) or "(top level)"


def validation_message(err: ValidationError, origin: str) -> str:
    """One line naming the file, the field and the problem, from pydantic's first error (echoed values shortened)."""
    first = err.errors()[0]
    field = _format_loc(first["loc"])
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (not part of the schema; see `planner schema`)"
    elif first["type"] == "missing":
        msg = "required field is missing"
    if not first["loc"] and first["type"] == "value_error":
        return f"{origin}: {msg}."
    shown = first.get("input")
    extra = f" (got {shorten(shown)})" if first["type"] not in ("extra_forbidden", "missing") and not isinstance(shown, dict) else ""
    field = field if len(field) <= 120 else field[:119] + "…"
    return f"{origin}: {field}: {msg}{extra}."


def _field_kind(annotation: Any) -> tuple[str, Any]:
    """How a field's annotation is walked for `reject_bools`: ('number'|'model'|'seq'|'map'|'union'|'other', detail)."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _field_kind(typing.get_args(annotation)[0])
    if annotation in (int, float) or (isinstance(annotation, type) and issubclass(annotation, int) and annotation is not bool):
        return "number", None  # int, float and IntEnum choices (ZeroStage, Checkpointing)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return ("seq", args[0]) if len(args) == 1 else ("other", None)
    if origin is dict:
        return "map", typing.get_args(annotation)[1]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if bool in args:
            return "other", None
        if len(args) == 1:
            return _field_kind(args[0])
        return "union", args
    return "other", None


def reject_bools(model: type[BaseModel], data: Any, where: str = "") -> None:
    """Raise `InputError` where a boolean stands for a number (`prompt_tokens: true` is not 1), walking `model`'s fields."""
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            continue
        _reject_bool_value(field.annotation, value, f"{where}{key}", data)


def _reject_bool_value(annotation: Any, value: Any, where: str, parent: dict[str, Any]) -> None:
    kind, detail = _field_kind(annotation)
    if kind == "number" and isinstance(value, bool):
        raise InputError(f"{where}: expected a number, got the boolean {value!r}.")
    if kind == "model":
        reject_bools(detail, value, f"{where}.")
    elif kind == "seq" and isinstance(value, list):
        for i, item in enumerate(value[:MAX_LIST_VALUES + 1]):
            _reject_bool_value(detail, item, f"{where}[{i}]", parent)
    elif kind == "map" and isinstance(value, dict):
        for k, item in list(value.items())[:MAX_LIST_VALUES + 1]:
            _reject_bool_value(detail, item, f"{where}.{k}", parent)
    elif kind == "union" and isinstance(value, dict):
        models = [a for a in detail if isinstance(a, type) and issubclass(a, BaseModel)]
        for sub in models:  # a discriminated union (the workload): follow its kind
            literal = sub.model_fields.get("kind")
            if literal is not None and value.get("kind") in getattr(literal.annotation, "__args__", ()):
                reject_bools(sub, value, f"{where}.")
                return
    elif kind == "union" and isinstance(value, bool) and any(a in (int, float) for a in detail):
        raise InputError(f"{where}: expected a number, got the boolean {value!r}.")


def parse_scenario(data: Any, origin: str = "scenario") -> Scenario:
    """Validate a scenario dict, raising `InputError` with a one-line message on any problem."""
    if not isinstance(data, dict):
        raise InputError(f"{origin}: expected a mapping of scenario fields at the top level.")
    try:
        reject_bools(Scenario, data)
    except InputError as err:
        raise InputError(f"{origin}: {err}") from None
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as err:
        raise InputError(validation_message(err, origin)) from None
    workload = scenario.workload
    if (isinstance(workload, TrainingWorkload) and workload.mode is TrainingMode.QLORA and "train_precisions" in scenario.search.model_fields_set
            and TrainPrecision.FP8 in scenario.search.train_precisions):
        from planner.perf import QLORA_FP8_MESSAGE

        raise InputError(f"{origin}: " + QLORA_FP8_MESSAGE.format(field="search.train_precisions"))
    return scenario


def read_structured_file(path: Path) -> Any:
    """Read YAML or JSON safely (`planner.files`): duplicate keys, alias bombs, deep nesting, binary or huge files refused."""
    return load_structured(Path(path))


def looks_like_path(value: Any, root: Path) -> bool:
    """A model name that is a path to a config.json (by its suffix, or an existing file beside `root`) rather than a catalog name."""
    if not isinstance(value, str):
        return False
    if value.endswith(".json"):
        return True
    try:
        return (root / value).is_file()
    except OSError:
        return False


def resolve_relative_paths(data: Any, root: Path) -> Any:
    """A copy of a scenario mapping whose file paths (workload.model when a path, pricing.price_file, assumptions.file) are
    relative to `root`.

    Every path in a file is read relative to the file that names it, not the current directory.
    """
    if not isinstance(data, dict):
        return data
    out = dict(data)

    def anchored(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        path = Path(value).expanduser()
        return value if path.is_absolute() else str(root / path)

    workload = out.get("workload")
    if isinstance(workload, dict) and looks_like_path(workload.get("model"), root):
        out["workload"] = {**workload, "model": anchored(workload["model"])}
    pricing = out.get("pricing")
    if isinstance(pricing, dict) and pricing.get("price_file"):
        out["pricing"] = {**pricing, "price_file": anchored(pricing["price_file"])}
    assumptions = out.get("assumptions")
    if isinstance(assumptions, dict) and assumptions.get("file"):
        out["assumptions"] = {**assumptions, "file": anchored(assumptions["file"])}
    return out


def check_catalog_names(scenario: Scenario, origin: str) -> Scenario:
    """Resolve the model and every GPU name against the catalogs, so a typo fails at load time naming file and field."""
    from planner.catalog import resolve_gpu, resolve_model

    resolve_model(scenario.workload.model, where=f"{origin}: workload.model")
    for gpu in scenario.search.gpus or ():
        resolve_gpu(gpu, where=f"{origin}: search.gpus")
    for gpu in scenario.constraints.inventory:
        resolve_gpu(gpu, where=f"{origin}: constraints.inventory")
    for gpu in scenario.pricing.usd_per_gpu_hour:
        resolve_gpu(gpu, where=f"{origin}: pricing.usd_per_gpu_hour")
    if scenario.pricing.price_file:
        from planner.catalog import load_prices

        try:
            load_prices(Path(scenario.pricing.price_file))
        except InputError as err:
            raise InputError(f"{origin}: pricing.price_file: {err}") from None
    return scenario


def fp8_conflict(scenario: Scenario) -> str | None:
    """Why the scenario asks for FP8 only where no allowed GPU has FP8 tensor cores ('search.FIELD: ...'), or None."""
    from planner.catalog import load_gpus, resolve_gpu

    gpus = [resolve_gpu(g) for g in scenario.search.gpus] if scenario.search.gpus is not None else list(load_gpus())
    if any(g.supports_fp8 for g in gpus):
        return
    names = ", ".join(g.name for g in gpus)
    with_fp8 = ", ".join(g.name for g in load_gpus() if g.supports_fp8)
    search = scenario.search
    training = isinstance(scenario.workload, TrainingWorkload)
    fields = [("train_precisions", search.train_precisions)] if training else \
        [("weight_precisions", search.weight_precisions), ("kv_precisions", search.kv_precisions)]
    for field, values in fields:
        if field not in search.model_fields_set:
            continue
        if values and all(v.value == "fp8" for v in values):
            return (f"search.{field}: fp8 needs FP8 tensor cores, which {names} lack; "
                    f"allow another precision or a GPU with FP8 ({with_fp8})")
    return None


def check_fp8_requested(scenario: Scenario, origin: str) -> Scenario:
    """FP8 asked for explicitly where no allowed GPU has FP8 tensor cores is an input error naming the field, not a memory problem."""
    conflict = fp8_conflict(scenario)
    if conflict:
        raise InputError(f"{origin}: {conflict}.")
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (YAML or JSON), catalog names included; paths in it are relative to the file."""
    path = Path(path)
    data = resolve_relative_paths(read_structured_file(path), path.parent)
    return check_fp8_requested(check_catalog_names(parse_scenario(data, str(path)), str(path)), str(path))
