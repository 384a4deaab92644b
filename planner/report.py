"""Procurement report: the recommended plan, its alternatives, charts and every source, in one file.

A buyer needs more than the optimum: what the next-best GPU type costs, what each pricing term
(on-demand, spot, reserved, owned) changes, how much memory the plan leaves, the cost/speed
trade-off, how fragile the choice is to prices and load, and where every number comes from.
`build_report` gathers those by direct `planner.solver.solve` calls (the main solve with its
alternatives and Pareto frontier, one solve per pricing term, a few sensitivity solves);
`render_html` and `render_markdown` turn the same blocks into a self-contained page (charts as
inline SVG or base64 data URIs; no external URL, font or script), and `write_report` writes one
atomically (temp file + `os.replace`, so a reader never sees half a report).
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import io
import platform
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from planner.catalog import GpuSpec, model_entry, resolve_gpu
from planner.catalog import load_onprem
from planner.cost import (
    HOURS_PER_MONTH, PriceQuote, break_even_month, hosting_usd_per_gpu_hour, instances_needed, offer_for, pool_instances, power_usd_per_gpu_hour,
    price_quote, rented_gpus,
)
from planner.scenario import Pricing
from planner.enums import PriceTerm
from planner.files import write_atomically
from planner.fleet import FleetPlan, FleetScenario, fleet_timeline, purchase_reasons, solve_fleet
from planner.errors import InputError, PlannerError
from planner.evaluate import InferenceEvaluation, TrainingEvaluation
from planner.scenario import Assumptions, InferenceWorkload, Scenario, TrainingWorkload
from planner.solver import DEFAULT_TIME_LIMIT_S, Plan, layout_summary, plan_cost, plan_throughput, solve
from planner.units import BYTES_PER_GIB, HOURS_PER_YEAR

Evaluation = TrainingEvaluation | InferenceEvaluation

TERMS: tuple[PriceTerm, ...] = (PriceTerm.ON_DEMAND, PriceTerm.SPOT, PriceTerm.RESERVED_1Y, PriceTerm.RESERVED_3Y, PriceTerm.ON_PREM)
"""Pricing terms compared in the report, in the order a buyer weighs commitment."""

ON_PREM_NOTE = ("on_prem cost is total cost of ownership: capex amortised straight-line over the expected life "
                "plus wall power x PUE x $/kWh, at full utilisation (catalogs/onprem.csv); it excludes staff, space and financing.")


# ---- data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComparisonRow:
    """One line of a comparison table: the best plan for a GPU type, pricing term or what-if, or why none."""

    label: str
    feasible: bool
    summary: str
    gpu: str | None = None
    num_gpus: int | None = None
    cost: float | None = None
    throughput_tokens_per_s: float | None = None
    time_to_train_days: float | None = None
    usd_per_gpu_hour: float | None = None
    note: str = ""
    recommended: bool = False


@dataclass(frozen=True)
class Report:
    """Everything a report shows, computed once and rendered to HTML or Markdown."""

    scenario: Scenario
    plan: Plan
    generated_utc: str
    recommendation: str
    by_gpu: tuple[ComparisonRow, ...]
    by_term: tuple[ComparisonRow, ...]
    sensitivity: tuple[ComparisonRow, ...]
    prices: tuple[tuple[str, PriceQuote], ...]
    gpus: tuple[GpuSpec, ...]
    assumptions: tuple[tuple[str, str, str], ...]
    provenance: tuple[tuple[str, str], ...]
    memory_svg: str
    pareto_svg: str
    extra_solves: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    plain: str = ""
    costs: tuple[tuple[str, str, str], ...] = ()

    @property
    def training(self) -> bool:
        """True for a training scenario (costs are $ per run), False for serving ($/hour)."""
        return self.plan.kind == "training"


# ---- formatting ----------------------------------------------------------------------------


def money(usd: float | None) -> str:
    """Dollars as the report prints them: whole dollars from $1,000, cents below, 4 decimals under $1."""
    if usd is None:
        return "n/a"
    if usd == 0:
        return "$0"
    if abs(usd) >= 1000:
        return f"${usd:,.0f}"
    if abs(usd) >= 1:
        return f"${usd:,.2f}"
    return f"${usd:.4f}"


def cost_text(usd: float | None, training: bool) -> str:
    """A plan's cost: $ for a training run, $/h for a serving fleet."""
    return money(usd) if training or usd is None else f"{money(usd)}/h"


def _num(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _days(d: float | None) -> str:
    return "n/a" if d is None else f"{d:,.1f} d"


def _tokens(n: float) -> str:
    """Token counts as people say them: 1T, 300B, 5M."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if n >= scale:
            return f"{n / scale:,.4g}{suffix}"
    return f"{n:,.0f}"


def _version(dist: str) -> str:
    """Installed version of a distribution; 'unknown' when it is not installed (e.g. run from a source tree)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _reason(err: PlannerError, scenario: Scenario) -> str:
    """The first line of a planner error, without the scenario-name prefix, plus the line naming a price or limit."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [type(err).__name__]
    first = lines[0].removeprefix(f"{scenario.name}: ")
    detail = [ln for ln in lines[1:] if "price" in ln or ln.startswith("- ")][:1]
    if detail and "(0 legal layouts" in first and "price" in detail[0]:
        return detail[0]  # nothing was evaluated because nothing is priced: memory is not the reason
    return " ".join([first, *detail])


# ---- rows from plans -----------------------------------------------------------------------


def _precision(e: Evaluation) -> str:
    lay = e.layout
    return lay.precision.value if isinstance(e, TrainingEvaluation) else f"{lay.weight_precision.value} weights, {lay.kv_precision.value} KV"


def _row_from_plan(label: str, plan: Plan, note: str = "", recommended: bool = False) -> ComparisonRow:
    e = plan.evaluation
    if e.price is not None:
        servers, k, paid = _servers(e)
        unit = "servers bought" if e.price.term is PriceTerm.ON_PREM else "instances rented"
        note = "; ".join(x for x in (note, f"{servers} x {k}-GPU {unit}, {paid} GPUs paid for") if x)
    return ComparisonRow(
        label=label, feasible=True, summary=layout_summary(e), gpu=e.layout.gpu, num_gpus=e.layout.num_gpus, cost=plan_cost(e),
        throughput_tokens_per_s=plan_throughput(e),
        time_to_train_days=e.perf.time_to_train_s / 86400.0 if isinstance(e, TrainingEvaluation) else None,
        usd_per_gpu_hour=e.price.usd_per_gpu_hour if e.price else None, note=note, recommended=recommended,
    )


def _with_term(scenario: Scenario, term: PriceTerm) -> Scenario:
    return scenario.model_copy(update={"pricing": scenario.pricing.model_copy(update={"term": term})})


def _solve_or_reason(scenario: Scenario, time_limit_s: float) -> Plan | str:
    try:
        return solve(scenario, time_limit_s=time_limit_s, alternatives=False, pareto=False)
    except PlannerError as err:
        return _reason(err, scenario)


def _by_gpu(scenario: Scenario, plan: Plan) -> list[ComparisonRow]:
    """plan.alternatives with the $/GPU-hour each GPU is priced at (from the same price lookup the solver used)."""
    assumptions = scenario.resolved_assumptions()
    rows = []
    for alt in plan.alternatives:
        quote = price_quote(alt.gpu, scenario.pricing, assumptions)
        rows.append(ComparisonRow(
            label=alt.gpu, feasible=alt.feasible, summary=alt.summary, gpu=alt.gpu, num_gpus=alt.num_gpus, cost=alt.cost,
            throughput_tokens_per_s=alt.throughput_tokens_per_s, time_to_train_days=alt.time_to_train_days,
            usd_per_gpu_hour=quote.usd_per_gpu_hour if quote else None,
            note=f"{quote.provider} {quote.offering}" if quote and alt.feasible else "",
            recommended=alt.feasible and alt.summary == layout_summary(plan.evaluation),
        ))
    return rows


def _by_term(scenario: Scenario, plan: Plan, time_limit_s: float) -> tuple[list[ComparisonRow], dict[str, Plan]]:
    """Best plan under each pricing term (the scenario's own term reuses the main plan)."""
    rows, plans = [], {}
    for term in TERMS:
        own = term is scenario.pricing.term
        result: Plan | str = plan if own else _solve_or_reason(_with_term(scenario, term), time_limit_s)
        note = "scenario's term" if own else ""
        if term is PriceTerm.ON_PREM:
            note = "; ".join(x for x in (note, "TCO: capex amortised over the life + power") if x)
        if scenario.pricing.usd_per_gpu_hour:
            note = "; ".join(x for x in (note, "scenario price overrides apply to every term") if x)
        if isinstance(result, str):
            rows.append(ComparisonRow(label=term.value, feasible=False, summary=result, note=note))
        else:
            plans[term.value] = result
            rows.append(_row_from_plan(term.value, result, note, recommended=own))
    return rows, plans


def _what_ifs(scenario: Scenario) -> list[tuple[str, Scenario]]:
    """The built-in sensitivity study: prices -30%/+30%, and the load or deadline the plan hinges on."""
    p = scenario.pricing
    cases = [
        ("price x0.7", scenario.model_copy(update={"pricing": p.model_copy(update={"price_multiplier": p.price_multiplier * 0.7})})),
        ("price x1.3", scenario.model_copy(update={"pricing": p.model_copy(update={"price_multiplier": p.price_multiplier * 1.3})})),
    ]
    w = scenario.workload
    if isinstance(w, InferenceWorkload):
        cases.append((f"prompt_tokens x2 ({w.prompt_tokens} -> {w.prompt_tokens * 2})",
                      scenario.model_copy(update={"workload": w.model_copy(update={"prompt_tokens": w.prompt_tokens * 2})})))
    elif scenario.constraints.deadline_days:
        d = scenario.constraints.deadline_days
        c = scenario.constraints.model_copy(update={"deadline_days": d * 0.5})
        cases.append((f"deadline_days x0.5 ({d:g} -> {d * 0.5:g})", scenario.model_copy(update={"constraints": c})))
    else:
        assert isinstance(w, TrainingWorkload)
        cases.append((f"seq_len x2 ({w.seq_len} -> {w.seq_len * 2})",
                      scenario.model_copy(update={"workload": w.model_copy(update={"seq_len": w.seq_len * 2})})))
    return cases


def _change(base: Plan, other: Plan, training: bool) -> str:
    """How a what-if's plan differs from the recommendation, in words."""
    a, b = base.evaluation, other.evaluation
    parts = []
    if a.layout.gpu != b.layout.gpu:
        parts.append(f"{b.layout.gpu} instead of {a.layout.gpu}")
    if a.layout.num_gpus != b.layout.num_gpus:
        parts.append(f"{a.layout.num_gpus} -> {b.layout.num_gpus} GPUs")
    if not parts:
        parts.append("same GPU type and count" + ("" if layout_summary(a) == layout_summary(b) else ", other layout"))
    ca, cb = plan_cost(a), plan_cost(b)
    if ca and cb is not None:
        parts.append(f"cost {cost_text(ca, training)} -> {cost_text(cb, training)} ({(cb / ca - 1) * 100:+.0f}%)")
    return "; ".join(parts)


def _sensitivity(scenario: Scenario, plan: Plan, time_limit_s: float) -> list[ComparisonRow]:
    training = plan.kind == "training"
    rows = []
    for label, what_if in _what_ifs(scenario):
        result = _solve_or_reason(what_if, time_limit_s)
        if isinstance(result, str):
            rows.append(ComparisonRow(label=label, feasible=False, summary=result, note="no plan"))
        else:
            rows.append(_row_from_plan(label, result, note=_change(plan, result, training)))
    return rows


# ---- charts --------------------------------------------------------------------------------

TERM_COLOURS = {
    "weights": "#4c72b0", "embeddings_16bit": "#8172b3", "gradients": "#dd8452", "optimizer_states": "#c44e52",
    "activations": "#55a868", "logits": "#937860", "kv_cache": "#da8bc3", "workspace": "#8c8c8c", "reserve": "#ccb974",
}


def _svg(fig: Any, salt: str) -> str:
    """A figure as bare inline SVG: no XML prolog, DOCTYPE (it names a w3.org URL), metadata or comments."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    return re.sub(r"<!--.*?-->", "", text, flags=re.S).strip()


def _pyplot() -> Any:
    """pyplot on the Agg backend (no display, no GUI toolkit), imported only when a chart is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # a '$' in a user's name is text, never mathtext to parse
    import matplotlib.pyplot as plt

    return plt


def memory_chart(e: Evaluation) -> str:
    """Stacked horizontal bar of the most loaded card's memory terms plus headroom, GiB, with the capacity line."""
    plt = _pyplot()
    mem = e.memory
    fig, ax = plt.subplots(figsize=(9.0, 2.8))
    left = 0.0
    fallback = plt.get_cmap("tab20").colors
    for i, term in enumerate(mem.terms):
        gib = term.bytes / BYTES_PER_GIB
        ax.barh([0], [gib], left=[left], color=TERM_COLOURS.get(term.name, fallback[i % len(fallback)]), edgecolor="white",
                label=f"{term.name} {gib:,.1f}")
        left += gib
    headroom = max(0.0, mem.headroom_bytes / BYTES_PER_GIB)
    ax.barh([0], [headroom], left=[left], color="#f2f2f2", edgecolor="#999999", hatch="//", label=f"headroom {headroom:,.1f}")
    cap, card = mem.capacity_bytes / BYTES_PER_GIB, mem.card_bytes / BYTES_PER_GIB
    ax.axvline(cap, color="black", linewidth=1.5)
    ax.text(cap, 0.45, f" usable {cap:,.1f} GiB", va="bottom", ha="right" if cap > 0.8 * card else "left", fontsize=8)
    if abs(card - cap) > 1e-6:
        ax.axvline(card, color="black", linestyle="--", linewidth=1)
        ax.text(card, -0.45, f" card {card:,.1f} GiB", va="top", ha="right", fontsize=8)
    ax.set_xlim(0, max(card, left + headroom) * 1.02)
    ax.set_ylim(-0.6, 0.6)
    ax.set_yticks([0], [f"{e.layout.gpu}\n(stage {mem.stage})"])
    ax.set_xlabel("GiB per card (most loaded card)")
    ax.set_title(f"Per-card memory: {e.layout.num_gpus}x {e.layout.gpu}", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=4, fontsize=8, frameon=False)
    svg = _svg(fig, "planner-memory")
    plt.close(fig)
    return svg


def _short(summary: str) -> str:
    """'1x (2x H100-SXM) w=int8 kv=fp8 ...' -> '2x H100-SXM int8'; '128x H100-SXM fp8 tp=4 ...' -> '128x H100-SXM fp8'."""
    m = re.match(r"(\d+)x \((\d+)x (\S+)\) w=(\S+)", summary)
    if m:
        return f"{int(m.group(1)) * int(m.group(2))}x {m.group(3)} {m.group(4)}"
    return " ".join(summary.split()[:3])


def pareto_chart(plan: Plan) -> str:
    """Cost against speed of plan.pareto (training: time to train; serving: TPOT at the SLO percentile under load), recommendation highlighted."""
    plt = _pyplot()
    e = plan.evaluation
    training = isinstance(e, TrainingEvaluation)
    pts = list(plan.pareto)
    xs = [p.time_to_train_days or 0.0 for p in pts] if training else [p.metric_value for p in pts]
    ys = [p.cost for p in pts]
    rx = e.perf.time_to_train_s / 86400.0 if training else e.perf.tpot_s * 1000.0
    ry = plan_cost(e) or 0.0
    fig, ax = plt.subplots(figsize=(9.0, 5.0))
    if pts:
        # Points are ordered by the traded metric (time to train, or TPOT under load), so a line is the frontier.
        style, what = ("-o", "Pareto frontier (cheapest plan at each time to train)") if training else ("-o", "Pareto frontier (cheapest plan at each TPOT)")
        ax.plot(xs, ys, style, color="#4c72b0", markersize=5, label=what)
        for i, (x, y, p) in enumerate(zip(xs, ys, pts)):
            ax.annotate(_short(p.summary), (x, y), textcoords="offset points", xytext=(6, 6 if i % 2 == 0 else -12), fontsize=7)
    ax.plot([rx], [ry], marker="*", markersize=16, color="#c44e52", linestyle="none", label=f"recommended: {_short(layout_summary(e))}")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis, values in ((ax.xaxis, [*xs, rx]), (ax.yaxis, [*ys, ry])):
        if min(values) > 0 and max(values) / min(values) > 20:  # frontiers span orders of magnitude in GPUs
            (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_minor_formatter(NullFormatter())
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:g}"))  # plain numbers, no 1e6 offset
    ax.set_xlabel("time to train, days" if training else f"TPOT p{e.perf.percentile} under load, ms")
    ax.set_ylabel("cost of the run, USD" if training else "fleet cost, USD per hour")
    ax.set_title("Cost vs time to train" if training else "Cost vs TPOT", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    svg = _svg(fig, "planner-pareto")
    plt.close(fig)
    return svg


# ---- building ------------------------------------------------------------------------------


def _recommendation(scenario: Scenario, plan: Plan) -> str:
    """The recommendation paragraph, plain text (escaped at render time)."""
    e = plan.evaluation
    lay = e.layout
    price = e.price
    priced = f" at {money(price.usd_per_gpu_hour)}/GPU-hour ({price.provider} {price.offering}, {price.term.value})" if price else ""
    status = f"{plan.status} (gap {plan.gap:.2%})" if plan.status == "FEASIBLE" else "OPTIMAL (proved, gap 0%)"
    head = f"Recommended: {lay.num_gpus}x {lay.gpu}, layout {layout_summary(e)}, precision {_precision(e)}."
    if isinstance(e, TrainingEvaluation):
        w = scenario.workload
        assert isinstance(w, TrainingWorkload)
        body = (f" Training on {_tokens(w.tokens)} tokens takes {e.perf.time_to_train_s / 86400.0:,.1f} days at "
                f"{e.perf.tokens_per_s:,.0f} tokens/s (MFU {e.perf.mfu:.1%}), {e.perf.gpu_hours:,.0f} GPU-hours, "
                f"costing {money(e.cost_usd)} for the run{priced}.")
        if plan.speed_evidence is not None:
            body += f" The time and cost carry the {plan.speed_evidence.line()}."
    elif lay.disaggregated:
        body = (f" A prefill pool of {lay.prefill_replicas * lay.replicas} x {lay.prefill_stage_gpus} GPU(s) and a decode pool of "
                f"{lay.decode_replicas * lay.replicas} x {lay.stage_gpus} GPU(s) (disaggregated, KV transfer "
                f"{e.perf.kv_transfer_s * 1000:.2f} ms) serve {e.fleet_output_tokens_per_s:,.0f} output tokens/s under load "
                f"({e.perf.decode_seqs_in_flight:,.0f} sequences in flight, utilisation {e.perf.utilisation:.0%}; TTFT p{e.perf.percentile} "
                f"{e.perf.ttft_s:.3f} s, TPOT p{e.perf.percentile} {e.perf.tpot_s * 1000:.1f} ms) for {money(e.usd_per_hour)}/h, "
                f"{money(e.usd_per_million_output_tokens)} per million output tokens{priced}.")
    else:
        body = (f" {lay.replicas} replica(s) of {lay.gpus_per_replica} GPU(s) serve {e.fleet_output_tokens_per_s:,.0f} output tokens/s "
                f"under load ({e.perf.request_rate_rps:,.3g} requests/s per replica, {e.perf.decode_seqs_in_flight:,.0f} sequences in flight, "
                f"utilisation {e.perf.utilisation:.0%}; TTFT p{e.perf.percentile} {e.perf.ttft_s:.3f} s, "
                f"TPOT p{e.perf.percentile} {e.perf.tpot_s * 1000:.1f} ms) for {money(e.usd_per_hour)}/h, "
                f"{money(e.usd_per_million_output_tokens)} per million output tokens{priced}.")
    tail = (f" Solver: {status} on {plan.objective.value}, {plan.solve_time_s:.2f} s; {plan.fitting:,} fitting of "
            f"{plan.candidates:,} legal layouts; re-evaluated and verified.")
    return head + body + tail


# ---- for the reader who pays ---------------------------------------------------------------


def _rentals(e: Evaluation) -> list[tuple[int, int, PriceQuote | None, str]]:
    """(instances or servers, GPUs per instance, price row, role) per kind of instance a plan rents: each serving replica
    rents its own whole instances; a disaggregated unit's prefill and decode pools each their own cheapest offer
    (`Table.priced`: `prefill_price` and `price`)."""
    q = e.price
    k = q.gpus_per_instance if q else 1
    if isinstance(e, InferenceEvaluation):
        lay = e.layout
        if lay.disaggregated:
            pq = e.prefill_price or q
            pk = pq.gpus_per_instance if pq else 1
            return [(int(pool_instances(lay.replicas, lay.prefill_replicas, lay.prefill_stage_gpus, pk)), pk, pq, "prefill pool"),
                    (int(pool_instances(lay.replicas, lay.decode_replicas, lay.stage_gpus, k)), k, q, "decode pool")]
        return [(int(lay.replicas * instances_needed(lay.gpus_per_replica, k)), k, q, "")]
    return [(int(instances_needed(e.layout.num_gpus, k)), k, q, "")]


def _servers(e: Evaluation) -> tuple[int, str, int]:
    """(instances or servers, GPUs per instance as text: "8", or "8- and 2-" when the pools rent different sizes, GPUs
    paid for) of a plan (`_rentals`)."""
    rentals = _rentals(e)
    sizes = list(dict.fromkeys(k for _, k, _, _ in rentals))
    return sum(n for n, _, _, _ in rentals), "- and ".join(str(k) for k in sizes), sum(n * k for n, k, _, _ in rentals)


def _setup(e: Evaluation) -> str:
    lay = e.layout
    if isinstance(e, InferenceEvaluation):
        parts = [f"{lay.weight_precision.value.upper()} weights", f"{lay.kv_precision.value.upper()} KV cache", f"tensor-parallel {lay.tp}"]
        if lay.disaggregated:
            return ", ".join(parts[:2] + [f"prefill pool {lay.prefill_replicas * lay.replicas} x TP{lay.prefill_tp} PP{lay.prefill_pp} "
                                          f"(batch {lay.prefill_batch})", f"decode pool {lay.decode_replicas * lay.replicas} x TP{lay.tp} "
                                          f"PP{lay.pp} (batch {lay.batch})"])
        if lay.pp > 1:
            parts.append(f"pipeline-parallel {lay.pp}")
        parts.append(f"{lay.replicas} replica{'s' if lay.replicas != 1 else ''} of batch {lay.batch}")
        return ", ".join(parts)
    return f"{lay.precision.value.upper()} training with TP {lay.tp} x PP {lay.pp} x DP {lay.dp}, ZeRO-{int(lay.zero)}"


def plain_recommendation(scenario: Scenario, plan: Plan) -> str:
    """One sentence a buyer can act on: rent or buy how many servers of what, at what price, set up how, for how much."""
    e = plan.evaluation
    q = e.price
    _, _, paid = _servers(e)
    gpu = e.layout.gpu

    def servers_of(n: int, k: int, quote: PriceQuote, role: str) -> str:
        noun = "server" if n == 1 else "servers"
        what = f" for the {role}" if role else ""
        if quote.term is PriceTerm.ON_PREM:
            return f"{n} {noun} of {k}x {gpu}{what} ({money(quote.usd_per_instance_hour)}/h each as amortised capex, power and hosting)"
        where = "" if quote.provider == "scenario" else f" ({quote.provider} {quote.offering}, {quote.term.value.replace('_', '-')})"
        return f"{n} {noun} of {k}x {gpu}{what}{where} at {money(quote.usd_per_instance_hour)}/h each"

    if q is not None:
        verb = "Buy" if q.term is PriceTerm.ON_PREM else "Rent"
        head = f"{verb} " + " and ".join(servers_of(n, k, quote or q, role) for n, k, quote, role in _rentals(e) if n)
    else:
        head = f"Use {paid}x {gpu}"
    if isinstance(e, InferenceEvaluation):
        usd_h = e.usd_per_hour or 0.0
        body = (f", {_setup(e)}, serving {e.fleet_output_tokens_per_s:,.0f} output tokens/s: {money(usd_h)}/h, "
                f"{money(usd_h * HOURS_PER_MONTH)} a month, {money(usd_h * HOURS_PER_YEAR)} a year.")
    else:
        days = e.perf.time_to_train_s / 86400.0
        body = f" for {days:,.1f} days, {_setup(e)}: {money(e.cost_usd)} for the run."
    extra = []
    if paid > e.layout.num_gpus:
        whole = "servers are bought whole" if q is not None and q.term is PriceTerm.ON_PREM else "instances are rented whole"
        extra.append(f"{paid - e.layout.num_gpus} of the {paid} GPUs paid for sit idle, because {whole}.")
    if isinstance(e, TrainingEvaluation) and e.spot is not None:
        sp = e.spot
        extra.append(f"On spot, {sp.expected_interruptions:,.1f} expected preemptions (one per {sp.mtbf_s / 3600:,.1f} h of the job) "
                     f"with a checkpoint every {sp.checkpoint_interval_s / 60:,.0f} min (Young/Daly) add "
                     f"{(sp.expected_time_s / sp.compute_time_s - 1):.1%} to the time and cost.")
    if q is not None and q.stale:
        extra.append(f"The price row is dated {q.as_of}, older than {scenario.resolved_assumptions().price_stale_after_days} days: check it.")
    if q is not None and q.placeholder:
        extra.append("The price is a PLACEHOLDER row (allowed by the scenario), not a quoted offer.")
    return " ".join([head + body, *extra])


def payer_costs(scenario: Scenario, plan: Plan) -> list[tuple[str, str, str]]:
    """Hourly, monthly and annual cost of the plan, and what buying the same GPUs would cost: capex, power, hosting, break-even month."""
    e = plan.evaluation
    assumptions = scenario.resolved_assumptions()
    servers, k, paid = _servers(e)
    rows: list[tuple[str, str, str]] = []
    term = scenario.pricing.term
    if isinstance(e, InferenceEvaluation):
        usd_h = e.usd_per_hour or 0.0
        rows += [("cost per hour", money(usd_h), f"{paid} GPUs paid for ({servers} x {k}-GPU instances or servers)"),
                 ("cost per month", money(usd_h * HOURS_PER_MONTH), "x 730 h, running all month"),
                 ("cost per year", money(usd_h * HOURS_PER_YEAR), "x 8,760 h")]
    else:
        usd_h = (e.cost_usd or 0.0) / (e.perf.time_to_train_s / 3600.0) if e.perf.time_to_train_s else 0.0
        rows += [("cost of the run", money(e.cost_usd), f"{paid} GPUs paid for over {e.perf.time_to_train_s / 86400:,.1f} days"),
                 ("cost per month while it runs", money(usd_h * HOURS_PER_MONTH), f"{money(usd_h)}/h x 730 h")]
    onprem = next((r for r in load_onprem() if r.gpu == e.layout.gpu), None)
    if onprem is None:
        rows.append(("buying", "n/a", f"no on-prem row for {e.layout.gpu} in catalogs/onprem.csv"))
        return rows
    node = resolve_gpu(e.layout.gpu).gpus_per_node
    bought_servers = int(instances_needed(e.layout.num_gpus, node))
    gpus = bought_servers * node
    capex = gpus * onprem.capex_usd_per_gpu
    power_month = gpus * power_usd_per_gpu_hour(onprem.watts_per_gpu_at_wall, assumptions) * HOURS_PER_MONTH
    hosting_month = gpus * hosting_usd_per_gpu_hour(onprem.watts_per_gpu_at_wall, assumptions) * HOURS_PER_MONTH
    rows += [("buy: capex", money(capex), f"{bought_servers} server{'s' if bought_servers != 1 else ''} of {node}x {e.layout.gpu} at {money(onprem.capex_usd_per_gpu)} per GPU ({onprem.source[:80]})"),
             ("buy: power per month", money(power_month), f"{gpus} x {onprem.watts_per_gpu_at_wall:g} W x PUE {assumptions.pue:g} x {money(assumptions.usd_per_kwh)}/kWh x 730 h, at full load"),
             ("buy: hosting per month", money(hosting_month), f"{gpus * onprem.watts_per_gpu_at_wall / 1000:,.1f} kW x {money(assumptions.hosting_usd_per_kw_month)}/kW-month")]
    rent_quote = e.price if term is not PriceTerm.ON_PREM else price_quote(e.layout.gpu, Pricing(term=PriceTerm.ON_DEMAND), assumptions)
    if rent_quote is None:
        rows.append(("buy: break-even against renting", "n/a", f"no on-demand price for {e.layout.gpu}"))
        return rows
    rent_quote = offer_for(rent_quote, gpus, min(gpus, node))
    rent_month = int(rented_gpus(gpus, rent_quote.gpus_per_instance)) * rent_quote.usd_per_gpu_hour * HOURS_PER_MONTH
    month = break_even_month(capex, power_month + hosting_month, rent_month)
    rows.append((f"rent {gpus} {e.layout.gpu} per month", money(rent_month),
                 f"{rent_quote.provider} {rent_quote.offering}, {rent_quote.term.value}, running all month"))
    rows.append(("buy: break-even against renting",
                 f"month {month:,.1f}" if month is not None else "never",
                 "capex / (rent per month - power and hosting per month), if kept busy all month"
                 + (f"; beyond the {onprem.expected_life_years:g}-year life" if month is not None and month > 12 * onprem.expected_life_years else "")))
    return rows


def _prices(plan: Plan, term_plans: dict[str, Plan], scenario: Scenario) -> list[tuple[str, PriceQuote]]:
    """Distinct price rows behind the report's numbers, each with what used it."""
    out: list[tuple[str, PriceQuote]] = []
    if plan.evaluation.price:
        out.append(("recommended plan", plan.evaluation.price))
    assumptions = scenario.resolved_assumptions()
    for alt in plan.alternatives:
        q = price_quote(alt.gpu, scenario.pricing, assumptions) if alt.feasible else None
        if q:
            out.append((f"best {alt.gpu} plan", q))
    for term, p in term_plans.items():
        if p.evaluation.price:
            out.append((f"{term} comparison", p.evaluation.price))
    seen, distinct = set(), []
    for used_by, q in out:
        key = (q.gpu, q.provider, q.offering, q.term, round(q.usd_per_gpu_hour, 9))
        if key not in seen:
            seen.add(key)
            distinct.append((used_by, q))
    return distinct


def _assumption_rows(scenario: Scenario) -> list[tuple[str, str, str]]:
    """Every assumption the formulas used, its value, and its source (the scenario's override, if any)."""
    values = scenario.resolved_assumptions().model_dump(mode="json")
    rows = []
    for key in Assumptions.model_fields:
        source = ("scenario override (default: " + Assumptions.source_of(key) + ")") if key in scenario.assumptions else Assumptions.source_of(key)
        rows.append((key, str(values[key]), source))
    return rows


def _provenance(scenario: Scenario, plan: Plan, generated: str, extra_solves: int) -> list[tuple[str, str]]:
    rows = [("scenario", scenario.name), ("model", plan.model)]
    try:
        entry = model_entry(plan.model)
        rows.append(("model parameters", f"{entry.published_total_params_b:g}B: {entry.params_source} ({entry.as_of})"))
    except PlannerError:
        pass
    rows += [
        ("solver status", plan.status), ("optimality gap", f"{plan.gap:.4%}"), ("solve time", f"{plan.solve_time_s:.3f} s (CP-SAT, all phases)"),
        ("table build time", f"{plan.build_time_s:.3f} s"), ("layouts", f"{plan.candidates:,} legal, {plan.fitting:,} fit in memory"),
        ("objective", f"{plan.objective.value} = {plan.objective_value:,.6g} {plan.objective_unit}"),
        ("extra solves for this report", str(extra_solves)),
        ("planner version", _version("planner")), ("ortools version", _version("ortools")),
        ("matplotlib version", _version("matplotlib")), ("python version", platform.python_version()),
        ("generated (UTC)", generated),
    ]
    return rows


def build_report(scenario: Scenario, time_limit_s: float = DEFAULT_TIME_LIMIT_S) -> Report:
    """Solve the scenario and gather the report (raises the main solve's `PlannerError` when there is no plan).

    Extra solves: one per other pricing term (4) and three what-ifs, each without alternatives
    or a frontier, so a report costs about 8 solves; a failing extra solve becomes a row that
    says why, not an error.
    """
    plan = solve(scenario, time_limit_s=time_limit_s, alternatives=True, pareto=True)
    by_term, term_plans = _by_term(scenario, plan, time_limit_s)
    sensitivity = _sensitivity(scenario, plan, time_limit_s)
    extra = len(TERMS) - 1 + len(sensitivity)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    gpu_names = [plan.evaluation.layout.gpu] + [a.gpu for a in plan.alternatives if a.gpu != plan.evaluation.layout.gpu]
    return Report(
        scenario=scenario, plan=plan, generated_utc=generated, recommendation=_recommendation(scenario, plan),
        by_gpu=tuple(_by_gpu(scenario, plan)), by_term=tuple(by_term), sensitivity=tuple(sensitivity),
        prices=tuple(_prices(plan, term_plans, scenario)), gpus=tuple(resolve_gpu(g) for g in gpu_names),
        assumptions=tuple(_assumption_rows(scenario)), provenance=tuple(_provenance(scenario, plan, generated, extra)),
        memory_svg=memory_chart(plan.evaluation), pareto_svg=pareto_chart(plan), extra_solves=extra,
        notes=tuple(plan.evaluation.memory.notes), plain=plain_recommendation(scenario, plan), costs=tuple(payer_costs(scenario, plan)),
    )


# ---- rendering: one list of blocks, two writers --------------------------------------------

Block = tuple[Any, ...]
"""('h1'|'h2'|'p'|'callout', text) | ('table', headers, rows, highlighted row indexes) | ('chart', title, svg)."""


def _comparison_table(rows: tuple[ComparisonRow, ...], first: str, training: bool) -> Block:
    if training:
        headers = [first, "plan", "GPUs", "cost of run", "days", "tokens/s", "$/GPU-h", "note"]
    else:
        headers = [first, "plan", "GPUs", "$/hour", "output tokens/s", "$/GPU-h", "note"]
    body = []
    for r in rows:
        if not r.feasible:
            body.append([r.label, f"none: {r.summary}", *([""] * (len(headers) - 3)), r.note])
            continue
        cells = [r.label, r.summary, str(r.num_gpus), cost_text(r.cost, training)]
        cells += [_days(r.time_to_train_days), _num(r.throughput_tokens_per_s)] if training else [_num(r.throughput_tokens_per_s)]
        cells += [money(r.usd_per_gpu_hour), r.note]
        body.append(cells)
    return ("table", headers, body, {i for i, r in enumerate(rows) if r.recommended})


def _memory_table(e: Evaluation) -> Block:
    mem = e.memory
    body = [[t.name, f"{t.bytes / BYTES_PER_GIB:,.2f}", t.scaling, t.source] for t in mem.terms]
    body.append(["total", f"{mem.total_bytes / BYTES_PER_GIB:,.2f}", "", ""])
    body.append(["headroom", f"{mem.headroom_bytes / BYTES_PER_GIB:,.2f}", f"usable capacity {mem.capacity_bytes / BYTES_PER_GIB:,.2f} GiB "
                 f"of {mem.card_bytes / BYTES_PER_GIB:,.2f} GiB", ""])
    return ("table", ["term", "GiB", "scaling", "source"], body, set())


def blocks(report: Report | FleetReport | StudyReport) -> list[Block]:
    """The report as format-neutral blocks, so HTML and Markdown show exactly the same content."""
    if isinstance(report, FleetReport):
        return fleet_blocks(report)
    if isinstance(report, StudyReport):
        return study_blocks(report)
    s, plan, training = report.scenario, report.plan, report.training
    e = plan.evaluation
    out: list[Block] = [("h1", f"GPU procurement report: {s.name}")]
    if s.description:
        out.append(("p", s.description))
    out.append(("p", f"Model {plan.model}, {plan.kind}; objective {plan.objective.value}; pricing term {s.pricing.term.value}. "
                     f"Generated {report.generated_utc} UTC."))
    out += [("h2", "Recommendation")]
    if report.plain:
        out.append(("callout", report.plain))
    out += [("callout", report.recommendation)]
    if report.costs:
        out += [("h2", "What it costs"), ("table", ["item", "amount", "how"], [list(r) for r in report.costs], set())]
    out += [("h2", "Best plan per GPU type"), _comparison_table(report.by_gpu, "GPU", training)]
    out += [("h2", "Best plan per pricing term"), _comparison_table(report.by_term, "term", training), ("p", ON_PREM_NOTE)]
    out += [("h2", "Per-card memory of the recommended plan"), ("chart", "Per-card memory breakdown", report.memory_svg), _memory_table(e)]
    out += [("p", "Note: " + n) for n in report.notes]
    front = [[str(i + 1), _short(p.summary), p.summary, str(p.num_gpus), cost_text(p.cost, training),
              _days(p.time_to_train_days) if training else _num(p.throughput_tokens_per_s)] for i, p in enumerate(plan.pareto)]
    rec = {i for i, p in enumerate(plan.pareto) if p.summary == layout_summary(e)}
    out += [("h2", "Cost vs " + ("time to train" if training else "throughput") + " (Pareto frontier)"),
            ("chart", "Pareto frontier", report.pareto_svg),
            ("table", ["#", "short", "plan", "GPUs", "cost of run" if training else "$/hour", "days" if training else "output tokens/s"], front, rec)]
    out += [("h2", "Sensitivity"), ("p", "Each what-if is a fresh solve of the scenario with one input changed."),
            _comparison_table(report.sensitivity, "what-if", training)]
    out += [("h2", "Assumptions, sources and dates"), ("h3", "Prices used"),
            ("table", ["used by", "GPU", "term", "$/GPU-h", "GPUs/instance", "provider", "offering", "source", "as of", "flags"],
             [[u, q.gpu, q.term.value, money(q.usd_per_gpu_hour), str(q.gpus_per_instance), q.provider, q.offering, q.source, q.as_of,
               ", ".join(f for f, on in (("PLACEHOLDER", q.placeholder), ("STALE: older than the price_stale_after_days assumption", q.stale)) if on)]
              for u, q in report.prices], set())]
    out += [("h3", "GPU catalog rows"),
            ("table", ["GPU", "name", "memory GiB", "HBM GB/s", "bf16 TFLOP/s", "specs source", "as of"],
             [[g.name, g.display_name, f"{g.memory_gib:g}", f"{g.hbm_bandwidth_gbps:g}", _num(g.bf16_dense_tflops), g.specs_source, g.as_of]
              for g in report.gpus], set())]
    out += [("h3", "Model assumptions"), ("table", ["key", "value", "source"], [list(r) for r in report.assumptions], set())]
    out += [("h3", "Solver and environment"), ("table", ["item", "value"], [list(r) for r in report.provenance], set())]
    return out


@dataclass(frozen=True)
class FleetReport:
    """A fleet plan (planner.fleet) ready to render: the fleet view of a procurement report."""

    fleet: FleetScenario
    plan: FleetPlan
    generated_utc: str


def build_fleet_report(fleet: FleetScenario, time_limit_s: float = 30.0) -> FleetReport:
    """Solve a fleet scenario for its report."""
    plan = solve_fleet(fleet, time_limit_s=time_limit_s)
    return FleetReport(fleet=fleet, plan=plan, generated_utc=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"))


def fleet_blocks(report: FleetReport) -> list[Block]:
    """The fleet view: what to own, buy and rent, and what each workload runs on it."""
    f, p = report.fleet, report.plan
    gpus = sorted({*p.owned_gpus, *p.bought_gpus, *p.peak_rented_gpus})
    out: list[Block] = [("h1", f"GPU fleet report: {f.name}")]
    if f.description:
        out.append(("p", f.description))
    out.append(("callout", f"Total cost of ownership over {f.horizon_weeks} weeks: {money(p.total_cost_usd)} "
                           f"(purchases amortised {money(p.purchase_cost_usd)}); solver {p.status}, {p.solve_time_s:.3f} s over "
                           f"{p.candidates} candidate (plan, source) pairs; every plan re-verified: {p.verified}. "
                           f"Generated {report.generated_utc} UTC."))
    out += [("h2", "Fleet"), ("table", ["GPU", "owned", "bought (whole nodes)", "peak rented"],
                              [[g, str(p.owned_gpus.get(g, 0)), str(p.bought_gpus.get(g, 0)), str(p.peak_rented_gpus.get(g, 0))] for g in gpus], set())]
    out += [("h2", "Workloads"), ("table", ["workload", "plan", "source", "GPUs", "weeks", "power or rent"],
                                  [[a.workload, a.plan, a.source, str(a.num_gpus), f"{a.weeks[0]}-{a.weeks[1]}", money(a.cost_usd)]
                                   for a in p.assignments], set())]
    headers, timeline = fleet_timeline(f, p)
    out += [("h2", "Timeline"), ("p", "Workloads by week (GPUs, type, source), then each GPU pool by source."),
            ("table", headers, timeline, set())]
    out += [("h2", "Why each purchase was or was not made")] + [("p", reason) for reason in purchase_reasons(f, p)]
    out += [("p", "Pool = owned plus bought GPUs: workloads active in the same week never share a GPU; bought GPUs count from "
                  "their lead time on and cost capex x horizon / life; pool GPU-hours pay wall power x PUE x $/kWh; rented "
                  "GPU-hours pay the catalog price of the offer's term.")]
    return out


@dataclass(frozen=True)
class StudyReport:
    """A what-if study's table ready to render: one row per case and a chart of the objective."""

    name: str
    description: str
    axes: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    headers: tuple[str, ...]
    chart_svg: str
    summary: tuple[tuple[str, str], ...]
    generated_utc: str


def build_study_report(study_file: Path, workers: int | None = None) -> StudyReport:
    """Run a study (planner.studies) and turn its DataFrame into a report: case table and objective chart."""
    from planner.studies import expand_cases, load_study, run_study, summarize

    study = load_study(study_file)
    frame = run_study(study, workers=workers)
    axes = tuple(expand_cases(study)[0].values) if len(frame) else ()
    headers = (*axes, "status", "plan", "GPUs", "objective", "unit", "reason")
    rows = []
    for record in frame.to_dict("records"):
        value = record.get("objective_value")
        rows.append(tuple([*(str(record.get(a)) for a in axes), str(record.get("status")), str(record.get("layout") or ""),
                           "" if record.get("num_gpus") is None or str(record.get("num_gpus")) == "<NA>" else str(record.get("num_gpus")),
                           "" if value is None or value != value else (f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.4g}"),
                           str(record.get("objective_unit") or ""),
                           str(record.get("reason") or "")[:200]]))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.35 * max(len(rows), 3) + 1.2))
    labels = [", ".join(f"{a.split('.')[-1]}={r[i]}" for i, a in enumerate(axes)) for r in rows]
    values = [float(v.replace(",", "")) if (v := r[len(axes) + 3]) else 0.0 for r in rows]
    ax.barh(range(len(rows)), values, color=["#4c72b0" if r[len(axes)] in ("optimal", "feasible") else "#c44e52" for r in rows])
    for i, r in enumerate(rows):
        if r[len(axes)] not in ("optimal", "feasible"):
            ax.text(0, i, " NO PLAN", color="#c44e52", va="center", fontsize=8, fontweight="bold")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    unit = next((r[len(axes) + 4] for r in rows if r[len(axes) + 4]), "")
    ax.set_xlabel(f"objective ({unit}); red = no plan")
    ax.set_title(study.name)
    svg = _svg(fig, salt=study.name)
    plt.close(fig)
    summary = tuple((str(a), str(b)) for a, b in summarize(frame).itertuples(index=False))
    return StudyReport(name=study.name, description=study.description, axes=axes, rows=tuple(rows), headers=headers,
                       chart_svg=svg, summary=summary, generated_utc=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"))


def study_pivot(report: StudyReport) -> Block | None:
    """The cases as a pivot table: the last axis across, the other axes down; a cell is the objective, or why there is no plan."""
    axes = list(report.axes)
    if not axes:
        return None
    n = len(axes)
    status_at, plan_at, value_at, unit_at, reason_at = n, n + 1, n + 3, n + 4, n + 5
    across = list(dict.fromkeys(r[n - 1] for r in report.rows)) if n > 1 else ["objective"]
    down = list(dict.fromkeys(tuple(r[: n - 1]) if n > 1 else (r[0],) for r in report.rows))
    cells: dict[tuple[tuple[str, ...], str], str] = {}
    for r in report.rows:
        key = (tuple(r[: n - 1]) if n > 1 else (r[0],), r[n - 1] if n > 1 else "objective")
        if r[status_at] in ("optimal", "feasible") and r[value_at]:
            cells[key] = f"{r[value_at]} {r[unit_at]} ({_short(r[plan_at])})"
        else:
            cells[key] = f"NO PLAN ({r[status_at]}): {r[reason_at][:90]}"
    first = " / ".join(a.split(".")[-1] for a in (axes[:-1] if n > 1 else axes))
    headers = [first, *((f"{axes[-1].split('.')[-1]} = {c}" for c in across) if n > 1 else across)]
    body = [[" / ".join(d), *(cells.get((d, c), "") for c in across)] for d in down]
    return ("table", headers, body, set())


def study_blocks(report: StudyReport) -> list[Block]:
    """The study view: summary, pivot table (axes as rows and columns, infeasible cases named), objective chart, one row per case."""
    out: list[Block] = [("h1", f"What-if study: {report.name}")]
    if report.description:
        out.append(("p", report.description))
    out.append(("p", f"Generated {report.generated_utc} UTC. Each case is a fresh CP-SAT solve of the base scenario with the axis values applied."))
    out += [("h2", "Summary"), ("table", ["item", "value"], [list(r) for r in report.summary], set())]
    pivot = study_pivot(report)
    if pivot is not None:
        out += [("h2", "Objective by axis values"), ("p", "Rows and columns are the study's axes; a cell is the best plan's objective, or NO PLAN and why."), pivot]
    out += [("h2", "Objective by case"), ("chart", "Objective by case", report.chart_svg)]
    out += [("h2", "Cases"), ("table", list(report.headers), [list(r) for r in report.rows], set())]
    return out


_SCHEME = re.compile(r"\b(?:https?|ftp)://", re.I)


def _plain(text: str) -> str:
    """Text with URL schemes dropped, so no user or catalog string turns into an external link."""
    return _SCHEME.sub("", str(text))


def _h(text: str) -> str:
    return html.escape(_plain(text), quote=True)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1150px;color:#222;line-height:1.4}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}h3{font-size:1.05rem}
table{border-collapse:collapse;width:100%;font-size:.82rem;margin:.6rem 0}th,td{border:1px solid #ddd;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}tr.rec td{background:#fff4d6;font-weight:600}.callout{background:#eef5ff;border-left:4px solid #4c72b0;padding:.8rem 1rem}
figure{margin:1rem 0}figure svg{max-width:100%;height:auto}figcaption{font-size:.8rem;color:#555}
"""


def report_name(report: Report | FleetReport | StudyReport) -> str:
    """The name a report is about."""
    if isinstance(report, FleetReport):
        return report.fleet.name
    if isinstance(report, StudyReport):
        return report.name
    return report.scenario.name


def render_html(report: Report | FleetReport | StudyReport) -> str:
    """A self-contained HTML page: inline CSS and SVG, every user and catalog string escaped, no external URL."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_h('planner report: ' + report_name(report))}</title><style>{CSS}</style></head><body>"]
    for block in blocks(report):
        kind = block[0]
        if kind in ("h1", "h2", "h3", "p"):
            parts.append(f"<{kind}>{_h(block[1])}</{kind}>")
        elif kind == "callout":
            parts.append(f'<p class="callout">{_h(block[1])}</p>')
        elif kind == "chart":
            parts.append(f'<figure role="img" aria-label="{_h(block[1])}">{block[2]}<figcaption>{_h(block[1])}</figcaption></figure>')
        elif kind == "table":
            _, headers, rows, highlighted = block
            parts.append("<table><thead><tr>" + "".join(f"<th>{_h(c)}</th>" for c in headers) + "</tr></thead><tbody>")
            for i, row in enumerate(rows):
                cls = ' class="rec"' if i in highlighted else ""
                parts.append(f"<tr{cls}>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>")
            parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


_UNSAFE_LINK = re.compile(r"\b(?:javascript|vbscript)\s*:|\bdata:[\w/+.-]*[;,]|(?<![\w:])//(?=[\w.-])", re.I)


def _md(text: str) -> str:
    """Markdown-safe text: pipes escaped (tables), < and > as entities (no raw HTML), brackets escaped (no link syntax),
    javascript:/vbscript: schemes, data: URIs and protocol-relative //host links dropped, newlines folded."""
    t = _UNSAFE_LINK.sub("", _plain(text))
    t = t.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    t = t.replace("[", "\\[").replace("]", "\\]")
    return " ".join(t.split())


def render_markdown(report: Report | FleetReport | StudyReport) -> str:
    """The same report as Markdown; charts as base64 `data:image/svg+xml` images, so the file stands alone."""
    lines: list[str] = []
    for block in blocks(report):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += [f"{'#' * int(kind[1])} {_md(block[1])}", ""]
        elif kind == "p":
            lines += [_md(block[1]), ""]
        elif kind == "callout":
            lines += [f"> **{_md(block[1])}**", ""]
        elif kind == "chart":
            data = base64.b64encode(block[2].encode("utf-8")).decode("ascii")
            lines += [f"![{_md(block[1])}](data:image/svg+xml;base64,{data})", ""]
        elif kind == "table":
            _, headers, rows, highlighted = block
            lines.append("| " + " | ".join(_md(c) for c in headers) + " |")
            lines.append("|" + "---|" * len(headers))
            for i, row in enumerate(rows):
                cells = [_md(c) for c in row]
                if i in highlighted:
                    cells = [f"**{c}**" if c else c for c in cells]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


# ---- writing -------------------------------------------------------------------------------

FORMATS = {".html": render_html, ".htm": render_html, ".md": render_markdown, ".markdown": render_markdown}


def _renderer(path: Path) -> Any:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown report format {path.suffix or '(no suffix)'!r}; use .html or .md.")
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist.")
    return fmt


def save_report(report: Report | FleetReport | StudyReport, path: Path) -> Path:
    """Render a built report by the path's suffix and write it atomically (temp file in the same folder + os.replace)."""
    path = Path(path)
    text = _renderer(path)(report)
    return write_atomically(path, lambda stream: stream.write(text.encode("utf-8")))


def write_report(scenario: Scenario, path: Path, time_limit_s: float = DEFAULT_TIME_LIMIT_S) -> Path:
    """Build the report for a scenario and write it to `path` (.html or .md, checked before any solve)."""
    path = Path(path)
    _renderer(path)
    return save_report(build_report(scenario, time_limit_s=time_limit_s), path)
