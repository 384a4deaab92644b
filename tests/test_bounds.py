"""Honest bounds: no silent cap on the GPUs searched; a search too large is refused before it starts, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from planner.catalog import resolve_model
from planner.cli import app
from planner.errors import InfeasibleError
from planner.scenario import parse_scenario
from planner.solver import solve
from planner.space import build_space, count_training_layouts, gpu_cap, node_size

ROOT = Path(__file__).resolve().parent.parent


def _wide_dp(max_gpus: int | None) -> dict:
    """Llama-3.1-8B on H100s, one layout per DP degree: the fastest plan uses one sequence per GPU (32,768 GPUs)."""
    return {
        "name": "wide-dp",
        "workload": {"kind": "training", "model": "llama-3.1-8b", "tokens": 1e12, "seq_len": 2048, "global_batch_seqs": 32768},
        "search": {"gpus": ["H100-SXM"], "tp": [1], "pp": [1], "micro_batches": [1], "zero_stages": [1], "checkpointing": [0],
                   "train_precisions": ["bf16"], "max_gpus": max_gpus},
        "objective": "min_time",
    }


def test_max_gpus_65536_is_searched_not_capped() -> None:
    """A plan larger than 16,384 GPUs (the former silent cap) is found when the limit allows it."""
    plan = solve(parse_scenario(_wide_dp(65536)), alternatives=False)
    assert plan.num_gpus == 32768
    assert plan.num_gpus <= 65536
    unbounded = solve(parse_scenario(_wide_dp(None)), alternatives=False)
    assert unbounded.num_gpus == 32768


def test_enumeration_stops_at_the_gpu_limit_and_the_explanation_lifts_it() -> None:
    scenario = parse_scenario(_wide_dp(64))
    model = resolve_model("llama-3.1-8b")
    space = build_space(scenario, model, scenario.resolved_assumptions())
    assert space.rows and max(e.layout.num_gpus for e in space.rows) <= 64
    lifted = build_space(scenario, model, scenario.resolved_assumptions(), explain=True)
    assert max(e.layout.num_gpus for e in lifted.rows) == 32768
    assert gpu_cap(scenario, "H100-SXM") == 64 and gpu_cap(scenario, "H100-SXM", explain=True) is None
    gpu = space.gpus[0]
    assert count_training_layouts(scenario, model, [(gpu, node_size(scenario, gpu))]) == space.structural_count


def test_a_too_small_gpu_limit_is_explained_with_what_is_needed() -> None:
    """Nothing fits within 2 GPUs for 70B pretraining: the message names max_gpus and the plan beyond it."""
    data = {
        "name": "tight",
        "workload": {"kind": "training", "model": "llama-3.1-70b", "tokens": 1e11, "seq_len": 4096, "global_batch_seqs": 64},
        "search": {"gpus": ["H100-SXM"], "max_gpus": 2},
    }
    with pytest.raises(InfeasibleError) as err:
        solve(parse_scenario(data), alternatives=False)
    message = str(err.value)
    assert "max_gpus = 2" in message and "needs" in message


def test_a_search_too_large_is_refused_with_its_count_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the bound, `planner solve` refuses before evaluating: the count, the bound and how to narrow it; exit 2."""
    import planner.space as space

    monkeypatch.setattr(space, "MAX_LAYOUTS_SEARCHED", 1000)
    path = tmp_path / "big.yaml"
    path.write_text((ROOT / "scenarios" / "llama-3.1-70b-pretrain.yaml").read_text())
    result = CliRunner().invoke(app, ["solve", str(path)])
    assert result.exit_code == 2, result.output
    assert "more than 1,000 layouts to evaluate" in result.output and "narrow search.gpus" in result.output
    assert "Traceback" not in result.output
    assert yaml.safe_load(path.read_text())  # the input is untouched
