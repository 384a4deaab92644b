"""Price files from maintained catalogs: SkyPilot's v7 `vms.csv` files, or live offers through gpuhunt.

SkyPilot (github.com/skypilot-org/skypilot-catalog, catalogs/v7/<cloud>/vms.csv) keeps one row per
instance type and region with the columns InstanceType, AcceleratorName, AcceleratorCount,
vCPUs, MemoryGiB, Price, Region, GpuInfo, SpotPrice (column order differs between clouds; they
are read by name). `import_skypilot` turns the GPU rows into planner price rows: the accelerator
mapped to a catalog GPU, the instance size kept (`gpus_per_instance`), the instance price
divided by its GPUs, one row per (cloud, instance type, term) at its cheapest region. The result
is written atomically as a dated CSV that a scenario names in `pricing.price_file`.
"""

from __future__ import annotations

import ast
import csv
import datetime as dt
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from planner.catalog import PriceRow, resolve_gpu
from planner.errors import InputError, UnknownNameError
from planner.files import write_atomically

SKYPILOT_REPO = "github.com/skypilot-org/skypilot-catalog"
PRICE_COLUMNS = ("gpu", "provider", "offering", "region", "term", "usd_per_gpu_hour", "gpus_per_instance", "placeholder", "source", "as_of")

SKYPILOT_NAMES: dict[str, str | None] = {
    "a100-80gb-sxm": "A100-80GB",
    "a100-80gb": "A100-80GB",  # AWS p4de, GCP a2-ultragpu: SXM4
    "h100-sxm": "H100-SXM",
    "h100-nvl": None,
    "h200": "H200",
    "b200": "B200",
    "l40s": "L40S",
    "l4": "L4",
    "a10g": "A10G",
    "rtx4090": "RTX-4090",
    "rtx3090": "RTX-3090",
    "mi300x": "MI300X",
}
"""SkyPilot accelerator names whose catalog GPU is not its alias lookup (None: no catalog card)."""

SKYPILOT_CLOUD_NAMES: dict[tuple[str, str], str | None] = {
    ("runpod", "a100-80gb"): None,  # RunPod's 'A100-80GB' is the PCIe card ('A100-80GB-SXM' is the SXM4 one): no catalog card
}
"""Names that mean another card on one cloud."""


class ImportSummary(BaseModel):
    """What an import read, kept and could not map."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    path: str = Field(description="The price file written.")
    rows: int = Field(description="Price rows written.")
    clouds: tuple[str, ...] = Field(description="Clouds read.")
    gpus: tuple[str, ...] = Field(description="Catalog GPUs priced.")
    unmapped: tuple[str, ...] = Field(description="Accelerator names with no catalog GPU (skipped).")
    skipped_spot: int = Field(default=0, description="Rows whose spot price is above their on-demand price (skipped as inconsistent).")


def _gpu_memory_mib(gpu_info: str | None) -> float | None:
    """Per-GPU memory from SkyPilot's GpuInfo (a Python-literal dict), when present."""
    if not gpu_info or not gpu_info.startswith("{"):
        return None
    try:
        info = ast.literal_eval(gpu_info)
        return float(info["Gpus"][0]["MemoryInfo"]["SizeInMiB"])
    except (ValueError, SyntaxError, KeyError, IndexError, TypeError):
        return None


def catalog_gpu(accelerator: str, instance_type: str, gpu_info: str | None, cloud: str = "") -> str | None:
    """The catalog GPU of a SkyPilot accelerator, or None when the catalog has no such card.

    'A100' is told apart by its memory (40 GiB or 80 GiB); 'H100' by the instance name (PCIe,
    NVL or SXM, SkyPilot uses one name for all three).
    """
    key = accelerator.strip().lower()
    instance = instance_type.lower()
    if (cloud.lower(), key) in SKYPILOT_CLOUD_NAMES:
        return SKYPILOT_CLOUD_NAMES[(cloud.lower(), key)]
    if key == "a100":
        if "pci" in instance:
            return None  # A100 PCIe: no catalog card
        memory = _gpu_memory_mib(gpu_info)
        return "A100-40GB" if memory is not None and memory < 50_000 else "A100-80GB"
    if key == "h100":
        if "nvl" in instance:
            return None
        return "H100-PCIe" if "pcie" in instance else "H100-SXM"
    if key in SKYPILOT_NAMES:
        return SKYPILOT_NAMES[key]
    try:
        return resolve_gpu(accelerator).name
    except UnknownNameError:
        return None


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is not None and number > 0 else None


def skypilot_rows(cloud: str, text: str, as_of: str) -> tuple[list[PriceRow], set[str], int]:
    """Price rows of one cloud's vms.csv text: (rows, unmapped accelerator names, inconsistent spot prices skipped)."""
    reader = csv.DictReader(io.StringIO(text))
    missing = {"InstanceType", "AcceleratorName", "AcceleratorCount", "Price", "Region"} - set(reader.fieldnames or ())
    if missing:
        raise InputError(f"{cloud}/vms.csv: missing SkyPilot columns {', '.join(sorted(missing))} (expected the v7 vms.csv format).")
    best: dict[tuple[str, str, str], tuple[float, str, str, int]] = {}
    unmapped: set[str] = set()
    skipped_spot = 0
    for raw in reader:
        name, count = (raw.get("AcceleratorName") or "").strip(), _number(raw.get("AcceleratorCount"))
        if not name or count is None or count != int(count):
            continue
        gpu = catalog_gpu(name, raw["InstanceType"], raw.get("GpuInfo"), cloud)
        if gpu is None:
            unmapped.add(name)
            continue
        on_demand, spot = _number(raw.get("Price")), _number(raw.get("SpotPrice"))
        if spot is not None and on_demand is not None and spot > on_demand:
            skipped_spot += 1  # a spot price above on-demand: the two columns cannot both be right, so neither is used
            continue
        for term, price in (("on_demand", on_demand), ("spot", spot)):
            if price is None:
                continue
            key = (gpu, raw["InstanceType"], term)
            per_gpu = price / count
            if key not in best or per_gpu < best[key][0]:
                best[key] = (per_gpu, raw["Region"] or "", raw["InstanceType"], int(count))
    source = f"{SKYPILOT_REPO} catalogs/v7/{cloud}/vms.csv (SkyPilot catalog, machine-read)"
    rows = [PriceRow(gpu=gpu, provider=cloud, offering=f"{instance} ({count}x {gpu})", region=region, term=term,
                     usd_per_gpu_hour=round(per_gpu, 6), gpus_per_instance=count, placeholder=False, source=source, as_of=as_of)
            for (gpu, _, term), (per_gpu, region, instance, count) in sorted(best.items())]
    return rows, unmapped, skipped_spot


def write_price_file(rows: Iterable[PriceRow], path: Path) -> Path:
    """Write price rows as CSV with the catalog's columns, atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"--out: folder {path.parent} does not exist.")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PRICE_COLUMNS)
    for r in rows:
        writer.writerow([r.gpu, r.provider, r.offering, r.region, r.term.value, f"{r.usd_per_gpu_hour:.10g}", r.gpus_per_instance,
                         str(r.placeholder).lower(), r.source, r.as_of])
    return write_atomically(path, lambda stream: stream.write(buffer.getvalue().encode()))


def dated_name(prefix: str, as_of: str) -> str:
    """prices-<prefix>-YYYY-MM-DD.csv."""
    return f"prices-{prefix}-{as_of}.csv"


def import_skypilot(directory: Path, out: Path | None = None, as_of: str | None = None) -> ImportSummary:
    """Read every <cloud>/vms.csv under a SkyPilot catalog folder (e.g. ~/.sky/catalogs/v7) and write a dated price file."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise InputError(f"--skypilot: {directory} is not a folder (expected a SkyPilot catalog folder with <cloud>/vms.csv files).")
    files = sorted(directory.glob("*/vms.csv"))
    if not files and (directory / "vms.csv").is_file():
        files = [directory / "vms.csv"]
    if not files:
        raise InputError(f"--skypilot: no <cloud>/vms.csv under {directory} (SkyPilot keeps them in ~/.sky/catalogs/v7/).")
    if as_of is not None:
        try:
            as_of = dt.date.fromisoformat(as_of).isoformat()
        except ValueError:
            raise InputError(f"--as-of: {as_of!r} is not a date; use YYYY-MM-DD.") from None
    as_of = as_of or dt.date.today().isoformat()
    rows: list[PriceRow] = []
    unmapped: set[str] = set()
    skipped = 0
    for path in files:
        cloud_rows, cloud_unmapped, cloud_skipped = skypilot_rows(path.parent.name, path.read_text(), as_of)
        rows += cloud_rows
        unmapped |= cloud_unmapped
        skipped += cloud_skipped
    if not rows:
        raise InputError(f"--skypilot: no GPU row of {directory} maps to a catalog GPU (unmapped: {', '.join(sorted(unmapped)) or 'none'}).")
    target = Path(out) if out else Path(dated_name("skypilot", as_of))
    if target.is_dir():
        target = target / dated_name("skypilot", as_of)
    write_price_file(rows, target)
    return ImportSummary(path=str(target), rows=len(rows), clouds=tuple(p.parent.name for p in files),
                         gpus=tuple(sorted({r.gpu for r in rows})), unmapped=tuple(sorted(unmapped)), skipped_spot=skipped)


# ---- live offers (optional extra planner[live]) -----------------------------------------------


def gpuhunt_rows(items: Iterable[Any], as_of: str) -> tuple[list[PriceRow], set[str]]:
    """Price rows from gpuhunt catalog items (instance_name, location, price, gpu_count, gpu_name, spot, provider)."""
    best: dict[tuple[str, str, str, str], tuple[float, str, int]] = {}
    unmapped: set[str] = set()
    for item in items:
        count = getattr(item, "gpu_count", 0) or 0
        name = getattr(item, "gpu_name", None) or ""
        price = getattr(item, "price", None)
        if not name or count < 1 or count != int(count) or not price or price <= 0:
            continue
        gpu = catalog_gpu(name, str(getattr(item, "instance_name", "")), None)
        if gpu is None:
            unmapped.add(name)
            continue
        term = "spot" if getattr(item, "spot", False) else "on_demand"
        provider = str(getattr(item, "provider", "unknown"))
        key = (gpu, provider, str(item.instance_name), term)
        per_gpu = price / count
        if key not in best or per_gpu < best[key][0]:
            best[key] = (per_gpu, str(getattr(item, "location", "") or ""), int(count))
    rows = [PriceRow(gpu=gpu, provider=provider, offering=f"{instance} ({count}x {gpu})", region=region, term=term,
                     usd_per_gpu_hour=round(per_gpu, 6), gpus_per_instance=count, placeholder=False,
                     source=f"gpuhunt live query of {provider} (github.com/dstackai/gpuhunt), machine-read", as_of=as_of)
            for (gpu, provider, instance, term), (per_gpu, region, count) in sorted(best.items())]
    return rows, unmapped


def fetch_live(out: Path | None = None, providers: tuple[str, ...] = ()) -> ImportSummary:
    """Query current offers with gpuhunt (the `planner[live]` extra; needs the network) and write a dated price file."""
    try:
        import gpuhunt  # type: ignore[import-not-found]
    except ImportError:
        raise InputError("prices fetch: needs the optional gpuhunt library; install it with `pip install 'planner[live]'`.") from None
    as_of = dt.date.today().isoformat()
    try:
        items = gpuhunt.query(min_gpu_count=1, **({"provider": list(providers)} if providers else {}))
    except Exception as err:  # network or provider errors surface as one line
        raise InputError(f"prices fetch: gpuhunt query failed ({type(err).__name__}: {err}).") from None
    rows, unmapped = gpuhunt_rows(items, as_of)
    if not rows:
        raise InputError("prices fetch: no offer maps to a catalog GPU.")
    target = Path(out) if out else Path(dated_name("live", as_of))
    if target.is_dir():
        target = target / dated_name("live", as_of)
    write_price_file(rows, target)
    return ImportSummary(path=str(target), rows=len(rows), clouds=tuple(sorted({r.provider for r in rows})),
                         gpus=tuple(sorted({r.gpu for r in rows})), unmapped=tuple(sorted(unmapped)))
