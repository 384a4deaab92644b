"""Dollars: the price of a GPU-hour for a pricing choice, the cost of a training run, of serving.

Cloud: clouds rent whole instances (1, 2, 4 or 8 GPUs), so a plan pays for
`rented_gpus(num_gpus, gpus_per_instance)` GPUs at the offer's $/GPU-hour; among a GPU's offers
the one that makes the plan cheapest is used (a smaller instance where one exists). A serving
replica rents its own instances (replicas are not packed into a shared larger instance: exact
where an instance of the replica's size exists, an upper bound otherwise). On-prem:
whole servers bought, capex amortised straight-line over the expected life plus wall power x
PUE x $/kWh, at full utilisation (catalogs/onprem.csv; the TCO convention of e.g.
SemiAnalysis' GPU cloud economics). Spot: a preemption rate per instance, a checkpoint interval
by Young/Daly, and the expected time and cost of restarts. Every cost names the price row it
used. The arithmetic functions work on Python scalars and on numpy arrays alike.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from planner.catalog import PriceRow, load_onprem, load_prices, resolve_gpu
from planner.enums import PriceTerm
from planner.scenario import Assumptions, Pricing
from planner.units import HOURS_PER_YEAR, SECONDS_PER_HOUR

HOURS_PER_MONTH = 730.0
"""730 h (8,760 h / 12): the month that monthly costs, hosting and break-even months use."""


class InstanceOffer(BaseModel):
    """One way to rent (or buy) a GPU: an instance size at a price."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    gpus_per_instance: int = Field(ge=1, description="GPUs in one instance (or server); the unit that is paid for.")
    usd_per_gpu_hour: float = Field(gt=0, description="Price per GPU-hour after the scenario's multiplier, USD.")
    provider: str = Field(description="Provider, 'on-prem' or 'scenario'.")
    offering: str = Field(description="Instance type or product.")
    region: str = Field(default="", description="Region of the row.")
    source: str = Field(description="Source of the row.")
    as_of: str = Field(description="Date of the row.")
    placeholder: bool = Field(default=False, description="The row is a placeholder (allowed by the scenario).")
    stale: bool = Field(default=False, description="The row is older than the price_stale_after_days assumption.")


class PriceQuote(BaseModel):
    """The price used for a GPU, and where it comes from."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    gpu: str = Field(description="GPU id.")
    usd_per_gpu_hour: float = Field(gt=0, description="Price per GPU-hour after the scenario's multiplier, USD.")
    provider: str = Field(description="Provider, 'on-prem' or 'scenario'.")
    offering: str = Field(description="Instance type or product.")
    term: PriceTerm = Field(description="Pricing term.")
    source: str = Field(description="Source of the row.")
    as_of: str = Field(description="Date of the row.")
    gpus_per_instance: int = Field(default=1, ge=1, description="GPUs per rented instance (or bought server) of the chosen offer.")
    region: str = Field(default="", description="Region of the chosen row.")
    placeholder: bool = Field(default=False, description="The chosen row is a placeholder (only when the scenario allows them).")
    stale: bool = Field(default=False, description="The row is older than the price_stale_after_days assumption.")
    interruptions_per_instance_hour: float = Field(default=0.0, ge=0, description="Spot: expected preemptions per instance-hour (0 off spot).")
    interruption_source: str = Field(default="", description="Where the preemption rate comes from.")
    options: tuple[InstanceOffer, ...] = Field(default=(), description="The cheapest offer per instance size, for choosing per plan.")

    @property
    def usd_per_instance_hour(self) -> float:
        """Price of one whole instance (or server) per hour."""
        return self.usd_per_gpu_hour * self.gpus_per_instance


# ---- arithmetic (scalars or numpy arrays) ----------------------------------------------------


def rented_gpus(num_gpus: Any, gpus_per_instance: Any) -> Any:
    """GPUs paid for: whole instances, ceil(num_gpus / gpus_per_instance) x gpus_per_instance."""
    return -(-num_gpus // gpus_per_instance) * gpus_per_instance


def instances_needed(num_gpus: Any, gpus_per_instance: Any) -> Any:
    """Whole instances (or servers) that hold num_gpus GPUs."""
    return -(-num_gpus // gpus_per_instance)


def pool_instances(replicas: Any, pool_replicas: Any, gpus_per_replica: Any, gpus_per_instance: Any) -> Any:
    """Whole instances a serving pool rents: each of its replicas (pool_replicas per unit, `replicas` units) rents its own
    (a replica does not share an instance with another)."""
    return replicas * pool_replicas * instances_needed(gpus_per_replica, gpus_per_instance)


def usd_per_hour(num_gpus: Any, gpus_per_instance: Any, usd_per_gpu_hour: Any) -> Any:
    """$/hour of num_gpus GPUs rented as whole instances."""
    return rented_gpus(num_gpus, gpus_per_instance) * usd_per_gpu_hour


def capex_usd_per_gpu_hour(capex_usd: float, life_years: float) -> float:
    """Capex straight-line over the expected life: capex / (life x 8760 h)."""
    return capex_usd / (life_years * HOURS_PER_YEAR)


def power_usd_per_gpu_hour(watts: float, assumptions: Assumptions) -> float:
    """Wall power of a running GPU: watts x PUE x $/kWh / 1000."""
    return watts * assumptions.pue * assumptions.usd_per_kwh / 1000.0


def hosting_usd_per_gpu_hour(watts: float, assumptions: Assumptions) -> float:
    """Colocation space and cooling for an owned GPU, paid per kW of wall power: kW x $/kW-month / 730 h."""
    return watts / 1000.0 * assumptions.hosting_usd_per_kw_month / HOURS_PER_MONTH


def onprem_usd_per_gpu_hour(capex_usd: float, life_years: float, watts: float, assumptions: Assumptions) -> float:
    """Owned GPU-hour at 100% utilisation: amortised capex plus power plus hosting."""
    return capex_usd_per_gpu_hour(capex_usd, life_years) + power_usd_per_gpu_hour(watts, assumptions) + hosting_usd_per_gpu_hour(watts, assumptions)


def young_daly_interval_s(checkpoint_write_s: Any, mtbf_s: Any) -> Any:
    """Optimal checkpoint interval, first order: sqrt(2 x delta x M).

    Young 1974, 'A first order approximation to the optimum checkpoint interval' (CACM 17(9));
    Daly 2006, 'A higher order estimate of the optimum checkpoint interval for restart dumps'
    (FGCS 22(3)), Eq. 37's leading term; delta = time to write a checkpoint, M = mean time
    between interruptions of the job.
    """
    return np.sqrt(2.0 * checkpoint_write_s * mtbf_s)


def spot_expected_time_s(compute_s: Any, instances: Any, interruptions_per_instance_hour: Any,
                         checkpoint_write_s: Any, restart_s: Any) -> Any:
    """Expected wall time of a synchronous job on preemptible instances, with Young/Daly checkpoints.

    A job on n instances is interrupted when any one is: rate lambda = n x rate per instance,
    M = 1 / lambda. It checkpoints every tau = sqrt(2 delta M) seconds of work (each costing
    delta), and each interruption loses on average half a segment, (tau + delta) / 2, plus the
    restart time R (re-acquire capacity, load the checkpoint). First-order renewal model (Young
    1974; Daly 2006 Sec. 3):
        T_wall = T x (1 + delta / tau) / (1 - ((tau + delta) / 2 + R) / M)
    Infinite when the loss per interruption reaches M (the job makes no progress). With no
    interruptions T_wall = T (no checkpoints are charged).
    """
    rate_per_s = np.asarray(instances, dtype=float) * np.asarray(interruptions_per_instance_hour, dtype=float) / SECONDS_PER_HOUR
    with np.errstate(divide="ignore", invalid="ignore"):
        mtbf_s = np.where(rate_per_s > 0, 1.0 / np.where(rate_per_s > 0, rate_per_s, 1.0), np.inf)
        tau_s = young_daly_interval_s(checkpoint_write_s, mtbf_s)
        loss_fraction = np.where(np.isfinite(mtbf_s), ((tau_s + checkpoint_write_s) / 2.0 + restart_s) / mtbf_s, 0.0)
        overhead = np.where(np.isfinite(mtbf_s), 1.0 + checkpoint_write_s / tau_s, 1.0)
        wall = np.where(loss_fraction < 1.0, compute_s * overhead / (1.0 - loss_fraction), np.inf)
    return float(wall) if np.ndim(wall) == 0 else wall


class SpotRisk(BaseModel):
    """What preemption adds to a training run on spot instances."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    compute_time_s: float = Field(description="Time to train without interruptions, seconds.")
    expected_time_s: float = Field(description="Expected wall time with checkpoints, lost work and restarts, seconds.")
    mtbf_s: float = Field(description="Mean time between interruptions of the whole job, seconds.")
    checkpoint_interval_s: float = Field(description="Young/Daly interval sqrt(2 delta M), seconds.")
    expected_interruptions: float = Field(description="Expected preemptions over the run.")
    interruptions_per_instance_hour: float = Field(description="Preemption rate per instance used.")
    source: str = Field(description="Where the preemption rate comes from.")


def spot_risk(compute_time_s: float, instances: int, quote: PriceQuote, assumptions: Assumptions) -> SpotRisk:
    """Young/Daly expected time of a run on spot instances (see spot_expected_time_s)."""
    rate = quote.interruptions_per_instance_hour
    mtbf_s = SECONDS_PER_HOUR / (instances * rate) if rate > 0 else math.inf
    tau_s = float(young_daly_interval_s(assumptions.checkpoint_write_s, mtbf_s)) if rate > 0 else math.inf
    wall = spot_expected_time_s(compute_time_s, instances, rate, assumptions.checkpoint_write_s, assumptions.restart_after_preemption_s)
    return SpotRisk(compute_time_s=compute_time_s, expected_time_s=wall, mtbf_s=mtbf_s if math.isfinite(mtbf_s) else 1e300,
                    checkpoint_interval_s=tau_s if math.isfinite(tau_s) else 1e300,
                    expected_interruptions=wall / mtbf_s if math.isfinite(mtbf_s) and math.isfinite(wall) else 0.0,
                    interruptions_per_instance_hour=rate, source=quote.interruption_source)


def with_spot_restarts(perf: Any, num_gpus: int, quote: PriceQuote | None, assumptions: Assumptions) -> tuple[Any, SpotRisk | None]:
    """A training perf whose time to train (and GPU-hours) include the expected restarts on spot; unchanged off spot."""
    if quote is None or quote.term is not PriceTerm.SPOT or quote.interruptions_per_instance_hour <= 0:
        return perf, None
    risk = spot_risk(perf.time_to_train_s, int(instances_needed(num_gpus, quote.gpus_per_instance)), quote, assumptions)
    wall = risk.expected_time_s if math.isfinite(risk.expected_time_s) else 1e300
    return perf.model_copy(update={"time_to_train_s": wall, "gpu_hours": perf.gpu_hours * wall / perf.time_to_train_s}), risk


def training_cost_usd(num_gpus: Any, time_to_train_s: Any, usd_per_gpu_hour: Any) -> Any:
    """GPU-hours x $/GPU-hour (num_gpus = GPUs paid for, whole instances)."""
    return num_gpus * time_to_train_s / SECONDS_PER_HOUR * usd_per_gpu_hour


def serving_usd_per_hour(num_gpus: Any, usd_per_gpu_hour: Any) -> Any:
    """Fleet $/hour (num_gpus = GPUs paid for, whole instances)."""
    return num_gpus * usd_per_gpu_hour


def usd_per_million_tokens(usd_per_hour: Any, tokens_per_s: Any) -> Any:
    """$ per million output tokens at a sustained throughput."""
    return usd_per_hour / (tokens_per_s * SECONDS_PER_HOUR) * 1e6


def monthly_usd(usd_per_hour_value: float) -> float:
    """A month of continuous running: $/h x 730 h."""
    return usd_per_hour_value * HOURS_PER_MONTH


def break_even_month(capex_usd: float, owned_usd_per_month: float, rented_usd_per_month: float) -> float | None:
    """Month at which buying (capex up front, then power and hosting) has cost no more than renting; None if never.

    Cumulative cost of buying after m months: capex + m x owned; of renting: m x rented.
    Equal at m = capex / (rented - owned).
    """
    saving = rented_usd_per_month - owned_usd_per_month
    return capex_usd / saving if saving > 0 else None


# ---- price lookup ----------------------------------------------------------------------------


def is_stale(as_of: str, assumptions: Assumptions, today: dt.date | None = None) -> bool:
    """A row dated more than price_stale_after_days before today (undated rows count as stale)."""
    try:
        dated = dt.date.fromisoformat(as_of[:10])
    except ValueError:
        return True
    return ((today or dt.date.today()) - dated).days > assumptions.price_stale_after_days


def offer_columns(quote: PriceQuote, num_gpus: Any, min_gpus_per_instance: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the offer of the quote that makes num_gpus GPUs cheapest: (index into quote.options or -1 for the
    quote itself, GPUs per instance, USD per GPU-hour).

    Only instances of at least min_gpus_per_instance GPUs qualify: the group the time model
    puts on one server's scale-up links (a serving replica; a training job up to a node) must
    fit in one instance. Where no offer is that large, the largest instance is used. Ties: the
    smaller instance, except on spot, where the larger one is taken (fewer instances are
    preempted less often: the rate is per instance); then the provider's name.
    """
    n = np.atleast_1d(np.asarray(num_gpus, dtype=np.int64))
    need = np.broadcast_to(np.atleast_1d(np.asarray(min_gpus_per_instance, dtype=np.int64)), n.shape)
    index = np.full(n.shape, -1, dtype=np.int64)
    size = np.full(n.shape, quote.gpus_per_instance, dtype=np.int64)
    rate = np.full(n.shape, quote.usd_per_gpu_hour, dtype=float)
    if not quote.options:
        return index, size, rate
    size_order = -1 if quote.term is PriceTerm.SPOT else 1
    largest = max(o.gpus_per_instance for o in quote.options)
    need = np.minimum(need, largest)
    best = np.full(n.shape, np.inf)
    for i, o in sorted(enumerate(quote.options), key=lambda io: (size_order * io[1].gpus_per_instance, io[1].provider)):
        usd_h = np.where(o.gpus_per_instance >= need, usd_per_hour(n, o.gpus_per_instance, o.usd_per_gpu_hour), np.inf)
        better = usd_h < best
        best = np.where(better, usd_h, best)
        index, size, rate = np.where(better, i, index), np.where(better, o.gpus_per_instance, size), np.where(better, o.usd_per_gpu_hour, rate)
    return index, size, rate


def offer_at(quote: PriceQuote, index: int) -> PriceQuote:
    """The quote narrowed to one of its offers (`offer_columns`' index; -1 keeps the quote)."""
    if index < 0:
        return quote
    best = quote.options[index]
    if best.gpus_per_instance == quote.gpus_per_instance and best.usd_per_gpu_hour == quote.usd_per_gpu_hour and best.offering == quote.offering:
        return quote
    return quote.model_copy(update={
        "usd_per_gpu_hour": best.usd_per_gpu_hour, "provider": best.provider, "offering": best.offering, "region": best.region,
        "source": best.source, "as_of": best.as_of, "gpus_per_instance": best.gpus_per_instance, "placeholder": best.placeholder,
        "stale": best.stale,
    })


def offer_for(quote: PriceQuote, num_gpus: int, min_gpus_per_instance: int = 1) -> PriceQuote:
    """The quote narrowed to the offer that makes num_gpus GPUs cheapest (one row of `offer_columns`)."""
    index, _, _ = offer_columns(quote, num_gpus, min_gpus_per_instance)
    return offer_at(quote, int(index[0]))


def _rows_for(gpu: str, pricing: Pricing) -> list[PriceRow]:
    rows = load_prices(Path(pricing.price_file)) if pricing.price_file else load_prices()
    return [r for r in rows if r.gpu == gpu and r.term is pricing.term
            and (pricing.provider is None or r.provider.lower() == pricing.provider.lower())
            and (pricing.allow_placeholder_prices or not r.placeholder)]


def price_quote(gpu: str, pricing: Pricing, assumptions: Assumptions) -> PriceQuote | None:
    """The price of a GPU for the scenario (explicit override first), or None when there is none.

    Cloud: the rows of the GPU, term and provider, placeholders left out unless
    pricing.allow_placeholder_prices; the cheapest per GPU-hour is the headline, and the
    cheapest row per instance size is kept in `options` so that each plan rents the instance
    size that makes it cheapest (`offer_for`). On-prem: whole servers of the catalog's size.
    """
    mult = pricing.price_multiplier
    spot = pricing.term is PriceTerm.SPOT
    rate = assumptions.spot_interruptions_per_instance_hour if spot else 0.0
    rate_source = Assumptions.source_of("spot_interruptions_per_instance_hour") if spot else ""
    if gpu in pricing.usd_per_gpu_hour:
        return PriceQuote(gpu=gpu, usd_per_gpu_hour=pricing.usd_per_gpu_hour[gpu] * mult, provider="scenario",
                          offering="scenario override", term=pricing.term, source="scenario pricing.usd_per_gpu_hour", as_of="scenario",
                          interruptions_per_instance_hour=rate, interruption_source=rate_source)
    if pricing.term is PriceTerm.ON_PREM:
        for row in load_onprem():
            if row.gpu == gpu:
                usd = onprem_usd_per_gpu_hour(row.capex_usd_per_gpu, row.expected_life_years, row.watts_per_gpu_at_wall, assumptions)
                server = resolve_gpu(gpu).gpus_per_node
                return PriceQuote(gpu=gpu, usd_per_gpu_hour=usd * mult, provider="on-prem",
                                  offering=f"{server}-GPU server, capex ${row.capex_usd_per_gpu:,.0f}/GPU over {row.expected_life_years:g} y + {row.watts_per_gpu_at_wall:g} W/GPU",
                                  term=pricing.term, source=row.source, as_of=row.as_of, gpus_per_instance=server)
        return None
    matching = _rows_for(gpu, pricing)
    if not matching:
        return None
    best = min(matching, key=lambda r: (r.usd_per_gpu_hour, r.gpus_per_instance, r.provider))
    per_size: dict[int, PriceRow] = {}
    for r in sorted(matching, key=lambda r: (r.usd_per_gpu_hour, r.provider, r.offering)):
        per_size.setdefault(r.gpus_per_instance, r)
    options = tuple(InstanceOffer(gpus_per_instance=r.gpus_per_instance, usd_per_gpu_hour=r.usd_per_gpu_hour * mult, provider=r.provider,
                                  offering=r.offering, region=r.region, source=r.source, as_of=r.as_of, placeholder=r.placeholder,
                                  stale=is_stale(r.as_of, assumptions))
                    for _, r in sorted(per_size.items()))
    return PriceQuote(gpu=gpu, usd_per_gpu_hour=best.usd_per_gpu_hour * mult, provider=best.provider, offering=best.offering,
                      term=best.term, source=best.source, as_of=best.as_of, gpus_per_instance=best.gpus_per_instance, region=best.region,
                      placeholder=best.placeholder, stale=is_stale(best.as_of, assumptions),
                      interruptions_per_instance_hour=rate, interruption_source=rate_source, options=options)
