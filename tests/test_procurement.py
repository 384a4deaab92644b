"""Procurement: SkyPilot price import, placeholder rows, whole instances, spot restarts.

Fixtures: verbatim rows of SkyPilot's public catalog (tests/data/skypilot/README.md names the
repository, paths and commits).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path

import pytest

from planner.catalog import CATALOG_DIR, load_prices, resolve_gpu, resolve_model
from planner.cost import (
    instances_needed, is_stale, offer_for, price_quote, rented_gpus, spot_expected_time_s, usd_per_hour, young_daly_interval_s,
)
from planner.enums import KvPrecision, PriceTerm, TrainPrecision, WeightPrecision
from planner.errors import InputError
from planner.evaluate import evaluate_inference, evaluate_training
from planner.layout import InferenceLayout, TrainingLayout
from planner.prices import catalog_gpu, import_skypilot
from planner.scenario import Assumptions, InferenceWorkload, Pricing, Scenario, TrainingWorkload, load_scenario
from planner.space import candidate_gpus

SKYPILOT = Path(__file__).parent / "data" / "skypilot"
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
ASSUMPTIONS = Assumptions.with_overrides()


def _imported(tmp_path: Path) -> list[dict[str, str]]:
    summary = import_skypilot(SKYPILOT, tmp_path / "prices.csv", as_of="2026-11-29")
    assert summary.path == str(tmp_path / "prices.csv")
    with open(summary.path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---- SkyPilot import -----------------------------------------------------------------------


def test_skypilot_import_keeps_instance_sizes_and_divides_the_instance_price(tmp_path):
    rows = _imported(tmp_path)
    lambda_h100 = {int(r["gpus_per_instance"]): float(r["usd_per_gpu_hour"]) for r in rows
                   if r["provider"] == "lambda" and r["gpu"] == "H100-SXM" and r["term"] == "on_demand"}
    # gpu_1x/2x/4x/8x_h100_sxm5 at $3.29, $6.38, $12.36, $23.92 per instance-hour
    assert lambda_h100 == {1: 3.29, 2: 3.19, 4: 3.09, 8: 2.99}
    # Lambda's 'H100' PCIe instance is the PCIe card; its 8x A100 (40960 MiB) is the 40 GB card
    assert {(r["gpu"], r["offering"].split(" ")[0]) for r in rows if r["provider"] == "lambda"} >= {
        ("H100-PCIe", "gpu_1x_h100_pcie"), ("A100-40GB", "gpu_8x_a100")}
    # RunPod lists SpotPrice before Price: read by name, the SXM A100 at $15.12 per 8 GPUs
    runpod = {(r["gpu"], r["gpus_per_instance"], r["term"]): float(r["usd_per_gpu_hour"]) for r in rows if r["provider"] == "runpod"}
    assert runpod[("A100-80GB", "8", "on_demand")] == pytest.approx(15.12 / 8)
    # Nebius spot: $10.00 per 8x H100 instance
    nebius = {(r["gpu"], r["gpus_per_instance"], r["term"]): float(r["usd_per_gpu_hour"]) for r in rows if r["provider"] == "nebius"}
    assert nebius[("H100-SXM", "8", "spot")] == pytest.approx(1.25) and nebius[("H100-SXM", "8", "on_demand")] == pytest.approx(2.95)
    # AWS orders its columns GpuInfo, Price, SpotPrice, Region: p5.48xlarge at $98.32 per 8 GPUs in us-east-1,
    # spot $11.7984 in ap-south-1; p5e has no on-demand price (spot only); p4de is the 80 GB A100
    aws = {(r["gpu"], r["offering"].split(" ")[0], r["term"]): float(r["usd_per_gpu_hour"]) for r in rows if r["provider"] == "aws"}
    assert aws[("H100-SXM", "p5.48xlarge", "on_demand")] == pytest.approx(98.32 / 8)
    assert aws[("H100-SXM", "p5.48xlarge", "spot")] == pytest.approx(11.7984 / 8)
    assert ("H200", "p5e.48xlarge", "on_demand") not in aws and aws[("H200", "p5e.48xlarge", "spot")] == pytest.approx(14.4663 / 8, abs=1e-6)
    assert aws[("A100-80GB", "p4de.24xlarge", "on_demand")] == pytest.approx(40.96575 / 8)
    assert all(r["source"].startswith("github.com/skypilot-org/skypilot-catalog catalogs/v7/") for r in rows)
    assert all(r["as_of"] == "2026-11-29" and r["placeholder"] == "false" for r in rows)


def test_skypilot_import_skips_what_it_cannot_map_or_trust(tmp_path):
    summary = import_skypilot(SKYPILOT, tmp_path / "p.csv", as_of="2026-11-29")
    assert {"V100", "A6000", "RTXA6000", "A100-80GB"} <= set(summary.unmapped)  # RunPod's A100-80GB is the PCIe card
    assert summary.skipped_spot == 2  # RunPod L40S rows whose SpotPrice is above Price
    rows = load_prices(tmp_path / "p.csv")
    assert not [r for r in rows if r.provider == "runpod" and r.gpu == "L40S"]
    assert not [r for r in rows if "nvl" in r.offering]  # Cudo's H100 NVL is no catalog card
    assert catalog_gpu("H100", "epyc-genoa-h100-nvl-pcie_1x2v4gb", None) is None
    assert catalog_gpu("A100", "gpu_1x_a100_sxm4", "{'Gpus': [{'MemoryInfo': {'SizeInMiB': 81920}}]}") == "A100-80GB"


def test_imported_price_file_prices_a_scenario(tmp_path):
    path = import_skypilot(SKYPILOT, tmp_path, as_of="2026-11-29").path
    assert Path(path).name == "prices-skypilot-2026-11-29.csv"
    quote = price_quote("H200", Pricing(price_file=path), ASSUMPTIONS)
    assert quote is not None and quote.provider == "nebius" and quote.usd_per_gpu_hour == pytest.approx(3.5)
    assert {o.gpus_per_instance for o in quote.options} == {1, 8}


def test_skypilot_import_of_a_wrong_folder_is_one_message(tmp_path):
    with pytest.raises(InputError, match="no <cloud>/vms.csv"):
        import_skypilot(tmp_path)
    (tmp_path / "aws").mkdir()
    (tmp_path / "aws" / "vms.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="missing SkyPilot columns"):
        import_skypilot(tmp_path, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


# ---- placeholders and stale rows -----------------------------------------------------------


def test_placeholder_rows_are_excluded_by_default_and_allowed_on_request():
    placeholders = [r for r in load_prices() if r.placeholder]
    assert {r.gpu for r in placeholders} >= {"H800", "H20"}
    assert price_quote("H800", Pricing(), ASSUMPTIONS) is None
    allowed = price_quote("H800", Pricing(allow_placeholder_prices=True), ASSUMPTIONS)
    assert allowed is not None and allowed.placeholder and allowed.usd_per_gpu_hour == 2.0
    reserved = price_quote("H100-SXM", Pricing(term="reserved_1y"), ASSUMPTIONS)
    assert reserved is None  # the only reserved H100 row is CoreWeave's unverified one
    assert price_quote("H100-SXM", Pricing(term="reserved_1y", allow_placeholder_prices=True), ASSUMPTIONS).provider == "CoreWeave"


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_no_placeholder_row_can_win_a_bundled_scenario(path):
    """Every GPU a bundled scenario may choose is priced by a non-placeholder row (or not at all)."""
    scenario = load_scenario(path)
    assert not scenario.pricing.allow_placeholder_prices
    for gpu in candidate_gpus(scenario):
        quote = price_quote(gpu.name, scenario.pricing, scenario.resolved_assumptions())
        if quote is not None:
            assert not quote.placeholder and not any(o.placeholder for o in quote.options), (path.name, gpu.name)


def test_every_catalog_row_has_a_public_source_and_a_date():
    for r in load_prices():
        assert r.source and not r.source.startswith(("/", "~", ".")), r
        dt.date.fromisoformat(r.as_of)


def test_rows_older_than_the_threshold_are_stale():
    today = dt.date(2026, 11, 29)
    assert is_stale("2025-08-12", ASSUMPTIONS, today)          # 474 days > 365
    assert not is_stale("2026-03-10", ASSUMPTIONS, today)
    assert is_stale("not a date", ASSUMPTIONS, today)
    short = Assumptions.with_overrides({"price_stale_after_days": 30})
    assert is_stale("2026-10-01", short, today) and not is_stale("2026-11-01", short, today)


# ---- whole instances -----------------------------------------------------------------------


def _price_file(tmp_path: Path, rows: list[tuple[str, int, float, str]]) -> str:
    path = tmp_path / f"prices-{len(list(tmp_path.glob('prices-*.csv')))}.csv"  # a new name: load_prices caches by path
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["gpu", "provider", "offering", "region", "term", "usd_per_gpu_hour", "gpus_per_instance", "source", "as_of"])
        for gpu, size, price, term in rows:
            writer.writerow([gpu, "Cloud", f"{size}x {gpu}", "eu", term, price, size, "test", "2026-11-01"])
    return str(path)


def test_rented_gpus_rounds_up_to_whole_instances():
    assert rented_gpus(2, 8) == 8 and rented_gpus(8, 8) == 8 and rented_gpus(9, 8) == 16 and rented_gpus(3, 1) == 3
    assert instances_needed(17, 8) == 3
    assert usd_per_hour(2, 8, 3.0) == 24.0
    import numpy as np
    assert list(rented_gpus(np.array([1, 2, 8, 9]), np.array([8, 2, 8, 4]))) == [8, 2, 8, 12]


def test_two_gpu_replica_on_an_eight_gpu_instance_pays_the_whole_instance(tmp_path):
    """Hand-computed: a TP=2 replica on an offer of 8-GPU instances at $3/GPU-h pays 8 x 3 = $24/h, not 2 x 3 = $6/h."""
    model, gpu = resolve_model("deepseek-llm-7b"), resolve_gpu("H100-SXM")
    workload = InferenceWorkload(kind="inference", model="deepseek-llm-7b", prompt_tokens=1024, output_tokens=256, concurrent_sequences=8)
    layout = InferenceLayout(gpu="H100-SXM", weight_precision=WeightPrecision.BF16, kv_precision=KvPrecision.BF16, tp=2, batch=8)
    only_eights = price_quote("H100-SXM", Pricing(price_file=_price_file(tmp_path, [("H100-SXM", 8, 3.0, "on_demand")])), ASSUMPTIONS)
    e = evaluate_inference(model, workload, layout, gpu, ASSUMPTIONS, only_eights, 8)
    assert e.usd_per_hour == pytest.approx(24.0) and e.price.gpus_per_instance == 8
    three = evaluate_inference(model, workload, layout.model_copy(update={"replicas": 3}), gpu, ASSUMPTIONS, only_eights, 8)
    assert three.usd_per_hour == pytest.approx(72.0)  # each replica rents its own instance
    # where a 2-GPU instance exists it is chosen: 2 x $3.50 = $7/h < $24/h
    both = price_quote("H100-SXM", Pricing(price_file=_price_file(tmp_path, [("H100-SXM", 8, 3.0, "on_demand"), ("H100-SXM", 2, 3.5, "on_demand")])), ASSUMPTIONS)
    e2 = evaluate_inference(model, workload, layout, gpu, ASSUMPTIONS, both, 8)
    assert e2.usd_per_hour == pytest.approx(7.0) and e2.price.gpus_per_instance == 2
    # an 8-GPU replica takes the cheaper per-GPU 8-GPU instance: 8 x 3 = $24/h
    assert offer_for(both, 8).gpus_per_instance == 8 and offer_for(both, 8).usd_per_gpu_hour == 3.0


def test_training_on_part_of_an_instance_pays_the_whole_instance(tmp_path):
    model, gpu = resolve_model("deepseek-llm-7b"), resolve_gpu("H100-SXM")
    workload = TrainingWorkload(kind="training", mode="lora", model="deepseek-llm-7b", tokens=1e8, seq_len=2048, global_batch_seqs=16)
    layout = TrainingLayout(gpu="H100-SXM", precision=TrainPrecision.BF16, tp=1, pp=1, dp=2, zero=1, checkpointing=2, micro_batch=1, grad_accum=8)
    quote = price_quote("H100-SXM", Pricing(price_file=_price_file(tmp_path, [("H100-SXM", 8, 3.0, "on_demand")])), ASSUMPTIONS)
    e = evaluate_training(model, workload, layout, gpu, ASSUMPTIONS, quote, 8)
    assert e.cost_usd == pytest.approx(8 * e.perf.time_to_train_s / 3600.0 * 3.0, rel=1e-12)


def test_on_prem_buys_whole_servers():
    quote = price_quote("H100-SXM", Pricing(term="on_prem"), ASSUMPTIONS)
    assert quote is not None and quote.gpus_per_instance == 8 and "8-GPU server" in quote.offering


# ---- spot: Young/Daly restarts -------------------------------------------------------------


def test_young_daly_interval_is_sqrt_two_delta_m():
    assert young_daly_interval_s(120.0, 360_000.0) == pytest.approx(math.sqrt(86_400_000.0))


def test_spot_restart_overhead_hand_computed():
    """100 h of work on 10 instances at 0.001 preemptions per instance-hour: M = 100 h = 360,000 s;
    tau = sqrt(2 x 120 x 360,000) = 9,295.16 s; checkpoints add 120 / 9,295.16 = 1.2910%; each
    preemption loses (9,295.16 + 120) / 2 + 600 = 5,307.58 s, 1.47433% of M; wall = 360,000 x
    1.0129099 / (1 - 0.0147433) = 370,104.1 s: 2.807% longer, and so dearer."""
    wall = spot_expected_time_s(360_000.0, 10, 0.001, 120.0, 600.0)
    assert wall == pytest.approx(370_104.13, abs=0.05)
    assert spot_expected_time_s(360_000.0, 10, 0.0, 120.0, 600.0) == 360_000.0
    assert math.isinf(spot_expected_time_s(360_000.0, 10_000, 1.0, 120.0, 600.0))


def test_spot_plan_time_and_cost_include_the_restart_overhead(tmp_path):
    """The same layout and the same $/GPU-h, spot vs on-demand: time and cost grow by the Young/Daly factor."""
    model, gpu = resolve_model("deepseek-llm-7b"), resolve_gpu("H100-SXM")
    workload = TrainingWorkload(kind="training", model="deepseek-llm-7b", tokens=2e11, seq_len=4096, global_batch_seqs=512)
    layout = TrainingLayout(gpu="H100-SXM", precision=TrainPrecision.BF16, tp=1, pp=1, dp=64, zero=1, checkpointing=2, micro_batch=1, grad_accum=8)
    path = _price_file(tmp_path, [("H100-SXM", 8, 2.0, "on_demand"), ("H100-SXM", 8, 2.0, "spot")])
    risky = Assumptions.with_overrides({"spot_interruptions_per_instance_hour": 0.01, "checkpoint_write_s": 120, "restart_after_preemption_s": 600})
    on_demand = evaluate_training(model, workload, layout, gpu, risky, price_quote("H100-SXM", Pricing(price_file=path), risky), 8)
    spot = evaluate_training(model, workload, layout, gpu, risky, price_quote("H100-SXM", Pricing(price_file=path, term="spot"), risky), 8)
    t = on_demand.perf.time_to_train_s
    assert t > 24 * 3600  # a long job: more than a day
    # 8 instances x 0.01/h: M = 12.5 h = 45,000 s; tau = sqrt(2 x 120 x 45,000) = 3,286.3 s
    m, tau = 45_000.0, math.sqrt(2 * 120 * 45_000.0)
    factor = (1 + 120 / tau) / (1 - ((tau + 120) / 2 + 600) / m)
    assert spot.spot is not None and spot.spot.mtbf_s == pytest.approx(m) and spot.spot.checkpoint_interval_s == pytest.approx(tau)
    assert spot.perf.time_to_train_s == pytest.approx(t * factor, rel=1e-12)
    assert spot.cost_usd == pytest.approx(on_demand.cost_usd * factor, rel=1e-12)
    assert 1.09 < factor < 1.10  # 9.2% longer and dearer
    assert spot.spot.expected_interruptions == pytest.approx(t * factor / m, rel=1e-12)
    assert on_demand.spot is None


# ---- CLI, live offers, study pivot ---------------------------------------------------------


def test_cli_prices_import_writes_the_file_and_fails_cleanly(tmp_path):
    from typer.testing import CliRunner

    from planner.cli import app

    out = tmp_path / "p.csv"
    result = CliRunner().invoke(app, ["prices", "import", "--skypilot", str(SKYPILOT), "--out", str(out), "--as-of", "2026-11-29"])
    assert result.exit_code == 0, result.output
    # 6 Lambda + 5 RunPod + 10 Nebius + 4 Cudo + 6 Hyperbolic + 9 AWS (instance type x term) rows map to catalog GPUs
    assert "wrote 40 price rows" in result.output and out.is_file()
    assert len(load_prices(out)) == 40
    bad = CliRunner().invoke(app, ["prices", "import", "--skypilot", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "not a folder" in bad.output and "Traceback" not in bad.output
    bad = CliRunner().invoke(app, ["prices", "import", "--skypilot", str(SKYPILOT), "--out", str(tmp_path / "no" / "p.csv")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    bad = CliRunner().invoke(app, ["prices", "import", "--skypilot", str(SKYPILOT), "--out", str(out), "--as-of", "last week"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output


def test_gpuhunt_items_become_per_gpu_rows():
    """Offline: gpuhunt catalog items (its documented fields) mapped like SkyPilot rows; the live query itself needs the network."""
    from types import SimpleNamespace

    from planner.prices import gpuhunt_rows

    items = [SimpleNamespace(provider="aws", instance_name="p5.48xlarge", location="us-east-1", price=55.04, gpu_count=8, gpu_name="H100", spot=False),
             SimpleNamespace(provider="aws", instance_name="p5.48xlarge", location="us-west-2", price=60.0, gpu_count=8, gpu_name="H100", spot=False),
             SimpleNamespace(provider="aws", instance_name="p5.48xlarge", location="us-east-1", price=20.0, gpu_count=8, gpu_name="H100", spot=True),
             SimpleNamespace(provider="gcp", instance_name="n1-standard-8", location="us", price=0.5, gpu_count=1, gpu_name="T4", spot=False),
             SimpleNamespace(provider="gcp", instance_name="e2", location="us", price=0.1, gpu_count=0, gpu_name=None, spot=False)]
    rows, unmapped = gpuhunt_rows(items, "2026-11-29")
    assert [(r.gpu, r.term.value, r.usd_per_gpu_hour, r.gpus_per_instance, r.region) for r in rows] == [
        ("H100-SXM", "on_demand", 6.88, 8, "us-east-1"), ("H100-SXM", "spot", 2.5, 8, "us-east-1")]
    assert unmapped == {"T4"}


def test_fetch_without_gpuhunt_is_one_message(monkeypatch):
    import builtins

    from planner.prices import fetch_live

    real_import = builtins.__import__

    def no_gpuhunt(name, *args, **kwargs):
        if name == "gpuhunt":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gpuhunt)
    with pytest.raises(InputError, match=r"planner\[live\]"):
        fetch_live()


def test_study_pivot_puts_axes_on_rows_and_columns_and_shows_no_plan():
    from planner.report import StudyReport, study_pivot

    axes = ("search.gpus", "constraints.deadline_days")
    rows = (("['H100-SXM']", "7", "optimal", "128x H100-SXM fp8 tp=4", "128", "205,251", "USD", ""),
            ("['H100-SXM']", "3", "infeasible", "", "", "", "", "deadline = 3 days conflicts with max_gpus"),
            ("['H200']", "7", "optimal", "64x H200 fp8 tp=8", "64", "300,000", "USD", ""),
            ("['H200']", "3", "optimal", "128x H200 fp8 tp=8", "128", "320,000", "USD", ""))
    report = StudyReport(name="s", description="", axes=axes, rows=rows, headers=(), chart_svg="", summary=(), generated_utc="")
    kind, headers, body, _ = study_pivot(report)
    assert kind == "table" and headers == ["gpus", "deadline_days = 7", "deadline_days = 3"]
    assert body[0][0] == "['H100-SXM']" and body[0][1].startswith("205,251 USD")
    assert body[0][2].startswith("NO PLAN (infeasible): deadline = 3 days")
    assert body[1][2].startswith("320,000 USD")


def test_spot_ties_take_the_larger_instance_fewer_preemptions(tmp_path):
    """Same $/GPU-h in 1- and 8-GPU spot instances: 16 GPUs on two 8-GPU instances are preempted 8x less often than on 16."""
    path = _price_file(tmp_path, [("H100-SXM", 1, 1.25, "spot"), ("H100-SXM", 8, 1.25, "spot"),
                                  ("H100-SXM", 1, 2.95, "on_demand"), ("H100-SXM", 8, 2.95, "on_demand")])
    assert offer_for(price_quote("H100-SXM", Pricing(price_file=path, term="spot"), ASSUMPTIONS), 16).gpus_per_instance == 8
    assert offer_for(price_quote("H100-SXM", Pricing(price_file=path), ASSUMPTIONS), 16).gpus_per_instance == 1


STUDIES = SCENARIOS / "studies"


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.yaml")), ids=lambda p: p.stem)
def test_no_placeholder_row_can_win_a_bundled_study_case(path):
    from planner.scenario import parse_scenario
    from planner.studies import expand_cases, load_study

    for case in expand_cases(load_study(path)):
        scenario = parse_scenario(case.scenario)
        for gpu in candidate_gpus(scenario):
            quote = price_quote(gpu.name, scenario.pricing, scenario.resolved_assumptions())
            assert quote is None or not quote.placeholder, (path.name, case.case_id, gpu.name)


def test_a_tensor_parallel_group_is_not_split_across_rented_instances(tmp_path):
    """TP=4 needs the four GPUs on one server's NVLink: 1-GPU instances do not qualify, even when cheaper per GPU."""
    model, gpu = resolve_model("deepseek-llm-7b"), resolve_gpu("H100-SXM")
    workload = InferenceWorkload(kind="inference", model="deepseek-llm-7b", prompt_tokens=1024, output_tokens=256, concurrent_sequences=8)
    layout = InferenceLayout(gpu="H100-SXM", weight_precision=WeightPrecision.BF16, kv_precision=KvPrecision.BF16, tp=4, batch=8)
    quote = price_quote("H100-SXM", Pricing(price_file=_price_file(tmp_path, [("H100-SXM", 1, 1.0, "on_demand"), ("H100-SXM", 8, 3.0, "on_demand")])), ASSUMPTIONS)
    e = evaluate_inference(model, workload, layout, gpu, ASSUMPTIONS, quote, 8)
    assert e.price.gpus_per_instance == 8 and e.usd_per_hour == pytest.approx(24.0)
    single = evaluate_inference(model, workload, layout.model_copy(update={"tp": 1}), gpu, ASSUMPTIONS, quote, 8)
    assert single.price.gpus_per_instance == 1 and single.usd_per_hour == pytest.approx(1.0)


def test_the_solver_charges_whole_instances_over_its_columns(tmp_path):
    """The plan `solve` returns (built from the column table, then verified) pays for whole 8-GPU instances."""
    from planner.solver import solve

    scenario = Scenario.model_validate({
        "name": "whole-instances", "objective": "min_cost",
        "workload": {"kind": "inference", "model": "deepseek-llm-7b", "prompt_tokens": 512, "output_tokens": 128,
                     "target_output_tokens_per_s": 500},
        "search": {"gpus": ["H100-SXM"], "weight_precisions": ["bf16"], "kv_precisions": ["bf16"], "tp": [1, 2]},
        "pricing": {"price_file": _price_file(tmp_path, [("H100-SXM", 8, 3.0, "on_demand")])},
    })
    plan = solve(scenario, alternatives=False)
    e = plan.evaluation
    paid = e.layout.replicas * 8 * -(-e.layout.gpus_per_replica // 8)
    assert e.price.gpus_per_instance == 8 and e.usd_per_hour == pytest.approx(paid * 3.0, rel=1e-12)
    assert e.usd_per_hour >= 24.0  # never a fraction of an instance
