"""Cost arithmetic against DeepSeek-V3's published accounting, and the price lookup rules.

DeepSeek-AI 2024, 'DeepSeek-V3 Technical Report' (arXiv:2412.19437) Table 1 and Sec. 1: 180K
H800 GPU-hours per trillion tokens, 14.8T tokens -> 2,664K GPU-hours of pre-training; 119K for
context extension, 5K for post-training, 2,788K in total; at an assumed $2 per GPU-hour that is
$5.328M, $0.238M, $0.01M and $5.576M; '3.7 days per trillion tokens on our cluster of 2048 H800'.
The rows are in shared/reference/training_runs.csv (ids DSV3-*).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from planner.catalog import CATALOG_DIR
from planner.cost import onprem_usd_per_gpu_hour, price_quote, serving_usd_per_hour, training_cost_usd, usd_per_million_tokens
from planner.enums import PriceTerm
from planner.scenario import Assumptions, Pricing
from tests.reference import REFERENCE_DIR, reference_rows

needs_reference = pytest.mark.skipif(not REFERENCE_DIR.is_dir(), reason=f"reference figures not found at {REFERENCE_DIR}")

ASSUMPTIONS = Assumptions.with_overrides()
H800_USD_PER_HOUR = 2.0
CLUSTER = 2048


def _dsv3() -> dict[str, dict[str, str]]:
    return {r["id"]: r for r in reference_rows("training_runs.csv") if r["id"].startswith("DSV3-")}


def _seconds_on_cluster(gpu_hours: float, gpus: int = CLUSTER) -> float:
    return gpu_hours / gpus * 3600.0


# ---- DeepSeek-V3 -------------------------------------------------------------------------


@needs_reference
def test_dsv3_pretraining_gpu_hours_are_180k_per_trillion_tokens():
    """180K GPU-hours/T x 14.8T = 2.664M GPU-hours, the DSV3-pretrain row."""
    row = _dsv3()["DSV3-pretrain"]
    assert row["tokens_trained"] == "14.8T"
    assert float(row["gpu_hours"]) == 2_664_000
    assert 180_000 * 14.8 == pytest.approx(float(row["gpu_hours"]), rel=1e-12)
    # through the planner: GPU-hours x $1 = GPU-hours
    assert training_cost_usd(CLUSTER, _seconds_on_cluster(2.664e6), 1.0) == pytest.approx(2.664e6, rel=1e-9)


@needs_reference
def test_dsv3_pretraining_cost_is_5_328m():
    """2.664M H800 GPU-hours at $2 = $5.328M (Table 1)."""
    cost = training_cost_usd(CLUSTER, _seconds_on_cluster(2.664e6), H800_USD_PER_HOUR)
    assert cost == pytest.approx(5.328e6, rel=1e-9)
    assert "$5.328M" in _dsv3()["DSV3-pretrain"]["other_metric"]


@needs_reference
def test_dsv3_stage_costs_and_total():
    """119K + 5K + 2,664K = 2,788K GPU-hours; x $2: $0.238M, $0.01M, total $5.576M."""
    rows = _dsv3()
    hours = {k: float(rows[k]["gpu_hours"]) for k in ("DSV3-pretrain", "DSV3-ctxext", "DSV3-post", "DSV3-total")}
    assert hours["DSV3-pretrain"] + hours["DSV3-ctxext"] + hours["DSV3-post"] == hours["DSV3-total"] == 2_788_000
    costs = {k: training_cost_usd(CLUSTER, _seconds_on_cluster(h), H800_USD_PER_HOUR) for k, h in hours.items()}
    assert costs["DSV3-ctxext"] == pytest.approx(0.238e6, rel=1e-9)
    assert costs["DSV3-post"] == pytest.approx(0.01e6, rel=1e-9)
    assert costs["DSV3-total"] == pytest.approx(5.576e6, rel=1e-9)
    assert "$5.576M" in rows["DSV3-total"]["other_metric"]


def test_dsv3_cost_does_not_depend_on_how_the_gpu_hours_are_split():
    """Same GPU-hours on 1024 or 4096 GPUs cost the same (cost = GPUs x time x price)."""
    for gpus in (1024, 2048, 4096):
        assert training_cost_usd(gpus, _seconds_on_cluster(2.664e6, gpus), 2.0) == pytest.approx(5.328e6, rel=1e-9)


def test_dsv3_days_per_trillion_tokens():
    """180K GPU-hours on 2048 GPUs = 3.66 days, printed '3.7 days' (half a unit of the last printed digit).

    The exact figure is 3.662 days, 1.03% below the printed 3.7: a 1% relative tolerance would
    fail on the paper's rounding, so the tolerance is the printed precision (+-0.05 day).
    """
    days = 180_000 / CLUSTER / 24
    assert days == pytest.approx(3.662109375, rel=1e-12)
    assert abs(days - 3.7) <= 0.05
    assert round(days, 1) == 3.7
    # the planner's arithmetic gives the same seconds back: 2048 GPUs x t / 3600 x $1 = 180K
    seconds = days * 86400.0
    assert training_cost_usd(CLUSTER, seconds, 1.0) == pytest.approx(180_000, rel=1e-12)


# ---- price lookup --------------------------------------------------------------------------


def _catalog_price_rows() -> list[dict[str, str]]:
    with (CATALOG_DIR / "prices.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _cheapest(gpu: str, term: str, provider: str | None = None) -> float | None:
    prices = [float(r["usd_per_gpu_hour"]) for r in _catalog_price_rows()
              if r["gpu"] == gpu and r["term"] == term and (provider is None or r["provider"].lower() == provider.lower())]
    return min(prices) if prices else None


def test_on_demand_quote_is_the_cheapest_catalog_row():
    quote = price_quote("H100-SXM", Pricing(), ASSUMPTIONS)
    assert quote is not None
    assert quote.usd_per_gpu_hour == _cheapest("H100-SXM", "on_demand")
    assert quote.term is PriceTerm.ON_DEMAND
    assert quote.source and quote.as_of


def test_explicit_override_wins_over_catalog_rows():
    pricing = Pricing(usd_per_gpu_hour={"H100-SXM": 1.23})
    quote = price_quote("H100-SXM", pricing, ASSUMPTIONS)
    assert quote is not None and quote.usd_per_gpu_hour == 1.23 and quote.provider == "scenario"
    # also over the on-prem formula and a provider filter
    quote = price_quote("H100-SXM", Pricing(term="on_prem", provider="AWS", usd_per_gpu_hour={"H100-SXM": 1.23}), ASSUMPTIONS)
    assert quote is not None and quote.usd_per_gpu_hour == 1.23
    # other GPUs keep their catalog price
    other = price_quote("A100-80GB", pricing, ASSUMPTIONS)
    assert other is not None and other.usd_per_gpu_hour == _cheapest("A100-80GB", "on_demand")


def test_price_multiplier_scales_every_source():
    base = price_quote("H100-SXM", Pricing(), ASSUMPTIONS)
    scaled = price_quote("H100-SXM", Pricing(price_multiplier=1.5), ASSUMPTIONS)
    assert base is not None and scaled is not None
    assert scaled.usd_per_gpu_hour == pytest.approx(1.5 * base.usd_per_gpu_hour, rel=1e-12)
    override = price_quote("H100-SXM", Pricing(usd_per_gpu_hour={"H100-SXM": 2.0}, price_multiplier=0.5), ASSUMPTIONS)
    assert override is not None and override.usd_per_gpu_hour == pytest.approx(1.0, rel=1e-12)
    onprem = price_quote("H100-SXM", Pricing(term="on_prem"), ASSUMPTIONS)
    onprem2 = price_quote("H100-SXM", Pricing(term="on_prem", price_multiplier=2.0), ASSUMPTIONS)
    assert onprem is not None and onprem2 is not None
    assert onprem2.usd_per_gpu_hour == pytest.approx(2.0 * onprem.usd_per_gpu_hour, rel=1e-12)


def test_term_filter_spot_vs_on_demand():
    """H100-SXM has both spot and on_demand rows in catalogs/prices.csv: each term quotes its own cheapest row."""
    spot_csv, on_demand_csv = _cheapest("H100-SXM", "spot"), _cheapest("H100-SXM", "on_demand")
    assert spot_csv is not None and on_demand_csv is not None and spot_csv != on_demand_csv
    spot = price_quote("H100-SXM", Pricing(term="spot"), ASSUMPTIONS)
    on_demand = price_quote("H100-SXM", Pricing(term="on_demand"), ASSUMPTIONS)
    assert spot is not None and on_demand is not None
    assert spot.usd_per_gpu_hour == spot_csv and spot.term is PriceTerm.SPOT
    assert on_demand.usd_per_gpu_hour == on_demand_csv
    assert (spot.provider, spot.offering) != (on_demand.provider, on_demand.offering)


def test_provider_filter_is_case_insensitive():
    quote = price_quote("H100-SXM", Pricing(term="spot", provider="nebius"), ASSUMPTIONS)
    assert quote is not None
    assert quote.provider == "Nebius" and quote.usd_per_gpu_hour == _cheapest("H100-SXM", "spot", "Nebius")
    assert price_quote("H100-SXM", Pricing(provider="NoSuchCloud"), ASSUMPTIONS) is None


def test_on_prem_is_amortised_capex_plus_power():
    """capex / (life x 8760 h) + watts x PUE x $/kWh / 1000 + hosting (kW x $/kW-month / 730 h), x multiplier, from catalogs/onprem.csv."""
    with (CATALOG_DIR / "onprem.csv").open(newline="") as handle:
        rows = {r["gpu"]: r for r in csv.DictReader(handle)}
    assert rows, "onprem.csv is empty"
    for gpu, row in rows.items():
        capex, life, watts = float(row["capex_usd_per_gpu"]), float(row["expected_life_years"]), float(row["watts_per_gpu_at_wall"])
        expected = (capex / (life * 8760.0) + watts * ASSUMPTIONS.pue * ASSUMPTIONS.usd_per_kwh / 1000.0
                    + watts / 1000.0 * ASSUMPTIONS.hosting_usd_per_kw_month / 730.0)
        quote = price_quote(gpu, Pricing(term="on_prem", price_multiplier=1.25), ASSUMPTIONS)
        assert quote is not None and quote.provider == "on-prem", gpu
        assert quote.usd_per_gpu_hour == pytest.approx(1.25 * expected, rel=1e-12), gpu
        assert quote.term is PriceTerm.ON_PREM
    # H100-SXM by hand: $40,000 over 5 y + 1275 W x 1.3 x $0.10/kWh
    assert onprem_usd_per_gpu_hour(40_000, 5, 1275, Assumptions.with_overrides({"pue": 1.3, "usd_per_kwh": 0.10, "hosting_usd_per_kw_month": 0})) == pytest.approx(
        40_000 / 43_800 + 1.275 * 1.3 * 0.10, rel=1e-12)
    # hosting by hand: 1.275 kW x $150/kW-month / 730 h
    with_hosting = Assumptions.with_overrides({"pue": 1.3, "usd_per_kwh": 0.10, "hosting_usd_per_kw_month": 150})
    assert onprem_usd_per_gpu_hour(40_000, 5, 1275, with_hosting) == pytest.approx(40_000 / 43_800 + 1.275 * 1.3 * 0.10 + 1.275 * 150 / 730, rel=1e-12)
    # the electricity assumptions are honoured
    cheap_power = Assumptions.with_overrides({"usd_per_kwh": 0.0, "hosting_usd_per_kw_month": 0})
    quote = price_quote("H100-SXM", Pricing(term="on_prem"), cheap_power)
    assert quote is not None
    assert quote.usd_per_gpu_hour == pytest.approx(float(rows["H100-SXM"]["capex_usd_per_gpu"]) / (float(rows["H100-SXM"]["expected_life_years"]) * 8760.0))


def test_on_prem_gpu_without_a_row_has_no_price():
    assert price_quote("NoSuchGPU", Pricing(term="on_prem"), ASSUMPTIONS) is None


PRICE_COLUMNS = ["gpu", "provider", "offering", "region", "term", "usd_per_gpu_hour", "source", "as_of"]
"""A user's price file in the original eight columns still loads (one GPU per instance, not a placeholder)."""
CATALOG_COLUMNS = ["gpu", "provider", "offering", "region", "term", "usd_per_gpu_hour", "gpus_per_instance", "placeholder", "source", "as_of"]


def _write_price_file(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PRICE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def test_user_price_file_replaces_the_catalog(tmp_path):
    with (CATALOG_DIR / "prices.csv").open(newline="") as handle:
        assert csv.DictReader(handle).fieldnames == CATALOG_COLUMNS, "the catalog's columns changed; update CATALOG_COLUMNS"
    path = _write_price_file(tmp_path / "my_prices.csv", [
        dict(gpu="H100-SXM", provider="MyCloud", offering="8x H100 box", region="eu", term="on_demand", usd_per_gpu_hour=0.99,
             source="our contract", as_of="2026-01-01"),
        dict(gpu="H100-SXM", provider="OtherCloud", offering="H100", region="eu", term="on_demand", usd_per_gpu_hour=1.49,
             source="quote", as_of="2026-01-01"),
        dict(gpu="H100-SXM", provider="MyCloud", offering="8x H100 box", region="eu", term="spot", usd_per_gpu_hour=0.5,
             source="our contract", as_of="2026-01-01"),
    ])
    quote = price_quote("H100-SXM", Pricing(price_file=str(path)), ASSUMPTIONS)
    assert quote is not None
    assert (quote.usd_per_gpu_hour, quote.provider, quote.source) == (0.99, "MyCloud", "our contract")
    assert price_quote("H100-SXM", Pricing(price_file=str(path), provider="othercloud"), ASSUMPTIONS).usd_per_gpu_hour == 1.49
    assert price_quote("H100-SXM", Pricing(price_file=str(path), term="spot"), ASSUMPTIONS).usd_per_gpu_hour == 0.5
    # a GPU the user's file does not price has no price (the catalog is not consulted)
    assert _cheapest("A100-80GB", "on_demand") is not None
    assert price_quote("A100-80GB", Pricing(price_file=str(path)), ASSUMPTIONS) is None
    # multiplier applies to the user's rows too
    assert price_quote("H100-SXM", Pricing(price_file=str(path), price_multiplier=2.0), ASSUMPTIONS).usd_per_gpu_hour == pytest.approx(1.98)


@pytest.mark.parametrize("gpu,term", [("H800", "spot"), ("A10G", "spot"), ("H100-SXM", "reserved_3y"), ("MI300X", "reserved_1y")])
def test_no_row_for_the_term_gives_none(gpu, term):
    assert _cheapest(gpu, term) is None, "catalog gained a row; pick another case"
    assert price_quote(gpu, Pricing(term=term), ASSUMPTIONS) is None


# ---- serving arithmetic --------------------------------------------------------------------


def test_usd_per_million_tokens():
    """$10/h at 1000 tokens/s: 3.6M tokens/h -> $10/3.6 per million (within one ulp of the correctly rounded 25/9)."""
    value = usd_per_million_tokens(10.0, 1000.0)
    assert abs(value - 10 / 3.6) <= math.ulp(10 / 3.6)
    assert value == pytest.approx(25 / 9, rel=1e-15)


def test_serving_usd_per_hour_is_gpus_times_price():
    assert serving_usd_per_hour(16, 2.5) == 40.0
    assert usd_per_million_tokens(serving_usd_per_hour(8, 2.0), 4000.0) == pytest.approx(16 / (4000 * 3600) * 1e6, rel=1e-15)
