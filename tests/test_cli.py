"""CLI: every bundled scenario validates and solves; bad input gives one line, exit code 2, no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from planner.cli import app

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_bundled_scenario_validates(path: Path) -> None:
    result = run("validate", str(path))
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _base() -> dict:
    return yaml.safe_load((ROOT / "scenarios" / "deepseek-67b-serving-h100.yaml").read_text())


BROKEN = {
    "malformed_yaml": ("name: x\nworkload: [unclosed\n", "malformed YAML"),
    "wrong_type": (None, "workload.prompt_tokens"),
    "negative_length": (None, "workload.output_tokens"),
    "unknown_key": (None, "unknown key"),
    "unknown_gpu": (None, "Did you mean 'H100-SXM'"),
    "unknown_model": (None, "'deepseek-llm-67b'"),
}


def _broken_text(kind: str) -> str:
    data = _base()
    if kind == "wrong_type":
        data["workload"]["prompt_tokens"] = "lots"
    elif kind == "negative_length":
        data["workload"]["output_tokens"] = -5
    elif kind == "unknown_key":
        data["search"]["gpu_list"] = ["H100-SXM"]
    elif kind == "unknown_gpu":
        data["search"]["gpus"] = ["H100-SMX"]
    elif kind == "unknown_model":
        data["workload"]["model"] = "deepseek-llm-76b"
    return yaml.safe_dump(data)


@pytest.mark.parametrize("kind", sorted(BROKEN))
@pytest.mark.parametrize("command", ["validate", "solve"])
def test_broken_scenarios_fail_with_one_line(tmp_path: Path, kind: str, command: str) -> None:
    text, expected = BROKEN[kind]
    path = _write(tmp_path, f"{kind}.yaml", text if text is not None else _broken_text(kind))
    result = run(command, str(path))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert expected in lines[0]
    assert str(path) in lines[0]
    assert "Traceback" not in result.output


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    result = run("solve", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "file not found" in result.output


def test_model_show_deepseek_v3() -> None:
    result = run("model", "show", "deepseek-v3", "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["total_params_b"] == pytest.approx(671, rel=0.01)
    assert facts["active_params_b"] == pytest.approx(37, rel=0.03)


def test_model_show_copied_config(tmp_path: Path) -> None:
    copy = tmp_path / "config.json"
    shutil.copy(ROOT / "catalogs" / "models" / "deepseek-v3.json", copy)
    result = run("model", "show", str(copy), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total_params_b"] == pytest.approx(671.026, rel=1e-4)


def test_schema_is_json_schema() -> None:
    result = run("schema")
    schema = json.loads(result.output)
    assert "workload" in schema["properties"]
    assert schema["additionalProperties"] is False


def test_catalog_tables() -> None:
    for what in ("gpus", "prices", "models"):
        result = run("catalog", what)
        assert result.exit_code == 0, result.output
    assert "MI300X" in run("catalog", "gpus").output


def test_memory_readable_breakdowns() -> None:
    small = run("memory", "--model", "deepseek-llm-7b", "--gpu", "RTX-4090", "--weights", "int8", "--batch", "4")
    assert small.exit_code == 0, small.output
    assert "fits" in small.output and "kv_cache" in small.output and "headroom" in small.output
    assert "output tokens/s" in small.output and "per million output tokens" in small.output
    big = run("memory", "--model", "deepseek-v3", "--gpu", "H200", "--weights", "fp8", "--kv", "fp8", "--tp", "8", "--batch", "32")
    assert big.exit_code == 0, big.output
    assert "fits" in big.output and "NOT" not in big.output


def test_memory_training_json_has_speed_and_cost() -> None:
    result = run("memory", "--model", "deepseek-llm-67b", "--gpu", "H100-SXM", "--kind", "training", "--dp", "8",
                 "--zero", "3", "--json")
    assert result.exit_code == 1, result.output  # 16 B/param x 67.4e9 / 8 ranks alone exceed an 80 GB card: exit 1, JSON still printed
    data = json.loads(result.output)
    assert data["fits"] is False and data["headroom_gib"] == pytest.approx(data["capacity_gib"] - data["total_gib"])
    assert data["perf"]["tokens_per_s"] > 0 and data["cost_usd"] > 0
    total = sum(t["bytes"] for t in data["memory"]["terms"])
    assert total > 16 * 67.4e9 / 8  # model states alone at ZeRO-3 over 8 ranks


def test_memory_bad_flag_value_is_one_line() -> None:
    result = run("memory", "--model", "deepseek-llm-7b", "--gpu", "RTX-4090", "--weights", "int3")
    assert result.exit_code == 2
    assert result.output.startswith("--weights:") and "int3" in result.output  # names the flag the user typed


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_bundled_scenario_solves_optimal(path: Path) -> None:
    result = run("solve", str(path), "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["status"] == "OPTIMAL"
    assert plan["verified"] is True
    memory = plan["evaluation"]["memory"]
    assert sum(t["bytes"] for t in memory["terms"]) <= memory["capacity_bytes"]


def test_solve_prints_plan_and_alternatives() -> None:
    result = run("solve", str(ROOT / "scenarios" / "deepseek-67b-serving-h100.yaml"))
    assert result.exit_code == 0, result.output
    assert "OPTIMAL" in result.output and "Per-card memory" in result.output and "Best plan per GPU type" in result.output


def test_infeasible_scenario_exit_1_names_limit(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "scenarios" / "deepseek-v3-serving.yaml").read_text())
    data["search"]["max_gpus"] = 4
    path = _write(tmp_path, "tight.yaml", yaml.safe_dump(data))
    result = run("solve", str(path))
    assert result.exit_code == 1, result.output
    assert "max_gpus" in result.output and "needs" in result.output


def _qlora_scenario(**search) -> dict:
    return {"name": "q", "workload": {"kind": "training", "mode": "qlora", "model": "llama-3.1-8b", "tokens": 1e8, "seq_len": 2048,
                                      "global_batch_seqs": 16, "lora": {"rank": 16}},
            "search": {"gpus": ["H100-SXM"], "max_gpus": 8, **search}}


def test_qlora_asking_for_fp8_is_refused_naming_the_field(tmp_path: Path) -> None:
    """bitsandbytes NF4 has no FP8 compute path: a QLoRA scenario listing fp8 is input error, exit 2, field named."""
    path = _write(tmp_path, "q.yaml", yaml.safe_dump(_qlora_scenario(train_precisions=["bf16", "fp8"])))
    result = run("solve", str(path))
    assert result.exit_code == 2, result.output
    assert "search.train_precisions" in result.output and "fp8" in result.output and "qlora" in result.output
    assert "Traceback" not in result.output


def test_qlora_space_never_offers_fp8_and_charges_dequantisation() -> None:
    """With the default precisions (bf16, fp8) on an FP8 card, QLoRA layouts are bf16 only; the NF4 de-quantisation
    (read 0.5 B + write 2 B per weight per use, Dettmers et al. 2023 Sec. 3) makes a QLoRA step slower than LoRA's."""
    from planner.catalog import resolve_gpu, resolve_model
    from planner.enums import Checkpointing, TrainingMode, TrainPrecision, ZeroStage
    from planner.layout import TrainingLayout
    from planner.memory import TRAIN_PRECISIONS
    from planner.perf import training_perf
    from planner.scenario import Assumptions, parse_scenario
    from planner.space import build_space

    scenario = parse_scenario(_qlora_scenario())
    model = resolve_model("llama-3.1-8b")
    space = build_space(scenario, model, scenario.resolved_assumptions())
    codes = np.concatenate([t.layout["precision"] for t in space.tables])
    assert len(codes) > 0 and not np.any(codes == TRAIN_PRECISIONS.index(TrainPrecision.FP8))
    gpu = resolve_gpu("H100-SXM")
    layout = TrainingLayout(gpu=gpu.name, precision=TrainPrecision.BF16, tp=1, pp=1, dp=1, zero=ZeroStage.NONE,
                            checkpointing=Checkpointing.NONE, micro_batch=1, grad_accum=16)
    a = Assumptions.with_overrides()
    qlora = training_perf(model, scenario.workload, layout, gpu, a)
    lora = training_perf(model, scenario.workload.model_copy(update={"mode": TrainingMode.LORA}), layout, gpu, a)
    linear = model.matmul_params_per_token - model.lm_head_params
    expected = 16 * 2 * linear * 2.5 / (gpu.hbm_bandwidth_gbps * 1e9)  # 16 micro-batches x (fwd + bwd) at full HBM rate
    extra = qlora.elementwise_s - lora.elementwise_s
    assert expected < extra < 2 * expected
    assert qlora.step_time_s > lora.step_time_s


def test_frameworks_that_offer_none_of_the_zero_stages_are_refused(tmp_path: Path) -> None:
    """Megatron offers ZeRO 0-1 (DDP, distributed optimizer); asking for megatron with ZeRO-3 only is input error, exit 2."""
    data = _qlora_scenario(frameworks=["megatron"], zero_stages=[3])
    data["workload"]["mode"] = "pretrain"
    result = run("solve", str(_write(tmp_path, "f.yaml", yaml.safe_dump(data))))
    assert result.exit_code == 2, result.output
    assert "search" in result.output and "megatron" in result.output and "zero_stages" in result.output


def _python(code: str, *args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_console_entry_answers_as_the_app_does_and_exits_with_its_code() -> None:
    """`planner` (cli.main: os._exit after flushing when safe) prints what the app prints and keeps the exit codes."""
    from planner import solve

    done = _python("import sys; from planner.cli import main; sys.argv = ['planner'] + sys.argv[1:]; main()",
                   "solve", "scenarios/deepseek-67b-serving-h100.yaml", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["objective_value"] == pytest.approx(solve(ROOT / "scenarios" / "deepseek-67b-serving-h100.yaml").objective_value)
    bad = _python("import sys; from planner.cli import main; sys.argv = ['planner'] + sys.argv[1:]; main()",
                  "memory", "--model", "deepseek-llm-7x", "--gpu", "H100")
    assert bad.returncode == 2 and "deepseek-llm-7b" in bad.stderr and "Traceback" not in bad.stderr


def test_cp_sat_loads_without_pandas_in_the_command_process_and_pandas_stays_real() -> None:
    """`import_cp_sat_without_pandas`: CP-SAT solves with the placeholder gone, and a later `import pandas` is pandas."""
    done = _python(
        "import sys\n"
        "from planner.cli import import_cp_sat_without_pandas\n"
        "import_cp_sat_without_pandas()\n"
        "assert 'pandas' not in sys.modules\n"
        "from ortools.sat.python import cp_model\n"
        "m = cp_model.CpModel(); x = m.new_int_var(0, 3, 'x'); m.add(x <= 2); m.maximize(x)\n"
        "s = cp_model.CpSolver(); assert s.solve(m) == cp_model.OPTIMAL and s.value(x) == 2\n"
        "import pandas\n"
        "assert pandas.DataFrame({'a': [1]}).shape == (1, 1)\n"
        "print('ok')\n")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
