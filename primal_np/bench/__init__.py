"""``python -m primal_np bench``: time and peak memory of the attention layers, side by side.

What one measurement is: forward + backward of one layer with a random (seeded) upstream
gradient dY on the output; every parameter and the input get their gradient. The KSVD loss
is *not* included (it is O(B·H·N·s) and would blur the comparison with the canonical
layer). The primal layer is the LRA variant with data-dependent weights
(W_{e|X} = F_hᵀ W_e, n = s·m sampled tokens); the canonical layer is ``primal_np.mha``
(softmax attention with learned Q, K, V, O projections).

Implementations (``impl``; ``primal_np.bench.layers``), on the same shapes, dtype and
parameter values. Primal layer: ``reference`` (``primal_np.primal_attention``, one public
pair per equation), ``fast`` (``primal_np.fast``, the tuned path) and, when torch is
installed, ``torch`` (``torch_reference.lra_layer``, our statement of the authors' LRA
Attention module, PyTorch CPU eager autograd) and ``torch_compile`` (the same function
under ``torch.compile``; compilation is never timed, and a failure is reported, not
fatal). Canonical layer: ``primal_np`` (``primal_np.mha``) and ``torch``
(``torch.nn.functional.multi_head_attention_forward``, need_weights=False, so its
scaled-dot-product kernel). torch runs with ``torch.set_num_threads`` equal to the thread
count of NumPy's BLAS.

Two kinds of measurement:

* **Interleaved** (group "interleaved"; ``primal_np.bench.interleave``): every primal
  implementation in *one* process, round by round (order rotated each round), with a
  2048² np.matmul in every round. The ratios between implementations (``ratio_to``) and
  to np.matmul (``matmul_fraction``) are medians of per-round ratios, so a slow spell of
  the shared machine cancels out. No peak memory (one process).
* **Subprocess** (groups "scaling", "compare", "large"): each measurement in a fresh
  subprocess, for peak memory. Timing: a warm-up run, then ``repeats`` timed runs;
  ``fwd_bwd_s`` is their median (wall clock, ``time.perf_counter``).

Peak memory, the same method for both implementations: every measurement runs in a fresh
subprocess. After the imports, a tiny run of the same layer (to initialise library state)
and the creation of the inputs and parameters, the kernel's peak-RSS counter is reset
(``/proc/self/clear_refs`` ← 5) and the current RSS taken as the baseline; ``peak_bytes``
is VmHWM − baseline after the warm-up and timed runs, i.e. the most memory the forward +
backward ever held beyond its inputs (outputs, caches, gradients, temporaries). This sees
NumPy's and torch's allocations alike (tracemalloc sees only NumPy's).

FLOPs are counted analytically (matrix products only; 1 multiply-add = 2 FLOPs), for the
layer's mathematics, not a particular implementation (torch's flash kernel recomputes
S = QKᵀ in its backward; that is not counted). With D = H·p, n = s·m:

    primal    fwd 6BND² + 8BNDs + 4BDns,   bwd 12BND² + 16BNDs + 8BDns
              total 18BND² + 24BNDs + 12BDns
    canonical fwd 8BND² + 4BN²D,           bwd 16BND² + 8BN²D
              total 24BND² + 12BN²D

``matmul_fraction`` = achieved GFLOP/s ÷ the GFLOP/s of a plain ``np.matmul`` of two
2048 × 2048 matrices of the same dtype: in the interleaved comparison the median over
rounds of (layer GFLOP/s ÷ that round's matmul, best of 3); in the subprocess
measurements the GFLOP/s of the median time ÷ the best of 7 matmuls in a worker of the
same thread settings, at the start of the run. Every record has ``loadavg_1min``; the
interleaved ones also the load of every round (``loadavg_rounds``).
"""

from .command import add_bench_parser
from .layers import CANONICAL_IMPLS, PRIMAL_IMPLS, make_layer
from .measure import (
    REQUIRED_KEYS,
    Case,
    Interleaved,
    _worker,  # noqa: F401  (the subprocess entry point: ``from primal_np.bench import _worker``)
    blas_threads,
    default_cases,
    default_interleaved,
    flops,
    run_bench,
    run_case,
    run_interleaved,
    torch_available,
)
from .report import format_interleaved, format_table, summarize

__all__ = [
    "CANONICAL_IMPLS",
    "Case",
    "Interleaved",
    "PRIMAL_IMPLS",
    "REQUIRED_KEYS",
    "add_bench_parser",
    "blas_threads",
    "default_cases",
    "default_interleaved",
    "flops",
    "format_interleaved",
    "format_table",
    "make_layer",
    "run_bench",
    "run_interleaved",
    "run_case",
    "summarize",
    "torch_available",
]
