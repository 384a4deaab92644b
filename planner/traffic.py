"""Serving traffic as users state it: request rate or concurrency, length distributions, percentile SLOs.

To be wired into `scenario.InferenceWorkload` (as a `traffic:` block); the serving model
(`planner.serving`) and the simulator (`planner.simulate`) read these models. Lengths given as
mean and percentiles are sampled from a lognormal fitted to the mean and median (an
ASSUMPTION; request lengths in production traces are right-skewed: Patel et al. 2024,
'Splitwise', Sec. III-B, Fig. 3; Wang et al. 2024, 'BurstGPT', Sec. 3.3).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.errors import InputError

FORBID = ConfigDict(defer_build=True, extra="forbid", frozen=True)


QUADRATURE_NODES = 24
"""Nodes of `TokenLengths.quadrature`: moments of the prefill service time over the prompt-length distribution."""


class TokenLengths(BaseModel):
    """A prompt or output length: a fixed value, a mean with percentiles, or a CSV column of lengths."""

    model_config = FORBID

    fixed: int | None = Field(default=None, gt=0, description="Every request has this many tokens.")
    mean: float | None = Field(default=None, gt=0, description="Mean tokens per request (with p50, and optionally p90/p99).")
    p50: float | None = Field(default=None, gt=0, description="Median tokens per request.")
    p90: float | None = Field(default=None, gt=0, description="90th percentile, tokens (checked against the fit, informative).")
    p99: float | None = Field(default=None, gt=0, description="99th percentile, tokens (informative).")
    csv: Path | None = Field(default=None, description="CSV file with one length per row (first column or a 'tokens' column).")

    @model_validator(mode="after")
    def _one_form(self) -> TokenLengths:
        forms = [self.fixed is not None, self.mean is not None or self.p50 is not None, self.csv is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of: fixed, mean (+ p50/p90/p99), csv")
        if self.mean is not None and self.p50 is None:
            object.__setattr__(self, "p50", self.mean)
        if self.p50 is not None and self.mean is None:
            object.__setattr__(self, "mean", self.p50)
        if self.mean is not None and self.p50 is not None and self.p50 > self.mean:
            raise ValueError(f"p50 ({self.p50:g}) above the mean ({self.mean:g}): a right-skewed length distribution has p50 <= mean")
        return self

    def values(self) -> np.ndarray | None:
        """The CSV lengths (None for the other forms)."""
        if self.csv is None:
            return None
        try:
            with Path(self.csv).open(newline="") as handle:
                rows = list(csv.reader(handle))
        except OSError as error:
            raise InputError(f"csv: cannot read {self.csv}: {error.strerror}") from None
        if rows and "tokens" in rows[0]:
            col = rows[0].index("tokens")
            rows = rows[1:]
        else:
            col = 0
            if rows and not rows[0][0].strip().isdigit():
                rows = rows[1:]
        try:
            out = np.array([float(r[col]) for r in rows if r], dtype=float)
        except ValueError:
            raise InputError(f"csv: {self.csv} must hold token counts (numbers) in column {col + 1}") from None
        if out.size == 0 or (out <= 0).any():
            raise InputError(f"csv: {self.csv} must hold at least one positive token count")
        return out

    def _sigma(self) -> float:
        assert self.mean is not None and self.p50 is not None
        return math.sqrt(2.0 * math.log(self.mean / self.p50)) if self.mean > self.p50 else 0.0

    def mean_tokens(self) -> float:
        """Mean length."""
        if self.fixed is not None:
            return float(self.fixed)
        data = self.values()
        if data is not None:
            return float(data.mean())
        assert self.mean is not None
        return self.mean

    def second_moment(self) -> float:
        """E[length^2] (lognormal: mean^2 exp(sigma^2)); what the M/G/1 queueing of TTFT needs."""
        if self.fixed is not None:
            return float(self.fixed) ** 2
        data = self.values()
        if data is not None:
            return float((data**2).mean())
        return self.mean_tokens() ** 2 * math.exp(self._sigma() ** 2)

    def quantile(self, q: float) -> float:
        """Length at quantile q."""
        if self.fixed is not None:
            return float(self.fixed)
        data = self.values()
        if data is not None:
            return float(np.quantile(data, q))
        from statistics import NormalDist

        assert self.p50 is not None
        return self.p50 * math.exp(self._sigma() * NormalDist().inv_cdf(q))

    def quadrature(self, nodes: int = QUADRATURE_NODES, max_tokens: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Lengths and probability weights (summing to 1) whose weighted sums are expectations over this distribution.

        A fixed length is one node. The lognormal (mean and p50) takes Gauss-Hermite nodes in log space
        (Abramowitz & Stegun 1964, Eq. 25.4.46: E[f(P)] for P = p50 exp(sigma Z), exact for polynomials in Z up to
        degree 2 nodes - 1, so E[P], E[P^2] and E[P^3] to ~1e-9 at the sigmas seen here); a CSV's lengths take
        `nodes` equiprobable quantile midpoints. `max_tokens` (the model's context window) drops the nodes above it
        and renormalises: an engine refuses a longer prompt, it does not serve it (vLLM `max_model_len`).
        """
        if self.fixed is not None:
            return np.array([float(self.fixed)]), np.array([1.0])
        data = self.values()
        if data is not None:
            points, weights = np.quantile(data, (np.arange(nodes) + 0.5) / nodes), np.full(nodes, 1.0 / nodes)
        else:
            sigma = self._sigma()
            assert self.p50 is not None
            if sigma == 0.0:
                return np.array([float(self.p50)]), np.array([1.0])
            z, w = np.polynomial.hermite_e.hermegauss(nodes)
            points, weights = self.p50 * np.exp(sigma * z), w
        keep = points <= max_tokens if max_tokens is not None else np.ones(len(points), dtype=bool)
        keep[0] |= not keep.any()
        return points[keep], weights[keep] / weights[keep].sum()

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` integer lengths >= 1 (bootstrap from the CSV, lognormal from mean and p50)."""
        if self.fixed is not None:
            return np.full(count, self.fixed, dtype=np.int64)
        data = self.values()
        if data is not None:
            return np.maximum(1, np.rint(rng.choice(data, size=count))).astype(np.int64)
        assert self.p50 is not None
        return np.maximum(1, np.rint(self.p50 * np.exp(self._sigma() * rng.standard_normal(count)))).astype(np.int64)


class SpeculativeDecoding(BaseModel):
    """Draft-model or MTP speculation: k proposed tokens, each accepted with probability a."""

    model_config = FORBID

    proposed_tokens: int = Field(gt=0, le=16, description="Tokens the draft (or MTP head) proposes per step, k.")
    acceptance_rate: float = Field(gt=0, le=1, description="Probability a proposed token is accepted, a (i.i.d.).")

    @property
    def tokens_per_step(self) -> float:
        """Expected tokens per target step: (1 - a^(k+1)) / (1 - a) (Leviathan et al. 2023, Eq. 1)."""
        k, a = self.proposed_tokens, self.acceptance_rate
        return float(k + 1) if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)

    @property
    def verify_tokens(self) -> int:
        """Tokens per sequence the target model runs per step: k + 1."""
        return self.proposed_tokens + 1


class ServingSlo(BaseModel):
    """Latency targets at a percentile: time to first token and time per output token (inter-token latency)."""

    model_config = FORBID

    ttft_s: float | None = Field(default=None, gt=0, description="Max time to first token at the percentile, seconds.")
    tpot_s: float | None = Field(default=None, gt=0, description="Max inter-token latency at the percentile, seconds.")
    percentile: Literal[50, 90, 99] = Field(default=90, description="Percentile the limits apply to: 50, 90 or 99.")


class Traffic(BaseModel):
    """The load on a serving deployment, as users state it."""

    model_config = FORBID

    request_rate_rps: float | None = Field(default=None, gt=0, le=1e7, description="Requests per second, fleet-wide (Poisson arrivals).")
    concurrency: int | None = Field(default=None, gt=0, le=100_000_000, description="Requests in flight at once, fleet-wide (closed loop).")
    prompt: TokenLengths = Field(description="Prompt length per request.")
    output: TokenLengths = Field(description="Output length per request.")
    slo: ServingSlo = Field(default_factory=ServingSlo, description="Latency targets at a percentile.")
    prefix_cache_hit_rate: float = Field(default=0.0, ge=0, lt=1, description="Share of prompt tokens served from the prefix cache (no prefill).")
    speculative: SpeculativeDecoding | None = Field(default=None, description="Speculative decoding, if used.")

    @model_validator(mode="after")
    def _needs_a_load(self) -> Traffic:
        if self.request_rate_rps is None and self.concurrency is None:
            raise ValueError("give request_rate_rps or concurrency")
        return self

    def rate_rps(self, e2e_latency_s: float | None = None) -> float:
        """Arrival rate: given, or from concurrency by Little's law, concurrency / end-to-end latency."""
        if self.request_rate_rps is not None:
            return self.request_rate_rps
        if e2e_latency_s is None:
            raise ValueError("a concurrency-stated load needs the end-to-end latency to give a rate")
        assert self.concurrency is not None
        return self.concurrency / e2e_latency_s

    @property
    def tokens_per_step(self) -> float:
        """Output tokens per decode step (1 without speculation)."""
        return self.speculative.tokens_per_step if self.speculative else 1.0

    @property
    def verify_tokens(self) -> float:
        """Tokens per sequence per decode step the target model runs (1 without speculation)."""
        return float(self.speculative.verify_tokens) if self.speculative else 1.0
