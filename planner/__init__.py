"""planner: GPU capacity planning for LLMs, solved with CP-SAT over cited memory, time and cost models.

Notebook API::

    import planner
    plan = planner.solve("scenarios/deepseek-67b-serving-h100.yaml")   # or a Scenario / dict
    frame = planner.study("scenarios/studies/llama-70b-price-sensitivity.yaml")
    e = planner.evaluate(model="llama-2-70b", gpu="H100", tp=4, batch=16)   # ONE configuration
    e.memory.fits, e.memory.total_bytes, e.memory.headroom_bytes, e.perf.tpot_s, e.usd_per_hour

Submodules: `scenario` (schema), `memory` / `perf` / `cost` (the evaluator), `space`,
`encode` and `solver` (CP-SAT), `studies`, `report`, `fleet`, `cli`. Only `planner.evaluate`
is imported with the package (it is both the evaluator module and the callable above); the
rest load when a function is called.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

    from planner.scenario import Scenario
    from planner.solver import Plan


def _scenario(scenario: Scenario | dict[str, Any] | str | Path) -> Scenario:
    from planner.scenario import Scenario, load_scenario, parse_scenario

    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, dict):
        return parse_scenario(scenario)
    return load_scenario(scenario)


def solve(scenario: Scenario | dict[str, Any] | str | Path, time_limit_s: float = 20.0, alternatives: bool = True,
          pareto: bool = False) -> Plan:
    """The optimal, verified plan of a scenario (a `Scenario`, a dict, or a YAML/JSON path).

    A search of more than `planner.guards.MAX_LAYOUTS` layouts is refused up front (`InputError`).
    """
    from planner.catalog import resolve_model
    from planner.guards import check_search_size
    from planner.solver import solve as solve_scenario

    resolved = _scenario(scenario)
    check_search_size(resolved, resolve_model(resolved.workload.model, where="workload.model"))
    return solve_scenario(resolved, time_limit_s=time_limit_s, alternatives=alternatives, pareto=pareto)


def study(study_file: str | Path, workers: int | None = None, scheduler: Any = None, output: str | Path | None = None,
          progress: bool = False, allow_file_scheduler: bool = False) -> pandas.DataFrame:
    """Run a what-if study file; one typed DataFrame row per case.

    The study file's own `scheduler:` is used only with `allow_file_scheduler=True`; pass
    `scheduler=` to choose one yourself.
    """
    from planner.studies import load_study, run_study

    return run_study(load_study(study_file), workers=workers, scheduler=scheduler, output=output, progress=progress,
                     allow_file_scheduler=allow_file_scheduler)


class _CallableModule(ModuleType):
    """The `planner.evaluate` module, callable as `planner.evaluate(...)` for one configuration."""

    def __call__(self, model: str, gpu: str, kind: str = "inference", **options: Any) -> Any:
        """Memory, speed and cost of ONE configuration: a `TrainingEvaluation` or an `InferenceEvaluation` (frozen pydantic).

        model: catalog name or config.json path; gpu: catalog GPU id or alias; kind: 'inference'
        or 'training'. Options (the `planner memory` flags, same defaults): weights, kv,
        precision, optimizer, mode, tp, pp, dp, ep, zero, ckpt ('none'|'selective'|'full'),
        micro_batch, seq_len, global_batch, tokens (training), prompt, output, batch (serving),
        price_term, sequence_parallel, flash_attention, interleave, assumptions (dict of
        catalogs/assumptions.yaml overrides). Structural errors (TP not dividing the heads, FP8
        on a card without it, an unknown name) raise `planner.errors.InputError`.

        The result is stable: `.layout`, `.memory` (`terms`, `total_bytes`, `capacity_bytes`,
        `card_bytes`, `headroom_bytes`, `fits`), `.perf`, `.price`, and `cost_usd` (training) or
        `usd_per_hour` / `usd_per_million_output_tokens` (serving); it is built on
        `planner.evaluate.evaluate_training` / `evaluate_inference`, the functions every plan is
        verified with.
        """
        from planner.render import evaluate_one

        evaluation, _, _ = evaluate_one(model=model, gpu=gpu, kind=kind, **options)
        return evaluation


def _make_evaluate_callable() -> None:
    import sys

    from planner import evaluate as module  # the evaluator submodule, loaded once here

    module.__class__ = _CallableModule
    sys.modules[__name__].evaluate = module


_make_evaluate_callable()
