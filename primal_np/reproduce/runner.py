"""Running rows: in this process or in worker processes, each row once per invocation.

Row kinds and the functions that run them (module-level, so a worker process can run
them): ``"train"`` → ``common.train_row``; ``"spectrum"`` → ``spectrum.spectrum_row``;
``"timing"`` → ``efficiency.timing_row``. ``run_row(kind, row_id, config)`` dispatches.

Determinism: every row runs with NumPy's BLAS on one thread (the command sets it in this
process, ``_init_worker`` in each worker), and everything it computes is seeded from its
config, so a row's deterministic result fields do not depend on which process ran it or
in what order.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from .common import RowCache, set_blas_threads

__all__ = ["RowSpec", "Context", "run_row"]


class RowSpec(NamedTuple):
    id: str
    kind: str  # "train" | "spectrum" | "timing"
    config: dict


def run_row(kind: str, row_id: str, config: dict) -> dict:
    """Run one row of ``kind`` from its recorded ``config``."""
    if kind == "train":
        from .common import train_row

        return train_row(row_id, config)
    if kind == "spectrum":
        from .spectrum import spectrum_row

        return spectrum_row(row_id, config)
    if kind == "timing":
        from .efficiency import timing_row

        return timing_row(row_id, config)
    raise ValueError(f"unknown row kind {kind!r}")


def _init_worker() -> None:
    set_blas_threads(1)


@dataclass
class Context:
    """What a claim's ``run`` receives: the seeds, quick mode, the number of worker
    processes, the row cache shared by the claims of one invocation, and a progress log."""

    seeds: list[int]
    quick: bool
    jobs: int = 1
    cache: RowCache = field(default_factory=RowCache)
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)

    def run(self, specs: Sequence[RowSpec]) -> list[dict]:
        """The rows of ``specs`` in order; rows already run in this invocation are reused
        (marked ``"reused": true`` in the copy returned)."""
        rows: list[dict | None] = []
        todo: list[tuple[int, RowSpec, str]] = []
        for i, spec in enumerate(specs):
            key = RowCache.key(spec.kind, spec.config)
            hit = self.cache.get(key)
            if hit is not None:
                rows.append({**hit, "id": spec.id, "reused": True})
            else:
                rows.append(None)
                todo.append((i, spec, key))
        if todo:
            self.log(f"  {len(todo)} row(s) to run ({len(specs) - len(todo)} reused), "
                     f"{self.jobs} process(es)")  # fmt: skip
        if self.jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(
                max_workers=min(self.jobs, len(todo)),
                mp_context=multiprocessing.get_context("spawn"),  # a fresh interpreter per worker
                initializer=_init_worker,
            ) as pool:
                futures = [
                    (i, s, k, pool.submit(run_row, s.kind, s.id, s.config)) for i, s, k in todo
                ]
                try:
                    for done, (i, _spec, key, fut) in enumerate(futures, 1):
                        rows[i] = self._store(key, fut.result(), done, len(todo))
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)  # no more rows after a failure
                    raise
        else:
            for done, (i, spec, key) in enumerate(todo, 1):
                rows[i] = self._store(
                    key, run_row(spec.kind, spec.id, spec.config), done, len(todo)
                )
        return [r for r in rows if r is not None]

    def _store(self, key: str, row: dict, done: int, total: int) -> dict:
        self.cache.put(key, row)
        res = row["result"]
        acc = ""
        if "val_accuracy" in res:  # selection runs have no test set worth the name
            acc = f" validation {res['val_accuracy']:.3f}"
            if not row["id"].startswith("selection/"):
                acc += f", test {res['accuracy']:.3f}"
        self.log(f"  [{done}/{total}] {row['id']}{acc} ({res.get('seconds', 0):.0f} s)")
        return row
