"""Plans a practitioner can sanity-check by hand (issue acceptance lines), solved end to end."""

from __future__ import annotations

import pytest

from planner.catalog import resolve_gpu, resolve_model
from planner.errors import InfeasibleError
from planner.layout import InferenceLayout
from planner.memory import inference_memory
from planner.scenario import Assumptions, InferenceWorkload, parse_scenario
from planner.solver import solve


def _serving(model: str, gpus: list[str], weights: list[str], **search) -> dict:
    return {"name": f"{model}-sane", "workload": {"kind": "inference", "model": model, "prompt_tokens": 1024, "output_tokens": 256,
                                                  "concurrent_sequences": 8},
            "search": {"gpus": gpus, "weight_precisions": weights, "kv_precisions": ["bf16"], **search}}


def test_deepseek_7b_int8_or_int4_fits_one_24gb_card() -> None:
    plan = solve(parse_scenario(_serving("deepseek-llm-7b", ["RTX-4090"], ["int8", "int4"], max_gpus=1)), alternatives=False)
    assert plan.num_gpus == 1
    assert plan.evaluation.layout.weight_precision.value in ("int8", "int4")


def test_deepseek_7b_bf16_does_not_fit_one_24gb_card_with_its_load() -> None:
    """32 sequences of 1,280 tokens at 480 KiB per token need 18.75 GiB of KV cache; with 12.9 GiB of bf16 weights that
    exceeds the 0.9 x 24 GiB a serving engine may use on one RTX 4090."""
    data = _serving("deepseek-llm-7b", ["RTX-4090"], ["bf16"], max_gpus=1, batch_per_replica=[32])
    data["workload"]["concurrent_sequences"] = 32
    with pytest.raises(InfeasibleError):
        solve(parse_scenario(data), alternatives=False)


def test_deepseek_67b_bf16_serving_needs_at_least_two_80gb_cards() -> None:
    plan = solve(parse_scenario(_serving("deepseek-llm-67b", ["H100-SXM", "A100-80GB"], ["bf16"])), alternatives=False)
    assert plan.evaluation.layout.gpus_per_replica >= 2
    one_card = InferenceLayout(gpu="H100-SXM", weight_precision="bf16", kv_precision="bf16", tp=1, batch=1)
    workload = InferenceWorkload(kind="inference", model="deepseek-llm-67b", prompt_tokens=1024, output_tokens=256, concurrent_sequences=1)
    assert not inference_memory(resolve_model("deepseek-llm-67b"), workload, one_card, resolve_gpu("H100-SXM"), Assumptions.with_overrides()).fits


def test_deepseek_v3_fp8_serving_fits_8_h200() -> None:
    data = _serving("deepseek-v3", ["H200"], ["fp8"], tp=[8], pp=[1], max_gpus=8)
    plan = solve(parse_scenario(data), alternatives=False)
    assert plan.num_gpus == 8
    weights = plan.evaluation.memory.term("weights") + plan.evaluation.memory.term("embeddings_16bit")
    assert weights / 1e9 == pytest.approx(673 / 8, rel=0.03)  # 671B x 1 byte + 16-bit embeddings, over 8 cards (GB)


def test_deepseek_v3_bf16_on_8_h100_is_explained() -> None:
    data = _serving("deepseek-v3", ["H100-SXM"], ["bf16"], max_gpus=8)
    with pytest.raises(InfeasibleError) as err:
        solve(parse_scenario(data), alternatives=False)
    message = str(err.value)
    assert "max_gpus" in message
    assert "1,342 GB" in message  # 671B x 2 bytes of bf16 weights alone


def test_gpu_aliases_in_limits_and_prices_are_applied() -> None:
    """`inventory` and price overrides keyed by an alias (h100-sxm) bind exactly like the canonical id (H100-SXM)."""
    base = _serving("llama-3.1-8b", ["H100-SXM"], ["bf16"])
    base["workload"] = {**base["workload"], "concurrent_sequences": None, "target_output_tokens_per_s": 40000}
    for key in ("H100-SXM", "h100-sxm", "h100"):
        limited = {**base, "constraints": {"inventory": {key: 2}}}
        with pytest.raises(InfeasibleError, match="inventory:H100-SXM"):
            solve(parse_scenario(limited), alternatives=False)
        priced = {**base, "pricing": {"usd_per_gpu_hour": {key: 100.0}}}
        plan = solve(parse_scenario(priced), alternatives=False)
        assert plan.evaluation.price.usd_per_gpu_hour == 100.0


def test_an_inventory_on_one_gpu_does_not_cap_another() -> None:
    """An inventory of 1 L4 must not shrink the H100 search (the enumeration cap is per GPU type)."""
    from planner.space import gpu_cap

    scenario = parse_scenario({**_serving("llama-3.1-8b", ["H100-SXM", "L4"], ["bf16"]), "constraints": {"inventory": {"L4": 1}}})
    assert gpu_cap(scenario, "L4") == 1
    assert gpu_cap(scenario, "H100-SXM") is None  # no limit: bounded by the global batch only


def test_batch_order_in_the_search_does_not_matter() -> None:
    one = solve(parse_scenario(_serving("llama-3.1-8b", ["L4"], ["bf16"], batch_per_replica=[256, 1])), alternatives=False)
    two = solve(parse_scenario(_serving("llama-3.1-8b", ["L4"], ["bf16"], batch_per_replica=[1, 256])), alternatives=False)
    assert one.evaluation.layout == two.evaluation.layout


def test_infinite_or_huge_numbers_are_input_errors() -> None:
    from planner.errors import InputError

    for field, value in (("budget_usd", float("inf")), ("budget_usd", 1e30), ("deadline_days", 1e300)):
        with pytest.raises(InputError, match=f"constraints.{field}"):
            parse_scenario({**_serving("llama-3.1-8b", ["L4"], ["bf16"]), "constraints": {field: value}})


def test_min_usd_per_million_tokens_equals_the_best_row() -> None:
    """$ per million output tokens of a serving layout does not depend on its replicas: the optimum is the cheapest row
    per token among those that meet the SLOs (brute force over the evaluated table)."""
    from planner.space import build_space

    data = {**_serving("deepseek-llm-67b", ["H100-SXM", "A100-80GB"], ["bf16", "int8"]), "objective": "min_usd_per_million_tokens"}
    data["workload"] = {**data["workload"], "concurrent_sequences": None, "target_output_tokens_per_s": 3000, "slo": {"tpot_s": 0.08}}
    scenario = parse_scenario(data)
    plan = solve(scenario, alternatives=False)
    rows = build_space(scenario, resolve_model("deepseek-llm-67b"), scenario.resolved_assumptions()).rows
    best = min(e.usd_per_million_output_tokens for e in rows if e.perf.tpot_s <= 0.08)
    assert plan.objective_value == pytest.approx(best, rel=1e-4)
    assert plan.evaluation.fleet_output_tokens_per_s >= 3000
