"""Count the work before doing it: the layouts a solve would evaluate, refused when too many.

The count is `planner.space`'s own (`count_training_layouts`, `inference_layout_columns`): the
same structural rules that build the table, so the guard and the search cannot disagree. A
search above `planner.space.MAX_LAYOUTS_SEARCHED` is refused before any evaluation, with the
count and what to narrow. Command-line entry points (`solve`, `validate`, `report`,
`planner.solve`, study cases) call this before building anything.
"""

from __future__ import annotations

from planner.errors import InputError
from planner.modelspec import ModelSpec
from planner.scenario import Scenario, TrainingWorkload


def count_layouts(scenario: Scenario, model: ModelSpec, stop_at: int | None = None) -> tuple[int, str]:
    """(legal layouts the scenario's search evaluates, before prices and memory; a breakdown). Stops counting past `stop_at`."""
    from planner.space import MAX_LAYOUTS_SEARCHED, candidate_gpus, count_training_layouts, inference_layout_columns, node_size

    stop = MAX_LAYOUTS_SEARCHED if stop_at is None else stop_at
    gpus = [(gpu, node_size(scenario, gpu)) for gpu in candidate_gpus(scenario)]
    search = scenario.search
    if isinstance(scenario.workload, TrainingWorkload):
        total = count_training_layouts(scenario, model, gpus, stop_above=stop)
        detail = (f"{len(gpus)} GPU types x TP x PP x {len(search.micro_batches)} micro-batches x data-parallel splits of "
                  f"{scenario.workload.global_batch_seqs} sequences x EP x {len(search.zero_stages)} ZeRO stages x "
                  f"{len(search.checkpointing)} checkpointing modes")
        return total, detail
    total = sum(len(inference_layout_columns(scenario, model, gpu, node)[0]["batch"]) for gpu, node in gpus)
    return total, f"{len(gpus)} GPU types x TP x PP x weight and KV precisions x batch sizes"


def too_large(scenario: Scenario, limit: int, detail: str) -> InputError:
    """The one message for a search over the limit: its size, its shape, and what to narrow."""
    return InputError(f"{scenario.name}: the search holds more than {limit:,} layouts to evaluate ({detail}); "
                      f"narrow search.gpus, search.tp/pp/ep, search.micro_batches or search.zero_stages, "
                      f"or set search.max_gpus / constraints.inventory (or a smaller workload.global_batch_tolerance).")


def check_search_size(scenario: Scenario, model: ModelSpec, limit: int | None = None) -> int:
    """The layout count of a scenario, or an `InputError` with the count and what to narrow when it exceeds the limit."""
    from planner.space import MAX_LAYOUTS_SEARCHED

    most = MAX_LAYOUTS_SEARCHED if limit is None else limit
    total, detail = count_layouts(scenario, model, stop_at=most)
    if total > most:
        raise too_large(scenario, most, detail)
    return total
