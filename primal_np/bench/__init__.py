"""``python -m primal_np bench``: time and peak memory of the attention layers, side by side.

What one measurement is: forward + backward of one layer with a random (seeded) upstream
gradient dY on the output; every parameter and the input get their gradient. The KSVD loss
is *not* included (it is O(B·H·N·s) and would blur the comparison with the canonical
layer). The primal layer is the LRA variant with data-dependent weights
(W_{e|X} = F_hᵀ W_e, n = s·m sampled tokens); the canonical layer is ``primal_np.mha``
(softmax attention with learned Q, K, V, O projections).

Implementations: ``primal_np`` and, when torch is installed, PyTorch CPU eager autograd on
the same layer, shapes, dtype and parameter values: ``torch_reference.lra_layer`` for the
primal layer and ``torch.nn.functional.multi_head_attention_forward`` (need_weights=False,
so its scaled-dot-product kernel) for the canonical one. torch runs with
``torch.set_num_threads`` equal to the thread count of NumPy's BLAS.

Timing: a warm-up run, then ``repeats`` timed runs; ``fwd_bwd_s`` is their median (wall
clock, ``time.perf_counter``).

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

``matmul_fraction`` = achieved GFLOP/s (from the median time) ÷ the GFLOP/s of a plain
``np.matmul`` of two 2048 × 2048 matrices of the same dtype (best of 7, after a warm-up),
measured in the same run, in a worker of the same thread settings.
"""

from .command import add_bench_parser
from .measure import (
    REQUIRED_KEYS,
    Case,
    _worker,  # noqa: F401  (the subprocess entry point: ``from primal_np.bench import _worker``)
    blas_threads,
    default_cases,
    flops,
    run_bench,
    run_case,
    torch_available,
)
from .report import format_table, summarize

__all__ = [
    "Case",
    "REQUIRED_KEYS",
    "add_bench_parser",
    "blas_threads",
    "default_cases",
    "flops",
    "format_table",
    "run_bench",
    "run_case",
    "summarize",
    "torch_available",
]
