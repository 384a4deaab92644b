"""The column evaluator against the per-term breakdown, on random layouts of every workload kind.

`planner.evaluate.Table` scores many layouts at once (numpy columns, grouped by pipeline degree,
memory first); `evaluate_training` / `evaluate_inference` build, for one layout, the pydantic
objects with every memory term and its source. Both must agree on every row: whether it fits,
the memory total (the sum of the breakdown's terms), step time and throughput, TTFT/TPOT and
cost, within 1e-9 relative. Layouts are drawn at random (seeded) with mixed pipeline degrees in
one table, so that per-group computation and the choice of the most loaded stage are exercised.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from planner.catalog import load_gpus, resolve_model
from planner.cost import PriceQuote
from planner.enums import Checkpointing, KvPrecision, PriceTerm, TrainingMode, TrainPrecision, WeightPrecision, ZeroStage
from planner.evaluate import evaluate_inference, evaluate_training, inference_table, training_table
from planner.layout import InferenceLayout, TrainingLayout
from planner.memory import inference_columns, training_columns
from planner.scenario import Assumptions, InferenceWorkload, LoraSettings, TrainingWorkload

SEED = 20_261_129
REL = 1e-9
MODELS = ["llama-3.1-8b", "deepseek-llm-7b", "mixtral-8x7b", "deepseek-v2-lite", "deepseek-v3", "qwen2.5-7b", "llama-3.1-70b"]
GPUS = list(load_gpus())
A = Assumptions.with_overrides()
LAYOUTS_PER_TABLE = 100
TABLES_PER_KIND = 9  # 6 kinds x 9 tables x 100 layouts = 5,400 layouts


def _price(gpu: str) -> PriceQuote:
    return PriceQuote(gpu=gpu, usd_per_gpu_hour=2.5, provider="test", offering="test", term=PriceTerm.ON_DEMAND, source="test", as_of="2026")


def _divisors_up_to(n: int, cap: int) -> list[int]:
    return [d for d in range(1, cap + 1) if n % d == 0]


def _training_layout(rng: random.Random, model, gpu, offload: bool, qlora: bool = False) -> TrainingLayout:
    fp8 = gpu.supports_fp8 and not qlora  # QLoRA has no FP8 path (perf.QLORA_FP8_MESSAGE)
    precisions = [TrainPrecision.BF16, TrainPrecision.FP16, TrainPrecision.FP32] + ([TrainPrecision.FP8] if fp8 else [])
    tp = rng.choice(_divisors_up_to(model.num_heads, 8))
    pp = rng.choice([1, 1, 2, 3, 4, 5, 8, 16, min(32, model.num_layers)])
    ep = rng.choice(_divisors_up_to(model.n_routed_experts, 16)) if model.is_moe else 1
    dp = ep * rng.choice([1, 2, 3, 4, 8, 16])
    zero = ZeroStage(rng.choice([1, 2, 3]) if offload else rng.randint(0, 3))
    offload_params = offload and zero == ZeroStage.PARAMETERS and rng.random() < 0.5
    return TrainingLayout(
        gpu=gpu.name, precision=rng.choice(precisions), tp=tp, pp=pp, dp=dp, ep=ep, expert_tp=tp if ep == 1 else 1, zero=zero,
        checkpointing=Checkpointing(rng.randint(0, 2)), micro_batch=rng.choice([1, 2, 4]), grad_accum=rng.choice([1, 2, 3, 8, 16]),
        sequence_parallel=rng.random() < 0.7, flash_attention=rng.random() < 0.7, offload_optimizer=offload,
        offload_params=offload_params,
    )


def _inference_layout(rng: random.Random, model, gpu) -> InferenceLayout:
    weights = [WeightPrecision.BF16, WeightPrecision.FP16, WeightPrecision.INT8, WeightPrecision.INT4] + ([WeightPrecision.FP8] if gpu.supports_fp8 else [])
    kvs = [KvPrecision.BF16, KvPrecision.FP16, KvPrecision.INT4] + ([KvPrecision.FP8] if gpu.supports_fp8 else [])
    return InferenceLayout(gpu=gpu.name, weight_precision=rng.choice(weights), kv_precision=rng.choice(kvs),
                           tp=rng.choice(_divisors_up_to(model.num_heads, 8)), pp=rng.choice([1, 2, 3, 4]),
                           batch=rng.choice([1, 2, 7, 16, 64, 256, 1024]), replicas=rng.choice([1, 2, 5]))


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)


SERVING_STRIDE = 5


KINDS = ["pretrain", "full_finetune", "lora", "qlora", "offload", "serving"]


@pytest.mark.parametrize("kind", KINDS)
def test_column_evaluator_matches_the_breakdown(kind: str) -> None:
    """>= 900 random layouts per kind (180 re-evaluated alone for serving): 0 mismatches in fit, <= 1e-9 relative on every figure."""
    rng = random.Random(f"{SEED}-{kind}")
    mismatches: list[str] = []
    compared = 0
    fitting = 0
    for _ in range(TABLES_PER_KIND):
        model = resolve_model(rng.choice(MODELS))
        gpu = rng.choice(GPUS)
        price = _price(gpu.name)
        node = rng.choice([None, 4, 8])
        if kind == "serving":
            workload = InferenceWorkload(kind="inference", model=model.name, prompt_tokens=rng.choice([128, 1000, 4096]),
                                         output_tokens=rng.choice([64, 500]), target_output_tokens_per_s=rng.choice([100.0, 5000.0]))
            layouts = [_inference_layout(rng, model, gpu) for _ in range(LAYOUTS_PER_TABLE)]
            table = inference_table(model, workload, gpu, A, price, inference_columns(layouts), node).with_perf()
            # the load-aware figures bisect per layout: one layout in SERVING_STRIDE is re-evaluated alone
            table = table.take(np.arange(0, LAYOUTS_PER_TABLE, SERVING_STRIDE))
            layouts = layouts[::SERVING_STRIDE]
            singles = [evaluate_inference(model, workload, lay, gpu, A, price, node) for lay in layouts]
            pairs = [("ttft_s", lambda e: e.perf.ttft_s, table.perf["ttft_s"]), ("tpot_s", lambda e: e.perf.tpot_s, table.perf["tpot_s"]),
                     ("replicas_needed", lambda e: e.perf.replicas_needed, table.perf["replicas_needed"]),
                     ("decode_step_s", lambda e: e.perf.decode_step_s, table.perf["decode_step_s"]),
                     ("tokens_per_s", lambda e: e.fleet_output_tokens_per_s, table.cost["fleet_output_tokens_per_s"]),
                     ("usd_per_hour", lambda e: e.usd_per_hour, table.cost["usd_per_hour"]),
                     ("usd_per_mtok", lambda e: e.usd_per_million_output_tokens, table.cost["usd_per_million_output_tokens"])]
        else:
            mode = {"offload": TrainingMode.PRETRAIN}.get(kind) or TrainingMode(kind)
            lora = LoraSettings(rank=rng.choice([8, 16, 64])) if mode in (TrainingMode.LORA, TrainingMode.QLORA) else None
            workload = TrainingWorkload(kind="training", mode=mode, model=model.name, tokens=1e10, seq_len=rng.choice([1024, 4096, 8192]),
                                        global_batch_seqs=64, lora=lora)
            layouts = [_training_layout(rng, model, gpu, kind == "offload", mode is TrainingMode.QLORA) for _ in range(LAYOUTS_PER_TABLE)]
            table = training_table(model, workload, gpu, A, price, training_columns(layouts), node).with_perf()
            singles = [evaluate_training(model, workload, lay, gpu, A, price, node) for lay in layouts]
            pairs = [("step_time_s", lambda e: e.perf.step_time_s, table.perf["step_time_s"]),
                     ("tokens_per_s", lambda e: e.perf.tokens_per_s, table.perf["tokens_per_s"]),
                     ("time_to_train_s", lambda e: e.perf.time_to_train_s, table.perf["time_to_train_s"]),
                     ("cost_usd", lambda e: e.cost_usd, table.cost["cost_usd"])]
        fits = table.fits
        for i, single in enumerate(singles):
            compared += 1
            fitting += int(single.memory.fits)
            if bool(fits[i]) != single.memory.fits:
                mismatches.append(f"{single.layout}: fit {bool(fits[i])} vs {single.memory.fits}")
            if not _close(float(table.memory["total_bytes"][i]), single.memory.total_bytes):
                mismatches.append(f"{single.layout}: memory {table.memory['total_bytes'][i]} vs {single.memory.total_bytes}")
            if table.training and int(table.memory["stage"][i]) != single.memory.stage:
                mismatches.append(f"{single.layout}: stage {table.memory['stage'][i]} vs {single.memory.stage}")
            for name, get, column in pairs:
                if not _close(float(column[i]), get(single)):
                    mismatches.append(f"{single.layout}: {name} {column[i]} vs {get(single)}")
        assert np.all(table.memory["total_bytes"] > 0)
    assert compared == TABLES_PER_KIND * len(range(0, LAYOUTS_PER_TABLE, SERVING_STRIDE if kind == "serving" else 1))
    assert 0 < fitting < compared, "the sample should hold layouts that fit and layouts that do not"
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:3]}"


def test_a_table_row_builds_the_same_objects_as_the_scalar_path() -> None:
    """`Table.evaluation_at` gives exactly the evaluation `evaluate_training` gives for that layout (terms, sources, speed)."""
    model = resolve_model("deepseek-v3")
    gpu = next(g for g in GPUS if g.name == "H200")
    workload = TrainingWorkload(kind="training", model=model.name, tokens=1e12, seq_len=4096, global_batch_seqs=1024)
    layouts = [TrainingLayout(gpu=gpu.name, precision=TrainPrecision.BF16, tp=tp, pp=pp, dp=64, ep=8, zero=ZeroStage.OPTIMIZER,
                              checkpointing=Checkpointing.SELECTIVE, micro_batch=1, grad_accum=16)
               for tp in (1, 2, 8) for pp in (8, 16, 32)]
    table = training_table(model, workload, gpu, A, _price(gpu.name), training_columns(layouts)).with_perf()
    for i, layout in enumerate(layouts):
        assert table.evaluation_at(i) == evaluate_training(model, workload, layout, gpu, A, _price(gpu.name))
    assert len({int(s) for s in table.memory["stage"]}) > 1  # the heaviest stage differs between rows of one table
