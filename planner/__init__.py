"""planner: GPU capacity planning for LLMs, solved with CP-SAT over cited memory, time and cost models.

Notebook API::

    import planner
    plan = planner.solve("scenarios/deepseek-67b-serving-h100.yaml")   # or a Scenario / dict
    frame = planner.study("scenarios/studies/llama-70b-price-sensitivity.yaml")

Submodules: `scenario` (schema), `memory` / `perf` / `cost` (the evaluator), `space`,
`encode` and `solver` (CP-SAT), `studies`, `report`, `fleet`, `cli`. Nothing is imported
until a function is called.
"""

from __future__ import annotations

from pathlib import Path
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
    """The optimal, verified plan of a scenario (a `Scenario`, a dict, or a YAML/JSON path)."""
    from planner.solver import solve as solve_scenario

    return solve_scenario(_scenario(scenario), time_limit_s=time_limit_s, alternatives=alternatives, pareto=pareto)


def study(study_file: str | Path, workers: int | None = None, scheduler: Any = None, output: str | Path | None = None,
          progress: bool = False) -> pandas.DataFrame:
    """Run a what-if study file; one typed DataFrame row per case."""
    from planner.studies import load_study, run_study

    return run_study(load_study(study_file), workers=workers, scheduler=scheduler, output=output, progress=progress)
