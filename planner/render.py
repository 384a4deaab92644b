"""Terminal rendering of plans and single evaluations (rich tables), and the `memory` command's evaluation."""

from __future__ import annotations

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from planner.catalog import resolve_gpu, resolve_model
from planner.cost import price_quote
from planner.errors import InputError
from planner.evaluate import InferenceEvaluation, TrainingEvaluation, evaluate_inference, evaluate_training
from planner.layout import InferenceLayout, TrainingLayout
from planner.memory import MemoryBreakdown, kv_tokens_that_fit, max_concurrent_sequences, max_context_for_concurrency
from planner.modelspec import ModelSpec
from planner.scenario import Assumptions, InferenceWorkload, Pricing, TrainingWorkload
from planner.solver import Plan, layout_summary

Evaluation = TrainingEvaluation | InferenceEvaluation


def memory_table(memory: MemoryBreakdown, title: str) -> Table:
    """Per-card memory breakdown: one row per term, then total, capacity and headroom (GiB)."""
    table = Table(title=title)
    table.add_column("term")
    table.add_column("GiB", justify="right")
    table.add_column("scales with")
    table.add_column("source")
    for term in memory.terms:
        table.add_row(term.name, f"{term.gib:,.2f}", term.scaling, term.source)
    table.add_row("[bold]total[/bold]", f"[bold]{memory.total_bytes / 2**30:,.2f}[/bold]", "", "")
    table.add_row("capacity", f"{memory.capacity_bytes / 2**30:,.2f}", f"card {memory.card_bytes / 2**30:,.2f} GiB", "")
    style = "green" if memory.fits else "red"
    table.add_row(f"[{style}]headroom[/{style}]", f"[{style}]{memory.headroom_bytes / 2**30:,.2f}[/{style}]", "", "")
    return table


def speed_cost_table(e: Evaluation) -> Table:
    """Speed and cost lines of an evaluation, with the price row used."""
    table = Table(title="Speed and cost", show_header=False)
    if isinstance(e, TrainingEvaluation):
        p = e.perf
        table.add_row("step time", f"{p.step_time_s:,.2f} s (compute {p.compute_s:,.2f}, elementwise {p.elementwise_s:,.2f}, "
                      f"bubble {p.bubble_s:,.2f}, TP {p.tp_comm_s:,.2f}, DP exposed {p.dp_comm_exposed_s:,.2f}, EP {p.ep_comm_s:,.2f})")
        table.add_row("tokens/s", f"{p.tokens_per_s:,.0f} total, {p.tokens_per_s_per_gpu:,.0f} per GPU")
        table.add_row("MFU / HFU", f"{p.mfu:.1%} / {p.hfu:.1%}")
        table.add_row("time to train", f"{p.time_to_train_s / 86400:,.2f} days, {p.gpu_hours:,.0f} GPU-hours")
        if e.cost_usd is not None:
            table.add_row("cost", f"${e.cost_usd:,.0f}")
    else:
        p = e.perf
        table.add_row("load per replica", f"{p.request_rate_rps:,.3g} requests/s, {p.decode_seqs_in_flight:,.1f} sequences in flight, "
                      f"utilisation {p.utilisation:.0%} ({p.replicas_needed} replica(s) needed)")
        table.add_row(f"TTFT p{p.percentile} / p50", f"{p.ttft_s * 1000:,.1f} ms / {p.ttft_p50_s * 1000:,.1f} ms")
        table.add_row(f"TPOT p{p.percentile} / p50 / mean", f"{p.tpot_s * 1000:,.2f} ms / {p.tpot_p50_s * 1000:,.2f} ms / {p.tpot_mean_s * 1000:,.2f} ms "
                      f"(bare decode step of a full batch {p.decode_step_s * 1000:,.2f} ms, {p.decode_bound}-bound)")
        table.add_row("throughput", f"{e.fleet_output_tokens_per_s:,.0f} output tokens/s ({p.output_tokens_per_s:,.0f} per replica "
                      f"= sequences in flight / mean ITL)")
        if e.usd_per_hour is not None:
            table.add_row("cost", f"${e.usd_per_hour:,.2f}/hour, ${e.usd_per_million_output_tokens:,.3f} per million output tokens")
    if e.price is not None:
        q = e.price
        table.add_row("price row", f"{q.gpu} ${q.usd_per_gpu_hour:,.3f}/GPU-h {q.term.value} at {q.provider} ({q.offering}); {q.source}; as of {q.as_of}")
    return table


def print_plan(console: Console, plan: Plan, top: int = 0) -> None:
    """The plan, why it wins, and the alternatives."""
    e = plan.evaluation
    gap = "" if plan.status == "OPTIMAL" else f", gap {plan.gap:.2%}"
    console.print(f"[bold]{plan.scenario}[/bold]: {plan.model} ({plan.kind})")
    console.print(f"Plan: [bold]{layout_summary(e)}[/bold]")
    console.print(f"Objective {plan.objective.value}: {plan.objective_value:,.4g} {plan.objective_unit} "
                  f"— {plan.status}{gap}; CP-SAT {plan.solve_time_s:.3f} s, table {plan.build_time_s:.2f} s "
                  f"({plan.candidates} legal layouts, {plan.fitting} fit and are not dominated); verified: {plan.verified}")
    console.print(memory_table(e.memory, f"Per-card memory, most loaded card (stage {e.memory.stage})"))
    for note in e.memory.notes:
        console.print(f"  note: {note}")
    console.print(speed_cost_table(e))
    alts = list(plan.alternatives)[: top or None]
    if alts:
        table = Table(title="Best plan per GPU type (why the winner wins)")
        for col in ("GPU", "plan", "GPUs", "cost", "tokens/s", "days"):
            table.add_column(col)
        for a in alts:
            if a.feasible:
                table.add_row(a.gpu, a.summary, str(a.num_gpus), f"{a.cost:,.2f}", f"{a.throughput_tokens_per_s:,.0f}",
                              f"{a.time_to_train_days:,.1f}" if a.time_to_train_days is not None else "-")
            else:
                table.add_row(a.gpu, f"[red]{a.summary}[/red]", "-", "-", "-", "-")
        console.print(table)
    if plan.pareto:
        metric = plan.pareto[0].metric
        table = Table(title=f"Pareto frontier (cost vs {metric})")
        for col in ("cost", metric, "tokens/s", "GPUs", "plan"):
            table.add_column(col)
        for p in plan.pareto:
            table.add_row(f"{p.cost:,.2f}", f"{p.metric_value:,.2f}", f"{p.throughput_tokens_per_s:,.0f}", str(p.num_gpus), p.summary)
        console.print(table)


def evaluate_one(
    *, model: str, gpu: str, kind: str, weights: str, kv: str, precision: str, optimizer: str, mode: str, tp: int, pp: int,
    dp: int, ep: int, zero: int, ckpt: str, micro_batch: int, seq_len: int, global_batch: int, prompt: int, output: int,
    batch: int, price_term: str,
) -> tuple[Evaluation, ModelSpec, list[str]]:
    """Evaluate one configuration stated by flags (the `planner memory` command)."""
    spec = resolve_model(model, where="--model")
    card = resolve_gpu(gpu, where="--gpu")
    assumptions = Assumptions.with_overrides()
    try:
        pricing = Pricing(term=price_term)
        quote = price_quote(card.name, pricing, assumptions)
        if kind == "training":
            checkpoint = {"none": 0, "selective": 1, "full": 2}.get(ckpt)
            if checkpoint is None:
                raise InputError(f"--ckpt: {ckpt!r} is not one of none, selective, full.")
            gb = global_batch or micro_batch * dp
            if gb % (micro_batch * dp):
                raise InputError(f"--global-batch: {gb} is not a multiple of micro_batch x dp = {micro_batch * dp}.")
            workload = TrainingWorkload(kind="training", model=model, mode=mode, tokens=1e9, seq_len=seq_len, global_batch_seqs=gb, optimizer=optimizer)
            layout = TrainingLayout(gpu=card.name, precision=precision, tp=tp, pp=pp, dp=dp, ep=ep, expert_tp=tp if ep == 1 else 1,
                                    zero=zero, checkpointing=checkpoint, micro_batch=micro_batch, grad_accum=gb // (micro_batch * dp))
            if pp > spec.num_layers:
                raise InputError(f"--pp: {pp} exceeds the model's {spec.num_layers} layers.")
            return evaluate_training(spec, workload, layout, card, assumptions, quote), spec, []
        if kind != "inference":
            raise InputError(f"--kind: {kind!r} is not one of training, inference.")
        workload_i = InferenceWorkload(kind="inference", model=model, prompt_tokens=prompt, output_tokens=output, concurrent_sequences=batch)
        layout_i = InferenceLayout(gpu=card.name, weight_precision=weights, kv_precision=kv, tp=tp, pp=pp, batch=batch)
        if pp > spec.num_layers:
            raise InputError(f"--pp: {pp} exceeds the model's {spec.num_layers} layers.")
        evaluation = evaluate_inference(spec, workload_i, layout_i, card, assumptions, quote)
        return evaluation, spec, serving_capacity_lines(spec, workload_i, layout_i, card, assumptions)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InputError(f"--{field.replace('_', '-')}: {first['msg']} (got {first.get('input')!r}).") from None


def serving_capacity_lines(spec: ModelSpec, workload: InferenceWorkload, layout: InferenceLayout, card, assumptions: Assumptions) -> list[str]:
    """The derived answers serving users ask: concurrency at this context, KV tokens, context at this concurrency."""
    tokens = workload.prompt_tokens + workload.output_tokens
    return [
        f"max concurrent sequences at {tokens} tokens each: {max_concurrent_sequences(spec, workload, layout, card, assumptions)}",
        f"KV-cache tokens that fit per replica: {kv_tokens_that_fit(spec, layout, card, assumptions, workload):,}",
        f"max context for {layout.batch} concurrent sequences: "
        f"{max_context_for_concurrency(spec, layout, card, assumptions, workload, layout.batch):,} tokens",
    ]


def print_evaluation(console: Console, e: Evaluation, spec: ModelSpec, derived: list[str]) -> None:
    """One configuration: layout, memory breakdown, headroom, speed, cost and serving capacity."""
    console.print(f"[bold]{spec.name}[/bold] on {layout_summary(e)}")
    verdict = "[green]fits[/green]" if e.memory.fits else "[red]does NOT fit[/red]"
    console.print(memory_table(e.memory, f"Per-card memory, most loaded card (stage {e.memory.stage}): {verdict}"))
    for note in e.memory.notes:
        console.print(f"  note: {note}")
    console.print(speed_cost_table(e))
    for line in derived:
        console.print(f"  {line}")
