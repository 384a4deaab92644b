"""Procurement reports: the recommendation is the solver's, the tables carry the plan's numbers, the
HTML and Markdown stand alone (no external URL), user text is escaped, and writes are atomic.

Reports are built once per module (each does about 8 solves) on scenarios restricted enough to
solve in seconds.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pytest

from planner import report as rpt
from planner.enums import PriceTerm
from planner.errors import InputError
from planner.evaluate import TrainingEvaluation
from planner.scenario import Scenario, load_scenario, parse_scenario
from planner.solver import layout_summary, plan_cost, solve

TIME_LIMIT_S = 10.0
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
EVIL = "<script>alert(1)</script>"

SERVING_INLINE = {
    "name": "deepseek-67b-serving-h100",
    "workload": {"kind": "inference", "model": "deepseek-llm-67b", "prompt_tokens": 1024, "output_tokens": 256,
                 "target_output_tokens_per_s": 2000, "slo": {"tpot_s": 0.1}},
    "search": {"gpus": ["H100-SXM", "H200", "A100-80GB"]},
}
TRAINING_INLINE = {
    "name": "llama-3.1-70b-pretrain",
    "workload": {"kind": "training", "model": "llama-3.1-70b", "tokens": 1e12, "seq_len": 4096, "global_batch_seqs": 1024},
    "constraints": {"deadline_days": 90},
    "search": {"gpus": ["H100-SXM", "H200"], "tp": [4, 8], "pp": [1, 2, 4], "micro_batches": [1], "zero_stages": [1, 3],
               "checkpointing": [1, 2]},
}


def _scenario(filename: str, inline: dict) -> Scenario:
    """The shipped scenario file when present, else the inline equivalent."""
    path = SCENARIOS / filename
    return load_scenario(path) if path.is_file() else parse_scenario(inline, "inline")


@pytest.fixture(scope="module")
def serving() -> Scenario:
    return _scenario("deepseek-67b-serving-h100.yaml", SERVING_INLINE)


@pytest.fixture(scope="module")
def training() -> Scenario:
    return _scenario("llama-3.1-70b-pretrain.yaml", TRAINING_INLINE)


@pytest.fixture(scope="module")
def reports(serving: Scenario, training: Scenario) -> dict[str, rpt.Report]:
    return {"serving": rpt.build_report(serving, TIME_LIMIT_S), "training": rpt.build_report(training, TIME_LIMIT_S)}


@pytest.fixture(scope="module")
def htmls(reports: dict[str, rpt.Report]) -> dict[str, str]:
    return {k: rpt.render_html(r) for k, r in reports.items()}


@pytest.fixture(scope="module")
def evil_report(serving: Scenario) -> rpt.Report:
    scenario = serving.model_copy(update={"name": EVIL, "description": f"costs | budget {EVIL} see https://example.com/x"})
    return rpt.build_report(scenario, TIME_LIMIT_S)


KINDS = ["serving", "training"]


def _no_external_urls(text: str) -> None:
    """No http(s) URL anywhere except SVG namespace declarations (xmlns="http://www.w3.org/...")."""
    stripped = re.sub(r'\sxmlns(:\w+)?="[^"]*"', "", text)
    assert "http://" not in stripped and "https://" not in stripped


# ---- recommendation ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_recommendation_is_the_solvers_plan(kind, request, reports, htmls):
    scenario = request.getfixturevalue(kind)
    plan = solve(scenario, time_limit_s=TIME_LIMIT_S, alternatives=False)
    got = reports[kind].plan.evaluation
    assert got.layout.gpu == plan.evaluation.layout.gpu
    assert got.layout.num_gpus == plan.num_gpus
    assert html.escape(layout_summary(plan.evaluation)) in htmls[kind]
    assert f"Recommended: {plan.num_gpus}x {plan.evaluation.layout.gpu}" in reports[kind].recommendation
    assert plan.status in reports[kind].recommendation


def test_recommendation_states_cost_and_speed(reports):
    s, t = reports["serving"], reports["training"]
    e = s.plan.evaluation
    assert f"{rpt.money(e.usd_per_hour)}/h" in s.recommendation
    assert rpt.money(e.usd_per_million_output_tokens) in s.recommendation and "per million output tokens" in s.recommendation
    assert f"{e.fleet_output_tokens_per_s:,.0f} output tokens/s" in s.recommendation
    e = t.plan.evaluation
    assert isinstance(e, TrainingEvaluation)
    assert rpt.money(e.cost_usd) in t.recommendation
    assert f"{e.perf.gpu_hours:,.0f} GPU-hours" in t.recommendation
    assert f"{e.perf.time_to_train_s / 86400:,.1f} days" in t.recommendation


# ---- tables --------------------------------------------------------------------------------


def test_money_format():
    assert rpt.money(350979.30) == "$350,979"
    assert rpt.money(4.456) == "$4.46"
    assert rpt.money(0.51594) == "$0.5159"
    assert rpt.cost_text(4.46, training=False) == "$4.46/h"


@pytest.mark.parametrize("kind", KINDS)
def test_gpu_table_carries_the_alternatives(kind, reports, htmls):
    r = reports[kind]
    training = kind == "training"
    assert [row.label for row in r.by_gpu] == [a.gpu for a in r.plan.alternatives]
    for alt in r.plan.alternatives:
        if alt.feasible:
            assert html.escape(rpt.cost_text(alt.cost, training)) in htmls[kind]
            assert html.escape(alt.summary) in htmls[kind]
    recommended_cost = rpt.cost_text(plan_cost(r.plan.evaluation), training)
    assert re.search(r'<tr class="rec">.*?' + re.escape(html.escape(recommended_cost)), htmls[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_term_table_resolves_each_term(kind, request, reports, htmls):
    r = reports[kind]
    assert [row.label for row in r.by_term] == [t.value for t in rpt.TERMS]
    own = next(row for row in r.by_term if row.label == r.scenario.pricing.term.value)
    assert own.cost == pytest.approx(plan_cost(r.plan.evaluation)) and own.recommended
    spot = next(row for row in r.by_term if row.label == "spot")
    scenario = request.getfixturevalue(kind)
    if spot.feasible:
        again = solve(rpt._with_term(scenario, PriceTerm.SPOT), time_limit_s=TIME_LIMIT_S, alternatives=False)
        assert spot.cost == pytest.approx(plan_cost(again.evaluation))
        assert html.escape(rpt.cost_text(spot.cost, kind == "training")) in htmls[kind]
    for row in r.by_term:
        assert row.feasible or row.summary  # every infeasible term says why
    assert "TCO" in htmls[kind] and "capex amortised" in htmls[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_sensitivity_study(kind, reports, htmls):
    rows = reports[kind].sensitivity
    labels = [row.label for row in rows]
    assert labels[:2] == ["price x0.7", "price x1.3"] and len(rows) == 3
    assert labels[2].startswith("prompt_tokens x2" if kind == "serving" else "deadline_days x0.5")
    base = plan_cost(reports[kind].plan.evaluation)
    low, high = rows[0], rows[1]
    assert low.feasible and low.cost is not None and low.cost <= base * 0.7 * (1 + 1e-9)
    assert high.feasible and high.cost is not None and high.cost <= base * 1.3 * (1 + 1e-9)
    for row in rows:
        assert html.escape(row.label) in htmls[kind]
        assert row.note  # the change, or "no plan"


def test_assumptions_and_sources(reports, htmls):
    r, page = reports["serving"], htmls["serving"]
    price = r.plan.evaluation.price
    assert price is not None and html.escape(price.source) in page and price.as_of in page
    gpu = r.gpus[0]
    assert gpu.name == r.plan.evaluation.layout.gpu and html.escape(gpu.specs_source) in page and gpu.as_of in page
    keys = [k for k, _, _ in r.assumptions]
    assert "decode_hbm_efficiency" in keys and "gpu_memory_utilization" in keys
    for key in ("planner version", "ortools version", "python version", "generated (UTC)", "solver status"):
        assert key in dict(r.provenance)


# ---- self-contained and escaped ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_html_is_self_contained(kind, htmls):
    page = htmls[kind]
    _no_external_urls(page)
    assert page.count("<svg") == 2
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert "<!DOCTYPE svg" not in page


def test_user_text_is_escaped(evil_report):
    page = rpt.render_html(evil_report)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert EVIL not in page and "<script" not in page.lower()
    _no_external_urls(page)
    md = rpt.render_markdown(evil_report)
    assert "&lt;script&gt;" in md and EVIL not in md
    assert "costs \\| budget" in md
    _no_external_urls(md)


def test_markdown_twin(reports, tmp_path):
    r = reports["training"]
    out = rpt.save_report(r, tmp_path / "report.md")
    md = out.read_text()
    assert md.startswith("# GPU procurement report")
    assert layout_summary(r.plan.evaluation) in md
    assert rpt.money(r.plan.evaluation.cost_usd) in md
    images = re.findall(r"!\[[^\]]*\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", md)
    assert len(images) == 2
    assert all(base64.b64decode(i).decode().startswith("<svg") for i in images)
    _no_external_urls(md)


# ---- writing -------------------------------------------------------------------------------


def test_write_report_is_atomic(serving, tmp_path):
    out = rpt.write_report(serving, tmp_path / "r.html", time_limit_s=TIME_LIMIT_S)
    assert out == tmp_path / "r.html" and out.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    assert out.stat().st_mode & 0o044  # an ordinary, readable file (not mkstemp's 0600)


def test_failed_render_leaves_no_temp_file(reports, tmp_path, monkeypatch):
    target = tmp_path / "r.html"
    target.write_text("old")

    def boom(report):
        raise RuntimeError("render failed")

    monkeypatch.setitem(rpt.FORMATS, ".html", boom)
    with pytest.raises(RuntimeError):
        rpt.save_report(reports["serving"], target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"] and target.read_text() == "old"


def test_failed_write_leaves_no_temp_file(reports, tmp_path, monkeypatch):
    def fail(src, dst):
        raise OSError("disk full")

    import planner.files

    monkeypatch.setattr(planner.files.os, "replace", fail)
    with pytest.raises(OSError):
        rpt.save_report(reports["serving"], tmp_path / "r.md")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_fails_before_solving(serving, tmp_path, monkeypatch):
    monkeypatch.setattr(rpt, "build_report", lambda *a, **k: pytest.fail("solved before checking the suffix"))
    with pytest.raises(InputError, match=r"\.pdf"):
        rpt.write_report(serving, tmp_path / "r.pdf")
    with pytest.raises(InputError, match="does not exist"):
        rpt.write_report(serving, tmp_path / "missing" / "r.html")
    assert list(tmp_path.iterdir()) == []


def test_fleet_report_adds_the_fleet_view(tmp_path: Path) -> None:
    """`planner report` accepts a fleet file: fleet table, one row per workload, TCO matching solve_fleet."""
    from typer.testing import CliRunner

    from planner.cli import app
    from planner.fleet import load_fleet, solve_fleet

    fleet_file = SCENARIOS / "fleets" / "team-fleet.yaml"
    out = tmp_path / "fleet.html"
    result = CliRunner().invoke(app, ["report", str(fleet_file), "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    plan = solve_fleet(load_fleet(fleet_file))
    assert f"${plan.total_cost_usd:,.0f}" in page
    for assignment in plan.assignments:
        assert html.escape(assignment.plan) in page
    assert (tmp_path / "fleet.md").exists()
    assert "https://" not in page


def test_study_report_has_a_row_per_case(tmp_path: Path) -> None:
    """`planner report` accepts a study file: one table row per case, values as `planner.study` computes them."""
    from typer.testing import CliRunner

    import planner
    from planner.cli import app

    study_file = SCENARIOS / "studies" / "deepseek-67b-context-precision.yaml"
    out = tmp_path / "study.html"
    result = CliRunner().invoke(app, ["report", str(study_file), "-o", str(out), "--no-twin"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    frame = planner.study(study_file, workers=1)
    assert page.count("<tr>") >= len(frame) + 1
    for layout in frame["layout"].dropna():
        assert html.escape(str(layout)) in page
    assert "<svg" in page and "https://" not in page


def test_a_pools_plan_rents_each_pool_its_own_instances_and_the_report_prices_them_as_the_plan() -> None:
    """The long-prompt plan's prefill replica (TP2 PP4, 8 GPUs) and decode replicas (TP2) rent different whole instances
    (`Table.priced` picks each pool's cheapest offer); the report names both and its rentals cost the plan's $/h."""
    scenario = load_scenario(SCENARIOS / "llama-3.1-70b-long-prompt.yaml")
    plan = solve(scenario)
    e = plan.evaluation
    assert e.layout.disaggregated and e.prefill_price is not None
    rentals = rpt._rentals(e)
    sizes = {role: k for _, k, _, role in rentals}
    assert sizes["prefill pool"] == e.prefill_price.gpus_per_instance >= e.layout.prefill_tp * e.layout.prefill_pp
    assert sizes["decode pool"] == e.price.gpus_per_instance >= e.layout.tp * e.layout.pp
    assert sum(n * k * q.usd_per_gpu_hour for n, k, q, _ in rentals) == pytest.approx(e.usd_per_hour, rel=1e-9)
    text = rpt.plain_recommendation(scenario, plan)
    assert "for the prefill pool" in text and "for the decode pool" in text
