"""Dollars: the price of a GPU-hour for a pricing choice, the cost of a training run, of serving.

Cloud: GPU-hours x $/GPU-hour of the chosen provider and term. On-prem: capex amortised
straight-line over the expected life plus wall power x PUE x $/kWh, at full utilisation
(catalogs/onprem.csv; the TCO convention of e.g. SemiAnalysis' GPU cloud economics). Every
cost names the price row it used.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from planner.catalog import load_onprem, load_prices
from planner.enums import PriceTerm
from planner.scenario import Assumptions, Pricing
from planner.units import HOURS_PER_YEAR, SECONDS_PER_HOUR


class PriceQuote(BaseModel):
    """The price used for a GPU, and where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu: str = Field(description="GPU id.")
    usd_per_gpu_hour: float = Field(gt=0, description="Price per GPU-hour after the scenario's multiplier, USD.")
    provider: str = Field(description="Provider, 'on-prem' or 'scenario'.")
    offering: str = Field(description="Instance type or product.")
    term: PriceTerm = Field(description="Pricing term.")
    source: str = Field(description="Source of the row.")
    as_of: str = Field(description="Date of the row.")


def capex_usd_per_gpu_hour(capex_usd: float, life_years: float) -> float:
    """Capex straight-line over the expected life: capex / (life x 8760 h)."""
    return capex_usd / (life_years * HOURS_PER_YEAR)


def power_usd_per_gpu_hour(watts: float, assumptions: Assumptions) -> float:
    """Wall power of a running GPU: watts x PUE x $/kWh / 1000."""
    return watts * assumptions.pue * assumptions.usd_per_kwh / 1000.0


def onprem_usd_per_gpu_hour(capex_usd: float, life_years: float, watts: float, assumptions: Assumptions) -> float:
    """Owned GPU-hour at 100% utilisation: amortised capex plus power."""
    return capex_usd_per_gpu_hour(capex_usd, life_years) + power_usd_per_gpu_hour(watts, assumptions)


def price_quote(gpu: str, pricing: Pricing, assumptions: Assumptions) -> PriceQuote | None:
    """The cheapest matching price row for a GPU (explicit override first), or None when there is none."""
    mult = pricing.price_multiplier
    if gpu in pricing.usd_per_gpu_hour:
        return PriceQuote(gpu=gpu, usd_per_gpu_hour=pricing.usd_per_gpu_hour[gpu] * mult, provider="scenario",
                          offering="scenario override", term=pricing.term, source="scenario pricing.usd_per_gpu_hour", as_of="scenario")
    if pricing.term is PriceTerm.ON_PREM:
        for row in load_onprem():
            if row.gpu == gpu:
                usd = onprem_usd_per_gpu_hour(row.capex_usd_per_gpu, row.expected_life_years, row.watts_per_gpu_at_wall, assumptions)
                return PriceQuote(gpu=gpu, usd_per_gpu_hour=usd * mult, provider="on-prem",
                                  offering=f"capex ${row.capex_usd_per_gpu:,.0f} over {row.expected_life_years:g} y + {row.watts_per_gpu_at_wall:g} W",
                                  term=pricing.term, source=row.source, as_of=row.as_of)
        return None
    rows = load_prices(Path(pricing.price_file)) if pricing.price_file else load_prices()
    matching = [r for r in rows if r.gpu == gpu and r.term is pricing.term
                and (pricing.provider is None or r.provider.lower() == pricing.provider.lower())]
    if not matching:
        return None
    best = min(matching, key=lambda r: (r.usd_per_gpu_hour, r.provider))
    return PriceQuote(gpu=gpu, usd_per_gpu_hour=best.usd_per_gpu_hour * mult, provider=best.provider, offering=best.offering,
                      term=best.term, source=best.source, as_of=best.as_of)


def training_cost_usd(num_gpus: int, time_to_train_s: float, usd_per_gpu_hour: float) -> float:
    """GPU-hours x $/GPU-hour."""
    return num_gpus * time_to_train_s / SECONDS_PER_HOUR * usd_per_gpu_hour


def serving_usd_per_hour(num_gpus: int, usd_per_gpu_hour: float) -> float:
    """Fleet $/hour."""
    return num_gpus * usd_per_gpu_hour


def usd_per_million_tokens(usd_per_hour: float, tokens_per_s: float) -> float:
    """$ per million output tokens at a sustained throughput."""
    return usd_per_hour / (tokens_per_s * SECONDS_PER_HOUR) * 1e6
