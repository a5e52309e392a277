"""Seeded synthetic sequence tasks (no downloads): classification and next-token prediction.

Common interface::

    data = make_task(name, n=..., seed=..., **params)   # a TaskData
    data.ids     (n, max_len) int64, PAD = 0 after the real tokens
    data.mask    (n, max_len) bool, True = real token (exactly where ids != PAD)
    data.kind    "classification" or "next_token"
    data.labels  classification: (n,) int64 in [0, num_classes);
                 next_token: (n, max_len) int64, labels[b, t] = the token the model must
                 predict after reading ids[b, :t+1] (ids[b, t+1]), IGNORE = −1 where
                 nothing is scored

Every classification sequence starts with a CLS token (id 1) at position 0, for CLS
pooling; next-token sequences start with BOS (id 1). ``TASKS`` maps each name to its
generator.

Determinism and splits: the data are a pure function of (name, n, seed, params);
the same call returns identical arrays. Draw the training and test sets with
different seeds (e.g. ``seed=0`` and ``seed=1``): they are independent samples of
the same distribution. The test set is *not* filtered against the training set,
so a short example may occur in both at its natural rate — test accuracy then
estimates accuracy on the task distribution, which is what it should measure.

**listops** — ListOps-style expressions (after Nangia & Bowman, 2018) over the
digits 0–9 with four operators, each taking 2..max_args arguments:

    MAX, MIN   the largest / smallest argument
    MED        the median; with an even number of arguments the *lower* median,
               sorted(args)[(len(args) − 1) // 2]
    SM         the sum modulo 10

written as ``[ MAX 2 9 [ MIN 4 7 ] 0 ]`` (operator nesting at most ``max_depth``
levels; the root is always an operator, and each argument below the depth limit is
itself an expression with probability ``branch_prob``, else a uniform digit). An
expression longer than ``max_len − 1`` tokens (one slot is the CLS) is discarded and
redrawn, so every length fits. The label is the expression's value (10 classes).
Vocabulary (``LISTOPS_VOCAB``, id = index): 0 [PAD], 1 [CLS], 2–11 the digits 0–9,
12 MAX, 13 MIN, 14 MED, 15 SM, 16 "[", 17 "]".

**retrieval** — associative recall: P random key/value pairs, then a query key,
``[CLS] pair … pair [Q] k_q [PAD]…``, keys from ``n_keys`` symbols and values from
``n_values``. The query key occurs in exactly one pair, at a uniform position (the
other keys are drawn from the remaining n_keys − 1 and may repeat); the label is that
pair's value, uniform over ``n_values`` classes, so the answer lies anywhere up to the
whole sequence away from the query. P is uniform in [min_pairs, n_pairs]: the caller
chooses the length. Two layouts:

    "fused" (default)  one token per pair, "k3=7"          length P + 3
    "split"            a key token then a value token       length 2P + 3

"split" is the classic associative-recall task: it needs an induction-style circuit
(a value token must first learn its key from the previous position). "fused" needs
only content-based lookup. Measured with a 2-layer pre-LN Transformer built from
primal_np (D = 64, 4 heads, MLP hidden 128, learned positions, CLS pooling; batch 32,
AdamW lr 1e-3 with warm-up and cosine decay, weight decay 0.01, clip 1.0; 20 000
training examples from seed 0, 2 000 test examples from seed 1): "fused" at the
default settings reached 0.999 test accuracy by step 1500 (1.000 at 3000); "split"
with 8 pairs stayed at the bag-of-values baseline (0.29 test accuracy, chance 0.1)
after 4000 steps — a harder task to keep for longer training or larger models.
Vocabulary (``retrieval_vocab``, shared by both layouts):
0 [PAD], 1 [CLS], 2 [Q], the keys k0…, the values 0…, then the fused pairs.

**markov** (next-token prediction, for causal models) — a topic-switched Markov chain.
``n_topics`` topics, each a fixed permutation π_z of the ``n_symbols`` content symbols
(drawn once from ``rules_seed``, the same for every split). A sequence is

    [BOS] [T_z] x_1 x_2 … x_L,   z uniform,  x_1 uniform,
    x_{t+1} = π_z(x_t) with probability 1 − noise, else a uniform symbol,

and the model predicts each x_{t+1} from the prefix up to x_t (L − 1 scored positions per
sequence; the topic token and x_1 are not predictable and not scored). Knowing the
current symbol and the topic gives accuracy (1 − noise) + noise/n_symbols (0.906 at the
defaults); the current symbol alone gives about (1 − noise)/n_topics (the topics'
permutations disagree): the topic token, read back from the start of the sequence,
carries the rest. Chance (always the most frequent target symbol) is ≈ 1/n_symbols.
Vocabulary (``markov_vocab``): 0 [PAD], 1 [BOS], the topics [T0]…, the symbols s0….
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ._checks import index_array, positive_int, real_number

__all__ = [
    "TaskData",
    "TASKS",
    "make_task",
    "PAD",
    "CLS",
    "QUERY",
    "LISTOPS_VOCAB",
    "listops",
    "listops_decode",
    "listops_evaluate",
    "RETRIEVAL_LAYOUTS",
    "retrieval",
    "retrieval_vocab",
    "retrieval_decode",
    "IGNORE",
    "TASK_KINDS",
    "markov",
    "markov_vocab",
    "markov_rules",
    "MAX_TASK_TOKENS",
    "MAX_VOCAB",
    "task_length",
]

PAD, CLS, QUERY = 0, 1, 2  # QUERY ([Q]) is used by retrieval only; BOS = CLS = 1
IGNORE = -1  # next-token labels: nothing scored at this position
TASK_KINDS = ("classification", "next_token")

# Size limits, checked before anything is built: a task of n sequences padded to length L
# holds several (n, L) int64 arrays, so n·L is capped (2**27 tokens: 1 GiB per array), and a
# vocabulary (its token strings, and the model's embedding table) at 2**20 entries.
MAX_TASK_TOKENS = 2**27
MAX_VOCAB = 2**20


class TaskData(NamedTuple):
    ids: np.ndarray  # (n, max_len) int64
    mask: np.ndarray  # (n, max_len) bool, True = real token
    labels: np.ndarray  # classification (n,); next_token (n, max_len) with IGNORE
    num_classes: int  # classes, or the vocabulary size for next-token prediction
    vocab_size: int
    kind: str = "classification"


def _pack(seqs: list[list[int]], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token lists with PAD into (n, max_len) ids and the matching mask."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    mask = np.arange(max_len) < lengths[:, None]
    ids = np.zeros((len(seqs), max_len), dtype=np.int64)
    ids[mask] = np.concatenate(seqs)
    return ids, mask


def _check_size(n: int, length: int, what: str, param: str) -> None:
    """n sequences of ``length`` tokens (``what``: how the length is computed from the
    parameter ``param`` that sets it)."""
    if n * length > MAX_TASK_TOKENS:
        raise ValueError(
            f"n · {what} = {n} · {length} = {n * length} tokens exceeds the limit "
            f"MAX_TASK_TOKENS = {MAX_TASK_TOKENS}; lower n or {param}"
        )


def _check_vocab(size: int, what: str) -> int:
    if size > MAX_VOCAB:
        raise ValueError(
            f"{what} gives a vocabulary of {size} tokens, more than MAX_VOCAB = {MAX_VOCAB}"
        )
    return size


def _probability(value: object, name: str) -> float:
    x = real_number(value, name)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return x


def _one_sequence(ids: object, vocab_size: int) -> np.ndarray:
    arr = index_array(ids, "ids", vocab_size)
    if arr.ndim != 1:
        raise ValueError(f"ids must be one sequence of shape (N,), got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------- ListOps
LISTOPS_OPS = ("MAX", "MIN", "MED", "SM")
LISTOPS_VOCAB = ("[PAD]", "[CLS]", *(str(d) for d in range(10)), *LISTOPS_OPS, "[", "]")
_LISTOPS_ID = {tok: i for i, tok in enumerate(LISTOPS_VOCAB)}
_OPEN, _CLOSE = _LISTOPS_ID["["], _LISTOPS_ID["]"]


def _apply(op: str, args: list[int]) -> int:
    if op == "MAX":
        return max(args)
    if op == "MIN":
        return min(args)
    if op == "MED":
        return sorted(args)[(len(args) - 1) // 2]  # the lower median
    return sum(args) % 10  # SM


def _listops_expr(
    rng: np.random.Generator, max_depth: int, max_args: int, branch_prob: float, budget: int
) -> tuple[list[int], int] | None:
    """One random expression (token ids, value), or None as soon as it exceeds ``budget``
    tokens: an expression that cannot fit is abandoned before it is built, however large
    max_depth, max_args and branch_prob make it. Depth first with an explicit stack (the
    nesting may be deeper than Python's recursion limit), drawing in the order of the
    grammar: operator, argument count, then per argument whether it is a sub-expression
    (only below max_depth) and else its digit."""
    toks: list[int] = []
    stack: list[tuple[str, list[int], list[int]]] = []  # (operator, [args left], values)

    def open_expression() -> None:
        op = LISTOPS_OPS[int(rng.integers(4))]
        toks.extend((_OPEN, _LISTOPS_ID[op]))
        stack.append((op, [int(rng.integers(2, max_args + 1))], []))

    open_expression()
    while len(toks) <= budget:
        op, left, vals = stack[-1]
        if left[0] == 0:  # close this expression and hand its value to the parent
            toks.append(_CLOSE)
            stack.pop()
            if not stack:
                return (toks, _apply(op, vals)) if len(toks) <= budget else None
            stack[-1][2].append(_apply(op, vals))
            continue
        left[0] -= 1
        if len(stack) < max_depth and rng.random() < branch_prob:
            open_expression()  # the root is level 1: len(stack) is the current level
        else:
            val = int(rng.integers(10))
            toks.append(_LISTOPS_ID[str(val)])
            vals.append(val)
    return None


def listops(
    n: int,
    seed: int,
    *,
    max_depth: int = 3,
    max_args: int = 5,
    max_len: int = 64,
    branch_prob: float = 0.3,
    max_tries: int = 1000,
) -> TaskData:
    """``n`` ListOps expressions (see the module docstring), CLS first, padded to ``max_len``.

    max_depth ≥ 1 levels of operators, 2..max_args (≥ 2) arguments each, each argument
    a sub-expression with probability branch_prob in [0, 1]. An expression that does not
    fit in max_len − 1 tokens is redrawn, at most ``max_tries`` times per example; it is
    abandoned as soon as it outgrows max_len − 1 tokens, so a draw costs O(max_len) whatever
    the other parameters. n · max_len is at most ``MAX_TASK_TOKENS``.
    """
    n = positive_int(n, "n")
    max_depth = positive_int(max_depth, "max_depth")
    max_args = positive_int(max_args, "max_args", minimum=2)
    max_len = positive_int(max_len, "max_len", minimum=6)  # CLS + "[ OP d d ]"
    max_tries = positive_int(max_tries, "max_tries")
    branch_prob = _probability(branch_prob, "branch_prob")
    _check_size(n, max_len, "max_len", "max_len")
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for i in range(n):
        for _ in range(max_tries):
            expr = _listops_expr(rng, max_depth, max_args, branch_prob, max_len - 1)
            if expr is not None:
                toks, val = expr
                break
        else:
            raise ValueError(
                f"example {i}: no expression of at most max_len - 1 = {max_len - 1} tokens in "
                f"{max_tries} draws; raise max_len or lower max_depth, max_args or branch_prob"
            )
        seqs.append([CLS, *toks])
        labels.append(val)
    ids, mask = _pack(seqs, max_len)
    return TaskData(ids, mask, np.array(labels, dtype=np.int64), 10, len(LISTOPS_VOCAB))


def listops_decode(ids: np.ndarray) -> str:
    """Token ids of one sequence (N,) → the expression, space-separated; PAD and CLS dropped."""
    ids = _one_sequence(ids, len(LISTOPS_VOCAB))
    return " ".join(LISTOPS_VOCAB[i] for i in ids.tolist() if i not in (PAD, CLS))


def listops_evaluate(expr: str) -> int:
    """Value of a ListOps expression string such as ``"[ MAX 2 [ SM 9 4 ] ]"``."""
    stack: list[list] = []  # one [op, args...] frame per open bracket
    tokens = expr.split()
    result = None
    for pos, tok in enumerate(tokens):
        if tok == "[":
            if pos + 1 >= len(tokens) or tokens[pos + 1] not in LISTOPS_OPS:
                raise ValueError(f"'[' at token {pos} must be followed by one of {LISTOPS_OPS}")
            stack.append([])
        elif tok in LISTOPS_OPS:
            if not stack or stack[-1]:
                raise ValueError(f"operator {tok} at token {pos} does not follow '['")
            stack[-1].append(tok)
        elif tok == "]" or tok.isdigit():
            if not stack or result is not None:
                raise ValueError(f"token {tok!r} at {pos} lies outside any expression")
            if tok == "]":
                op, *args = stack.pop()
                if len(args) < 2:
                    raise ValueError(f"{op} closed at token {pos} with {len(args)} argument(s)")
                val = _apply(op, args)
                if stack:
                    stack[-1].append(val)
                else:
                    result = val
            elif len(tok) == 1:
                stack[-1].append(int(tok))
            else:
                raise ValueError(f"token {tok!r} at {pos} is not a single digit")
        else:
            raise ValueError(f"unknown token {tok!r} at {pos}; vocabulary {LISTOPS_VOCAB[2:]}")
    if stack or result is None:
        raise ValueError(f"incomplete expression: {expr!r}")
    return result


# --------------------------------------------------------------------------- retrieval
RETRIEVAL_LAYOUTS = ("fused", "split")


def retrieval_vocab(n_keys: int = 8, n_values: int = 10) -> tuple[str, ...]:
    """Token strings by id: [PAD], [CLS], [Q], the keys k0…, the values 0…, then the
    fused pairs "k{i}={j}" at id 3 + n_keys + n_values + i·n_values + j."""
    _retrieval_vocab_size(n_keys, n_values)
    return (
        "[PAD]",
        "[CLS]",
        "[Q]",
        *(f"k{i}" for i in range(n_keys)),
        *(str(j) for j in range(n_values)),
        *(f"k{i}={j}" for i in range(n_keys) for j in range(n_values)),
    )


def _retrieval_vocab_size(n_keys: int, n_values: int) -> int:
    n_keys = positive_int(n_keys, "n_keys")
    n_values = positive_int(n_values, "n_values")
    size = 3 + n_keys + n_values + n_keys * n_values
    return _check_vocab(size, f"n_keys = {n_keys} and n_values = {n_values}")


def retrieval(
    n: int,
    seed: int,
    *,
    n_pairs: int = 32,
    min_pairs: int | None = None,
    n_keys: int = 8,
    n_values: int = 10,
    layout: str = "fused",
    max_len: int | None = None,
) -> TaskData:
    """``n`` associative-recall sequences (see the module docstring).

    Each holds P pairs, P uniform in [min_pairs, n_pairs] (default min_pairs =
    n_pairs // 2; min_pairs = n_pairs fixes the length), then ``[Q] k_q``; padded to
    max_len (default: the longest possible, n_pairs + 3 fused or 2·n_pairs + 3 split).
    n_keys ≥ 2 so that the query key can be unique; labels are in [0, n_values).
    n · max_len is at most ``MAX_TASK_TOKENS`` and the vocabulary at most ``MAX_VOCAB``.
    """
    n = positive_int(n, "n")
    n_pairs = positive_int(n_pairs, "n_pairs")
    if min_pairs is None:
        min_pairs = max(1, n_pairs // 2)
    min_pairs = positive_int(min_pairs, "min_pairs")
    if min_pairs > n_pairs:
        raise ValueError(f"min_pairs must be <= n_pairs ({n_pairs}), got {min_pairs}")
    n_keys = positive_int(n_keys, "n_keys", minimum=2)
    n_values = positive_int(n_values, "n_values", minimum=2)
    if layout not in RETRIEVAL_LAYOUTS:
        raise ValueError(f"layout must be one of {RETRIEVAL_LAYOUTS}, got {layout!r}")
    width = 1 if layout == "fused" else 2  # tokens per pair
    longest = width * n_pairs + 3
    max_len = longest if max_len is None else positive_int(max_len, "max_len", minimum=longest)
    if max_len > longest:
        _check_size(n, max_len, "max_len", "max_len")
    else:
        _check_size(n, max_len, f"({width}·n_pairs + 3)", "n_pairs")
    vocab_size = _retrieval_vocab_size(n_keys, n_values)

    rng = np.random.default_rng(seed)
    pairs = rng.integers(min_pairs, n_pairs + 1, size=n)
    query = rng.integers(n_keys, size=n)
    where = rng.integers(0, pairs)  # the answer's pair, uniform in [0, P)
    keys = rng.integers(n_keys - 1, size=(n, n_pairs))
    keys += keys >= query[:, None]  # skip the query key: the other keys never equal it
    keys[np.arange(n), where] = query
    values = rng.integers(n_values, size=(n, n_pairs))
    labels = values[np.arange(n), where]

    key0, value0, pair0 = 3, 3 + n_keys, 3 + n_keys + n_values
    if layout == "fused":
        body = pair0 + keys * n_values + values  # (n, n_pairs)
    else:
        body = np.stack([key0 + keys, value0 + values], axis=-1).reshape(n, 2 * n_pairs)
    lengths = width * pairs + 3
    pos = np.arange(max_len)
    mask = pos < lengths[:, None]
    ids = np.zeros((n, max_len), dtype=np.int64)
    ids[:, 1 : width * n_pairs + 1] = body
    ids[pos >= lengths[:, None] - 2] = PAD  # drop the unused pairs ...
    ids[:, 0] = CLS
    rows = np.arange(n)
    ids[rows, lengths - 2] = QUERY  # ... and end with [Q] k_q
    ids[rows, lengths - 1] = key0 + query
    return TaskData(ids, mask, labels.astype(np.int64), n_values, vocab_size)


def retrieval_decode(ids: np.ndarray, *, n_keys: int = 8, n_values: int = 10) -> str:
    """Token ids of one sequence (N,) → space-separated tokens, PAD dropped."""
    vocab = retrieval_vocab(n_keys, n_values)
    ids = _one_sequence(ids, len(vocab))
    return " ".join(vocab[i] for i in ids.tolist() if i != PAD)


# --------------------------------------------------------------------------- markov
def _markov_vocab_size(n_symbols: int, n_topics: int) -> int:
    n_symbols = positive_int(n_symbols, "n_symbols", minimum=2)
    n_topics = positive_int(n_topics, "n_topics")
    # the rules hold n_topics permutations of n_symbols: the same bound covers them
    _check_vocab(n_topics * n_symbols, f"n_topics · n_symbols = {n_topics} · {n_symbols}")
    return _check_vocab(2 + n_topics + n_symbols, "n_topics + n_symbols")


def markov_vocab(n_symbols: int = 16, n_topics: int = 4) -> tuple[str, ...]:
    """Token strings by id: [PAD], [BOS], the topic tokens [T0]…, the symbols s0…."""
    _markov_vocab_size(n_symbols, n_topics)
    return ("[PAD]", "[BOS]", *(f"[T{z}]" for z in range(n_topics)),
            *(f"s{i}" for i in range(n_symbols)))  # fmt: skip


def markov_rules(n_symbols: int = 16, n_topics: int = 4, rules_seed: int = 0) -> np.ndarray:
    """The topics' successor permutations π_z, shape (n_topics, n_symbols): π_z(i) = rules[z, i]."""
    _markov_vocab_size(n_symbols, n_topics)
    rng = np.random.default_rng([positive_int(rules_seed, "rules_seed", minimum=0), 7919])
    return np.stack([rng.permutation(n_symbols) for _ in range(n_topics)])


def markov(
    n: int,
    seed: int,
    *,
    length: int = 32,
    n_symbols: int = 16,
    n_topics: int = 4,
    noise: float = 0.1,
    rules_seed: int = 0,
) -> TaskData:
    """``n`` topic-switched Markov sequences of ``length`` symbols (module docstring).

    ids (n, length + 2): [BOS] [T_z] x_1 … x_L; labels (n, length + 2) with
    labels[b, t] = ids[b, t + 1] for the positions t of x_1 … x_{L−1}, IGNORE elsewhere.
    n · (length + 2) is at most ``MAX_TASK_TOKENS``, the vocabulary and n_topics · n_symbols
    at most ``MAX_VOCAB``.
    """
    n = positive_int(n, "n")
    length = positive_int(length, "length", minimum=2)
    noise = _probability(noise, "noise")
    _check_size(n, length + 2, "(length + 2)", "length")
    vocab = _markov_vocab_size(n_symbols, n_topics)
    rules = markov_rules(n_symbols, n_topics, rules_seed)
    rng = np.random.default_rng(seed)
    topic = rng.integers(n_topics, size=n)
    x = np.empty((n, length), dtype=np.int64)
    x[:, 0] = rng.integers(n_symbols, size=n)
    jump = rng.random((n, length)) < noise
    fresh = rng.integers(n_symbols, size=(n, length))
    for t in range(1, length):  # a loop over positions (not tokens of a batch): O(L) steps
        follow = rules[topic, x[:, t - 1]]
        x[:, t] = np.where(jump[:, t], fresh[:, t], follow)
    sym0 = 2 + n_topics
    ids = np.concatenate([np.full((n, 1), CLS), 2 + topic[:, None], sym0 + x], axis=1)
    labels = np.full(ids.shape, IGNORE, dtype=np.int64)
    labels[:, 2:-1] = ids[:, 3:]  # after reading x_t, predict x_{t+1}
    mask = np.ones(ids.shape, dtype=bool)
    return TaskData(ids, mask, labels, vocab, vocab, "next_token")


# --------------------------------------------------------------------------- registry
TASKS: dict[str, Callable[..., TaskData]] = {
    "listops": listops,
    "retrieval": retrieval,
    "markov": markov,
}


def _generator(name: str, params: dict) -> Callable[..., TaskData]:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {sorted(TASKS)}")
    gen = TASKS[name]
    valid = [p for p in inspect.signature(gen).parameters if p not in ("n", "seed")]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(f"task {name!r} has no parameter(s) {unknown}; valid: {valid}")
    return gen


def make_task(name: str, *, n: int, seed: int, **params: object) -> TaskData:
    """Generate ``n`` examples of task ``name`` (a key of ``TASKS``) from ``seed``.

    ``params`` are the task's keyword parameters (see ``listops`` / ``retrieval``).
    """
    gen = _generator(name, params)
    seed = positive_int(seed, "seed", minimum=0)
    return gen(n, seed, **params)


def task_length(name: str, **params: object) -> int:
    """The padded sequence length (``ids.shape[1]``) of task ``name`` with ``params``,
    computed from the parameters alone, so that sizes can be checked before anything is
    generated (a task added to ``TASKS`` by a user is asked for one example instead)."""
    gen = _generator(name, params)
    sig = inspect.signature(gen).parameters
    p = {k: v.default for k, v in sig.items() if k not in ("n", "seed")} | params
    if gen is listops:
        return positive_int(p["max_len"], "max_len", minimum=6)
    if gen is markov:
        return positive_int(p["length"], "length", minimum=2) + 2
    if gen is retrieval:
        if p["layout"] not in RETRIEVAL_LAYOUTS:
            raise ValueError(f"layout must be one of {RETRIEVAL_LAYOUTS}, got {p['layout']!r}")
        longest = (1 if p["layout"] == "fused" else 2) * positive_int(p["n_pairs"], "n_pairs") + 3
        if p["max_len"] is None:
            return longest
        return positive_int(p["max_len"], "max_len", minimum=longest)
    return int(gen(1, 0, **params).ids.shape[1])
