"""The plain evaluator: memory, time and cost of ONE concrete configuration.

This is the single source of truth. The search space calls it to build the solver's
coefficient tables, verification calls it again on the chosen plan, and the test oracle
calls it over exhaustive enumerations.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from planner.catalog import GpuSpec
from planner.cost import PriceQuote, SpotRisk, offer_for, rented_gpus, serving_usd_per_hour, training_cost_usd, usd_per_million_tokens, with_spot_restarts
from planner.layout import InferenceLayout, TrainingLayout
from planner.memory import MemoryBreakdown, inference_memory, training_memory
from planner.modelspec import ModelSpec
from planner.perf import InferencePerf, TrainingPerf, inference_perf, training_perf
from planner.scenario import Assumptions, InferenceWorkload, TrainingWorkload


class TrainingEvaluation(BaseModel):
    """Everything planner predicts for one training layout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layout: TrainingLayout = Field(description="The configuration.")
    memory: MemoryBreakdown = Field(description="Most loaded card.")
    perf: TrainingPerf = Field(description="Speed.")
    price: PriceQuote | None = Field(description="Price row used (None when the GPU has no price for the term).")
    cost_usd: float | None = Field(description="Cost to train the workload's tokens, USD.")
    spot: SpotRisk | None = Field(default=None, description="Spot only: expected restarts, included in time and cost.")


class InferenceEvaluation(BaseModel):
    """Everything planner predicts for one serving layout (replicas included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layout: InferenceLayout = Field(description="The configuration.")
    memory: MemoryBreakdown = Field(description="Most loaded card of a replica.")
    perf: InferencePerf = Field(description="Speed of one replica.")
    fleet_output_tokens_per_s: float = Field(description="All replicas together.")
    price: PriceQuote | None = Field(description="Price row used.")
    usd_per_hour: float | None = Field(description="Fleet cost per hour, USD.")
    usd_per_million_output_tokens: float | None = Field(description="At the predicted fleet throughput.")


def evaluate_training(
    model: ModelSpec, workload: TrainingWorkload, layout: TrainingLayout, gpu: GpuSpec, assumptions: Assumptions,
    price: PriceQuote | None, gpus_per_node: int | None = None,
) -> TrainingEvaluation:
    """Memory, speed and cost of a training layout."""
    memory = training_memory(model, workload, layout, gpu, assumptions)
    perf = training_perf(model, workload, layout, gpu, assumptions, gpus_per_node)
    price = offer_for(price, layout.num_gpus, min(layout.num_gpus, gpus_per_node or gpu.gpus_per_node)) if price else None
    perf, spot = with_spot_restarts(perf, layout.num_gpus, price, assumptions)
    cost = training_cost_usd(rented_gpus(layout.num_gpus, price.gpus_per_instance), perf.time_to_train_s, price.usd_per_gpu_hour) if price else None
    return TrainingEvaluation(layout=layout, memory=memory, perf=perf, price=price, cost_usd=cost, spot=spot)


def evaluate_inference(
    model: ModelSpec, workload: InferenceWorkload, layout: InferenceLayout, gpu: GpuSpec, assumptions: Assumptions,
    price: PriceQuote | None, gpus_per_node: int | None = None,
) -> InferenceEvaluation:
    """Memory, speed and cost of a serving layout with its replicas."""
    memory = inference_memory(model, workload, layout, gpu, assumptions)
    perf = inference_perf(model, workload, layout, gpu, assumptions, gpus_per_node)
    fleet_tps = perf.output_tokens_per_s * layout.replicas
    price = offer_for(price, layout.gpus_per_replica, min(layout.gpus_per_replica, gpus_per_node or gpu.gpus_per_node)) if price else None
    usd_h = serving_usd_per_hour(layout.replicas * rented_gpus(layout.gpus_per_replica, price.gpus_per_instance), price.usd_per_gpu_hour) if price else None
    per_m = usd_per_million_tokens(usd_h, fleet_tps) if usd_h is not None else None
    return InferenceEvaluation(layout=layout, memory=memory, perf=perf, fleet_output_tokens_per_s=fleet_tps,
                               price=price, usd_per_hour=usd_h, usd_per_million_output_tokens=per_m)
