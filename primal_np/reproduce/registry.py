"""The claims by name and number."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

__all__ = ["CLAIMS", "ALIASES", "resolve_claims", "claim_module"]

# name → module (each defines NAME, NUMBER, TITLE, PAPER, setup(), analyse(rows) and either
# specs(seeds, quick) (training rows) or measure(seeds, quick, log) (its own rows))
CLAIMS = {
    "accuracy": "accuracy",
    "efficiency": "efficiency",
    "rscores": "rscores",
    "ksvd": "ksvd_and_weights",
    "spectrum": "spectrum",
}
ALIASES = {"1": "accuracy", "2": "efficiency", "3": "rscores", "4": "ksvd", "5": "spectrum"}
EXTRA = {"selection": "selection"}  # not a claim: the validation-only choice of set-ups


def claim_module(name: str) -> ModuleType:
    return import_module(f".{({**CLAIMS, **EXTRA})[name]}", __package__)


def resolve_claims(text: str) -> list[str]:
    """'all' → every claim; a number or name → [that name]; ValueError otherwise."""
    t = text.strip().lower()
    if t == "all":
        return list(CLAIMS)
    t = ALIASES.get(t, t)
    if t in CLAIMS or t in EXTRA:
        return [t]
    valid = ", ".join([*ALIASES, *CLAIMS, "all", *EXTRA])
    raise ValueError(f"unknown claim {text!r}; valid: {valid}")
