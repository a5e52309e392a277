"""``python -m primal_np reproduce``: the paper's claims, reproduced in miniature on CPU.

Claims (docs/reproduction.md has the set-ups, results and verdicts):

    1 accuracy    accuracy parity of PrimalFormer, Primal.+Trans. and the Transformer (Table 2)
    2 efficiency  time per training step and peak memory as N grows (Table 3)
    3 rscores     the r-scores matter (the ablation without them)
    4 ksvd        the KSVD loss (η > 0 vs η = 0) and data-dependent vs data-independent weights
    5 spectrum    sharper singular-value decay of the primal layer (Figure 1), and why the
                  first attempt did not see the KSVD loss matter

``run_claim(name, seeds, quick)`` returns the record of one claim (a JSON-ready dict:
paper, set-up, rows, summary with 95 % t-intervals over seeds, verdict, reason);
``rerun(record, row_id)`` runs one recorded row again and compares it bit for bit. Each
claim lives in its own module; shared helpers in ``common`` (statistics, records),
``runner`` (rows, worker processes), ``verdicts`` (the rules), ``plots`` (figures).
"""

from __future__ import annotations

from .common import SCHEMA, Interval, t_interval
from .registry import CLAIMS, resolve_claims
from .run import rerun, run_claim

__all__ = ["SCHEMA", "CLAIMS", "Interval", "t_interval", "resolve_claims", "run_claim", "rerun"]
