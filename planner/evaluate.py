"""The evaluator: memory, time and cost of concrete configurations, one or millions.

This is the single source of truth. Every formula works on numpy columns (one entry per
layout); one configuration is a one-row table. The search space builds `Table`s of millions of
rows (memory first, speed and cost only for rows that fit), verification evaluates the chosen
plan as a one-row table, and pydantic objects with the per-term breakdown are built only for
the rows that are shown (`Table.evaluation_at`).

Column API (one GPU type per table; `Columns` = dict of equal-length numpy arrays):
  layout columns   `planner.memory.training_columns(layouts)` / `inference_columns(layouts)`;
                   TRAINING_FIELDS: precision (code into TRAIN_PRECISIONS), tp, pp, dp, ep,
                   expert_tp, zero, checkpointing, micro_batch, grad_accum, sequence_parallel,
                   flash_attention, offload_optimizer, offload_params, cp, framework (code into
                   FRAMEWORKS), zero_group. INFERENCE_FIELDS:
                   weight_precision, kv_precision (codes into WEIGHT_/KV_PRECISIONS), tp, pp,
                   batch, replicas, and optionally (`memory.POOL_FIELDS`) prefill_replicas,
                   decode_replicas, prefill_tp, prefill_pp, prefill_batch (disaggregated units) and
                   attention_dp (MoE data-parallel attention).
  memory columns   `training_memory_columns` / `inference_memory_columns`: one column per term
                   (TRAINING_TERMS / INFERENCE_TERMS), total_bytes, capacity_bytes; training also
                   stage and <state>_over_dp; serving also expert_bytes, kv_bytes_per_token.
  speed columns    `planner.perf.training_perf_columns` (one per TrainingPerf field: compute_s,
                   elementwise_s, bubble_s, tp_comm_s, pp_comm_s, dp_comm_exposed_s, ep_comm_s,
                   optimizer_s, step_time_s, tokens_per_s, ...) and `inference_perf_columns`
                   (decode_step_columns: decode_step_s, decode_memory_s, decode_compute_s;
                   prefill_columns; ttft_s, tpot_s, output_tokens_per_s,
                   decode_memory_bound). A new speed or serving model replaces one of these
                   column functions; the scalar path and the objects follow.
  cost columns     `Table.priced(price)`: cost_usd | fleet_output_tokens_per_s, usd_per_hour,
                   usd_per_million_output_tokens.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from planner.catalog import GpuSpec
from planner.cost import (
    PriceQuote, SpotRisk, instances_needed, offer_at, offer_columns, pool_instances, rented_gpus, serving_usd_per_hour, spot_expected_time_s, spot_risk,
    training_cost_usd, usd_per_million_tokens,
)
from planner.enums import PriceTerm
from planner.layout import InferenceLayout, TrainingLayout
from planner.memory import (
    Columns, MemoryBreakdown, inference_breakdown_at, inference_columns, inference_layout_at, inference_memory_columns, pool_columns,
    serving_unit_gpus, take_columns, training_breakdown_at, training_columns, training_layout_at, training_memory_columns,
)
from planner.modelspec import ModelSpec
from planner.perf import SPEED_DTYPES, InferencePerf, TrainingPerf, inference_perf_at, inference_perf_columns, training_perf_at, training_perf_columns
from planner.scenario import Assumptions, InferenceWorkload, TrainingWorkload

if TYPE_CHECKING:
    from planner.calibrate import SpeedEvidence


class TrainingEvaluation(BaseModel):
    """Everything planner predicts for one training layout."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    layout: TrainingLayout = Field(description="The configuration.")
    memory: MemoryBreakdown = Field(description="Most loaded card.")
    perf: TrainingPerf = Field(description="Speed.")
    price: PriceQuote | None = Field(description="Price row used (None when the GPU has no price for the term).")
    cost_usd: float | None = Field(description="Cost to train the workload's tokens, USD.")
    spot: SpotRisk | None = Field(default=None, description="Spot only: expected restarts, included in time and cost.")


class InferenceEvaluation(BaseModel):
    """Everything planner predicts for one serving layout (replicas included)."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    layout: InferenceLayout = Field(description="The configuration.")
    memory: MemoryBreakdown = Field(description="Most loaded card of a replica.")
    perf: InferencePerf = Field(description="Speed of one replica.")
    fleet_output_tokens_per_s: float = Field(description="All replicas together.")
    price: PriceQuote | None = Field(description="Price row used (a disaggregated unit's decode pool).")
    prefill_price: PriceQuote | None = Field(default=None, description="Price row a disaggregated unit's prefill pool rents (its "
                                                                       "own cheapest whole instances); None for colocated replicas.")
    usd_per_hour: float | None = Field(description="Fleet cost per hour, USD.")
    usd_per_million_output_tokens: float | None = Field(description="At the predicted fleet throughput.")

    @property
    def usd_per_replica_hour(self) -> float:
        """$ per hour of one replica (the fleet's $/h over its replicas; 0 when unpriced): what the solver's cost
        coefficient, replica bounds and dominance read."""
        return (self.usd_per_hour or 0.0) / self.layout.replicas


@dataclass
class Table:
    """Evaluated layouts of one GPU type as columns: the layout fields, memory terms, speed and cost, one entry per row.

    `layout` holds the layout columns (`planner.memory.TRAINING_FIELDS` or `INFERENCE_FIELDS`),
    `memory` the columns of `training_memory_columns` / `inference_memory_columns`, `perf` those of
    `training_perf_columns` / `inference_perf_columns` (empty until `with_perf`), `cost` the cost
    columns (`cost_usd` for training; `usd_per_hour`, `fleet_output_tokens_per_s`,
    `usd_per_million_output_tokens` for serving). Objects are built by `evaluation_at`, for rows shown.
    """

    model: ModelSpec
    workload: TrainingWorkload | InferenceWorkload
    gpu: GpuSpec
    assumptions: Assumptions
    price: PriceQuote | None
    node: int
    layout: Columns
    memory: Columns
    perf: Columns = field(default_factory=dict)
    cost: Columns = field(default_factory=dict)
    objects: dict[int, tuple[BaseModel, MemoryBreakdown, BaseModel]] = field(default_factory=dict)

    @property
    def training(self) -> bool:
        """True for a training table."""
        return isinstance(self.workload, TrainingWorkload)

    def __len__(self) -> int:
        return len(self.layout["tp"])

    @property
    def fits(self) -> np.ndarray:
        """Rows whose most loaded card holds its terms (disaggregated serving: the prefill replica's card too)."""
        fits = self.memory["total_bytes"] <= self.memory["capacity_bytes"]
        if "prefill_total_bytes" in self.memory:
            fits &= self.memory["prefill_total_bytes"] <= self.memory["capacity_bytes"]
        return fits

    @property
    def num_gpus(self) -> np.ndarray:
        """GPUs per row: tp x pp x dp (training) or per replica x replicas (serving)."""
        lay = self.layout
        if self.training:
            return lay["tp"] * lay["pp"] * lay["cp"] * lay["dp"]
        return serving_unit_gpus(lay) * lay["replicas"]

    def take(self, rows: np.ndarray) -> Table:
        """The rows selected by a boolean mask or index array, in their order."""
        return replace(self, layout=take_columns(self.layout, rows), memory=take_columns(self.memory, rows), perf=take_columns(self.perf, rows),
                       cost=take_columns(self.cost, rows))

    def with_perf(self) -> Table:
        """Speed and cost of every row (call after dropping the rows that do not fit: memory first)."""
        if self.training:
            perf = training_perf_columns(self.model, self.workload, self.gpu, self.assumptions, self.layout, self.node)  # type: ignore[arg-type]
        else:
            perf = inference_perf_columns(self.model, self.workload, self.gpu, self.assumptions, self.layout, self.memory, self.node)  # type: ignore[arg-type]
        return replace(self, perf=perf).priced(self.price)

    def priced(self, price: PriceQuote | None) -> Table:
        """The cost columns at a price (speed computed). Each row rents whole instances of the offer that makes it
        cheapest (`planner.cost.offer_columns`; a serving replica, or a training job up to a node, in one instance):
        `offer` (index into price.options), `gpus_paid`. Training: `time_to_train_s` (on spot, the Young/Daly expected
        wall time with restarts, `planner.cost.spot_expected_time_s`) and `cost_usd`; serving:
        `fleet_output_tokens_per_s`, `usd_per_hour`, `usd_per_million_output_tokens`. Memory and speed do not depend
        on the price."""
        cost: Columns = {}
        if self.training:
            if price:
                n = self.num_gpus
                offer, per_instance, usd = offer_columns(price, n, np.minimum(n, self.node))
                time_s = self.perf["time_to_train_s"]
                if price.term is PriceTerm.SPOT and price.interruptions_per_instance_hour > 0:
                    time_s = spot_expected_time_s(time_s, instances_needed(n, per_instance), price.interruptions_per_instance_hour,
                                                  self.assumptions.checkpoint_write_s, self.assumptions.restart_after_preemption_s)
                    time_s = np.where(np.isfinite(time_s), time_s, 1e300)
                paid = rented_gpus(n, per_instance)
                cost = {"offer": offer, "gpus_paid": paid, "time_to_train_s": time_s,
                        "cost_usd": training_cost_usd(paid, time_s, usd)}
        else:
            fleet_tps = self.perf["output_tokens_per_s"] * self.layout["replicas"]
            cost["fleet_output_tokens_per_s"] = fleet_tps
            if price:
                per_replica = self.layout["tp"] * self.layout["pp"]
                offer, per_instance, usd = offer_columns(price, per_replica, np.minimum(per_replica, self.node))
                paid = self.layout["replicas"] * rented_gpus(per_replica, per_instance)
                usd_h = serving_usd_per_hour(paid, usd)
                pools = pool_columns(self.layout)
                split = pools["prefill_replicas"] > 0
                if split.any():  # a disaggregated unit: every prefill and decode replica rents its own cheapest whole instances
                    per_prefill = pools["prefill_tp"] * pools["prefill_pp"]
                    prefill_offer, prefill_instance, prefill_usd = offer_columns(price, per_prefill, np.minimum(per_prefill, self.node))
                    cost["prefill_offer"] = np.where(split, prefill_offer, -2)
                    prefill_paid = pool_instances(self.layout["replicas"], pools["prefill_replicas"], per_prefill, prefill_instance) * prefill_instance
                    decode_paid = pool_instances(self.layout["replicas"], pools["decode_replicas"], per_replica, per_instance) * per_instance
                    paid = np.where(split, prefill_paid + decode_paid, paid)
                    usd_h = np.where(split, serving_usd_per_hour(prefill_paid, prefill_usd) + serving_usd_per_hour(decode_paid, usd), usd_h)
                cost |= {"offer": offer, "gpus_paid": paid, "usd_per_hour": usd_h,
                         "usd_per_million_output_tokens": usd_per_million_tokens(usd_h, fleet_tps)}
        return replace(self, price=price, cost=cost)

    def with_row_ids(self) -> Table:
        """The table with a `row` column (0..n-1) and an empty object cache: the price-free objects of a row (layout,
        breakdown, speed) are then built once and shared by every table taken or priced from this one."""
        return replace(self, layout={**self.layout, "row": np.arange(len(self))}, objects={})

    def _price_free_objects(self, i: int) -> tuple[BaseModel, MemoryBreakdown, BaseModel]:
        """(layout, memory breakdown, speed) of row `i`, from the shared cache when the table has row ids."""
        key = int(self.layout["row"][i]) if "row" in self.layout else None
        if key is not None and key in self.objects:
            return self.objects[key]
        if self.training:
            workload = self.workload
            assert isinstance(workload, TrainingWorkload)
            parts: tuple[BaseModel, MemoryBreakdown, BaseModel] = (
                training_layout_at(self.layout, i, self.gpu.name),
                training_breakdown_at(self.model, workload, self.gpu, self.assumptions, self.layout, self.memory, i), training_perf_at(self.perf, i))
        else:
            workload = self.workload
            assert isinstance(workload, InferenceWorkload)
            parts = (inference_layout_at(self.layout, i, self.gpu.name),
                     inference_breakdown_at(self.model, workload, self.gpu, self.assumptions, self.layout, self.memory, i),
                     inference_perf_at(self.perf, i))
        if key is not None:
            self.objects[key] = parts
        return parts

    def evaluation_at(self, i: int) -> TrainingEvaluation | InferenceEvaluation:
        """Row `i` as a pydantic evaluation with the per-term memory breakdown (speed and cost when computed)."""
        layout, memory, perf = self._price_free_objects(i)
        price = offer_at(self.price, int(self.cost["offer"][i])) if self.price else None
        if self.training:
            spot = None
            if price is not None and price.term is PriceTerm.SPOT and price.interruptions_per_instance_hour > 0:
                n = int(self.num_gpus[i])
                spot = spot_risk(perf.time_to_train_s, int(instances_needed(n, price.gpus_per_instance)), price, self.assumptions)
                wall = float(self.cost["time_to_train_s"][i])
                perf = perf.model_copy(update={"time_to_train_s": wall, "gpu_hours": perf.gpu_hours * wall / perf.time_to_train_s})
            return TrainingEvaluation(layout=layout, memory=memory, perf=perf, price=price, spot=spot,
                                      cost_usd=float(self.cost["cost_usd"][i]) if price else None)
        prefill = int(self.cost["prefill_offer"][i]) if price and "prefill_offer" in self.cost else -2
        return InferenceEvaluation(
            layout=layout, memory=memory, perf=perf, fleet_output_tokens_per_s=float(self.cost["fleet_output_tokens_per_s"][i]), price=price,
            prefill_price=offer_at(self.price, prefill) if self.price and prefill > -2 else None,
            usd_per_hour=float(self.cost["usd_per_hour"][i]) if price else None,
            usd_per_million_output_tokens=float(self.cost["usd_per_million_output_tokens"][i]) if price else None,
        )


def training_table(model: ModelSpec, workload: TrainingWorkload, gpu: GpuSpec, assumptions: Assumptions, price: PriceQuote | None,
                   layout: Columns, gpus_per_node: int | None = None) -> Table:
    """Memory of training layout columns (speed and cost follow with `Table.with_perf`)."""
    memory = training_memory_columns(model, workload, gpu, assumptions, layout)
    return Table(model, workload, gpu, assumptions, price, gpus_per_node or gpu.gpus_per_node, layout, memory)


def inference_table(model: ModelSpec, workload: InferenceWorkload, gpu: GpuSpec, assumptions: Assumptions, price: PriceQuote | None,
                    layout: Columns, gpus_per_node: int | None = None) -> Table:
    """Memory of serving layout columns (speed and cost follow with `Table.with_perf`)."""
    memory = inference_memory_columns(model, workload, gpu, assumptions, layout)
    return Table(model, workload, gpu, assumptions, price, gpus_per_node or gpu.gpus_per_node, layout, memory)


ONE_ROW_CACHE_ENTRIES = 256
"""One-configuration evaluations kept per process (verification re-evaluates the same plan in every case of a study)."""

_ONE_ROW_CACHE: OrderedDict[str, Table] = OrderedDict()


def _one_row(model: ModelSpec, workload: TrainingWorkload | InferenceWorkload, layout: TrainingLayout | InferenceLayout, gpu: GpuSpec,
             assumptions: Assumptions, gpus_per_node: int | None) -> Table:
    """The price-free one-row table (memory and speed) of a configuration, memoised on every input it reads.

    The evaluator is a pure function of these inputs, so a repeated call returns what a new
    evaluation would; the price is applied afterwards (`Table.priced`), and the price-free objects
    of the row are shared by every price (`Table.with_row_ids`)."""
    key = json.dumps([model.model_dump(mode="json"), workload.model_dump(mode="json"), layout.model_dump(mode="json"),
                      gpu.model_dump(mode="json"), assumptions.model_dump(mode="json"), gpus_per_node], sort_keys=True, default=str)
    if key in _ONE_ROW_CACHE:
        _ONE_ROW_CACHE.move_to_end(key)
        return _ONE_ROW_CACHE[key]
    if isinstance(workload, TrainingWorkload):
        assert isinstance(layout, TrainingLayout)
        table = training_table(model, workload, gpu, assumptions, None, training_columns([layout]), gpus_per_node).with_perf()
    else:
        assert isinstance(layout, InferenceLayout)
        table = inference_table(model, workload, gpu, assumptions, None, inference_columns([layout]), gpus_per_node).with_perf()
    table = table.with_row_ids()  # its layout, breakdown and speed objects are built once, whatever the price
    _ONE_ROW_CACHE[key] = table
    while len(_ONE_ROW_CACHE) > ONE_ROW_CACHE_ENTRIES:
        _ONE_ROW_CACHE.popitem(last=False)
    return table


def evaluate_training(
    model: ModelSpec, workload: TrainingWorkload, layout: TrainingLayout, gpu: GpuSpec, assumptions: Assumptions,
    price: PriceQuote | None, gpus_per_node: int | None = None,
) -> TrainingEvaluation:
    """Memory, speed and cost of a training layout (a one-row table)."""
    table = _one_row(model, workload, layout, gpu, assumptions, gpus_per_node).priced(price)
    return table.evaluation_at(0).model_copy(update={"layout": layout})  # type: ignore[return-value]


def evaluate_inference(
    model: ModelSpec, workload: InferenceWorkload, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions,
    price: PriceQuote | None, gpus_per_node: int | None = None,
) -> InferenceEvaluation:
    """Memory, speed and cost of a serving layout with its replicas (a one-row table)."""
    table = _one_row(model, workload, layout, gpu, assumptions, gpus_per_node).priced(price)
    return table.evaluation_at(0).model_copy(update={"layout": layout})  # type: ignore[return-value]


def layout_summary(e: TrainingEvaluation | InferenceEvaluation) -> str:
    """The plan in one line."""
    lay = e.layout
    if isinstance(e, TrainingEvaluation):
        ep = f" ep={lay.ep}" if lay.ep > 1 else ""
        off = " +offload(params)" if lay.offload_params else (" +offload" if lay.offload_optimizer else "")
        cp = f" cp={lay.cp}" if lay.cp > 1 else ""
        hybrid = f" (hybrid, shard group {lay.zero_group})" if lay.zero_group else ""
        return (f"{lay.num_gpus}x {lay.gpu} {lay.precision.value} {lay.framework.value} tp={lay.tp}{cp} pp={lay.pp} dp={lay.dp}{ep} "
                f"zero={int(lay.zero)}{hybrid} ckpt={lay.checkpointing.name.lower()} mb={lay.micro_batch} accum={lay.grad_accum}{off}")
    if lay.disaggregated:
        units = f"{lay.replicas}x " if lay.replicas > 1 else ""
        return (f"{units}prefill pool: {lay.prefill_replicas}x (tp={lay.prefill_tp} pp={lay.prefill_pp} batch={lay.prefill_batch}), "
                f"decode pool: {lay.decode_replicas}x (tp={lay.tp} pp={lay.pp} batch={lay.batch}), on {lay.gpus_per_replica}x {lay.gpu}: "
                f"w={lay.weight_precision.value} kv={lay.kv_precision.value}, KV transfer {e.perf.kv_transfer_s * 1000:.3g} ms")
    dp = f" attention_dp={lay.attention_dp} (attention tp={lay.tp // lay.attention_dp}, experts ep={lay.tp})" if lay.attention_dp > 1 else ""
    return (f"{lay.replicas}x ({lay.gpus_per_replica}x {lay.gpu}) w={lay.weight_precision.value} kv={lay.kv_precision.value} "
            f"tp={lay.tp} pp={lay.pp}{dp} batch={lay.batch}")


def training_speed_evidence(e: TrainingEvaluation, model: ModelSpec, assumptions: Assumptions) -> SpeedEvidence:
    """`calibrate.speed_evidence` of a training evaluation: its GPU, speed dtype, framework and dense/MoE kind."""
    from planner.calibrate import speed_evidence

    lay = e.layout
    return speed_evidence(lay.gpu, SPEED_DTYPES[lay.precision], lay.framework.value, model.is_moe, assumptions.file)
