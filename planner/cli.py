"""Command line: `planner solve | simulate | memory | catalog | model show | validate | schema | sweep | fleet | report | calibrate`.

Exit codes (every command):
  0  success: a plan, a valid file, a configuration that fits;
  1  valid input with a negative answer: no feasible plan (`solve`, `fleet`), a configuration
     that does NOT fit (`memory`), a sweep whose every case is infeasible;
  2  bad input: one line on stderr naming the file or flag and the field, no traceback
     (also a sweep whose every case errors).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from planner.errors import PlannerError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="GPU capacity planner for LLMs: CP-SAT over cited memory, time and cost models.")
catalog_app = typer.Typer(no_args_is_help=True, help="Show the bundled catalogs.")
model_app = typer.Typer(no_args_is_help=True, help="Inspect a model.")
app.add_typer(catalog_app, name="catalog")
app.add_typer(model_app, name="model")

out = Console(emoji=False, highlight=False)  # ":name:" stays text; no repr colouring (its regex costs ~0.03 s to compile)
err = Console(stderr=True, emoji=False, highlight=False)


def guarded(fn: Callable[[], Any]) -> Any:
    """Run a command body; a PlannerError becomes one line and its exit code."""
    try:
        return fn()
    except PlannerError as error:
        err.print(str(error), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=error.exit_code) from None


def seconds_limit(value: Optional[float]) -> Optional[float]:
    """--time-limit: a positive, finite number of seconds (at most a day); 0, negatives and nan are refused alike."""
    import math

    if value is not None and (math.isnan(value) or not 0 < value <= 86_400):
        raise typer.BadParameter(f"must be a number of seconds above 0 and at most 86400 (got {value!r}).")
    return value


def gib(n_bytes: float) -> str:
    """Bytes as GiB with two decimals."""
    return f"{n_bytes / 2**30:,.2f}"


# ---- catalog ---------------------------------------------------------------------------------


@catalog_app.command("gpus")
def catalog_gpus() -> None:
    """GPUs: memory, bandwidth, dense throughput, links, power."""
    from planner.catalog import load_gpus

    from planner.render import name_column

    table = Table(title="GPUs (catalogs/gpus.csv)")
    gpus = load_gpus()
    name_column(table, "name", [g.name for g in gpus])
    table.caption = "TF = dense TFLOP/s; link = scale-up GB/s one way"
    for col in ("GiB", "HBM GB/s", "BF16 TF", "FP8 TF", "link GB/s", "node", "TDP W", "as of"):
        table.add_column(col, justify="right", overflow="fold")
    for g in gpus:
        table.add_row(escape(g.name), f"{g.memory_gib:g}", f"{g.hbm_bandwidth_gbps:g}", f"{g.bf16_dense_tflops or '-'}",
                      f"{g.fp8_dense_tflops or '-'}", f"{g.scaleup_link_gbps:g}", str(g.gpus_per_node), f"{g.tdp_watts:g}", g.as_of)
    out.print(table)


@catalog_app.command("prices")
def catalog_prices(price_file: Optional[Path] = typer.Option(None, help="A price CSV with the catalog's columns.")) -> None:
    """Cloud prices per GPU-hour, with provider, term and date."""
    from planner.catalog import load_prices

    def body() -> None:
        from planner.render import name_column

        rows = load_prices(price_file) if price_file else load_prices()
        table = Table(title=escape(f"Prices ({price_file or 'catalogs/prices.csv'})"))
        from planner.cost import is_stale
        from planner.scenario import Assumptions

        assumptions = Assumptions.with_overrides()
        name_column(table, "gpu", [r.gpu for r in rows])
        for col in ("provider", "offering", "region", "term", "$/GPU-h", "GPUs/instance", "flags", "as_of"):
            table.add_column(col, overflow="fold")
        for r in rows:
            flags = ", ".join(f for f, on in (("PLACEHOLDER", r.placeholder), ("STALE", is_stale(r.as_of, assumptions))) if on)
            table.add_row(*(escape(str(v)) for v in (r.gpu, r.provider, r.offering, r.region, r.term.value, f"{r.usd_per_gpu_hour:.3f}",
                                                      r.gpus_per_instance, flags, r.as_of)))
        out.print(table)

    guarded(body)


# ---- prices: import SkyPilot catalogs, fetch live offers -------------------------------------

prices_app = typer.Typer(no_args_is_help=True, help="Build a dated price file from SkyPilot's catalog or live offers.")
app.add_typer(prices_app, name="prices")


def _print_import(summary: Any) -> None:
    out.print(f"wrote {summary.rows} price rows for {', '.join(summary.gpus)} from {', '.join(summary.clouds)} to {summary.path}")
    if summary.unmapped:
        out.print(f"skipped accelerators with no catalog GPU: {', '.join(summary.unmapped)}")
    if summary.skipped_spot:
        out.print(f"skipped {summary.skipped_spot} rows whose spot price is above their on-demand price")
    out.print(f"use it with `pricing: {{price_file: {summary.path}}}` in a scenario")


@prices_app.command("import")
def prices_import(
    skypilot: Path = typer.Option(..., help="SkyPilot catalog folder with <cloud>/vms.csv files (e.g. ~/.sky/catalogs/v7)."),
    output: Optional[Path] = typer.Option(None, "--out", help="Price file to write (default prices-skypilot-DATE.csv)."),
    as_of: Optional[str] = typer.Option(None, help="Date of the catalog, YYYY-MM-DD (default today)."),
) -> None:
    """Import SkyPilot v7 vms.csv files as per-GPU price rows that keep the instance size."""
    from planner.prices import import_skypilot

    guarded(lambda: _print_import(import_skypilot(skypilot, output, as_of)))


@prices_app.command("fetch")
def prices_fetch(
    output: Optional[Path] = typer.Option(None, "--out", help="Price file to write (default prices-live-DATE.csv)."),
    provider: list[str] = typer.Option([], help="Providers to query (default all gpuhunt knows)."),
) -> None:
    """Query current offers with gpuhunt (optional extra planner[live]; needs the network)."""
    from planner.prices import fetch_live

    guarded(lambda: _print_import(fetch_live(output, tuple(provider))))


@catalog_app.command("models")
def catalog_models() -> None:
    """Bundled model configs with computed and published parameter counts."""
    from planner.catalog import load_model_entries, resolve_model

    from planner.render import name_column

    table = Table(title="Models (catalogs/models/)")
    name_column(table, "name", [e.name for e in load_model_entries()])
    for col in ("layers", "hidden", "heads/kv", "experts", "total B", "published B", "active B"):
        table.add_column(col, justify="right", overflow="fold")
    for e in load_model_entries():
        m = resolve_model(e.name)
        experts = f"{m.n_routed_experts}+{m.n_shared_experts} top{m.experts_per_token}" if m.is_moe else "-"
        table.add_row(e.name, str(m.num_layers), str(m.hidden_size), f"{m.num_heads}/{m.num_kv_heads}", experts,
                      f"{m.total_params / 1e9:.2f}", f"{e.published_total_params_b:g}", f"{m.active_params / 1e9:.2f}")
    out.print(table)


@model_app.command("show")
def model_show(name_or_path: str = typer.Argument(..., help="Catalog model name or path to a config.json."),
               as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Shape and parameter counts of a model."""
    from planner.catalog import resolve_model
    from planner.memory import kv_cache_bytes_per_token
    from planner.enums import KvPrecision

    def body() -> None:
        m = resolve_model(name_or_path)
        facts = {
            "name": m.name, "total_params_b": m.total_params / 1e9, "active_params_b": m.active_params / 1e9,
            "layers": m.num_layers, "hidden_size": m.hidden_size, "heads": m.num_heads, "kv_heads": m.num_kv_heads,
            "vocab_size": m.vocab_size, "moe": m.is_moe, "routed_experts": m.n_routed_experts, "shared_experts": m.n_shared_experts,
            "experts_per_token": m.experts_per_token, "mla": m.is_mla, "kv_lora_rank": m.kv_lora_rank,
            "kv_cache_bytes_per_token_bf16": kv_cache_bytes_per_token(m, KvPrecision.BF16),
        }
        if as_json:
            out.print_json(json.dumps(facts))
            return
        table = Table(title=escape(m.name), show_header=False)
        table.add_column("field", no_wrap=True)
        table.add_column("value", overflow="fold")
        for key, value in facts.items():
            table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else escape(str(value)))
        out.print(table)

    guarded(body)


# ---- scenario files ---------------------------------------------------------------------------


def file_kind(data: object) -> str:
    """What a YAML/JSON file is, by its keys: 'fleet' (workloads), 'study' (base) or 'scenario'."""
    if isinstance(data, dict) and "workloads" in data:
        return "fleet"
    if isinstance(data, dict) and "base" in data:
        return "study"
    return "scenario"


def validate_file(path: Path) -> str:
    """Check one scenario, study or fleet file as `solve`, `sweep` or `fleet` would; the one-line summary, or a PlannerError."""
    from planner.catalog import resolve_model
    from planner.guards import check_search_size
    from planner.scenario import load_scenario, read_structured_file

    kind = file_kind(read_structured_file(path))
    if kind == "fleet":
        from planner.fleet import load_fleet

        fleet = load_fleet(path)
        return f"fleet, {len(fleet.workloads)} workloads over {fleet.horizon_weeks} weeks"
    if kind == "study":
        from planner.studies import expand_cases, load_study
        from planner.scenario import check_catalog_names, check_fp8_requested, parse_scenario

        study = load_study(path)
        cases = expand_cases(study)
        for case in cases:  # every case must be a valid scenario: what sweep would report as an error row
            where = f"{path}: case {case.index}"
            scenario = check_fp8_requested(check_catalog_names(parse_scenario(case.scenario, where), where), where)
            check_search_size(scenario, resolve_model(scenario.workload.model))
        return f"study, {len(cases)} cases"
    scenario = load_scenario(path)
    check_search_size(scenario, resolve_model(scenario.workload.model))
    return f"scenario, {scenario.workload.kind}, {scenario.workload.model}, objective {scenario.objective.value}"


@app.command("validate")
def validate(files: list[Path] = typer.Argument(..., help="Scenario, study or fleet files (YAML or JSON).")) -> None:
    """Check scenario, study and fleet files against their schemas and the catalogs; every file is reported."""
    failed = 0
    for path in files:
        try:
            out.print(f"{escape(str(path))}: ok ({escape(validate_file(path))})", soft_wrap=True)
        except PlannerError as error:
            failed += 1
            err.print(str(error), markup=False, highlight=False, soft_wrap=True)
    if failed:
        if len(files) > 1:
            err.print(f"{failed} of {len(files)} files invalid.", markup=False, highlight=False)
        raise typer.Exit(code=2)


@app.command("schema")
def schema() -> None:
    """Print the scenario JSON Schema (for editor autocompletion)."""
    from planner.scenario import Scenario

    sys.stdout.write(json.dumps(Scenario.model_json_schema(), indent=2) + "\n")


# ---- solve ----------------------------------------------------------------------------------


@app.command("solve")
def solve_cmd(
    scenario_file: Path = typer.Argument(..., help="Scenario file (YAML or JSON)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    top: int = typer.Option(0, "--top", min=0, help="Show the K best GPU types by the objective (0 = all, best first)."),
    pareto: bool = typer.Option(False, "--pareto", help="Also compute the cost vs speed frontier (training: time to train; serving: TPOT)."),
    time_limit: float = typer.Option(20.0, "--time-limit", callback=seconds_limit, help="CP-SAT time limit per solve, seconds."),
) -> None:
    """Find the optimal plan for a scenario and explain it."""
    from planner.errors import InfeasibleError
    from planner.render import print_plan
    from planner.scenario import load_scenario
    from planner.solver import solve

    def body() -> None:
        from planner.catalog import resolve_model
        from planner.guards import check_search_size

        scenario = load_scenario(scenario_file)
        check_search_size(scenario, resolve_model(scenario.workload.model, where=f"{scenario_file}: workload.model"))
        try:
            plan = solve(scenario, time_limit_s=time_limit, alternatives=True, pareto=pareto)
        except InfeasibleError as error:
            if as_json:  # a machine reader gets the status and the explanation on stdout, and exit code 1
                sys.stdout.write(json.dumps({"scenario": scenario.name, "status": "INFEASIBLE", "explanation": str(error)}, indent=2) + "\n")
                raise typer.Exit(code=error.exit_code) from None
            raise
        if as_json:
            data = json.loads(plan.model_dump_json())
            if top:
                data["alternatives"] = data["alternatives"][:top]
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
            return
        print_plan(out, plan, top=top)

    guarded(body)


@app.command("memory")
def memory_cmd(
    model: str = typer.Option(..., help="Catalog model name or config.json path."),
    gpu: str = typer.Option(..., help="GPU id."),
    kind: str = typer.Option("inference", help="training or inference."),
    weights: str = typer.Option("bf16", help="Serving weight precision: bf16, fp8, int8, int4."),
    kv: str = typer.Option("bf16", help="KV-cache precision: bf16, fp8, int4."),
    precision: str = typer.Option("bf16", help="Training precision: bf16, fp16, fp8, fp32."),
    optimizer: str = typer.Option("adamw", help="adamw, adamw_8bit, sgd_momentum."),
    mode: str = typer.Option("pretrain", help="pretrain, full_finetune, lora, qlora."),
    tp: int = typer.Option(1, min=1, help="Tensor-parallel degree (must divide the attention heads)."),
    pp: int = typer.Option(1, min=1, help="Pipeline-parallel degree."),
    dp: int = typer.Option(1, min=1, help="Data-parallel degree (training)."),
    ep: int = typer.Option(1, min=1, help="Expert-parallel degree (training, MoE)."),
    zero: int = typer.Option(0, min=0, max=3, help="ZeRO stage 0-3."),
    ckpt: str = typer.Option("full", help="none, selective, full."),
    micro_batch: int = typer.Option(1, min=1, help="Sequences per micro-batch."),
    seq_len: int = typer.Option(4096, min=1, help="Training sequence length."),
    global_batch: int = typer.Option(0, min=0, help="Global batch in sequences (default micro_batch x dp)."),
    tokens: float = typer.Option(1e9, "--tokens", help="Training: tokens to train on (sets time to train and cost)."),
    sequence_parallel: bool = typer.Option(True, "--sequence-parallel/--no-sequence-parallel", help="Megatron sequence parallelism (TP > 1)."),
    flash_attention: bool = typer.Option(True, "--flash-attention/--no-flash-attention", help="FlashAttention (no s^2 activations)."),
    interleave: Optional[int] = typer.Option(None, "--interleave", min=1, help="Virtual pipeline stages per rank (pipeline_interleave_chunks)."),
    set_: list[str] = typer.Option([], "--set", help="Override an assumption: --set key=value (any key of catalogs/assumptions.yaml); repeatable."),
    prompt: int = typer.Option(1024, min=1, help="Prompt tokens (serving)."),
    output: int = typer.Option(256, min=1, help="Output tokens (serving)."),
    batch: int = typer.Option(1, min=1, help="Concurrent sequences per replica (serving)."),
    price_term: str = typer.Option("on_demand", help="Pricing term for the cost line."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output: fits, total, capacity, headroom and the evaluation."),
) -> None:
    """Evaluate ONE configuration: per-card memory breakdown, headroom, speed and cost. Exit 1 when it does NOT fit."""
    from planner.render import _set_overrides, evaluate_one, evaluation_summary, print_evaluation

    def body() -> None:
        evaluation, model_spec, derived = evaluate_one(
            model=model, gpu=gpu, kind=kind, weights=weights, kv=kv, precision=precision, optimizer=optimizer, mode=mode,
            tp=tp, pp=pp, dp=dp, ep=ep, zero=zero, ckpt=ckpt, micro_batch=micro_batch, seq_len=seq_len,
            global_batch=global_batch, prompt=prompt, output=output, batch=batch, price_term=price_term, tokens=tokens,
            sequence_parallel=sequence_parallel, flash_attention=flash_attention, interleave=interleave,
            assumptions=_set_overrides(set_),
        )
        if as_json:
            data = {**json.loads(evaluation.model_dump_json()), **evaluation_summary(evaluation), "model": model_spec.name,
                    "derived": derived}
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        else:
            print_evaluation(out, evaluation, model_spec, derived)
        if not evaluation.memory.fits:
            raise typer.Exit(code=1)

    guarded(body)


@app.command("fleet")
def fleet_cmd(
    fleet_file: Path = typer.Argument(..., help="Fleet file (YAML or JSON)."),
    as_json: bool = typer.Option(False, "--json", help="Print the fleet plan as JSON."),
    time_limit: float = typer.Option(30.0, "--time-limit", callback=seconds_limit, help="CP-SAT time limit, seconds."),
) -> None:
    """Plan one fleet (owned, bought, rented GPUs) for several workloads."""
    from planner.fleet import load_fleet, solve_fleet

    def body() -> None:
        from planner.errors import InfeasibleError

        fleet = load_fleet(fleet_file)
        try:
            plan = solve_fleet(fleet, time_limit_s=time_limit)
        except InfeasibleError as error:
            if as_json:  # a machine reader gets the status and the explanation on stdout, and exit code 1
                sys.stdout.write(json.dumps({"fleet": fleet.name, "status": "INFEASIBLE", "explanation": str(error)}, indent=2) + "\n")
                raise typer.Exit(code=error.exit_code) from None
            raise
        if as_json:
            sys.stdout.write(plan.model_dump_json(indent=2) + "\n")
            return
        out.print(f"[bold]{escape(plan.name)}[/bold]: total cost of ownership ${plan.total_cost_usd:,.0f} over the horizon — {plan.status}; "
                  f"CP-SAT {plan.solve_time_s:.3f} s over {plan.candidates} candidates; verified: {plan.verified}")
        from planner.render import name_column

        fleet_table = Table(title="Fleet")
        gpu_names = sorted({*plan.owned_gpus, *plan.bought_gpus, *plan.peak_rented_gpus})
        name_column(fleet_table, "GPU", gpu_names)
        for col in ("owned", "bought", "peak rented"):
            fleet_table.add_column(col, justify="right")
        for g in gpu_names:
            fleet_table.add_row(escape(g), str(plan.owned_gpus.get(g, 0)), str(plan.bought_gpus.get(g, 0)), str(plan.peak_rented_gpus.get(g, 0)))
        out.print(fleet_table)
        out.print(f"Purchases (capex amortised over the horizon): ${plan.purchase_cost_usd:,.0f}")
        table = Table(title="Workloads (cost: power or rent, USD)")
        name_column(table, "workload", [a.workload for a in plan.assignments])
        table.add_column("plan", overflow="fold")
        for col in ("source", "GPUs", "weeks", "cost"):
            table.add_column(col, justify="right", no_wrap=True)
        for a in plan.assignments:
            table.add_row(escape(a.workload), escape(a.plan), a.source, str(a.num_gpus), f"{a.weeks[0]}-{a.weeks[1]}", f"{a.cost_usd:,.0f}")
        out.print(table)

    guarded(body)


@app.command("sweep")
def sweep_cmd(
    study_file: Path = typer.Argument(..., help="Study file (YAML): a base scenario plus axes or cases."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="results.csv or results.parquet (resumable, written atomically)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, max=1024, help="Local worker processes (default: all cores; 1 = serial)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786."),
    allow_study_scheduler: bool = typer.Option(False, "--allow-study-scheduler",
                                               help="Use the study file's own scheduler: address (off: a file must not pick where work runs)."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", callback=seconds_limit, help="CP-SAT time limit per case, seconds."),
) -> None:
    """Run a what-if study: one solve per case, as a table (CSV/Parquet), with a progress bar and a summary."""
    from planner.studies import check_scheduler_address, load_study, run_study, summarize

    def body() -> None:
        if scheduler is not None:
            check_scheduler_address(scheduler)
        frame = run_study(load_study(study_file), workers=workers, scheduler=scheduler, output=output, progress=True,
                          time_limit_s=time_limit, allow_file_scheduler=allow_study_scheduler)
        table = Table(title=escape(f"{study_file.name}: {len(frame)} cases"))
        summary = summarize(frame)
        table.add_column("item", no_wrap=True)
        table.add_column("value", overflow="fold")
        for row in summary.itertuples(index=False):
            table.add_row(*(escape(str(v)) for v in row))
        out.print(table)
        if output is not None:
            out.print(f"wrote {escape(str(output))}")
        statuses = set(frame["status"].astype(str)) if len(frame) else set()
        if statuses == {"error"}:
            err.print(f"every one of the {len(frame)} cases failed with an error (see the reason column).", markup=False, highlight=False)
            raise typer.Exit(code=2)
        if statuses and statuses <= {"error", "infeasible"}:
            err.print(f"no case of the {len(frame)} has a feasible plan.", markup=False, highlight=False)
            raise typer.Exit(code=1)

    guarded(body)


@app.command("report")
def report_cmd(
    scenario_file: Path = typer.Argument(..., help="Scenario, study or fleet file (YAML or JSON)."),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="report.html or report.md (both when the .md twin is asked with --twin)."),
    twin: bool = typer.Option(True, "--twin/--no-twin", help="Also write the Markdown (or HTML) twin beside it."),
    time_limit: float = typer.Option(20.0, "--time-limit", callback=seconds_limit, help="CP-SAT time limit per solve, seconds."),
) -> None:
    """Write a procurement report (self-contained HTML with charts, and its Markdown twin)."""
    from planner.report import build_fleet_report, build_report, build_study_report, save_report
    from planner.scenario import load_scenario, read_structured_file

    def body() -> None:
        if output.suffix.lower() not in (".html", ".htm", ".md", ".markdown"):
            from planner.errors import InputError
            raise InputError(f"--output: {output} must end in .html or .md.")
        from planner.files import check_writable
        check_writable(output)
        data = read_structured_file(scenario_file)
        if isinstance(data, dict) and "base" in data and "workloads" not in data:
            from planner.studies import load_study
            load_study(scenario_file)  # a bad study file is an input error before any work
        if isinstance(data, dict) and "workloads" in data:
            from planner.fleet import load_fleet
            report = build_fleet_report(load_fleet(scenario_file), time_limit_s=time_limit)
        elif isinstance(data, dict) and "base" in data:
            report = build_study_report(scenario_file)
        else:
            from planner.catalog import resolve_model
            from planner.guards import check_search_size

            scenario = load_scenario(scenario_file)
            check_search_size(scenario, resolve_model(scenario.workload.model))
            report = build_report(scenario, time_limit_s=time_limit)
        written = [save_report(report, output)]
        if twin:
            other = output.with_suffix(".md" if output.suffix.lower() in (".html", ".htm") else ".html")
            written.append(save_report(report, other))
        out.print(escape("wrote " + ", ".join(str(p) for p in written)))

    guarded(body)


@app.command("calibrate")
def calibrate_cmd(
    runs_file: Path = typer.Argument(..., help="Measured training runs (CSV with the columns of tests/data/training_runs_published.csv)."),
    output: Path = typer.Option(..., "-o", "--output", help="Calibration overlay to write (YAML)."),
    folds: int = typer.Option(5, "--folds", help="k of the k-fold cross-validation."),
) -> None:
    """Fit kernel efficiencies to measured runs, print k-fold cross-validated error, write an overlay."""

    def body() -> None:
        from planner.calibrate import calibrate
        runs, error, summary = calibrate(runs_file, output, folds)
        table = Table(title=f"{folds}-fold cross-validated error on tokens/s/GPU (rows not in the fit)")
        for column in ("run", "gpu", "dtype", "framework", "measured tok/s/GPU", "predicted", "error %"):
            table.add_column(column)
        for run, e in zip(runs, error):
            table.add_row(run.id, run.gpu, run.dtype, run.framework, f"{run.tokens_per_s_per_gpu:,.0f}",
                          f"{run.tokens_per_s_per_gpu * (1 + e):,.0f}", f"{100 * e:+.1f}")
        out.print(table)
        for label, stats in summary.items():
            out.print(f"{label:>10}: {stats['rows']:4d} rows, median |error| {stats['median_abs_pct']:5.1f}%, "
                      f"worst {stats['worst_abs_pct']:5.1f}%")
        out.print(f"wrote {output}")

    guarded(body)


def simulator_options(spec: dict[str, Any]) -> dict[str, float]:
    """The terms of `perf.steady_state_options` the simulator replays itself (speculation, prefix hits; it samples the
    prompt lengths)."""
    return {k: spec[k] for k in ("tokens_per_step", "verify_tokens", "prefix_hit_rate")}


def simulate_pools(scenario, plan, rate: float | None, requests: int, seed: int, trace: Path | None, chart: Path | None) -> None:  # noqa: ANN001
    """`planner simulate` of a disaggregated plan: one prefill and one decode replica at their shares of the fleet rate
    (`planner.simulate.simulate_disaggregated`), against the plan's own figures."""
    import numpy as np

    from planner.catalog import resolve_gpu, resolve_model
    from planner.errors import InputError
    from planner.perf import serving_pool_costs, steady_state_options
    from planner.simulate import poisson_requests, simulate_disaggregated
    from planner.evaluate import layout_summary
    from planner.space import node_size

    if trace is not None or chart is not None:
        raise InputError("--trace/--chart: not available for a disaggregated plan yet (Poisson replay of both pools only).")
    workload, layout = scenario.workload, plan.layout
    traffic = workload.resolved_traffic()
    g = resolve_gpu(layout.gpu)
    model = resolve_model(workload.model)
    pcost, dcost, move = serving_pool_costs(model, workload, layout, g, scenario.resolved_assumptions(), node_size(scenario, g))
    fleet = (rate if rate is not None else plan.perf.request_rate_rps) / layout.replicas
    rng = np.random.default_rng(seed)
    prompts, outputs = traffic.prompt.sample(requests, rng), traffic.output.sample(requests, rng)
    pre = poisson_requests(fleet / layout.prefill_replicas, requests, prompts, outputs, seed)
    dec = poisson_requests(fleet / layout.decode_replicas, requests, prompts, outputs, seed + 1)
    result = simulate_disaggregated(pcost, dcost, pre, dec, move, progress=True, **simulator_options(steady_state_options(model, workload)))
    perf, tau = plan.perf, traffic.tokens_per_step
    out.print(f"[bold]{workload.model}[/bold]: {layout_summary(plan)}; "
              f"{fleet:.3g} requests/s per unit, {requests} requests per pool, seed {seed}")
    table = Table(title="simulated vs load-aware model (one prefill + one decode replica)")
    for col in ("metric", "simulated", "model"):
        table.add_column(col)
    for label, sim_value, model_value in (
        ("TTFT p50 s (incl. KV transfer)", result.ttft_p50_s, perf.ttft_p50_s), (f"TTFT p{perf.percentile} s", getattr(result, f"ttft_p{perf.percentile}_s"), perf.ttft_s),
        ("ITL p50 s", result.itl_p50_s, perf.tpot_p50_s * tau), (f"ITL p{perf.percentile} s", getattr(result, f"itl_p{perf.percentile}_s"), perf.tpot_s * tau),
        ("output tokens/s per decode replica", result.output_tokens_per_s, perf.output_tokens_per_s / layout.decode_replicas),
        ("decode sequences in flight per decode replica", result.decode_seqs_in_flight, perf.decode_seqs_in_flight / layout.decode_replicas),
    ):
        table.add_row(label, f"{sim_value:,.4g}", f"{model_value:,.4g}")
    out.print(table)


@app.command("simulate")
def simulate_cmd(
    scenario_file: Path = typer.Argument(..., help="Serving scenario file (YAML or JSON)."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Fleet-wide arrival rate, requests/s (default: the scenario's tokens/s target / output tokens)."),
    requests: int = typer.Option(10_000, "--requests", help="Requests to replay."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Poisson arrivals."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="CSV trace (arrival_s, prompt_tokens, output_tokens) instead of Poisson arrivals."),
    chart: Optional[Path] = typer.Option(None, "--chart", help="Write a latency-vs-load SVG here."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Layout from flags instead of solving: GPU id."),
    tp: int = typer.Option(1, "--tp", help="With --gpu: tensor-parallel degree."),
    pp: int = typer.Option(1, "--pp", help="With --gpu: pipeline-parallel degree."),
    replicas: int = typer.Option(1, "--replicas", help="With --gpu: replicas sharing the load."),
    weights: str = typer.Option("bf16", "--weights", help="With --gpu: weight precision."),
    kv: str = typer.Option("bf16", "--kv", help="With --gpu: KV-cache precision."),
    time_limit: float = typer.Option(20.0, "--time-limit", help="CP-SAT time limit when solving for the layout, seconds."),
) -> None:
    """Replay Poisson arrivals (or a trace) through a discrete-event model of the serving engine; compare with the load-aware model."""
    import numpy as np

    from planner.catalog import resolve_gpu, resolve_model
    from planner.errors import InputError
    from planner.layout import InferenceLayout
    from planner.scenario import load_scenario
    from planner.serving import iteration_cost, max_rate_rps, steady_state
    from planner.simulate import load_sweep, poisson_requests, simulate, trace_requests, write_latency_chart

    def body() -> None:
        scenario = load_scenario(scenario_file)
        workload = scenario.workload
        if workload.kind != "inference":
            raise InputError(f"{scenario_file}: simulate needs an inference workload, got workload.kind = {workload.kind}.")
        if requests < 1:
            raise InputError("--requests: must be at least 1.")
        if rate is not None and rate <= 0:
            raise InputError("--rate: must be a positive number of requests/s.")
        if gpu is not None:
            from planner.enums import KvPrecision, WeightPrecision

            for flag, value, allowed in (("--weights", weights, [w.value for w in WeightPrecision]), ("--kv", kv, [k.value for k in KvPrecision])):
                if value not in allowed:
                    raise InputError(f"{flag}: {value!r} is not a precision; allowed: {', '.join(allowed)}.")
            for flag, number in (("--tp", tp), ("--pp", pp), ("--replicas", replicas)):
                if number < 1:
                    raise InputError(f"{flag}: must be at least 1.")
            layout = InferenceLayout(gpu=resolve_gpu(gpu, "--gpu").name, weight_precision=weights, kv_precision=kv, tp=tp, pp=pp,
                                     batch=1, replicas=replicas)
        else:
            from planner.solver import solve

            plan = solve(scenario, time_limit_s=time_limit).evaluation
        traffic = workload.resolved_traffic()
        model = resolve_model(workload.model)
        prompt, output = traffic.prompt.mean_tokens(), traffic.output.mean_tokens()
        from planner.perf import steady_state_options

        spec = steady_state_options(model, workload)
        if gpu is not None:
            g = resolve_gpu(layout.gpu)
            cost = iteration_cost(model, layout, g, scenario.resolved_assumptions(), prompt_tokens=workload.prompt_tokens,
                                  output_tokens=workload.output_tokens)
            fleet_rate = rate if rate is not None else traffic.request_rate_rps or 0.0
        else:
            from planner.perf import serving_cost
            from planner.space import node_size

            layout = plan.layout  # type: ignore[union-attr]
            g = resolve_gpu(layout.gpu)
            if layout.disaggregated:
                simulate_pools(scenario, plan, rate, requests, seed, trace, chart)  # type: ignore[arg-type]
                return
            # the plan's own per-iteration cost (batch slots, KV reserve) and the fleet rate its replica count was sized for
            cost = serving_cost(model, workload, layout, g, scenario.resolved_assumptions(), node_size(scenario, g))
            fleet_rate = rate if rate is not None else plan.perf.request_rate_rps * plan.perf.replicas_needed  # type: ignore[union-attr]
        if fleet_rate <= 0:
            raise InputError("--rate: the scenario states a concurrency, not a rate; give --rate in requests/s.")
        per_replica = fleet_rate / layout.replicas
        rng = np.random.default_rng(seed)
        arrivals = trace_requests(trace) if trace is not None else poisson_requests(
            per_replica, requests, traffic.prompt.sample(requests, rng), traffic.output.sample(requests, rng), seed)
        result = simulate(cost, arrivals, progress=True, **simulator_options(spec))
        state = steady_state(cost, per_replica, prompt, output, **spec)
        out.print(f"[bold]{model.name}[/bold] on {layout.replicas} x {layout.gpu} TP{layout.tp} PP{layout.pp} "
                  f"({layout.weight_precision.value} weights, {layout.kv_precision.value} KV); {per_replica:.3g} requests/s per replica, "
                  f"max stable {float(max_rate_rps(cost, prompt, output, **spec)):.3g}; {result.requests} requests, seed {seed}")
        table = Table(title="simulated vs load-aware model (per replica)")
        for col in ("metric", "simulated", "model"):
            table.add_column(col)
        feasible = bool(state.feasible)

        def fmt(v: float) -> str:
            return ("-" if feasible else "infeasible") if v != v else f"{v:,.4g}"
        for label, sim_value, model_value in (
            ("TTFT p50 s", result.ttft_p50_s, state.ttft_p50_s), ("TTFT p90 s", result.ttft_p90_s, state.ttft_p90_s),
            ("TTFT p99 s", result.ttft_p99_s, state.ttft_p99_s), ("ITL p50 s", result.itl_p50_s, state.itl_p50_s),
            ("ITL p90 s", result.itl_p90_s, state.itl_p90_s), ("ITL p99 s", result.itl_p99_s, state.itl_p99_s),
            ("end-to-end p50 s", result.e2e_p50_s, state.e2e_mean_s), ("end-to-end p90 s", result.e2e_p90_s, float("nan")),
            ("end-to-end p99 s", result.e2e_p99_s, float("nan")),
            ("output tokens/s", result.output_tokens_per_s, state.output_tokens_per_s),
            ("decode sequences in flight", result.decode_seqs_in_flight, state.decode_seqs_in_flight),
        ):
            table.add_row(label, fmt(sim_value), fmt(float(model_value)) if label != "end-to-end p50 s" else fmt(float(model_value)) + " (mean)")
        out.print(table)
        if result.rejected:
            out.print(f"{result.rejected} requests never fit the KV cache (prompt + output above {float(cost.kv_capacity_tokens):,.0f} tokens)")
        if chart is not None:  # the scenario's traffic at 10-90% of the stable rate, model and simulator alike
            top = float(max_rate_rps(cost, prompt, output, **spec))
            count = min(requests, 2000)
            lengths = np.random.default_rng(seed)
            sweep = load_sweep(cost, traffic.prompt.sample(count, lengths), traffic.output.sample(count, lengths), np.linspace(0.1, 0.9, 5) * top,
                               requests=count, seed=seed, **simulator_options(spec))
            title = f"{model.name} on {layout.gpu} TP{layout.tp} PP{layout.pp}"
            out.print(f"wrote {write_latency_chart(chart, cost, prompt, output, sweep, title, **spec)}")

    guarded(body)


SOLVING_COMMANDS = ("solve", "fleet")
"""Commands whose first step is a CP-SAT model (`import_cp_sat_without_pandas` before they run)."""


def import_cp_sat_without_pandas() -> None:
    """Import OR-Tools' CP-SAT wrapper in the `planner` process without importing pandas.

    `ortools.sat.python.cp_model` imports pandas at load (0.37 s of a ~2 s `planner solve` on a
    2-core machine: pandas 3 is the largest import of the command) for its pandas helpers
    (`new_int_var_series`, `values` of an Index) and their type hints, none of which planner
    calls. In the command-line process, which runs no other code, a placeholder module named
    pandas (empty `Index` and `Series` classes) stands in while cp_model loads and is removed at
    once, so a later `import pandas` (a sweep, a report) loads the real one. If the import fails
    with the placeholder, nothing is kept and the command imports cp_model as usual. Library use
    (`planner.solve` from Python) never takes this path.
    """
    if "pandas" in sys.modules or "ortools.sat.python.cp_model" in sys.modules:
        return
    import types

    placeholder = types.ModuleType("pandas", "stand-in while ortools.sat.python.cp_model loads (planner.cli)")
    placeholder.Index = type("Index", (), {})  # type: ignore[attr-defined]
    placeholder.Series = type("Series", (), {})  # type: ignore[attr-defined]
    sys.modules["pandas"] = placeholder
    try:
        from ortools.sat.python import cp_model  # noqa: F401
    except Exception:  # a cp_model that needs more of pandas at load: Python drops the half-loaded module
        pass
    finally:
        if sys.modules.get("pandas") is placeholder:
            del sys.modules["pandas"]


def main() -> None:
    """Console entry point (`planner`): run the command, then end the process.

    A one-shot command has nothing left to clean up once its output is flushed, so it ends with
    `os._exit` and skips the interpreter's teardown of every imported module (~0.05 s of a 0.5 s
    `planner memory`) when that is safe: only the main thread runs and no `atexit` handler is
    registered but logging's own (run here; a Dask client or process pool registers more, and
    then Python exits normally).
    Pydantic plugins (found through package entry points, ~0.02 s to scan) are off unless the
    user's environment sets PYDANTIC_DISABLE_PLUGINS: the command line uses none.
    """
    import atexit
    import os
    import threading

    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if len(sys.argv) > 1 and sys.argv[1] in SOLVING_COMMANDS:
        import_cp_sat_without_pandas()
    try:
        app()
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    if not isinstance(code, int) and code is not None:
        raise SystemExit(code)  # a message: Python prints it and exits 1
    handlers = getattr(atexit, "_ncallbacks", lambda: -1)()
    if "logging" in sys.modules and handlers > 0:  # logging registers its own `shutdown` at import: run it here
        import logging

        logging.shutdown()
        handlers -= 1
    if threading.active_count() > 1 or handlers != 0:
        raise SystemExit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a closed pipe (`planner ... | head`): nothing more can be written
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    main()
