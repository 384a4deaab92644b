"""Terminal rendering of plans and single evaluations (rich tables), and the `memory` command's evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from planner.catalog import resolve_gpu, resolve_model
from planner.cost import price_quote
from planner.errors import InputError
from planner.files import shorten
from planner.evaluate import InferenceEvaluation, TrainingEvaluation, evaluate_inference, evaluate_training, layout_summary, training_speed_evidence
from planner.layout import InferenceLayout, TrainingLayout
from planner.memory import MemoryBreakdown, kv_tokens_that_fit, max_concurrent_sequences, max_context_for_concurrency
from planner.modelspec import ModelSpec
from planner.scenario import Assumptions, InferenceWorkload, Pricing, TrainingWorkload

if TYPE_CHECKING:
    from planner.solver import Plan

Evaluation = TrainingEvaluation | InferenceEvaluation


def name_column(table: Table, header: str, names: list[str], **kwargs: Any) -> None:
    """A column of names that is never truncated or folded (an 80-column terminal shrinks the other columns instead)."""
    table.add_column(header, no_wrap=True, min_width=max([len(header), *(len(n) for n in names)]), **kwargs)


def memory_table(memory: MemoryBreakdown, title: str) -> Table:
    """Per-card memory breakdown: one row per term, then total, capacity and headroom (GiB)."""
    table = Table(title=escape(title))
    name_column(table, "term", [t.name for t in memory.terms])
    table.add_column("GiB", justify="right", no_wrap=True)
    table.add_column("scales with", overflow="fold")
    table.add_column("source", overflow="fold")
    for term in memory.terms:
        table.add_row(escape(term.name), f"{term.gib:,.2f}", escape(term.scaling), escape(term.source))
    table.add_row("[bold]total[/bold]", f"[bold]{memory.total_bytes / 2**30:,.2f}[/bold]", "", "")
    table.add_row("capacity", f"{memory.capacity_bytes / 2**30:,.2f}", f"card {memory.card_bytes / 2**30:,.2f} GiB", "")
    style = "green" if memory.fits else "red"
    table.add_row(f"[{style}]headroom[/{style}]", f"[{style}]{memory.headroom_bytes / 2**30:,.2f}[/{style}]", "", "")
    return table


def speed_cost_table(e: Evaluation) -> Table:
    """Speed and cost lines of an evaluation, with the price row used."""
    table = Table(title="Speed and cost", show_header=False)
    table.add_column("item", no_wrap=True)
    table.add_column("value", overflow="fold")
    if isinstance(e, TrainingEvaluation):
        p = e.perf
        table.add_row("step time", f"{p.step_time_s:,.2f} s (compute {p.compute_s:,.2f}, elementwise {p.elementwise_s:,.2f}, "
                      f"bubble {p.bubble_s:,.2f}, TP {p.tp_comm_s:,.2f}, CP {p.cp_comm_s:,.2f}, PP {p.pp_comm_s:,.2f}, "
                      f"DP exposed {p.dp_comm_exposed_s:,.2f}, EP {p.ep_comm_s:,.2f}, optimizer {p.optimizer_s:,.2f}; exposed "
                      "communication after the framework's overlap)")
        table.add_row("tokens/s", f"{p.tokens_per_s:,.0f} total, {p.tokens_per_s_per_gpu:,.0f} per GPU")
        table.add_row("MFU / HFU", f"{p.mfu:.1%} / {p.hfu:.1%}")
        table.add_row("time to train", f"{p.time_to_train_s / 86400:,.2f} days, {p.gpu_hours:,.0f} GPU-hours")
        if e.cost_usd is not None:
            table.add_row("cost", f"${e.cost_usd:,.0f}")
    else:
        p = e.perf
        lay = e.layout
        if lay.disaggregated:
            table.add_row("prefill pool", f"{lay.prefill_replicas} x (TP{lay.prefill_tp} PP{lay.prefill_pp} on {lay.prefill_stage_gpus}x "
                          f"{lay.gpu}, batch {lay.prefill_batch}), {p.request_rate_rps / lay.prefill_replicas:,.3g} requests/s each, "
                          f"utilisation {p.prefill_utilisation:.0%}")
            table.add_row("decode pool", f"{lay.decode_replicas} x (TP{lay.tp} PP{lay.pp} on {lay.stage_gpus}x {lay.gpu}, batch {lay.batch}), "
                          f"{p.request_rate_rps / lay.decode_replicas:,.3g} requests/s and "
                          f"{p.decode_seqs_in_flight / lay.decode_replicas:,.1f} sequences in flight each")
            table.add_row("KV transfer", f"{p.kv_transfer_s * 1000:,.2f} ms per prompt, prefill to decode replica (in TTFT)")
        else:
            table.add_row("load per replica", f"{p.request_rate_rps:,.3g} requests/s, {p.decode_seqs_in_flight:,.1f} sequences in flight, "
                          f"utilisation {p.utilisation:.0%} ({p.replicas_needed} replica(s) needed)")
        table.add_row(f"TTFT p{p.percentile} / p50", f"{p.ttft_s * 1000:,.1f} ms / {p.ttft_p50_s * 1000:,.1f} ms")
        table.add_row(f"TPOT p{p.percentile} / p50 / mean", f"{p.tpot_s * 1000:,.2f} ms / {p.tpot_p50_s * 1000:,.2f} ms / {p.tpot_mean_s * 1000:,.2f} ms "
                      f"(bare decode step of a full batch {p.decode_step_s * 1000:,.2f} ms, {p.decode_bound}-bound)")
        unit = "disaggregated unit" if lay.disaggregated else "replica"
        table.add_row("throughput", f"{e.fleet_output_tokens_per_s:,.0f} output tokens/s ({p.output_tokens_per_s:,.0f} per {unit} "
                      f"= sequences in flight / mean ITL)")
        if e.usd_per_hour is not None:
            table.add_row("cost", f"${e.usd_per_hour:,.2f}/hour, ${e.usd_per_million_output_tokens:,.3f} per million output tokens")
    if e.price is not None:
        q = e.price
        table.add_row("price row", escape(f"{q.gpu} ${q.usd_per_gpu_hour:,.3f}/GPU-h {q.term.value} at {q.provider} ({q.offering}); "
                                          f"{q.source}; as of {q.as_of}"))
    return table


def print_plan(console: Console, plan: Plan, top: int = 0) -> None:
    """The plan, why it wins, and the alternatives (best objective first; `top` keeps the K best)."""
    e = plan.evaluation
    gap = "" if plan.status == "OPTIMAL" else f", gap {plan.gap:.2%}"
    console.print(f"[bold]{escape(plan.scenario)}[/bold]: {escape(plan.model)} ({plan.kind})")
    console.print(f"Plan: [bold]{escape(layout_summary(e))}[/bold]")
    console.print(f"Objective {plan.objective.value}: {plan.objective_value:,.4g} {plan.objective_unit} "
                  f"— {plan.status}{gap}; CP-SAT {plan.solve_time_s:.3f} s, table {plan.build_time_s:.2f} s "
                  f"({plan.candidates} legal layouts, {plan.fitting} fit and are not dominated); verified: {plan.verified}")
    console.print(memory_table(e.memory, f"Per-card memory, most loaded card (stage {e.memory.stage})"))
    for note in e.memory.notes:
        console.print(f"  note: {escape(note)}")
    console.print(speed_cost_table(e))
    if plan.speed_evidence is not None:
        console.print(f"  {escape(plan.speed_evidence.line())}")
    alts = list(plan.alternatives)[: top or None]
    if alts:
        title = f"Best {len(alts)} GPU types by {plan.objective.value}" if top else "Best plan per GPU type, best first (why the winner wins)"
        table = Table(title=title)
        name_column(table, "GPU", [a.gpu for a in alts])
        table.add_column("plan", overflow="fold")
        for col in ("GPUs", "cost", "tokens/s", "days"):
            table.add_column(col, justify="right", no_wrap=True)
        for a in alts:
            if a.feasible:
                table.add_row(escape(a.gpu), escape(a.summary), str(a.num_gpus), f"{a.cost:,.2f}", f"{a.throughput_tokens_per_s:,.0f}",
                              f"{a.time_to_train_days:,.1f}" if a.time_to_train_days is not None else "-")
            else:
                table.add_row(escape(a.gpu), f"[red]{escape(a.summary)}[/red]", "-", "-", "-", "-")
        console.print(table)
    if plan.pareto:
        metric = plan.pareto[0].metric
        table = Table(title=escape(f"Pareto frontier (cost vs {metric})"))
        for col in ("cost", metric, "tokens/s", "GPUs"):
            table.add_column(escape(col), justify="right", no_wrap=True)
        table.add_column("plan", overflow="fold")
        for p in plan.pareto:
            table.add_row(f"{p.cost:,.2f}", f"{p.metric_value:,.2f}", f"{p.throughput_tokens_per_s:,.0f}", str(p.num_gpus), escape(p.summary))
        console.print(table)


def _set_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`key=value` strings as assumption overrides (values parsed as YAML scalars: 0.9, 2, true)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set: {shorten(pair)} is not key=value (keys: see catalogs/assumptions.yaml).")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise InputError(f"--set: {shorten(pair)}: cannot read the value.") from None
        if isinstance(value, (dict, list)) or value is None:
            raise InputError(f"--set: {shorten(pair)}: the value must be a number or true/false.")
        out[key.strip()] = value
    return out


def evaluate_one(
    *, model: str, gpu: str, kind: str = "inference", weights: str = "bf16", kv: str = "bf16", precision: str = "bf16",
    optimizer: str = "adamw", mode: str = "pretrain", tp: int = 1, pp: int = 1, dp: int = 1, ep: int = 1, zero: int = 0,
    ckpt: str = "full", micro_batch: int = 1, seq_len: int = 4096, global_batch: int = 0, prompt: int = 1024,
    output: int = 256, batch: int = 1, price_term: str = "on_demand", tokens: float = 1e9, sequence_parallel: bool = True,
    flash_attention: bool = True, interleave: int | None = None, assumptions: dict[str, Any] | None = None,
) -> tuple[Evaluation, ModelSpec, list[str]]:
    """Evaluate one configuration stated by flags (the `memory` command and `planner.evaluate`).

    Structural rules are checked, not guessed: TP divides the attention heads, PP <= layers, EP
    divides the routed experts and DP, FP8 only on cards with FP8 tensor cores. `assumptions`
    overrides catalogs/assumptions.yaml by key; `interleave` sets pipeline_interleave_chunks.
    """
    spec = resolve_model(model, where="--model")
    card = resolve_gpu(gpu, where="--gpu")
    overrides = dict(assumptions or {})
    if interleave is not None:
        overrides["pipeline_interleave_chunks"] = interleave
    try:
        assumed = Assumptions.with_overrides(overrides)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InputError(f"--set {field}: {first['msg']} (got {shorten(first.get('input'))}).") from None
    for flag, value in (("--tp", tp), ("--pp", pp), ("--dp", dp), ("--ep", ep), ("--micro-batch", micro_batch), ("--batch", batch),
                        ("--seq-len", seq_len), ("--prompt", prompt), ("--output", output)):
        if not 1 <= value <= 10**7:
            raise InputError(f"{flag}: must be an integer from 1 to 10,000,000 (got {value}).")
    if spec.num_heads % tp:
        divisors = [d for d in range(1, min(spec.num_heads, 1024) + 1) if spec.num_heads % d == 0]
        raise InputError(f"--tp: {tp} does not divide the {spec.num_heads} attention heads of {spec.name}; "
                         f"allowed: {', '.join(map(str, divisors[:16]))}.")
    if pp > spec.num_layers:
        raise InputError(f"--pp: {pp} exceeds the model's {spec.num_layers} layers.")
    if ep > 1 and (not spec.is_moe or spec.n_routed_experts % ep):
        raise InputError(f"--ep: {ep} must divide the {spec.n_routed_experts} routed experts of {spec.name} (1 for dense models).")
    if not card.supports_fp8:
        for flag, value in (("--weights", weights), ("--kv", kv), ("--precision", precision)):
            if (kind == "training") == (flag == "--precision") and str(value).lower() == "fp8":
                raise InputError(f"{flag}: fp8 needs FP8 tensor cores, which {card.name} lacks; use bf16, int8 or int4, or a GPU with FP8.")
    if not 0 < tokens <= 1e16:
        raise InputError(f"--tokens: must be between 0 and 1e16 (got {tokens:g}).")
    try:
        pricing = Pricing(term=price_term)
        quote = price_quote(card.name, pricing, assumed)
        if kind == "training":
            checkpoint = {"none": 0, "selective": 1, "full": 2}.get(ckpt)
            if checkpoint is None:
                raise InputError(f"--ckpt: {shorten(ckpt)} is not one of none, selective, full.")
            if dp % ep:
                raise InputError(f"--ep: {ep} must divide --dp {dp}.")
            gb = global_batch or micro_batch * dp
            if gb % (micro_batch * dp):
                raise InputError(f"--global-batch: {gb} is not a multiple of micro_batch x dp = {micro_batch * dp}.")
            workload = TrainingWorkload(kind="training", model=model, mode=mode, tokens=tokens, seq_len=seq_len, global_batch_seqs=gb,
                                        optimizer=optimizer)
            layout = TrainingLayout(gpu=card.name, precision=precision, tp=tp, pp=pp, dp=dp, ep=ep, expert_tp=tp if ep == 1 else 1,
                                    zero=zero, checkpointing=checkpoint, micro_batch=micro_batch, grad_accum=gb // (micro_batch * dp),
                                    sequence_parallel=sequence_parallel, flash_attention=flash_attention)
            evaluation_t = evaluate_training(spec, workload, layout, card, assumed, quote)
            return evaluation_t, spec, [training_speed_evidence(evaluation_t, spec, assumed).line()]
        if kind != "inference":
            raise InputError(f"--kind: {shorten(kind)} is not one of training, inference.")
        workload_i = InferenceWorkload(kind="inference", model=model, prompt_tokens=prompt, output_tokens=output, concurrent_sequences=batch)
        layout_i = InferenceLayout(gpu=card.name, weight_precision=weights, kv_precision=kv, tp=tp, pp=pp, batch=batch)
        evaluation = evaluate_inference(spec, workload_i, layout_i, card, assumed, quote)
        return evaluation, spec, serving_capacity_lines(spec, workload_i, layout_i, card, assumed)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        flag = {"weight_precision": "weights", "kv_precision": "kv", "global_batch_seqs": "global-batch", "term": "price-term",
                "checkpointing": "ckpt", "prompt_tokens": "prompt", "output_tokens": "output"}.get(field, field)
        raise InputError(f"--{flag.replace('_', '-')}: {first['msg']} (got {shorten(first.get('input'))}).") from None


def evaluation_summary(e: Evaluation) -> dict[str, Any]:
    """The stable headline of one evaluation: fits, per-card total, capacity, headroom (GiB) and the layout in one line."""
    m = e.memory
    return {"fits": m.fits, "total_gib": m.total_bytes / 2**30, "capacity_gib": m.capacity_bytes / 2**30,
            "card_gib": m.card_bytes / 2**30, "headroom_gib": m.headroom_bytes / 2**30, "summary": layout_summary(e)}


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
    """One configuration: layout, memory breakdown, headroom, speed and cost and serving capacity."""
    console.print(f"[bold]{escape(spec.name)}[/bold] on {escape(layout_summary(e))}")
    verdict = "fits" if e.memory.fits else "does NOT fit"
    console.print(memory_table(e.memory, f"Per-card memory, most loaded card (stage {e.memory.stage}): {verdict}"))
    for note in e.memory.notes:
        console.print(f"  note: {escape(note)}")
    console.print(speed_cost_table(e))
    for line in derived:
        console.print(f"  {escape(line)}")
