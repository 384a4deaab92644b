"""Batch what-if studies: one base scenario, many variations, one table of plans.

A study file names a base scenario (a path relative to the study file, or an inline mapping)
and either `axes` (dotted scenario field path -> list of values; the full grid product) or
`cases` (an explicit list of {dotted path: value} mappings). Every case is solved on its own
by `solve_case`, a top-level function that takes a plain scenario dict and returns a plain
row dict, so the same code runs serially, in a local process pool or on a dask cluster, and
gives the same table (the solver is deterministic). A case that is infeasible or errors
becomes a row with its reason; the study never stops for one case.

With an output file (.csv or .parquet) the whole table is rewritten atomically (temp file in
the same folder, then `os.replace`) as cases finish, and a rerun skips the case ids already
in the file: an interrupted study resumes where it stopped. A case id hashes everything that
decides the case's answer (its resolved scenario, the catalogs' content, files it names, the
time limit), so a resumed study recomputes every case whose base, catalog or limit changed.
Two runs writing one output at once are refused (an advisory lock beside the file).

A study file's `scheduler:` is ignored unless the caller opts in (`allow_file_scheduler`, the
CLI's `--allow-study-scheduler`): a file someone hands you must not pick the host that
receives the work and sends back pickled replies.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import time
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planner.errors import InfeasibleError, InputError, PlannerError
from planner.files import check_writable, exclusive_lock, read_text_file, shorten, write_atomically
from planner.evaluate import TrainingEvaluation
from planner.scenario import (
    Scenario, parse_scenario, read_structured_file, reject_bools, resolve_relative_paths, validation_message,
)
from planner.solver import DEFAULT_TIME_LIMIT_S, Plan, layout_summary, solve
from planner.units import BYTES_PER_GIB

STATUSES = ("optimal", "feasible", "infeasible", "error")
"""Case statuses, in the order tables and summaries list them."""

CATEGORY_COLUMNS = ("status", "gpu", "precision", "kv_precision", "checkpointing", "objective_unit")
INT_COLUMNS = ("num_gpus", "tp", "pp", "dp", "ep", "zero", "micro_batch", "replicas", "batch")
FLOAT_COLUMNS = ("memory_gib", "capacity_gib", "headroom_gib", "tokens_per_s", "time_to_train_days", "cost_usd",
                 "usd_per_hour", "usd_per_million_tokens", "objective_value", "solve_time_s")
TEXT_COLUMNS = ("case_id", "reason", "layout")

RESULT_COLUMNS = (
    "case_id", "status", "reason", "gpu", "num_gpus", "precision", "kv_precision", "tp", "pp", "dp", "ep", "zero",
    "checkpointing", "micro_batch", "replicas", "batch", "memory_gib", "capacity_gib", "headroom_gib", "tokens_per_s",
    "time_to_train_days", "cost_usd", "usd_per_hour", "usd_per_million_tokens", "objective_value", "objective_unit",
    "layout", "solve_time_s",
)
"""Columns after the axis columns, in table order (`solve_case` returns all but `case_id`)."""

FLUSH_INTERVAL_S = 1.0
"""Least time between two rewrites of the output file while a study runs."""

MAX_CASES = 10_000
"""Most cases one study may hold; a larger grid is refused with its size and how to narrow it."""

MAX_AXIS_VALUES = 1_000
"""Most values one axis may list."""


# ---- the study file ------------------------------------------------------------------------


class Study(BaseModel):
    """A study: a base scenario and the variations to solve."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=200, description="Short name of the study.")
    description: str = Field(default="", description="What the study wants to find out.")
    base: str | dict[str, Any] = Field(
        description="Base scenario: a path relative to the study file, or an inline scenario mapping (load_study inlines a path).")
    axes: dict[str, list[Any]] | None = Field(
        default=None, description="Dotted scenario field path -> values; the study solves the full grid product.")
    cases: list[dict[str, Any]] | None = Field(
        default=None, description="Explicit cases, each a mapping of dotted scenario field path -> value.")
    scheduler: str | None = Field(default=None, description="dask scheduler address (tcp://host:port); used only with the "
                                  "caller's opt-in (--allow-study-scheduler), else local processes.")
    time_limit_s: float | None = Field(default=None, gt=0, le=86_400, description="CP-SAT time limit per case, seconds (None = 20 s).")

    @model_validator(mode="after")
    def _axes_or_cases(self) -> Study:
        if (self.axes is None) == (self.cases is None):
            raise ValueError("give exactly one of axes (a grid) or cases (an explicit list)")
        for path, values in (self.axes or {}).items():
            if not path:
                raise ValueError("an axis needs a dotted scenario field path as its key")
            if not values:
                raise ValueError(f"axis {shorten(path, 60)} needs at least one value")
            if len(values) > MAX_AXIS_VALUES:
                raise ValueError(f"axis {shorten(path, 60)} lists {len(values):,} values, more than {MAX_AXIS_VALUES:,}; split the study")
        if self.cases is not None and (not self.cases or any(not case for case in self.cases)):
            raise ValueError("cases must be a non-empty list of non-empty mappings")
        count = math.prod(len(v) for v in self.axes.values()) if self.axes is not None else len(self.cases or [])
        if count > MAX_CASES:
            sizes = " x ".join(str(len(v)) for v in self.axes.values()) if self.axes is not None else str(count)
            raise ValueError(f"the study has {count:,} cases ({sizes}), more than {MAX_CASES:,}; "
                             f"narrow an axis or split the study into several files")
        return self


class Case(BaseModel):
    """One variation of the base scenario, ready to solve."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    index: int = Field(ge=0, description="Position in the study (grid order or list order); the table's row order.")
    case_id: str = Field(description="Stable id: a hash of the axis values, the key for resuming.")
    values: dict[str, Any] = Field(description="Axis values by dotted scenario field path.")
    scenario: dict[str, Any] = Field(description="The base scenario with the values applied: what the worker solves.")


def _allowed_submodel(annotation: Any, kind: Any) -> type[BaseModel] | type[dict] | None:
    """The pydantic model (or dict) a field's value is, for walking a dotted path; None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is dict:
        return dict
    if origin in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        for model in models:  # a discriminated union (the workload): follow the base's kind
            literal = model.model_fields.get("kind")
            if literal is not None and kind in typing.get_args(literal.annotation):
                return model
        return models[0] if models else None
    return None


def check_path(path: str, base: dict[str, Any], origin: str = "study") -> None:
    """Raise `InputError` unless `path` names a scenario field, naming the allowed keys where it goes wrong.

    The walk follows the Scenario pydantic model (the workload's kind is the base's), so a typo
    fails when the study loads, not in every case. Keys below a free-form mapping (assumptions,
    inventory, explicit prices) are checked when each case's scenario is validated.
    """
    kind = (base.get("workload") or {}).get("kind") if isinstance(base.get("workload"), dict) else None
    model: type[BaseModel] = Scenario
    parts = path.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the top level"
        fields = model.model_fields
        if part not in fields:
            raise InputError(f"{origin}: axis {path!r}: unknown key {part!r} at {where}; allowed: {', '.join(fields)}.")
        if depth == len(parts) - 1:
            return
        sub = _allowed_submodel(fields[part].annotation, kind)
        if sub is dict:
            return
        if sub is None:
            raise InputError(f"{origin}: axis {path!r}: {'.'.join(parts[:depth + 1])} is a value, not a mapping; "
                             f"the path must end there.")
        model = sub


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    """A deep copy of `value` at the dotted `path` of the scenario mapping `data`, in place (missing mappings created).

    `search.gpus` also takes one GPU id as a string, meaning the subset of that one GPU.
    """
    if path == "search.gpus" and isinstance(value, str):
        value = [value]
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)


def parse_study(data: Any, origin: str = "study", root: Path | None = None) -> Study:
    """Validate a study mapping: inline a base path (relative to `root`), check the base and every axis path."""
    if not isinstance(data, dict):
        raise InputError(f"{origin}: expected a mapping of study fields at the top level.")
    try:
        reject_bools(Study, data)
    except InputError as err:
        raise InputError(f"{origin}: {err}") from None
    try:
        study = Study.model_validate(data)
    except ValidationError as err:
        raise InputError(validation_message(err, origin)) from None
    root = root or Path.cwd()
    base = study.base
    base_origin = f"{origin}: base"
    if isinstance(base, str):
        base_path = root / base
        base = read_structured_file(base_path)
        base_origin = str(base_path)
        if not isinstance(base, dict):
            raise InputError(f"{base_path}: expected a mapping of scenario fields at the top level.")
        base = resolve_relative_paths(base, base_path.parent)  # paths in the base file are relative to that file
    else:
        base = resolve_relative_paths(base, root)
    base = {"name": study.name, **base}
    parse_scenario(base, base_origin)
    paths = list(study.axes or {}) or list(dict.fromkeys(key for case in study.cases or [] for key in case))
    for path in paths:
        check_path(path, base, origin)
    update: dict[str, Any] = {"base": base}
    if study.axes is not None:  # path values in axes and cases are relative to the study file
        update["axes"] = {p: [_anchored(p, v, root) for v in values] for p, values in study.axes.items()}
    else:
        update["cases"] = [{p: _anchored(p, v, root) for p, v in case.items()} for case in study.cases or []]
    return study.model_copy(update=update)


def _anchored(path: str, value: Any, root: Path) -> Any:
    """An axis value that names a file (workload.model as a path, pricing.price_file) made relative to the study file."""
    if path == "workload.model":
        return resolve_relative_paths({"workload": {"model": value}}, root)["workload"]["model"]
    if path == "pricing.price_file":
        return resolve_relative_paths({"pricing": {"price_file": value}}, root)["pricing"]["price_file"]
    return value


def load_study(path: str | Path) -> Study:
    """Read and validate a study file (YAML or JSON); a base given as a path is read relative to the study file."""
    path = Path(path)
    return parse_study(read_structured_file(path), str(path), path.parent)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def catalog_version() -> str:
    """SHA-256 of every file under catalogs/ (names and bytes): changes whenever a catalog row, config or assumption does."""
    from planner.catalog import CATALOG_DIR

    digest = hashlib.sha256()
    for path in sorted(p for p in CATALOG_DIR.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(CATALOG_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _file_version(name: Any) -> str:
    """SHA-256 of a file a case names (a config.json or a price CSV), or '' when it is not a readable file."""
    if not isinstance(name, str):
        return ""
    try:
        return hashlib.sha256(read_text_file(Path(name).expanduser()).encode()).hexdigest()
    except InputError:
        return ""


def case_id_of(values: dict[str, Any], scenario: dict[str, Any] | None = None, time_limit_s: float | None = None,
               catalogs: str = "") -> str:
    """Stable 12-hex-digit id of a case: SHA-256 of everything that decides its answer, as canonical JSON.

    That is the axis values, the resolved scenario (base with the values applied; its name and
    description left out, they change no number), the catalogs' content version, the content of
    files the scenario names, and the time limit. Without a scenario it hashes the values only.
    """
    if scenario is None:
        return hashlib.sha256(_canonical(values).encode()).hexdigest()[:12]
    decisive = {k: v for k, v in scenario.items() if k not in ("name", "description")}
    workload = scenario.get("workload") if isinstance(scenario.get("workload"), dict) else {}
    pricing = scenario.get("pricing") if isinstance(scenario.get("pricing"), dict) else {}
    files = [_file_version(workload.get("model")), _file_version(pricing.get("price_file"))]
    text = _canonical({"values": values, "scenario": decisive, "catalogs": catalogs, "files": files, "time_limit_s": time_limit_s})
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def expand_cases(study: Study, time_limit_s: float | None = None) -> list[Case]:
    """Every case of a study, in grid order (last axis fastest) or list order; duplicates are an `InputError`.

    `time_limit_s` (default: the study's, else 20 s) enters each case id, as it can change a case's answer.
    """
    if isinstance(study.base, str):
        study = parse_study(study.model_dump(), study.name)
    base = study.base
    assert isinstance(base, dict)
    limit = time_limit_s or study.time_limit_s or DEFAULT_TIME_LIMIT_S
    catalogs = catalog_version()
    if study.axes is not None:
        paths = list(study.axes)
        combos: Iterable[dict[str, Any]] = (dict(zip(paths, combo)) for combo in itertools.product(*study.axes.values()))
    else:
        combos = study.cases or []
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for index, values in enumerate(combos):
        key = case_id_of(values)
        if key in seen:
            raise InputError(f"{study.name}: case {index} repeats case {seen[key]} ({shorten(values)}); remove the duplicate value.")
        seen[key] = index
        scenario = copy.deepcopy(base)
        for path, value in values.items():
            _put(scenario, path, value)
        case_id = case_id_of(values, scenario, limit, catalogs)
        cases.append(Case(index=index, case_id=case_id, values=dict(values), scenario=scenario))
    return cases


# ---- one case ------------------------------------------------------------------------------


def _reason(err: BaseException) -> str:
    """The message's first line; when that line only introduces a list (ends with ':'), the list joined on."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return lines[0] + " " + "; ".join(lines[1:])
    return lines[0]


def plan_row(plan: Plan) -> dict[str, Any]:
    """The table's plan fields of a solved plan, as plain Python values (None where they do not apply)."""
    e = plan.evaluation
    lay = e.layout
    row: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS)
    row.update(
        status=plan.status.lower(), reason="", gpu=lay.gpu, num_gpus=lay.num_gpus, tp=lay.tp, pp=lay.pp,
        memory_gib=e.memory.total_bytes / BYTES_PER_GIB, capacity_gib=e.memory.capacity_bytes / BYTES_PER_GIB,
        headroom_gib=e.memory.headroom_bytes / BYTES_PER_GIB, objective_value=plan.objective_value,
        objective_unit=plan.objective_unit, layout=layout_summary(e),
    )
    if isinstance(e, TrainingEvaluation):
        usd_per_hour = lay.num_gpus * e.price.usd_per_gpu_hour if e.price else None
        tokens_per_s = e.perf.tokens_per_s
        row.update(
            precision=lay.precision.value, dp=lay.dp, ep=lay.ep, zero=int(lay.zero),
            checkpointing=lay.checkpointing.name.lower(), micro_batch=lay.micro_batch, tokens_per_s=tokens_per_s,
            time_to_train_days=e.perf.time_to_train_s / 86400.0, cost_usd=e.cost_usd, usd_per_hour=usd_per_hour,
            usd_per_million_tokens=usd_per_hour / (tokens_per_s * 3600.0) * 1e6 if usd_per_hour and tokens_per_s else None,
        )
    else:
        row.update(
            precision=lay.weight_precision.value, kv_precision=lay.kv_precision.value, replicas=lay.replicas,
            batch=lay.batch, tokens_per_s=e.fleet_output_tokens_per_s, usd_per_hour=e.usd_per_hour,
            usd_per_million_tokens=e.usd_per_million_output_tokens,
        )
    del row["case_id"]
    return row


def solve_case(scenario: dict[str, Any], time_limit_s: float = DEFAULT_TIME_LIMIT_S) -> dict[str, Any]:
    """Solve one case's scenario mapping into a plain row dict; never raises for a bad or infeasible case.

    Top-level and picklable so process pools and dask workers can run it. `solve_time_s` is
    the case's wall time (validation, table build and CP-SAT); alternatives are not computed.
    """
    started = time.perf_counter()
    row: dict[str, Any] = dict.fromkeys(c for c in RESULT_COLUMNS if c != "case_id")
    try:
        row.update(plan_row(solve(parse_scenario(scenario, "case"), time_limit_s, alternatives=False)))
    except InfeasibleError as err:
        row.update(status="infeasible", reason=_reason(err))
    except PlannerError as err:
        row.update(status="error", reason=_reason(err))
    except Exception as err:  # noqa: BLE001 - a bug in one case must not stop the study; the row names it
        row.update(status="error", reason=f"{type(err).__name__}: {_reason(err)}")
    row["solve_time_s"] = time.perf_counter() - started
    return row


def _crash_row(err: BaseException) -> dict[str, Any]:
    """The row of a case whose worker died or could not run it."""
    row: dict[str, Any] = dict.fromkeys(c for c in RESULT_COLUMNS if c != "case_id")
    row.update(status="error", reason=f"worker failed: {type(err).__name__}: {_reason(err)}")
    return row


# ---- the table -----------------------------------------------------------------------------


def _label(value: Any) -> Any:
    """An axis value as a table cell: numbers and booleans as they are, lists joined by ',', mappings as JSON."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _axis_series(values: list[Any]) -> pd.Series:
    """An axis column: Int64, float64 or boolean when every value is one, else a categorical of labels."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pd.Series(pd.array(values, dtype="boolean"))
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.Series(pd.array(values, dtype="Int64"))
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pd.Series([math.nan if v is None else float(v) for v in values], dtype="float64")
    return pd.Series(pd.Categorical([None if v is None else str(_label(v)) for v in values]))


def _result_series(column: str, values: list[Any]) -> pd.Series:
    if column == "status":
        return pd.Series(pd.Categorical(values, categories=STATUSES))
    if column in CATEGORY_COLUMNS:
        return pd.Series(pd.Categorical(values))
    if column in INT_COLUMNS:
        return pd.Series(pd.array(values, dtype="Int64"))
    if column in FLOAT_COLUMNS:
        return pd.Series([math.nan if v is None else float(v) for v in values], dtype="float64")
    return pd.Series(pd.array(["" if column == "reason" and v is None else v for v in values], dtype="string"))


def build_table(cases: list[Case], rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The study table of the finished cases, in case order: axis columns, then RESULT_COLUMNS, typed."""
    done = [c for c in cases if c.case_id in rows]
    paths = list(dict.fromkeys(p for c in cases for p in c.values))
    columns: dict[str, pd.Series] = {}
    for path in paths:
        columns[path] = _axis_series([c.values.get(path) for c in done])
    for column in RESULT_COLUMNS:
        values = [c.case_id if column == "case_id" else rows[c.case_id].get(column) for c in done]
        columns[column] = _result_series(column, values)
    return pd.DataFrame(columns)


def _plain(value: Any) -> Any:
    """A cell read back from a file as a plain Python value (None for missing)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def read_table(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of an existing study output by case id (plan fields only; axis values come from the study)."""
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            exact = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}  # pandas 3: exact by default
            frame = pd.read_csv(path, dtype={"case_id": str}, **exact)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user problem
        raise InputError(f"{path}: cannot read the existing study output to resume ({err}); move it away to start over.") from None
    if "case_id" not in frame.columns or "status" not in frame.columns:
        raise InputError(f"{path}: not a study output (no case_id/status columns); move it away to start over.")
    rows: dict[str, dict[str, Any]] = {}
    kept = [c for c in RESULT_COLUMNS if c in frame.columns and c != "case_id"]
    for record in frame[["case_id", *kept]].astype(object).itertuples(index=False, name=None):
        row = {column: _unneutralise(_plain(value)) for column, value in zip(kept, record[1:])}
        if row.get("status") in STATUSES and not str(row.get("reason") or "").startswith("worker failed"):
            rows[str(record[0])] = row  # a case whose worker died is retried on resume
    return rows


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a CSV text cell as a formula (OWASP CSV injection)."""


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells that start like a formula get a leading apostrophe (numbers are left alone)."""
    out = frame.copy()
    for column in out.columns:
        series = out[column]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        out[column] = series.astype(object).map(
            lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_PREFIXES) else v)
    return out


def _unneutralise(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write the table atomically: a temp file in the same folder, flushed, then `os.replace` over `path`.

    CSV text cells that a spreadsheet would run as a formula are written with a leading apostrophe.
    """
    def write(stream: BinaryIO) -> None:
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(stream, index=False)
        else:
            stream.write(neutralise_formulas(frame).to_csv(index=False).encode())

    write_atomically(path, write)


# ---- running -------------------------------------------------------------------------------


def _run_serial(pending: list[Case], time_limit_s: float, done: Callable[[Case, dict[str, Any]], None]) -> None:
    for case in pending:
        done(case, solve_case(case.scenario, time_limit_s))


def table_group_key(scenario: dict[str, Any]) -> str:
    """Cases with equal keys differ only in price, limits or objective, so they can share evaluated tables
    (`planner.space.table_key` decides exactly; this only groups the work)."""
    data = {k: v for k, v in scenario.items() if k not in ("name", "pricing", "constraints", "objective")}
    data["search"] = {k: v for k, v in (data.get("search") or {}).items() if k != "max_gpus"}
    if isinstance(data.get("workload"), dict) and data["workload"].get("kind") == "inference":
        data["workload"] = {k: v for k, v in data["workload"].items() if k not in ("slo", "target_output_tokens_per_s", "concurrent_sequences")}
    return json.dumps(data, sort_keys=True, default=str)


def solve_cases(scenarios: list[dict[str, Any]], time_limit_s: float = DEFAULT_TIME_LIMIT_S) -> list[dict[str, Any]]:
    """`solve_case` for cases that share a table group, in one worker (the table is evaluated once there)."""
    return [solve_case(scenario, time_limit_s) for scenario in scenarios]


def grouped_chunks(pending: list[Case], workers: int, most: int = 50) -> list[list[Case]]:
    """Cases in chunks of one table group each, a group split over at most `workers` chunks of at most `most` cases."""
    groups: dict[str, list[Case]] = {}
    for case in pending:
        groups.setdefault(table_group_key(case.scenario), []).append(case)
    chunks = []
    for members in groups.values():
        size = min(most, max(1, math.ceil(len(members) / workers)))
        chunks += [members[i:i + size] for i in range(0, len(members), size)]
    return chunks


def _die_with_parent() -> None:
    """Pool worker initializer: the worker is killed when the process that started it dies (even by SIGKILL).

    Linux: prctl(PR_SET_PDEATHSIG, SIGKILL); elsewhere a daemon thread polls the parent's pid.
    """
    import signal
    import sys
    import threading

    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
            return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_pool(pending: list[Case], workers: int, time_limit_s: float, done: Callable[[Case, dict[str, Any]], None],
              started: Callable[[], None]) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent)
    try:
        futures = {pool.submit(solve_cases, [case.scenario for case in chunk], time_limit_s): chunk
                   for chunk in grouped_chunks(pending, workers)}
        started()  # the progress display's thread starts after the workers are forked
        for future in as_completed(futures):
            error = future.exception()
            for case, row in zip(futures[future], [_crash_row(error)] * len(futures[future]) if error else future.result()):
                done(case, row)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_dask(pending: list[Case], scheduler: Any, time_limit_s: float, done: Callable[[Case, dict[str, Any]], None]) -> None:
    from dask.distributed import Client, as_completed

    own = isinstance(scheduler, str)
    try:
        client = Client(scheduler, set_as_default=False, timeout=30) if own else scheduler
    except (OSError, TimeoutError) as err:
        raise InputError(f"scheduler: cannot connect to dask scheduler {scheduler!r}: {err}.") from None
    try:
        futures = {client.submit(solve_case, case.scenario, time_limit_s, pure=False): case for case in pending}
        try:
            for future in as_completed(list(futures), loop=client.loop):
                try:
                    row = future.result()
                except Exception as err:  # noqa: BLE001 - a lost worker is one case's error row
                    row = _crash_row(err)
                done(futures[future], row)
        except BaseException:
            client.cancel(list(futures))
            raise
    finally:
        if own:
            client.close()


def _progress(name: str, total: int, completed: int, failures: int) -> Any:
    """A rich progress bar on stderr: cases done of total, infeasible + errors, elapsed and ETA."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("failed {task.fields[failures]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    progress.add_task(name, total=total, completed=completed, failures=failures)
    return progress


def _guard_key(scenario: dict[str, Any]) -> str:
    """What a case's layout count (and its message) depends on: the case without its pricing, objective, budget and
    deadline, which the count never reads (`planner.guards.count_layouts`: workload, search, inventory, max_gpus)."""
    data = {k: v for k, v in scenario.items() if k not in ("pricing", "objective")}
    if isinstance(data.get("constraints"), dict):
        data["constraints"] = {k: v for k, v in data["constraints"].items() if k not in ("budget_usd", "deadline_days")}
    return json.dumps(data, sort_keys=True, default=str)


def _oversized_cases(cases: list[Case]) -> dict[str, dict[str, Any]]:
    """Error rows for the cases whose search exceeds `planner.guards.MAX_LAYOUTS`: counted here, never sent to a worker.

    A case that does not parse is left to `solve_case`, which reports it in its row. Cases that differ only in what
    the count does not read (`_guard_key`: a price or limit study) are counted once; within an oversized group each
    case is still parsed, so only the cases that parse get the row.
    """
    from planner.catalog import resolve_model
    from planner.guards import check_search_size

    models: dict[str, Any] = {}
    within: set[str] = set()
    oversized: dict[str, str] = {}
    out: dict[str, dict[str, Any]] = {}
    for case in cases:
        key = _guard_key(case.scenario)
        if key in within:
            continue
        try:
            scenario = parse_scenario(case.scenario, "case")
            if key not in oversized:
                name = scenario.workload.model
                if name not in models:
                    models[name] = resolve_model(name)
                check_search_size(scenario, models[name])
                within.add(key)
                continue
        except InputError as err:
            if "layouts to evaluate" not in str(err):
                continue
            oversized[key] = _reason(err)
        except PlannerError:
            continue
        row: dict[str, Any] = dict.fromkeys(c for c in RESULT_COLUMNS if c != "case_id")
        row.update(status="error", reason=oversized[key], solve_time_s=0.0)
        out[case.case_id] = row
    return out


def check_scheduler_address(address: str) -> str:
    """A dask scheduler address must look like [tcp|tls|ws|wss|inproc]://host:port; anything else fails at once, not after a timeout."""
    import re

    if not re.fullmatch(r"(?:(?:tcp|tls|ws|wss|ucx)://)?[A-Za-z0-9._\-\[\]:]+:\d{1,5}", address or "") \
            or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
        raise InputError(f"--scheduler: {shorten(address)} is not a dask scheduler address like tcp://host:8786.")
    return address


def run_study(study: Study, workers: int | None = None, scheduler: Any = None, output: Path | str | None = None,
              progress: bool = False, time_limit_s: float | None = None, allow_file_scheduler: bool = False) -> pd.DataFrame:
    """Solve every case of a study and return the table (one row per case, in case order).

    workers: local processes (default os.cpu_count(); 1 = serially in this process).
    scheduler: a dask scheduler address or a `distributed.Client`. The study file's own
    `scheduler:` is used only with `allow_file_scheduler=True` (else it is an `InputError`).
    output: .csv or .parquet, rewritten atomically as cases finish; case ids already in it are
    not recomputed; two runs on one output are refused. time_limit_s: per case; defaults to
    the study's, else 20 s.
    """
    output = Path(output) if output is not None else None
    if output is not None and output.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"{output}: the study output must end in .csv or .parquet.")
    if output is not None and not output.parent.is_dir():
        raise InputError(f"{output}: folder {output.parent} does not exist.")
    if output is not None:
        check_writable(output)
    if time_limit_s is not None and not (0 < time_limit_s <= 86_400):
        raise InputError(f"--time-limit: must be between 0 and 86400 seconds (got {time_limit_s!r}).")
    if scheduler is None and study.scheduler is not None:
        if not allow_file_scheduler:
            raise InputError(f"{study.name}: scheduler: the study file names a dask scheduler ({shorten(study.scheduler)}); "
                             f"a scheduler is taken only from --scheduler, or with --allow-study-scheduler.")
        scheduler = study.scheduler
    if isinstance(scheduler, str):
        check_scheduler_address(scheduler)
    if output is None:
        return _run_study(study, workers, scheduler, None, progress, time_limit_s)
    with exclusive_lock(output):
        return _run_study(study, workers, scheduler, output, progress, time_limit_s)


def _run_study(study: Study, workers: int | None, scheduler: Any, output: Path | None, progress: bool,
               time_limit_s: float | None) -> pd.DataFrame:
    limit = time_limit_s or study.time_limit_s or DEFAULT_TIME_LIMIT_S
    cases = expand_cases(study, limit)
    ids = {c.case_id for c in cases}
    rows: dict[str, dict[str, Any]] = {}
    if output is not None and output.exists():
        rows = {case_id: row for case_id, row in read_table(output).items() if case_id in ids}
    pending = [c for c in cases if c.case_id not in rows]
    oversized = _oversized_cases(pending)
    for case in pending:
        if case.case_id in oversized:
            rows[case.case_id] = oversized[case.case_id]
    pending = [c for c in pending if c.case_id not in oversized]
    bar = _progress(study.name, len(cases), len(rows), sum(r["status"] in ("infeasible", "error") for r in rows.values())) \
        if progress else None
    state = {"dirty": False, "flushed": time.monotonic()}

    def flush() -> None:
        if output is not None and state["dirty"]:
            write_table(build_table(cases, rows), output)
            state.update(dirty=False, flushed=time.monotonic())

    def done(case: Case, row: dict[str, Any]) -> None:
        rows[case.case_id] = row
        state["dirty"] = True
        if bar is not None:
            task = bar.tasks[0]
            bar.update(task.id, advance=1, failures=task.fields["failures"] + (row["status"] in ("infeasible", "error")))
        if time.monotonic() - state["flushed"] >= FLUSH_INTERVAL_S:
            flush()

    def start_bar() -> None:
        if bar is not None:
            bar.start()

    n_workers = min(workers or os.cpu_count() or 1, max(len(pending), 1))
    try:
        if not pending:
            start_bar()
        elif scheduler is not None:
            start_bar()
            _run_dask(pending, scheduler, limit, done)
        elif n_workers <= 1:
            start_bar()
            _run_serial(pending, limit, done)
        else:
            _run_pool(pending, n_workers, limit, done, start_bar)
    finally:
        if bar is not None:
            bar.stop()
        flush()
    if output is not None and not output.exists():
        write_table(build_table(cases, rows), output)
    return build_table(cases, rows)


# ---- summary -------------------------------------------------------------------------------


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Two text columns (item, value) for the CLI: cases by status, then the best plan per objective unit.

    Best = highest tokens/s for max_throughput, else the lowest value (cost, GPUs, days); ties
    go to the earlier case. Axis values of the best case are listed with it.
    """
    items: list[tuple[str, str]] = [("cases", str(len(df)))]
    status = df["status"].astype(str) if len(df) else pd.Series([], dtype=str)
    items += [(s, str(int((status == s).sum()))) for s in STATUSES]
    axes = [c for c in df.columns if c not in RESULT_COLUMNS]
    solved = df[status.isin(["optimal", "feasible"]).to_numpy()] if len(df) else df
    for unit in sorted(solved["objective_unit"].dropna().astype(str).unique()) if len(solved) else []:
        group = solved[(solved["objective_unit"].astype(str) == unit).to_numpy()]
        best = group.loc[group["objective_value"].idxmax() if unit == "tokens/s" else group["objective_value"].idxmin()]
        where = ", ".join(f"{a}={best[a]}" for a in axes if not pd.isna(best[a]))
        items.append((f"best ({unit})", f"{best['objective_value']:,.6g} {unit}: case {best['case_id']} ({where}): {best['layout']}"))
    return pd.DataFrame(items, columns=["item", "value"])
