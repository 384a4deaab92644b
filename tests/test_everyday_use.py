"""Issue 15, group 4: one configuration from Python and the CLI, the knobs to reproduce a setup, readable tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import planner
from planner.catalog import load_gpus, load_model_entries
from planner.cli import app
from planner.errors import InputError
from planner.evaluate import InferenceEvaluation, TrainingEvaluation, evaluate_inference, evaluate_training

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_public_evaluate_matches_the_memory_command() -> None:
    e = planner.evaluate(model="llama-2-70b", gpu="H100", tp=4, batch=16, weights="fp8")
    assert isinstance(e, InferenceEvaluation) and e.memory.fits and e.layout.gpu == "H100-SXM"
    result = runner.invoke(app, ["memory", "--model", "llama-2-70b", "--gpu", "H100", "--tp", "4", "--batch", "16", "--weights", "fp8", "--json"])
    data = json.loads(result.output)
    assert result.exit_code == 0 and data["fits"] is True
    assert data["total_gib"] == pytest.approx(e.memory.total_bytes / 2**30)
    assert data["headroom_gib"] == pytest.approx(e.memory.headroom_bytes / 2**30)
    assert data["capacity_gib"] == pytest.approx(e.memory.capacity_bytes / 2**30)
    assert data["memory"]["terms"] == json.loads(e.memory.model_dump_json())["terms"]
    # the entry points keep their names and the module still imports as a module
    assert evaluate_training.__name__ == "evaluate_training" and evaluate_inference.__name__ == "evaluate_inference"


def test_evaluate_training_knobs_change_what_they_should() -> None:
    base = dict(model="llama-2-7b", gpu="H100", kind="training", tp=2, pp=2, dp=2, zero=1, ckpt="none", micro_batch=2,
                global_batch=64, seq_len=4096)
    e = planner.evaluate(**base, tokens=1e10)
    assert isinstance(e, TrainingEvaluation)
    assert planner.evaluate(**base, tokens=2e10).perf.time_to_train_s == pytest.approx(2 * e.perf.time_to_train_s)
    no_sp = planner.evaluate(**base, sequence_parallel=False)
    no_flash = planner.evaluate(**base, flash_attention=False)
    interleaved = planner.evaluate(**base, interleave=2)
    assert no_sp.memory.total_bytes > e.memory.total_bytes  # activations no longer split over TP
    assert no_flash.memory.total_bytes > e.memory.total_bytes  # s^2 attention scores stored
    assert interleaved.memory.total_bytes > e.memory.total_bytes  # more micro-batches in flight on stage 0
    reserve = planner.evaluate(**base, assumptions={"runtime_reserve_gib_training": 10.0})
    assert reserve.memory.total_bytes > e.memory.total_bytes
    with pytest.raises(InputError, match="--tp: 3 does not divide"):
        planner.evaluate(model="llama-2-7b", gpu="H100", tp=3)


def test_memory_cli_exposes_the_knobs() -> None:
    args = ["memory", "--model", "llama-2-7b", "--gpu", "H100", "--kind", "training", "--tp", "2", "--pp", "2", "--dp", "2",
            "--ckpt", "none", "--micro-batch", "2", "--global-batch", "64", "--json"]
    plain = json.loads(runner.invoke(app, args).output)
    tweaked = json.loads(runner.invoke(app, [*args, "--no-flash-attention", "--interleave", "2", "--set",
                                             "runtime_reserve_gib_training=4"]).output)
    assert tweaked["total_gib"] > plain["total_gib"]
    longer = json.loads(runner.invoke(app, [*args, "--tokens", "2e9"]).output)  # default 1e9 tokens
    assert longer["perf"]["time_to_train_s"] == pytest.approx(2 * plain["perf"]["time_to_train_s"], rel=1e-6)


@pytest.mark.parametrize("args, names", [
    (["catalog", "gpus"], [g.name for g in load_gpus()]),
    (["catalog", "models"], [e.name for e in load_model_entries()]),
    (["catalog", "prices"], [g.name for g in load_gpus()]),
    (["solve", str(ROOT / "scenarios" / "deepseek-7b-consumer-gpu.yaml")], ["RTX-4090", "RTX-3090"]),
    (["fleet", str(ROOT / "scenarios" / "fleets" / "team-fleet.yaml")], ["chat-67b", "weekly-finetune-7b", "pretrain-70b", "A100-80GB"]),
])
def test_tables_fit_80_columns_without_truncating_names(args: list[str], names: list[str]) -> None:
    result = runner.invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert "…" not in result.output
    for name in names:
        if args[1] != "prices" or name in result.output:
            assert name in result.output
