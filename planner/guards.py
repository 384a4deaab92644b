"""Count the work before doing it: an upper bound on the layouts a solve would evaluate, refused when too large.

`planner.space` evaluates every structurally legal layout once (about 0.2 ms each). A scenario
whose search lists multiply into millions of layouts would run for minutes with nothing to show; `check_search_size` counts first, with the same structural rules
(`tp_values`, `pp_values`, `ep_values`, the exact global-batch splits), and refuses with the
numbers and what to narrow. The count is an upper bound: prices and whole-node rules only
remove layouts.
"""

from __future__ import annotations

import bisect
import math

from planner.enums import TrainPrecision, WeightPrecision, ZeroStage
from planner.errors import InputError
from planner.modelspec import ModelSpec
from planner.scenario import Scenario, TrainingWorkload

MAX_LAYOUTS = 200_000
"""Most layouts one solve may evaluate: about 40 s at the ~0.2 ms each measured on one core (940,800 layouts took 184 s)."""


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def count_layouts(scenario: Scenario, model: ModelSpec, stop_at: int = MAX_LAYOUTS) -> tuple[int, str]:
    """(upper bound on the layouts the scenario's search evaluates, a breakdown), counting stops past `stop_at`."""
    from planner.space import SERVING_BATCHES, candidate_gpus, ep_values, gpu_cap, pp_values, tp_values

    search = scenario.search
    gpus = candidate_gpus(scenario)
    workload = scenario.workload
    total = 0
    if isinstance(workload, TrainingWorkload):
        zeros = len(search.zero_stages)
        ckpts = len(search.checkpointing)
        eps = len(ep_values(scenario, model))
        offload = 1 + (search.allow_offload and any(z >= ZeroStage.OPTIMIZER for z in search.zero_stages)) \
            + (search.allow_offload and ZeroStage.PARAMETERS in search.zero_stages)
        gb = workload.global_batch_seqs
        divisors = {mb: _divisors(gb // mb) if gb % mb == 0 else [] for mb in search.micro_batches}
        pps = pp_values(scenario, model)
        for gpu in gpus:
            precisions = sum(1 for p in search.train_precisions if p is not TrainPrecision.FP8 or gpu.supports_fp8)
            per_split = eps * precisions * zeros * ckpts * offload
            cap = gpu_cap(scenario, gpu.name)
            for tp in tp_values(scenario, model, gpu):
                for pp in pps:
                    max_dp = cap // (tp * pp)
                    for mb in search.micro_batches:
                        splits = bisect.bisect_right(divisors[mb], max_dp)
                        if workload.global_batch_tolerance > 0:
                            splits = max(splits, min(max_dp, gb // mb))
                        total += splits * per_split
                    if total > stop_at:
                        break
                if total > stop_at:
                    break
            if total > stop_at:
                break
        detail = (f"{len(gpus)} GPU types x up to {len(search.tp or range(7))} TP x {len(pps)} PP x {len(search.micro_batches)} "
                  f"micro-batches x data-parallel splits of {gb} sequences x {eps} EP x {zeros} ZeRO x {ckpts} checkpointing")
        return total, detail
    batches = len(set(search.batch_per_replica or SERVING_BATCHES))
    pps = len([pp for pp in (search.pp or (1, 2, 4)) if pp <= model.num_layers])
    for gpu in gpus:
        weights = sum(1 for w in search.weight_precisions if w is not WeightPrecision.FP8 or gpu.supports_fp8)
        kvs = sum(1 for k in search.kv_precisions if k.value != "fp8" or gpu.supports_fp8)
        total += len(tp_values(scenario, model, gpu)) * pps * weights * kvs * batches
    return total, f"{len(gpus)} GPU types x TP x {pps} PP x weight and KV precisions x {batches} batch sizes"


def check_search_size(scenario: Scenario, model: ModelSpec, limit: int = MAX_LAYOUTS) -> int:
    """The layout count of a scenario, or an `InputError` with the count and what to narrow when it exceeds `limit`."""
    total, detail = count_layouts(scenario, model, stop_at=limit)
    if total > limit:
        raise InputError(f"{scenario.name}: the search holds more than {limit:,} layouts to evaluate ({detail}), minutes of work; "
                         f"narrow search.gpus, search.tp/pp/ep, search.micro_batches or search.zero_stages, "
                         f"or set search.max_gpus / constraints.inventory.")
    return total
