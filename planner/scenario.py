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
from planner.traffic import ServingSlo, TokenLengths, Traffic

FORBID = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
    training_kernel_efficiency: float = Field(gt=0, le=1, description="Share of the matmul ceiling a training step sustains.")
    prefill_kernel_efficiency: float = Field(gt=0, le=1, description="Share of the matmul ceiling prefill sustains.")
    decode_hbm_efficiency: float = Field(gt=0, le=1, description="Share of HBM bandwidth decode sustains.")
    dp_overlap_fraction: float = Field(ge=0, le=1, description="Share of backward time that hides DP communication.")
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
    activation_traffic_factor: float = Field(ge=0, description="HBM passes over stored activations per training step.")
    host_link_gbps: float = Field(gt=0, description="Host<->GPU bandwidth for offload traffic, GB/s.")
    engine_overhead_s: float = Field(ge=0, description="Serving engine's scheduler/sampler time per iteration, seconds.")
    serving_allreduce_latency_s: float = Field(ge=0, description="Latency of one small decode all-reduce (one-shot, in a node), seconds.")
    serving_oneshot_max_bytes: float = Field(ge=0, description="Largest all-reduce message the one-shot kernel takes, bytes.")
    serving_custom_allreduce_max_bytes: float = Field(gt=0, description="Largest message of the custom all-reduce; above it NCCL ring latency, bytes.")

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
    model: str = Field(min_length=1, description="Catalog model name or path to a Hugging Face config.json.")
    tokens: float = Field(gt=0, le=1e16, description="Tokens to train on.")
    seq_len: int = Field(gt=0, le=1_048_576, description="Sequence length, tokens.")
    global_batch_seqs: int = Field(gt=0, description="Sequences per optimizer step.")
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

    gpus: tuple[str, ...] | None = Field(default=None, min_length=1, description="GPU ids to consider (None = whole catalog).")
    train_precisions: tuple[TrainPrecision, ...] = Field(
        default=(TrainPrecision.BF16, TrainPrecision.FP8), description="Training precision policies to consider."
    )
    weight_precisions: tuple[WeightPrecision, ...] = Field(
        default=(WeightPrecision.BF16, WeightPrecision.FP8, WeightPrecision.INT8, WeightPrecision.INT4),
        description="Serving weight precisions to consider.",
    )
    kv_precisions: tuple[KvPrecision, ...] = Field(
        default=(KvPrecision.BF16, KvPrecision.FP8), description="KV-cache precisions to consider."
    )
    tp: tuple[int, ...] | None = Field(default=None, description="Allowed tensor-parallel degrees.")
    pp: tuple[int, ...] | None = Field(default=None, description="Allowed pipeline-parallel degrees.")
    ep: tuple[int, ...] | None = Field(default=None, description="Allowed expert-parallel degrees (MoE).")
    zero_stages: tuple[ZeroStage, ...] = Field(default=(0, 1, 2, 3), description="Allowed ZeRO stages.")
    checkpointing: tuple[Checkpointing, ...] = Field(default=(0, 1, 2), description="Allowed recomputation modes.")
    micro_batches: tuple[int, ...] = Field(default=(1, 2, 4, 8), description="Allowed micro-batch sizes, sequences.")
    batch_per_replica: tuple[int, ...] | None = Field(default=None, description="Allowed serving batch sizes per replica.")
    sequence_parallel: bool = Field(default=True, description="Use Megatron sequence parallelism with TP > 1.")
    flash_attention: bool = Field(default=True, description="FlashAttention: no s^2 score activations.")
    allow_offload: bool = Field(default=False, description="Allow ZeRO-Offload of optimizer states to CPU.")
    tp_within_node: bool = Field(default=True, description="Keep each TP group inside one node's scale-up domain.")
    max_gpus: int | None = Field(default=None, gt=0, description="Most GPUs a plan may use.")
    gpus_per_node: int | None = Field(default=None, gt=0, description="Override of the catalog's GPUs per server.")

    @field_validator("tp", "pp", "ep", "micro_batches", "batch_per_replica")
    @classmethod
    def _positive(cls, values: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if values is not None and (not values or min(values) < 1):
            raise ValueError("must be a non-empty list of integers >= 1")
        return values


class Constraints(BaseModel):
    """Limits a plan must respect."""

    model_config = FORBID

    budget_usd: float | None = Field(default=None, gt=0, le=1e12, description="Training: most dollars for the run. Inference: most dollars per hour.")
    deadline_days: float | None = Field(default=None, gt=0, le=36500, description="Training must finish within this many days.")
    inventory: dict[str, int] = Field(default_factory=dict, description="Most GPUs available per GPU id (e.g. owned or allocatable).")

    @field_validator("inventory")
    @classmethod
    def _non_negative(cls, inventory: dict[str, int]) -> dict[str, int]:
        for gpu, count in inventory.items():
            if count < 0:
                raise ValueError(f"inventory of {gpu} must be >= 0")
        return canonical_gpu_keys(inventory)


class Pricing(BaseModel):
    """Where GPU prices come from."""

    model_config = FORBID

    term: PriceTerm = Field(default=PriceTerm.ON_DEMAND, description="on_demand, spot, reserved_1y, reserved_3y or on_prem.")
    provider: str | None = Field(default=None, description="Restrict to one provider (None = cheapest row per GPU).")
    price_file: str | None = Field(default=None, description="Path to a price CSV with the catalog's columns.")
    usd_per_gpu_hour: dict[str, float] = Field(default_factory=dict, description="Explicit price per GPU id, overriding any row.")
    price_multiplier: float = Field(default=1.0, gt=0, le=1e6, description="Scale every price (what-if studies).")

    @field_validator("usd_per_gpu_hour")
    @classmethod
    def _canonical_prices(cls, prices: dict[str, float]) -> dict[str, float]:
        for gpu, price in prices.items():
            if not 0 < price < 1e6:
                raise ValueError(f"price of {gpu} must be between 0 and 1e6 USD per GPU-hour")
        return canonical_gpu_keys(prices)


class Scenario(BaseModel):
    """One planning question."""

    model_config = FORBID

    name: str = Field(min_length=1, description="Short name of the scenario.")
    description: str = Field(default="", description="What the team wants to know.")
    workload: Workload = Field(description="Training or inference workload.")
    search: SearchSpace = Field(default_factory=SearchSpace, description="What the solver may choose.")
    constraints: Constraints = Field(default_factory=Constraints, description="Budget, deadline, GPU limits.")
    pricing: Pricing = Field(default_factory=Pricing, description="Where prices come from.")
    objective: Objective = Field(default=Objective.MIN_COST, description="min_cost, max_throughput, min_gpus or min_time.")
    assumptions: dict[str, Any] = Field(default_factory=dict, description="Overrides of catalogs/assumptions.yaml by key.")

    @field_validator("assumptions")
    @classmethod
    def _known_assumptions(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        Assumptions.with_overrides(overrides)
        return overrides

    def resolved_assumptions(self) -> Assumptions:
        """Default assumptions with this scenario's overrides."""
        return Assumptions.with_overrides(self.assumptions)


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("training", "inference")]
    return ".".join(parts) or "(top level)"


def validation_message(err: ValidationError, origin: str) -> str:
    """One line naming the file, the field and the problem, from pydantic's first error."""
    first = err.errors()[0]
    field = _format_loc(first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (not part of the scenario schema; see `planner schema`)"
    elif first["type"] == "missing":
        msg = "required field is missing"
    extra = f" (got {first['input']!r})" if first["type"] not in ("extra_forbidden", "missing") and not isinstance(first.get("input"), dict) else ""
    return f"{origin}: {field}: {msg}{extra}."


def parse_scenario(data: Any, origin: str = "scenario") -> Scenario:
    """Validate a scenario dict, raising `InputError` with a one-line message on any problem."""
    if not isinstance(data, dict):
        raise InputError(f"{origin}: expected a mapping of scenario fields at the top level.")
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise InputError(validation_message(err, origin)) from None


def read_structured_file(path: Path) -> Any:
    """Read YAML or JSON, turning parse errors into one-line `InputError`s."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found.") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a YAML or JSON file.") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}.") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "cannot parse"
        raise InputError(f"{path}: malformed YAML{where}: {problem}.") from None


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
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (YAML or JSON), catalog names included."""
    path = Path(path)
    return check_catalog_names(parse_scenario(read_structured_file(path), str(path)), str(path))
