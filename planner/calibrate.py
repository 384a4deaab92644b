"""Fit the speed model's kernel efficiencies to measured training runs; cross-validate; write an overlay.

planner.speed makes the step time linear in θ = (1/e_max, n_half/e_max) of each efficiency row
a run uses, plus terms that are not fitted (memory-bound kernels, exposed communication). The
fit minimises Σ ((a_i·θ + c_i − t_i)/t_i)² over runs i (relative error, so small and large
runs weigh alike) plus a ridge λ·Σ((θ_k − θ0_k)/θ0_k)² toward the catalog values (Tikhonov
regularisation, so a row the runs barely touch stays near its cited prior), with 1/e_max ≥ 1
and n_half ≥ 0 enforced by an active-set loop (Lawson & Hanson 1974, Ch. 23). Rows are grouped
per GPU family, framework and dtype exactly as the efficiency catalog is. Error is reported on
runs left out of the fit (k-fold cross-validation, Stone 1974).

The overlay YAML lists the fitted rows; a scenario names it with `assumptions: {file: ...}`
and `load_overlay` / `apply_overlay` turn it back into a SpeedCatalog.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml
from pydantic import BaseModel, Field, ValidationError

from planner.catalog import CATALOG_DIR, GpuSpec, load_gpus
from planner.errors import InputError
from planner.files import load_structured, settled, stat_key
from planner.speed import (FORBID, FRAMEWORKS, RECOMPUTE_CODES, ModelShape, SpeedCatalog, linear_efficiency_dtype, load_speed_catalog,
                           parameter_vector, training_design)

DEFAULT_CALIBRATION = CATALOG_DIR / "calibration.yaml"
RIDGE = 0.02  # weight of the pull toward the cited catalog values, per parameter, in relative units
HUBER_DELTA = 0.10  # relative residual beyond which a run's weight falls as 1/|r| (Huber 1964 loss by reweighting)
HUBER_ITERATIONS = 6
FIT_ITERATIONS = 60  # most fixed-point passes of the fit (the DP and EP overlap windows depend on the fitted compute time)
FIT_TOLERANCE = 1e-7  # the passes stop once no parameter moves by more than this, relative
OVERLAY_CACHE_ENTRIES = 16  # calibration files kept parsed per process (`load_overlay`)
MIN_RUNS = 5  # a parameter is fitted only when at least this many runs spend >= 10% of their step in it; else it keeps its catalog value
SHAPE_FIELDS = tuple(ModelShape.model_fields)
_OVERLAYS: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()


class Run(BaseModel):
    """One measured training run: layout, model shape, GPU and the measured throughput."""

    model_config = FORBID

    id: str = Field(description="Row id.")
    model: str = Field(description="Model name (informative).")
    gpu: str = Field(description="GPU id from catalogs/gpus.csv.")
    dtype: str = Field(description="bf16 or fp8.")
    framework: str = Field(description="megatron, fsdp or deepspeed.")
    layout: dict[str, float] = Field(description="num_gpus, tp, pp, cp, ep, vp, micro_batch, global_batch, seq_len, recompute, fsdp.")
    shape: ModelShape = Field(description="Model dimensions.")
    step_time_s: float = Field(gt=0, description="Measured seconds per optimizer step.")

    @property
    def tokens_per_s_per_gpu(self) -> float:
        """Measured throughput per GPU."""
        return self.layout["global_batch"] * self.layout["seq_len"] / (self.layout["num_gpus"] * self.step_time_s)

    @property
    def is_moe(self) -> bool:
        """Mixture-of-experts model."""
        return self.shape.experts > 0


def _num(row: dict[str, str], key: str, default: float | None = None, line: int = 0) -> float:
    text = (row.get(key) or "").strip()
    if not text:
        if default is None:
            raise InputError(f"runs file line {line}: field '{key}' is empty; a number is required")
        return default
    try:
        return float(text)
    except ValueError:
        raise InputError(f"runs file line {line}: field '{key}' = {text!r} is not a number") from None


def read_runs(path: Path) -> list[Run]:
    """Runs from a CSV with the columns of tests/data/training_runs_published.csv.

    Required: id, gpu, num_gpus, dtype, framework, micro_batch, global_batch, seq_len and either
    tokens_per_s_per_gpu or step_time_s; tp, pp, cp, ep, vp default to 1, recompute to none,
    fsdp to 0; moe_a2a_overlap (optional, 1 where the run's recipe overlaps the EP all-to-all with
    another micro-batch's compute) to the framework's ep_overlap. The model is given by the shape
    columns (layers, hidden, ...).
    """
    gpus = {g.name: g for g in load_gpus()}
    try:
        with Path(path).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise InputError(f"runs file {path}: {error.strerror}") from None
    runs = []
    for line, row in enumerate(rows, start=2):
        if row.get("gpu") not in gpus:
            close = difflib.get_close_matches(str(row.get("gpu")), list(gpus), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InputError(f"runs file line {line}: gpu {row.get('gpu')!r} unknown{hint}; allowed: {', '.join(gpus)}")
        if row.get("framework") not in FRAMEWORKS:
            raise InputError(f"runs file line {line}: framework {row.get('framework')!r} unknown; allowed: {', '.join(FRAMEWORKS)}")
        if row.get("dtype") not in ("bf16", "fp8"):
            raise InputError(f"runs file line {line}: dtype {row.get('dtype')!r} unknown; allowed: bf16, fp8")
        recompute = (row.get("recompute") or "none").strip()
        layout = {k: _num(row, k, d, line) for k, d in (("num_gpus", None), ("tp", 1), ("pp", 1), ("cp", 1), ("ep", 1), ("vp", 1),
                                                       ("micro_batch", None), ("global_batch", None), ("seq_len", None), ("fsdp", 0))}
        layout["recompute"] = float(RECOMPUTE_CODES.get(recompute, 0))
        if (row.get("moe_a2a_overlap") or "").strip():
            layout["a2a_overlap"] = _num(row, "moe_a2a_overlap", 0, line)
        try:
            shape = ModelShape(**{k: int(float(row[k] or 0)) for k in SHAPE_FIELDS})
        except (KeyError, ValueError, ValidationError) as error:
            raise InputError(f"runs file line {line}: model shape columns {', '.join(SHAPE_FIELDS)} required ({error.__class__.__name__})") from None
        if (row.get("step_time_s") or "").strip():
            step = _num(row, "step_time_s", None, line)
        else:
            step = layout["global_batch"] * layout["seq_len"] / (layout["num_gpus"] * _num(row, "tokens_per_s_per_gpu", None, line))
        runs.append(Run(id=row.get("id") or f"line{line}", model=row.get("model", ""), gpu=row["gpu"], dtype=row["dtype"],
                        framework=row["framework"], layout=layout, shape=shape, step_time_s=step))
    if not runs:
        raise InputError(f"runs file {path}: no rows")
    return runs


def _gpu(name: str) -> GpuSpec:
    return next(g for g in load_gpus() if g.name == name)


def design(runs: list[Run], cat: SpeedCatalog) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Keys, matrix A (runs × keys) and fixed seconds c of every run: step_s = A θ + c."""
    per_run = []
    for run in runs:
        lay = {k: np.array([v]) for k, v in run.layout.items()}
        cols, fixed, _ = training_design(run.shape, _gpu(run.gpu), run.dtype, run.framework, lay, cat)
        per_run.append(({k: float(v[0]) for k, v in cols.items()}, float(fixed[0])))
    keys = sorted({k for cols, _ in per_run for k in cols})
    matrix = np.array([[cols.get(k, 0.0) for k in keys] for cols, _ in per_run])
    return keys, matrix, np.array([c for _, c in per_run])


def solve(keys: list[str], matrix: np.ndarray, fixed: np.ndarray, measured: np.ndarray, prior: np.ndarray, ridge: float = RIDGE,
          min_runs: int = MIN_RUNS) -> np.ndarray:
    """Bounded ridge least squares on relative residuals (see the module docstring).

    Parameters that fewer than `min_runs` runs depend on (>= 10% of their step at the prior
    values) keep their catalog value: two runs cannot tell a GEMM ceiling from everything else.
    """
    rel_a = matrix / measured[:, None]
    rel_b = 1.0 - fixed / measured
    lower = np.array([1.0 if k.endswith("#inv") else 0.0 for k in keys])
    share = rel_a * prior[None, :]
    free = (share >= 0.10).sum(axis=0) >= min_runs
    theta = prior.copy()
    weight = np.ones(len(measured))
    for _ in range(HUBER_ITERATIONS):
        theta = _bounded_lstsq(rel_a * weight[:, None], (rel_b - 0.0) * weight, rel_a, rel_b, weight, prior, lower, free.copy(), ridge)
        residual = np.abs(rel_a @ theta - rel_b)
        weight = np.sqrt(np.minimum(1.0, HUBER_DELTA / np.maximum(residual, 1e-12)))
    return theta


def _bounded_lstsq(a_w: np.ndarray, b_w: np.ndarray, rel_a: np.ndarray, rel_b: np.ndarray, weight: np.ndarray, prior: np.ndarray,
                   lower: np.ndarray, free: np.ndarray, ridge: float) -> np.ndarray:
    """Weighted ridge least squares with lower bounds by an active set: violators are pinned at their bound and the rest refitted."""
    theta = prior.copy()
    scale = np.where(prior > 0, prior, 1.0)
    for _ in range(len(prior) + 1):
        if not free.any():
            break
        a = np.vstack([a_w[:, free], np.sqrt(ridge) * np.diag(1.0 / scale[free])])
        b = np.concatenate([b_w - a_w[:, ~free] @ theta[~free], np.sqrt(ridge) * prior[free] / scale[free]])
        theta[free] = np.linalg.lstsq(a, b, rcond=None)[0]
        low = free & (theta < lower)
        if not low.any():
            break
        theta[low] = lower[low]
        free &= ~low
    return theta


def fit(runs: list[Run], cat: SpeedCatalog | None = None, ridge: float = RIDGE, label: str = "", min_runs: int = MIN_RUNS) -> SpeedCatalog:
    """The catalog with every efficiency row the runs use refitted."""
    cat = cat or load_speed_catalog()
    measured = np.array([r.step_time_s for r in runs])
    source = f"fitted by planner calibrate on {len(runs)} runs" + (f" of {label}" if label else "")
    rows = {r.key: r for r in cat.efficiency}
    keys, _, _ = design(runs, cat)
    prior = parameter_vector(cat, keys)
    current = cat
    # the exposed DP time depends on how long the compute takes (the overlap window), so the fixed part of the design is
    # re-evaluated at the fitted values and the linear fit repeated until it settles (fixed-point iteration)
    previous = None
    for _ in range(FIT_ITERATIONS):
        keys, matrix, fixed = design(runs, current)
        theta = solve(keys, matrix, fixed, measured, prior, ridge, min_runs)
        settled = previous is not None and np.allclose(theta, previous, rtol=FIT_TOLERANCE, atol=0.0)
        previous = theta
        values = dict(zip(keys, theta))
        updates = {}
        for row_key in {k.split("#")[0] for k in keys}:
            inv = values.get(row_key + "#inv", 1.0 / rows[row_key].e_max)
            n_half = values[row_key + "#small"] / inv if row_key + "#small" in values else rows[row_key].n_half
            overhead_us = values[row_key + "#overhead"] * 1e6 if row_key + "#overhead" in values else rows[row_key].overhead_us
            updates[row_key] = (1.0 / inv, n_half, overhead_us)
        current = cat.with_efficiency(updates, source, dt.date.today().isoformat())
        if settled:
            break
    return current


def predict_step_s(runs: list[Run], cat: SpeedCatalog) -> np.ndarray:
    """Predicted seconds per step of each run."""
    keys, matrix, fixed = design(runs, cat)
    return matrix @ parameter_vector(cat, keys) + fixed


def cross_validate(runs: list[Run], folds: int = 5, cat: SpeedCatalog | None = None, seed: int = 0) -> np.ndarray:
    """Predicted/measured − 1 on tokens/s/GPU of each run, predicted by a fit that did not see it (k-fold)."""
    cat = cat or load_speed_catalog()
    order = np.random.default_rng(seed).permutation(len(runs))
    error = np.zeros(len(runs))
    for fold in range(folds):
        test = order[fold::folds]
        train = np.setdiff1d(order, test)
        fitted = fit([runs[i] for i in train], cat)
        predicted = predict_step_s([runs[i] for i in test], fitted)
        error[test] = np.array([runs[i].step_time_s for i in test]) / predicted - 1.0  # tokens/s ∝ 1/step
    return error


def summarize(runs: list[Run], error: np.ndarray) -> dict[str, dict[str, float]]:
    """Median and worst |error| overall and per GPU family, dtype and dense/MoE."""
    groups: dict[str, list[int]] = {"all": list(range(len(runs)))}
    for i, run in enumerate(runs):
        for label in (run.gpu.split("-")[0], run.dtype, "moe" if run.is_moe else "dense", run.framework):
            groups.setdefault(label, []).append(i)
    return {label: {"rows": len(idx), "median_abs_pct": float(np.median(np.abs(error[idx])) * 100),
                    "worst_abs_pct": float(np.max(np.abs(error[idx])) * 100)} for label, idx in groups.items()}


def overlay_dict(fitted: SpeedCatalog, base: SpeedCatalog, runs: Iterable[Run], summary: dict[str, Any]) -> dict[str, Any]:
    """The overlay written to YAML: fitted efficiency rows, the run count and the CV summary."""
    base_rows = {r.key: r for r in base.efficiency}
    rows = [{"kernel": r.kernel, "family": r.family, "framework": r.framework, "dtype": r.dtype,
             "e_max": round(r.e_max, 5), "n_half": round(r.n_half, 2), "overhead_us": round(r.overhead_us, 2), "source": r.source, "as_of": r.as_of}
            for r in fitted.efficiency if r != base_rows.get(r.key)]
    return {"efficiency": rows, "fitted_runs": len(list(runs)), "cross_validation": summary}


class HeldOutError(BaseModel):
    """The calibrated speed model's error on one group of measured runs, each predicted by a fit that did not see it."""

    model_config = FORBID

    group: str = Field(description="The runs: a GPU family (A100, H100, B200), a training dtype, dense or moe, or a framework.")
    runs: int = Field(ge=0, description="Runs in the group.")
    median_abs_pct: float = Field(ge=0, description="Median |measured/predicted - 1| of tokens/s/GPU over the group, runs held out (k-fold), %.")
    worst_abs_pct: float = Field(ge=0, description="Largest such error in the group, %.")
    calibration: str = Field(default="", description="Calibration file whose `cross_validation` summary holds the figure.")


class SpeedEvidence(BaseModel):
    """How far the calibrated training speed was from measured runs like a plan's (the calibrations' cross-validation)."""

    model_config = FORBID

    gpu: str = Field(description="The plan's GPU.")
    family: str = Field(description="Efficiency family of the plan's GPU (catalogs/efficiency.csv; default when it has none of its own).")
    uncalibrated: bool = Field(description="No calibration run on this family: its kernel efficiencies are the catalog's cited values, not fitted.")
    groups: tuple[HeldOutError, ...] = Field(description="The plan's family, dtype, dense/MoE kind and framework, where they have runs.")
    unsummarised_file: str = Field(default="", description="The scenario's calibration file when it has no cross_validation summary: the "
                                                           "plan runs on its fit, the figures are the shipped calibration's; '' otherwise.")

    def line(self) -> str:
        """One sentence for a plan's output."""
        figures = "; ".join(f"{file}: " + ", ".join(f"{g.group} {g.median_abs_pct:.1f}% / {g.worst_abs_pct:.1f}% ({g.runs} runs)"
                                                      for g in self.groups if g.calibration == file)
                            for file in dict.fromkeys(g.calibration for g in self.groups))
        where = f"the {self.family} family" if self.family != "default" else f"{self.gpu} (no efficiency family of its own)"
        head = f"no calibration run on {where}: its kernel efficiencies are the catalog's uncalibrated values; " if self.uncalibrated else ""
        tail = (f" ({self.unsummarised_file}, the scenario's calibration the plan runs on, has no cross_validation summary of its own)"
                if self.unsummarised_file else "")
        return f"speed model error, median / worst, on runs held out of its fit: {head}{figures or 'no group with runs'}{tail}"


def speed_evidence(gpu: str, dtype: str, framework: str, moe: bool, file: str | None = None) -> SpeedEvidence:
    """The cross-validated error (`summarize` labels, as `calibrate` writes them) of the groups a training layout belongs
    to: from the scenario's calibration file where its `cross_validation` summary has the group (its rows replace the
    shipped ones), else from the shipped calibration's. The GPU's family and the dtype group are those of the efficiency
    rows its linear layers run on (`speed.linear_efficiency_dtype`: an fp16 plan runs on the bf16 rows, an H200 on the
    H100 family's)."""
    summaries = [_cross_validation(str(DEFAULT_CALIBRATION))]
    if file is not None:
        try:
            summaries.insert(0, _cross_validation(str(file)))
        except InputError as error:
            raise InputError(f"assumptions.file: {error}") from None
    kernel_dtype = linear_efficiency_dtype(_gpu(gpu), dtype)
    family = load_speed_catalog().efficiency_row("gemm", gpu, framework, kernel_dtype).family
    groups = tuple(next(s[label] for s in summaries if label in s) for label in (family, kernel_dtype, "moe" if moe else "dense", framework)
                   if any(label in s for s in summaries))
    return SpeedEvidence(gpu=gpu, family=family, uncalibrated=not any(family in s for s in summaries), groups=groups,
                         unsummarised_file=Path(file).name if file is not None and not summaries[0] else "")


def _cross_validation(path: str) -> dict[str, HeldOutError]:
    """The `cross_validation` summary of a calibration file by group ({} when it has none or does not exist)."""
    if not Path(path).exists():
        return {}
    summary = load_overlay(Path(path)).get("cross_validation")
    if summary is None:
        return {}
    entry = "rows (a count), median_abs_pct and worst_abs_pct (percentages >= 0), as `planner calibrate` writes them"
    if not isinstance(summary, dict):
        raise InputError(f"calibration file {path}: field 'cross_validation' must map each group (A100, bf16, moe, ...) to its {entry}")
    out = {}
    for label, stats in summary.items():
        try:
            out[str(label)] = HeldOutError(group=str(label), runs=stats["rows"], median_abs_pct=stats["median_abs_pct"],
                                           worst_abs_pct=stats["worst_abs_pct"], calibration=Path(path).name)
        except (TypeError, KeyError, ValidationError):
            raise InputError(f"calibration file {path}: field 'cross_validation.{label}' must give {entry}") from None
    return out


def load_overlay(path: Path) -> dict[str, Any]:
    """Read a calibration overlay (as `planner calibrate` writes it) with the checks of `files.load_structured`; parsed
    once while the file is unchanged (`files.stat_key`). The dict is shared: callers read it, never change it."""
    key = stat_key(Path(path))
    if key is not None and key in _OVERLAYS:
        return _OVERLAYS[key]
    data = load_structured(Path(path), "calibration file")
    if not isinstance(data, dict) or not isinstance(data.get("efficiency"), list):
        raise InputError(f"calibration file {path}: field 'efficiency' must be a list of rows")
    if key is not None and settled(key):
        _OVERLAYS[key] = data
        while len(_OVERLAYS) > OVERLAY_CACHE_ENTRIES:
            _OVERLAYS.popitem(last=False)
    return data


def _override_rows(rows: tuple[Any, ...], items: Any, key_field: str, what: str) -> tuple[Any, ...]:
    """Rows with the overlay's field values applied to the row whose `key_field` matches (validated)."""
    if not isinstance(items, list):
        raise InputError(f"calibration overlay: field '{what}' must be a list of rows")
    by_key = {getattr(r, key_field): r for r in rows}
    for item in items:
        name = item.get(key_field) if isinstance(item, dict) else None
        if name not in by_key:
            raise InputError(f"calibration overlay: {what} row {name!r} unknown; allowed: {', '.join(map(str, by_key))}")
        try:
            by_key[name] = by_key[name].model_validate({**by_key[name].model_dump(), **item})
        except ValidationError as error:
            first = error.errors()[0]
            raise InputError(f"calibration overlay: {what} row {name!r}: field '{first['loc'][0]}' {first['msg']}") from None
    return tuple(by_key.values())


def apply_overlay(cat: SpeedCatalog, overlay: dict[str, Any]) -> SpeedCatalog:
    """The catalog with the overlay's efficiency rows in place of the matching ones; optional
    `frameworks:` and `links:` lists override fields of framework and link rows (e.g.
    `{framework: megatron, ep_payload_bytes: 1, ep_node_dedup: true}`)."""
    if "frameworks" in overlay:
        cat = cat.model_copy(update={"frameworks": _override_rows(cat.frameworks, overlay["frameworks"], "framework", "frameworks")})
    if "links" in overlay:
        cat = cat.model_copy(update={"links": _override_rows(cat.links, overlay["links"], "link", "links")})
    keys = {r.key for r in cat.efficiency}
    updates, source, as_of = {}, "calibration overlay", ""
    for item in overlay["efficiency"]:
        try:
            key = f"{item['kernel']}|{item['family']}|{item['framework']}|{item['dtype']}"
            e_max, n_half, overhead_us = float(item["e_max"]), float(item["n_half"]), float(item.get("overhead_us", 0.0))
        except (KeyError, TypeError, ValueError):
            raise InputError("calibration overlay: each efficiency row needs kernel, family, framework, dtype, e_max, n_half (overhead_us optional)") from None
        if key not in keys:
            raise InputError(f"calibration overlay: row {key!r} matches no row of catalogs/efficiency.csv")
        if not 0 < e_max <= 1.5 or n_half < 0 or overhead_us < 0:
            raise InputError(f"calibration overlay: row {key!r}: e_max must be in (0, 1.5], n_half and overhead_us >= 0")
        updates[key] = (e_max, n_half, overhead_us)
        source, as_of = str(item.get("source", source)), str(item.get("as_of", as_of))
    return cat.with_efficiency(updates, source, as_of)


def calibrated_catalog(path: Path | None = DEFAULT_CALIBRATION) -> SpeedCatalog:
    """The speed catalog with a calibration overlay applied (the shipped default unless another is named)."""
    cat = load_speed_catalog()
    if path is None or not Path(path).exists():
        return cat
    return apply_overlay(cat, load_overlay(path))


def scenario_catalog(file: str | None) -> SpeedCatalog:
    """The speed catalog the evaluator uses: the shipped calibration with a scenario's overlay
    (`assumptions: {file: ...}`) applied over it; errors name assumptions.file. Cached while the file is unchanged."""
    key = stat_key(Path(file)) if file is not None else ()
    if key is not None and (file is None or settled(key)):
        return _scenario_catalog_at(file, key)
    return _scenario_catalog_at.__wrapped__(file, key)


@lru_cache(maxsize=8)
def _scenario_catalog_at(file: str | None, key: tuple[Any, ...] | None) -> SpeedCatalog:
    """`scenario_catalog` of the file as it was when its `files.stat_key` was `key`."""
    cat = calibrated_catalog()
    if file is None:
        return cat
    try:
        _cross_validation(str(file))  # a plan quotes it as its speed evidence (`speed_evidence`): checked when the file is named
        return apply_overlay(cat, load_overlay(Path(file)))
    except InputError as error:
        raise InputError(f"assumptions.file: {error}") from None


def calibrate(runs_path: Path, out_path: Path, folds: int = 5) -> tuple[list[Run], np.ndarray, dict[str, Any]]:
    """Read runs, cross-validate, fit on all of them and write the overlay; returns runs, CV errors and the summary."""
    runs = read_runs(runs_path)
    if folds < 2 or folds > len(runs):
        raise InputError(f"folds = {folds}: must be between 2 and the number of runs ({len(runs)})")
    base = load_speed_catalog()
    error = cross_validate(runs, folds, base)
    summary = summarize(runs, error)
    fitted = fit(runs, base, label=Path(runs_path).name)
    text = yaml.safe_dump(overlay_dict(fitted, base, runs, summary), sort_keys=False)
    Path(out_path).write_text(text)
    return runs, error, summary
