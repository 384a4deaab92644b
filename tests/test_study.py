"""Batch studies: the example study files, typed columns, parallel == serial, error rows, resume, atomic output."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from planner import studies as study_mod
from planner.errors import InputError
from planner.scenario import parse_scenario
from planner.solver import solve
from planner.studies import (
    CATEGORY_COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, RESULT_COLUMNS, STATUSES, expand_cases, load_study, parse_study,
    run_study, summarize,
)

STUDIES = Path(__file__).resolve().parent.parent / "scenarios" / "studies"

SERVING_BASE = {
    "name": "ds67-serving",
    "workload": {"kind": "inference", "model": "deepseek-llm-67b", "prompt_tokens": 1024, "output_tokens": 256,
                 "target_output_tokens_per_s": 2000, "slo": {"tpot_s": 0.1}},
    "search": {"gpus": ["H100-SXM", "H200"]},
}

# Two ordinary cases, an unknown GPU (error), a budget no plan meets (infeasible), a bad value (error).
MIXED_CASES = [
    {"workload.prompt_tokens": 1024, "search.weight_precisions": ["fp8"]},
    {"workload.prompt_tokens": 4096, "search.weight_precisions": ["int4"]},
    {"workload.prompt_tokens": 2048, "search.gpus": ["NOPE-9000"]},
    {"workload.prompt_tokens": 2048, "constraints.budget_usd": 0.5},
    {"workload.prompt_tokens": -5},
]


def mixed_study(**extra) -> study_mod.Study:
    return parse_study({"name": "mixed", "base": SERVING_BASE, "cases": MIXED_CASES, **extra})


def without_time(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["solve_time_s"])


# ---- the example studies -------------------------------------------------------------------


@pytest.mark.parametrize("name, n_cases", [
    ("deepseek-67b-context-precision", 9), ("llama-70b-price-sensitivity", 9), ("deepseek-v3-deadline", 12),
])
def test_example_study_runs_and_matches_direct_solves(name: str, n_cases: int) -> None:
    study = load_study(STUDIES / f"{name}.yaml")
    cases = expand_cases(study)
    df = run_study(study, workers=1)
    axes = list(study.axes or {})
    assert len(df) == len(cases) == n_cases
    assert list(df.columns) == axes + list(RESULT_COLUMNS)
    assert list(df["case_id"]) == [c.case_id for c in cases]
    assert set(df["status"]) == {"optimal"}, df[["status", "reason"]]
    assert (df["reason"] == "").all()
    for column in CATEGORY_COLUMNS:
        assert isinstance(df[column].dtype, pd.CategoricalDtype), column
    for column in INT_COLUMNS:
        assert df[column].dtype == "Int64", column
    for column in FLOAT_COLUMNS:
        assert df[column].dtype == "float64", column
    assert list(df["status"].cat.categories) == list(STATUSES)
    for index in (0, len(cases) // 2, len(cases) - 1):  # a few rows against direct solver calls
        plan = solve(parse_scenario(cases[index].scenario))
        row = df.iloc[index]
        assert row["gpu"] == plan.evaluation.layout.gpu
        assert row["num_gpus"] == plan.num_gpus
        assert row["objective_value"] == pytest.approx(plan.objective_value, rel=1e-12)


def test_axis_columns_are_typed() -> None:
    df = run_study(load_study(STUDIES / "deepseek-67b-context-precision.yaml"), workers=1)
    assert df["workload.prompt_tokens"].dtype == "Int64"
    assert isinstance(df["search.weight_precisions"].dtype, pd.CategoricalDtype)
    assert list(df["search.weight_precisions"][:3]) == ["bf16", "fp8", "int4"]
    assert list(df["precision"][:3]) == ["bf16", "fp8", "int4"]
    df = run_study(load_study(STUDIES / "llama-70b-price-sensitivity.yaml").model_copy(
        update={"axes": {"search.gpus": [["B200"]], "pricing.price_multiplier": [0.7, 1.3]}}), workers=1)
    assert df["pricing.price_multiplier"].dtype == "float64"
    assert df["cost_usd"].iloc[1] == pytest.approx(df["cost_usd"].iloc[0] * 1.3 / 0.7)
    assert df["checkpointing"].iloc[0] in ("selective", "full")


# ---- study files and validation ------------------------------------------------------------


def test_base_path_is_relative_to_the_study_file(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(SERVING_BASE))
    (tmp_path / "studies").mkdir()
    path = tmp_path / "studies" / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "../base.yaml", "axes": {"workload.prompt_tokens": [1024, 2048]}}))
    cases = expand_cases(load_study(path))
    assert [c.scenario["workload"]["prompt_tokens"] for c in cases] == [1024, 2048]
    assert cases[0].scenario["search"] == SERVING_BASE["search"]


@pytest.mark.parametrize("path, named", [
    ("search.gpu", ["'gpu'", "gpus", "weight_precisions"]),
    ("workload.prompt", ["'prompt'", "prompt_tokens", "output_tokens"]),
    ("pricing.multiplier", ["'multiplier'", "price_multiplier"]),
    ("searchh.gpus", ["'searchh'", "top level", "workload", "search"]),
    ("objective.kind", ["objective is a value"]),
])
def test_bad_dotted_path_names_the_allowed_keys(path: str, named: list[str]) -> None:
    with pytest.raises(InputError) as err:
        parse_study({"name": "s", "base": SERVING_BASE, "axes": {path: [1, 2]}})
    message = str(err.value)
    assert path in message and "\n" not in message
    for text in named:
        assert text in message


def test_study_validation_errors() -> None:
    with pytest.raises(InputError, match="exactly one of axes"):
        parse_study({"name": "s", "base": SERVING_BASE})
    with pytest.raises(InputError, match="unknown key"):
        parse_study({"name": "s", "base": SERVING_BASE, "axes": {"workload.prompt_tokens": [1]}, "extra": 1})
    with pytest.raises(InputError, match="at least one value"):
        parse_study({"name": "s", "base": SERVING_BASE, "axes": {"workload.prompt_tokens": []}})
    with pytest.raises(InputError, match="repeats case 0"):
        expand_cases(parse_study({"name": "s", "base": SERVING_BASE, "axes": {"workload.prompt_tokens": [8, 8]}}))
    with pytest.raises(InputError, match="base"):  # the base itself must be a valid scenario
        parse_study({"name": "s", "base": {"workload": {"kind": "inference"}}, "axes": {"workload.prompt_tokens": [1]}})
    with pytest.raises(InputError, match=r"\.csv or \.parquet"):
        run_study(mixed_study(), workers=1, output=Path("out.xlsx"))


def test_case_ids_are_stable_hashes_of_axis_values() -> None:
    study = parse_study({"name": "s", "base": SERVING_BASE,
                         "axes": {"workload.prompt_tokens": [1024, 2048], "search.gpus": ["H100-SXM", ["H200"]]}})
    cases = expand_cases(study)
    assert [c.values for c in cases] == [
        {"workload.prompt_tokens": 1024, "search.gpus": "H100-SXM"}, {"workload.prompt_tokens": 1024, "search.gpus": ["H200"]},
        {"workload.prompt_tokens": 2048, "search.gpus": "H100-SXM"}, {"workload.prompt_tokens": 2048, "search.gpus": ["H200"]},
    ]
    assert cases[0].scenario["search"]["gpus"] == ["H100-SXM"]  # a single GPU id is a one-GPU subset
    assert [c.case_id for c in cases] == [c.case_id for c in expand_cases(study)]
    assert len({c.case_id for c in cases}) == 4 and all(len(c.case_id) == 12 for c in cases)
    renamed = study.model_copy(update={"name": "other"})
    assert [c.case_id for c in expand_cases(renamed)] == [c.case_id for c in cases]


# ---- failures become rows ------------------------------------------------------------------


def test_error_and_infeasible_cases_become_rows() -> None:
    df = run_study(mixed_study(), workers=1)
    assert list(df["status"]) == ["optimal", "optimal", "error", "infeasible", "error"]
    assert df["reason"][0] == "" and df["reason"][1] == ""
    assert "unknown GPU 'NOPE-9000'" in df["reason"][2]
    assert "budget" in df["reason"][3] and "\n" not in df["reason"][3]
    assert "prompt_tokens" in df["reason"][4]
    assert df["gpu"][2:].isna().all() and df["num_gpus"][2:].isna().all()
    assert df["solve_time_s"].notna().all()
    assert df["search.gpus"][2] == "NOPE-9000" and df["search.gpus"].isna().sum() == 4  # axes a case leaves out are NA
    assert df["constraints.budget_usd"].dtype == "float64"
    summary = dict(summarize(df).itertuples(index=False))
    assert summary["cases"] == "5" and summary["optimal"] == "2" and summary["error"] == "2" and summary["infeasible"] == "1"
    assert summary["best (USD/hour)"].startswith(f"{df['objective_value'][0]:,.6g} USD/hour: case {df['case_id'][0]}")


# ---- parallel == serial --------------------------------------------------------------------


def test_process_pool_and_dask_match_serial() -> None:
    study = mixed_study()
    serial = run_study(study, workers=1)
    pool = run_study(study, workers=2)
    pd.testing.assert_frame_equal(without_time(serial), without_time(pool))
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask_df = run_study(study, scheduler=cluster.scheduler_address)
    pd.testing.assert_frame_equal(without_time(serial), without_time(dask_df))


# ---- resume and atomic output --------------------------------------------------------------


def counting_solver(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Replace the worker function with one that records the scenarios it solves (serial runs only)."""
    calls: list[dict] = []
    real = study_mod.solve_case

    def counted(scenario: dict, time_limit_s: float = 20.0) -> dict:
        calls.append(copy.deepcopy(scenario))
        return real(scenario, time_limit_s)

    monkeypatch.setattr(study_mod, "solve_case", counted)
    return calls


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_resume_computes_only_missing_cases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    study = mixed_study()
    cases = expand_cases(study)
    out = tmp_path / f"r{suffix}"
    calls = counting_solver(monkeypatch)
    full = run_study(study, workers=1, output=out)
    assert len(calls) == len(cases)
    if suffix == ".csv":
        pd.testing.assert_frame_equal(without_time(full), without_time(run_study(study, workers=1, output=out)))
        assert len(calls) == len(cases)  # complete file: nothing recomputed
        lines = out.read_text().splitlines(keepends=True)
        out.write_text("".join(lines[:3]))  # simulate an interruption: header + the first 2 rows
    else:
        pd.read_parquet(out).iloc[:2].to_parquet(out, index=False)
    calls.clear()
    resumed = run_study(study, workers=1, output=out)
    assert calls == [c.scenario for c in cases[2:]]
    pd.testing.assert_frame_equal(without_time(full), without_time(resumed))
    assert resumed["solve_time_s"][:2].tolist() == full["solve_time_s"][:2].tolist()  # kept from the file
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_interrupt_leaves_finished_cases_in_a_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = mixed_study()
    real = study_mod.solve_case
    calls: list[int] = []

    def interrupted(scenario: dict, time_limit_s: float = 20.0) -> dict:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(scenario, time_limit_s)

    monkeypatch.setattr(study_mod, "solve_case", interrupted)
    out = tmp_path / "r.csv"
    with pytest.raises(KeyboardInterrupt):
        run_study(study, workers=1, output=out)
    saved = pd.read_csv(out)
    assert list(saved["case_id"]) == [c.case_id for c in expand_cases(study)[:2]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.csv"
    out.write_text("old")

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(InputError, match="disk full"):  # one line naming the file, exit code 2 in the CLI
        study_mod.write_table(pd.DataFrame({"a": [1]}), out)
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    df = run_study(mixed_study(cases=MIXED_CASES[:1]), workers=1, progress=True)
    assert list(df["status"]) == ["optimal"]
