"""Issue 15, group 1: no silent wrong answer (stale resumes, duplicate keys, aliases, lax types, wrong diagnoses)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import planner.studies as study_mod
from planner.cli import app
from planner.errors import InfeasibleError, InputError
from planner.fleet import load_fleet
from planner.modelspec import spec_from_hf_config
from planner.scenario import load_scenario, parse_scenario
from planner.solver import ParetoPoint, nondominated, solve
from planner.studies import expand_cases, load_study, run_study

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

SMALL_SERVING = {
    "name": "small-serving",
    "workload": {"kind": "inference", "model": "deepseek-llm-7b", "prompt_tokens": 512, "output_tokens": 128,
                 "concurrent_sequences": 8},
    "search": {"gpus": ["RTX-4090", "L4"], "weight_precisions": ["int8", "int4"], "kv_precisions": ["bf16"], "max_gpus": 4,
               "batch_per_replica": [1, 4, 8]},
}


def run(*args: str):
    return runner.invoke(app, list(args))


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data) if path.suffix != ".json" else json.dumps(data))
    return path


# ---- resuming a study after its base changed ------------------------------------------------


def _study_files(tmp_path: Path, prompt_tokens: int) -> Path:
    _write(tmp_path / "base.yaml", {**SMALL_SERVING, "workload": {**SMALL_SERVING["workload"], "prompt_tokens": prompt_tokens}})
    return _write(tmp_path / "study.yaml", {"name": "resume", "base": "base.yaml",
                                            "axes": {"search.weight_precisions": [["int8"], ["int4"]]}})


def test_resume_after_the_base_changed_recomputes_every_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    real = study_mod.solve_case

    def counted(scenario: dict, time_limit_s: float = 20.0) -> dict:
        calls.append(scenario)
        return real(scenario, time_limit_s)

    monkeypatch.setattr(study_mod, "solve_case", counted)
    out = tmp_path / "r.csv"
    study_file = _study_files(tmp_path, 512)
    first = run_study(load_study(study_file), workers=1, output=out)
    assert len(calls) == 2
    run_study(load_study(study_file), workers=1, output=out)  # nothing changed: nothing recomputed
    assert len(calls) == 2
    _study_files(tmp_path, 4096)  # the base changed, the axes did not
    second = run_study(load_study(study_file), workers=1, output=out)
    assert len(calls) == 4 and all(c["workload"]["prompt_tokens"] == 4096 for c in calls[2:])
    assert set(first["case_id"]).isdisjoint(set(second["case_id"]))
    assert list(second["memory_gib"]) != list(first["memory_gib"])  # the old answers were not returned


def test_case_ids_cover_time_limit_and_catalogs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = load_study(_study_files(tmp_path, 512))
    ids = [c.case_id for c in expand_cases(study)]
    assert ids == [c.case_id for c in expand_cases(study)]
    assert set(ids).isdisjoint(c.case_id for c in expand_cases(study, time_limit_s=5.0))
    monkeypatch.setattr(study_mod, "catalog_version", lambda: "another catalog")
    assert set(ids).isdisjoint(c.case_id for c in expand_cases(study))


# ---- duplicate keys, aliases, lax types ---------------------------------------------------


@pytest.mark.parametrize("suffix, text", [
    (".yaml", "name: a\nname: b\nworkload: {kind: inference}\n"),
    (".json", '{"name": "a", "name": "b"}'),
])
def test_duplicate_keys_are_rejected(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"s{suffix}"
    path.write_text(text)
    result = run("validate", str(path))
    assert result.exit_code == 2 and "duplicate key 'name'" in result.output


def _fleet(owned: dict, offers: list) -> dict:
    data = yaml.safe_load((ROOT / "scenarios" / "fleets" / "team-fleet.yaml").read_text())
    return {**data, "owned": owned, "offers": offers}


def test_fleet_aliases_of_one_gpu_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="a second time"):
        load_fleet(_write(tmp_path / "f.yaml", _fleet({"A100-80GB": 64, "a100-80gb": 8}, [])))
    with pytest.raises(InputError, match="offered more than once.*H100-SXM"):
        load_fleet(_write(tmp_path / "g.yaml", _fleet({}, [{"gpu": "H100-SXM"}, {"gpu": "h100"}])))
    assert load_fleet(_write(tmp_path / "h.yaml", _fleet({"a100-80gb": 8}, []))).owned == {"A100-80GB": 8}


@pytest.mark.parametrize("path, value", [
    (("workload", "prompt_tokens"), True), (("search", "max_gpus"), True), (("search", "tp"), [1, True]),
    (("constraints", "inventory"), {"H100-SXM": True}), (("workload", "target_output_tokens_per_s"), False),
    (("search", "micro_batches"), [True]), (("assumptions", "kv_block_tokens"), True),
])
def test_booleans_are_not_numbers(path: tuple[str, str], value: object) -> None:
    data = json.loads(json.dumps(SMALL_SERVING))
    data.setdefault(path[0], {})[path[1]] = value
    with pytest.raises(InputError, match=f"{path[0]}.*{path[1]}.*boolean"):
        parse_scenario(data)


def test_hidden_size_must_divide_by_heads_unless_head_dim_is_given() -> None:
    cfg = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 24, "num_hidden_layers": 2,
           "intermediate_size": 11008, "vocab_size": 32000}
    with pytest.raises(InputError, match="not divisible by num_attention_heads 24; give head_dim"):
        spec_from_hf_config(cfg, "x")
    assert spec_from_hf_config({**cfg, "head_dim": 128}, "x").head_dim == 128


# ---- one validate for every file kind ----------------------------------------------------------


def test_validate_reports_every_file_and_every_kind(tmp_path: Path) -> None:
    bundled = [*sorted((ROOT / "scenarios").glob("*.yaml")), *sorted((ROOT / "scenarios" / "studies").glob("*.yaml")),
               *sorted((ROOT / "scenarios" / "fleets").glob("*.yaml"))]
    result = run("validate", *map(str, bundled))
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok (") == len(bundled) and "study, 9 cases" in result.output and "fleet, 3 workloads" in result.output

    serving_min_time = _write(tmp_path / "a.yaml", {**SMALL_SERVING, "objective": "min_time"})
    training = yaml.safe_load((ROOT / "scenarios" / "deepseek-7b-lora.yaml").read_text())
    training_per_token = _write(tmp_path / "b.yaml", {**training, "objective": "min_usd_per_million_tokens"})
    no_price_file = _write(tmp_path / "c.yaml", {**SMALL_SERVING, "pricing": {"price_file": "missing.csv"}})
    good = _write(tmp_path / "d.yaml", SMALL_SERVING)
    result = run("validate", *map(str, (serving_min_time, training_per_token, no_price_file, good)))
    assert result.exit_code == 2
    assert "a.yaml: objective: min_time applies to training" in result.output
    assert "b.yaml: objective: min_usd_per_million_tokens applies to serving" in result.output
    assert "c.yaml: pricing.price_file:" in result.output and str(tmp_path / "missing.csv") in result.output
    assert "d.yaml: ok" in result.output and "3 of 4 files invalid" in result.output
    for path in (serving_min_time, training_per_token, no_price_file):  # solve rejects the same files the same way
        assert run("solve", str(path)).exit_code == 2


# ---- memory ------------------------------------------------------------------------------------


def test_memory_rejects_tp_that_does_not_divide_the_heads_and_exits_1_when_it_does_not_fit() -> None:
    result = run("memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--tp", "3")
    assert result.exit_code == 2 and "--tp: 3 does not divide the 64 attention heads" in result.output
    assert run("memory", "--model", "llama-2-70b", "--gpu", "H100-SXM").exit_code == 1  # 140 GB of bf16 weights on one card
    assert run("memory", "--model", "llama-2-70b", "--gpu", "H100-SXM", "--tp", "4").exit_code == 0


# ---- plans: Pareto, top K, JSON without a plan, what decides infeasibility ------------------------


def test_nondominated_filter_property() -> None:
    rng = random.Random(15)
    for _ in range(300):
        points = [ParetoPoint(cost=rng.choice([1.0, 2.0, 3.0, rng.uniform(0, 5)]), throughput_tokens_per_s=1.0, num_gpus=1,
                              metric="TPOT p90 under load (ms)", metric_value=rng.choice([10.0, 20.0, rng.uniform(0, 50)]), summary="p")
                  for _ in range(rng.randint(1, 12))]
        front = nondominated(points)
        assert front
        for p in front:
            assert not any(q.cost <= p.cost and q.metric_value <= p.metric_value and (q.cost < p.cost or q.metric_value < p.metric_value) for q in points)
        for p in points:  # every input point is on the frontier or dominated by (or equal to) a frontier point
            assert any(q.cost <= p.cost and q.metric_value <= p.metric_value for q in front)


@pytest.mark.parametrize("seed", range(3))
def test_pareto_of_random_serving_scenarios_has_no_dominated_point(seed: int) -> None:
    rng = random.Random(seed)
    data = json.loads(json.dumps(SMALL_SERVING))
    data["workload"]["prompt_tokens"] = rng.choice([256, 1024, 2048])
    data["workload"]["concurrent_sequences"] = rng.choice([2, 8, 16])
    data["search"]["gpus"] = rng.sample(["RTX-4090", "L4", "A10G", "L40S"], 2)
    data["search"]["max_gpus"] = 16  # load-aware sizing (sequence slots with a staffing margin) can need more than 4 cards
    plan = solve(parse_scenario(data), time_limit_s=5.0, alternatives=False, pareto=True)
    points = list(plan.pareto)
    assert points and all(p.metric.startswith("TPOT") and p.metric_value > 0 for p in points)
    for p in points:
        assert not any(q.cost <= p.cost and q.metric_value <= p.metric_value and q is not p for q in points)
    assert points[0].cost == pytest.approx(plan.objective_value)  # the cheapest point is the min_cost plan


def test_pareto_table_names_the_metric_it_trades(tmp_path: Path) -> None:
    result = run("solve", str(_write(tmp_path / "s.yaml", SMALL_SERVING)), "--pareto")
    assert result.exit_code == 0, result.output
    assert "cost vs TPOT p90" in result.output and "TPOT p90 under load (ms)" in result.output and "cost vs throughput" not in result.output


def test_top_k_returns_the_k_best_by_the_objective(tmp_path: Path) -> None:
    data = {**SMALL_SERVING, "search": {**SMALL_SERVING["search"], "gpus": ["L4", "A10G", "RTX-4090", "L40S"]}}
    plan = solve(parse_scenario(data), time_limit_s=5.0)
    feasible = [a for a in plan.alternatives if a.feasible]
    assert [a.objective_value for a in feasible] == sorted(a.objective_value for a in feasible)
    assert plan.alternatives[0].gpu == plan.evaluation.layout.gpu and plan.alternatives[0].objective_value == pytest.approx(plan.objective_value)
    result = run("solve", str(_write(tmp_path / "s.yaml", data)), "--top", "2", "--json")
    shown = json.loads(result.output)["alternatives"]
    assert [a["gpu"] for a in shown] == [a.gpu for a in plan.alternatives[:2]]


def test_json_without_a_plan_prints_status_and_explanation(tmp_path: Path) -> None:
    data = {**SMALL_SERVING, "constraints": {"budget_usd": 0.01}}
    result = run("solve", str(_write(tmp_path / "s.yaml", data)), "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["status"] == "INFEASIBLE" and "budget" in out["explanation"]


def test_missing_prices_are_named_not_memory() -> None:
    data = {**SMALL_SERVING, "pricing": {"provider": "nobody-sells-these"}}
    with pytest.raises(InfeasibleError) as info:
        solve(parse_scenario(data), time_limit_s=5.0)
    assert "no GPU in the search has a on_demand price from provider 'nobody-sells-these'" in str(info.value)
    assert "memory was not the problem" in str(info.value)


def test_weights_floor_states_the_usable_fraction() -> None:
    data = {"name": "big", "workload": {"kind": "inference", "model": "deepseek-v3", "prompt_tokens": 1024, "output_tokens": 256,
                                        "concurrent_sequences": 1},
            "search": {"gpus": ["H100-SXM"], "max_gpus": 8, "weight_precisions": ["fp8"], "kv_precisions": ["fp8"]}}
    with pytest.raises(InfeasibleError) as info:
        solve(parse_scenario(data), time_limit_s=5.0)
    text = str(info.value)
    assert "needs 671 GB" in text and "8 x H100-SXM offer 684 GB, of which" in text and "usable" in text
    assert "gpu_memory_utilization" in text


def test_fp8_on_a_gpu_without_fp8_is_an_input_error(tmp_path: Path) -> None:
    data = {**SMALL_SERVING, "search": {**SMALL_SERVING["search"], "gpus": ["A100-80GB"], "weight_precisions": ["fp8"]}}
    result = run("solve", str(_write(tmp_path / "s.yaml", data)))
    assert result.exit_code == 2 and "search.weight_precisions: fp8 needs FP8 tensor cores, which A100-80GB lack" in result.output
    result = run("memory", "--model", "deepseek-llm-7b", "--gpu", "A100-80GB", "--weights", "fp8")
    assert result.exit_code == 2 and result.output.startswith("--weights: fp8 needs FP8")
    allowed = {**SMALL_SERVING, "search": {**SMALL_SERVING["search"], "gpus": ["A100-80GB"], "weight_precisions": ["fp8", "int8"],
                                           "kv_precisions": ["bf16", "fp8"]}}
    plan = solve(load_scenario(_write(tmp_path / "t.yaml", allowed)), time_limit_s=5.0)  # never offered: int8 / bf16 KV win
    assert plan.evaluation.layout.weight_precision.value == "int8" and plan.evaluation.layout.kv_precision.value == "bf16"


def test_fleet_json_without_a_plan_prints_status_and_explanation(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "scenarios" / "fleets" / "team-fleet.yaml").read_text())
    data["budget_usd"] = 1.0
    result = run("fleet", str(_write(tmp_path / "f.yaml", data)), "--json", "--time-limit", "10")
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "INFEASIBLE" and "budget" in out["explanation"]


def test_training_pareto_trades_cost_against_time_without_dominated_points() -> None:
    data = yaml.safe_load((ROOT / "scenarios" / "deepseek-67b-full-finetune.yaml").read_text())
    data["constraints"] = {}
    plan = solve(parse_scenario(data), time_limit_s=5.0, alternatives=False, pareto=True)
    points = list(plan.pareto)
    assert len(points) >= 2 and all(p.metric.startswith("time to train") for p in points)
    assert [p.cost for p in points] == sorted(p.cost for p in points)
    assert [p.time_to_train_days for p in points] == sorted((p.time_to_train_days for p in points), reverse=True)
    for p in points:
        assert not any(q is not p and q.cost <= p.cost and q.time_to_train_days <= p.time_to_train_days for q in points)
