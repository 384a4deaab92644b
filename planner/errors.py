"""User-facing errors: one line naming the field, what is allowed, and how to fix it.

Everything a user can cause (a bad file, an unknown name, an impossible number) raises a
`PlannerError` subclass; the CLI prints `str(error)` and exits with code 2. `assert` is kept
for internal invariants only.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PlannerError(Exception):
    """Base of every error a user can cause; the message is one line, ready to print."""

    exit_code: int = 2


class InputError(PlannerError):
    """A scenario, catalog or config file that cannot be read or does not validate."""


class OutputError(InputError, OSError):
    """An output that cannot be written (full or read-only disk, missing folder): one line, exit code 2; still an OSError."""


class UnknownNameError(PlannerError):
    """A GPU, model, provider or other catalog name that is not in the catalog."""

    def __init__(self, kind: str, name: str, allowed: Iterable[str], where: str = "", aliases: dict[str, str] | None = None) -> None:
        allowed_list = sorted(set(allowed))
        by_lower = {a.lower(): a for a in allowed_list}
        by_lower.update({alias.lower(): canonical for alias, canonical in (aliases or {}).items()})
        close_keys = difflib.get_close_matches(name.lower(), list(by_lower), n=6, cutoff=0.5) if len(name) <= 100 else []
        close = list(dict.fromkeys(by_lower[c] for c in close_keys))[:3]
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        prefix = f"{where}: " if where else ""
        shown = ", ".join(allowed_list[:40]) + (" …" if len(allowed_list) > 40 else "")
        shown_name = repr(name) if len(name) <= 80 else repr(name[:79]) + "…"
        super().__init__(f"{prefix}unknown {kind} {shown_name}.{hint} Allowed: {shown}.")
        self.name = name
        self.suggestions = close


class InfeasibleError(PlannerError):
    """No configuration satisfies the scenario; the message names the limits that conflict (exit code 1: valid input, no plan)."""

    exit_code: int = 1
