"""Catalog loading: GPUs, cloud prices, on-prem purchase rows, models, default assumptions.

Data lives in `catalogs/` (CSV, JSON, YAML), every row with `source` and `as_of`. This module
only reads and validates it; no number is typed here. Names resolve case-insensitively through
each row's aliases, with did-you-mean suggestions on a miss.
"""

from __future__ import annotations

import csv
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.enums import PriceTerm
from planner.errors import InputError, UnknownNameError
from planner.files import settled, stat_key
from planner.modelspec import ModelSpec, load_config_json
from planner.units import BYTES_PER_GIB

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""PyYAML's safe loader, in C (libyaml) where PyYAML was built with it: the same documents, several times faster."""

CATALOG_DIR = Path(__file__).resolve().parent.parent / "catalogs"


class GpuSpec(BaseModel):
    """One accelerator model, as catalogs/gpus.csv describes it."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    name: str = Field(description="Canonical id, e.g. H100-SXM.")
    display_name: str = Field(description="Human name.")
    vendor: str = Field(description="NVIDIA, AMD, ...")
    aliases: tuple[str, ...] = Field(default=(), description="Other spellings users type.")
    memory_gb: float = Field(gt=0, description="Marketed memory, GB (1e9 bytes).")
    memory_gib: float = Field(gt=0, description="Usable memory as the driver reports it, GiB.")
    memory_source: str = Field(default="", description="Where the usable-memory figure comes from.")
    hbm_bandwidth_gbps: float = Field(gt=0, description="Memory bandwidth, GB/s.")
    bf16_dense_tflops: float | None = Field(default=None, description="Dense BF16 tensor TFLOP/s (no sparsity).")
    fp16_dense_tflops: float | None = Field(default=None, description="Dense FP16 tensor TFLOP/s.")
    fp8_dense_tflops: float | None = Field(default=None, description="Dense FP8 tensor TFLOP/s; None without FP8.")
    int8_dense_tops: float | None = Field(default=None, description="Dense INT8 tensor TOP/s.")
    fp32_tflops: float | None = Field(default=None, description="Non-tensor FP32 TFLOP/s.")
    measured_bf16_matmul_tflops: float | None = Field(default=None, description="Measured BF16 matmul ceiling.")
    measured_fp8_matmul_tflops: float | None = Field(default=None, description="Measured FP8 matmul ceiling.")
    scaleup_link_gbps: float = Field(gt=0, description="Scale-up (NVLink/PCIe) bandwidth per GPU, GB/s one way.")
    scaleup_kind: str = Field(description="NVLink4, PCIe4, ...")
    gpus_per_node: int = Field(gt=0, description="GPUs in the usual server.")
    network_gbps_per_gpu: float = Field(gt=0, description="Scale-out network per GPU, GB/s.")
    tdp_watts: float = Field(gt=0, description="Board power, W.")
    supports_fp8: bool = Field(description="Has FP8 tensor cores.")
    specs_source: str = Field(description="Where the numbers come from.")
    as_of: str = Field(description="Date of the source.")

    @property
    def memory_bytes(self) -> float:
        """Usable bytes per card (rounded down from GiB by the caller that needs integers)."""
        return self.memory_gib * BYTES_PER_GIB


class PriceRow(BaseModel):
    """One cloud price: a GPU at a provider, offering, region and term."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    gpu: str = Field(description="GPU id from gpus.csv.")
    provider: str = Field(description="Cloud or marketplace.")
    offering: str = Field(description="Instance type or product.")
    region: str = Field(description="Region the price applies to.")
    term: PriceTerm = Field(description="on_demand, spot, reserved_1y or reserved_3y.")
    usd_per_gpu_hour: float = Field(gt=0, description="Price per GPU-hour, USD (instance price / GPUs per instance).")
    gpus_per_instance: int = Field(default=1, ge=1, le=64, description="GPUs in the smallest unit rented (a whole instance); 1 when sold per GPU.")
    placeholder: bool = Field(default=False, description="No primary or machine-read source (an assumption or an unverified figure): not chosen unless the scenario allows placeholders.")
    source: str = Field(description="Where the price comes from (public URL or repository + path).")
    as_of: str = Field(description="Date of the price, YYYY-MM-DD.")


class OnPremRow(BaseModel):
    """Buying a GPU: capex, life and wall power, for total cost of ownership."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    gpu: str = Field(description="GPU id from gpus.csv.")
    capex_usd_per_gpu: float = Field(gt=0, description="Purchase price per GPU incl. its server share, USD.")
    expected_life_years: float = Field(gt=0, description="Depreciation period, years.")
    watts_per_gpu_at_wall: float = Field(gt=0, description="GPU plus its share of server power, W.")
    source: str = Field(description="Where the figures come from.")
    as_of: str = Field(description="Date of the figures.")


class ModelEntry(BaseModel):
    """One catalog model: its config file and its published parameter counts."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    name: str = Field(description="Model id.")
    display_name: str = Field(description="Human name.")
    config_file: str = Field(description="config.json file under catalogs/models/.")
    aliases: tuple[str, ...] = Field(default=(), description="Other names.")
    published_total_params_b: float = Field(gt=0, description="Published total parameters, billions.")
    published_active_params_b: float | None = Field(default=None, description="Published active parameters (MoE).")
    checkpoint_params: int | None = Field(default=None, description="Exact parameter count of the released checkpoint, where published.")
    checkpoint_params_source: str | None = Field(default=None, description="Where the checkpoint count comes from.")
    params_source: str = Field(description="Where the published count comes from.")
    config_source: str = Field(default="", description="Where the config.json values come from.")
    as_of: str = Field(description="Date.")


def _read_csv(path: Path) -> list[dict[str, Any]]:
    import io

    from planner.files import read_text_file

    try:
        rows = list(csv.DictReader(io.StringIO(read_text_file(Path(path), "CSV file"), newline="")))
    except csv.Error as err:
        raise InputError(f"{path}: malformed CSV ({err}).") from None
    cleaned = []
    for row in rows:
        cleaned.append({k.strip(): (v.strip() if isinstance(v, str) and v.strip() != "" else None) for k, v in row.items() if k})
    return cleaned


def _split_aliases(row: dict[str, Any]) -> dict[str, Any]:
    raw = row.get("aliases") or ""
    return {**row, "aliases": tuple(a.strip() for a in raw.split(";") if a.strip())}


def _validated(model: type[BaseModel], rows: list[dict[str, Any]], path: Path) -> list[Any]:
    out = []
    for line, row in enumerate(rows, start=2):
        try:
            out.append(model.model_validate(row))
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise InputError(f"{path}:{line}: {field}: {first['msg']}.") from None
    return out


@lru_cache(maxsize=8)
def load_gpus(path: Path = CATALOG_DIR / "gpus.csv") -> tuple[GpuSpec, ...]:
    """All GPUs of the catalog."""
    return tuple(_validated(GpuSpec, [_split_aliases(r) for r in _read_csv(path)], path))


@lru_cache(maxsize=8)
def load_prices(path: Path = CATALOG_DIR / "prices.csv") -> tuple[PriceRow, ...]:
    """All cloud price rows of a price file (the catalog's, or a user's own with the same columns).

    gpus_per_instance and placeholder may be left out or empty (1 GPU, not a placeholder).
    """
    rows = [{k: v for k, v in row.items() if v is not None or k not in ("gpus_per_instance", "placeholder")} for row in _read_csv(path)]
    return tuple(_validated(PriceRow, rows, path))


@lru_cache(maxsize=4)
def load_onprem(path: Path = CATALOG_DIR / "onprem.csv") -> tuple[OnPremRow, ...]:
    """On-prem purchase rows for TCO."""
    return tuple(_validated(OnPremRow, _read_csv(path), path))


@lru_cache(maxsize=4)
def load_model_entries(path: Path = CATALOG_DIR / "models.csv") -> tuple[ModelEntry, ...]:
    """The model index."""
    return tuple(_validated(ModelEntry, [_split_aliases(r) for r in _read_csv(path)], path))


@lru_cache(maxsize=2)
def load_assumption_defaults(path: Path = CATALOG_DIR / "assumptions.yaml") -> dict[str, dict[str, Any]]:
    """Default efficiencies, reserves and rates, each with its value and its source."""
    try:
        data = yaml.load(path.read_text(), Loader=SAFE_LOADER)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found.") from None
    return data


def _names(name: str, aliases: tuple[str, ...]) -> set[str]:
    return {name.lower(), *(a.lower() for a in aliases)}


_NAME_INDEX: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}


def _name_index(rows: tuple[Any, ...]) -> dict[str, Any]:
    """Lower-case name and alias -> the first catalog row that has it, built once per loaded catalog tuple."""
    held = _NAME_INDEX.get(id(rows))
    if held is None or held[0] is not rows:
        index: dict[str, Any] = {}
        for row in rows:
            for key in _names(row.name, row.aliases):
                index.setdefault(key, row)
        if len(_NAME_INDEX) >= 16:
            _NAME_INDEX.clear()
        held = _NAME_INDEX[id(rows)] = (rows, index)
    return held[1]


def resolve_gpu(name: str, where: str = "gpu") -> GpuSpec:
    """The catalog GPU named `name` or one of its aliases (case-insensitive)."""
    gpus = load_gpus()
    found = _name_index(gpus).get(name.strip().lower())
    if found is not None:
        return found
    raise UnknownNameError("GPU", name, [g.name for g in gpus], where, {a: g.name for g in gpus for a in g.aliases})


MODEL_CACHE_ENTRIES = 64
"""Parsed model specs kept per process (`resolve_model`), so a study does not re-read a config.json for every case."""
_MODEL_CACHE: OrderedDict[tuple[Any, ...], ModelSpec] = OrderedDict()


def _load_config_cached(path: Path, where: str, name: str | None = None) -> ModelSpec:
    """`load_config_json` (renamed to `name` when given), cached on the path as given and the file it resolves to
    (device, inode: `stat` follows links), size, mtime and ctime: the same immutable `ModelSpec` object while the file
    is unchanged. Errors are never cached."""
    stat = stat_key(path)
    key = (*stat, name) if stat is not None else None
    if key is not None and key in _MODEL_CACHE:
        _MODEL_CACHE.move_to_end(key)
        return _MODEL_CACHE[key]
    spec = load_config_json(path, where)
    if name is not None:
        spec = spec.model_copy(update={"name": name})
    if key is not None and settled(key):
        _MODEL_CACHE[key] = spec
        while len(_MODEL_CACHE) > MODEL_CACHE_ENTRIES:
            _MODEL_CACHE.popitem(last=False)
    return spec


def resolve_model(name_or_path: str, where: str = "model") -> ModelSpec:
    """A catalog model by name or alias, or a user's own config.json by path (parsed once while the file is unchanged)."""
    path = Path(name_or_path).expanduser()
    try:
        is_file = path.is_file()
    except OSError:
        is_file = False
    if name_or_path.endswith(".json") or is_file:
        return _load_config_cached(path, where)
    entry = model_entry(name_or_path, where)
    return _load_config_cached(CATALOG_DIR / "models" / entry.config_file, "", entry.name)


def model_entry(name: str, where: str = "model") -> ModelEntry:
    """The catalog index row of a model."""
    entries = load_model_entries()
    found = _name_index(entries).get(name.strip().lower())
    if found is not None:
        return found
    raise UnknownNameError("model", name, [e.name for e in entries], where, {a: e.name for e in entries for a in e.aliases})
