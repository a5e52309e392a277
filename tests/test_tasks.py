"""Synthetic tasks: determinism, label correctness by independent parsers, masks, balance."""

import statistics

import numpy as np
import pytest

from primal_np import tasks
from primal_np.tasks import (
    IGNORE,
    LISTOPS_VOCAB,
    MAX_TASK_TOKENS,
    TASK_KINDS,
    TASKS,
    listops_decode,
    listops_evaluate,
    make_task,
    markov,
    markov_rules,
    retrieval_decode,
    task_length,
)

# The ListOps vocabulary as documented in primal_np/tasks.py, written out independently.
DOC_LISTOPS = {0: "[PAD]", 1: "[CLS]", 12: "MAX", 13: "MIN", 14: "MED", 15: "SM", 16: "[", 17: "]"}
DOC_LISTOPS.update({2 + d: str(d) for d in range(10)})


def parse_listops(tokens):
    """Recursive-descent evaluation of a token list; returns (value, depth, arities)."""
    pos = 0
    arities = []

    def expr(depth):
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok.isdigit():
            return int(tok), depth - 1
        assert tok == "[", f"expected '[' at {pos - 1}, got {tok}"
        op = tokens[pos]
        pos += 1
        args, deepest = [], depth
        while tokens[pos] != "]":
            val, d = expr(depth + 1)
            args.append(val)
            deepest = max(deepest, d)
        pos += 1
        arities.append(len(args))
        value = {
            "MAX": max,
            "MIN": min,
            "MED": statistics.median_low,
            "SM": lambda a: sum(a) % 10,
        }[op](args)
        return value, deepest

    value, depth = expr(1)
    assert pos == len(tokens), "trailing tokens"
    return value, depth, arities


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_same_data_and_seeds_differ(name):
    a, b = make_task(name, n=64, seed=7), make_task(name, n=64, seed=7)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    c = make_task(name, n=64, seed=8)
    assert not np.array_equal(a.ids, c.ids)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_common_contract(name):
    d = make_task(name, n=300, seed=0)
    n, max_len = d.ids.shape
    assert n == 300 and d.ids.dtype == np.int64 and d.labels.dtype == np.int64
    assert d.kind in TASK_KINDS
    expect = (n,) if d.kind == "classification" else d.ids.shape
    assert d.mask.dtype == np.bool_ and d.mask.shape == d.ids.shape and d.labels.shape == expect
    np.testing.assert_array_equal(d.mask, d.ids != 0)  # mask is exactly "not PAD"
    lengths = d.mask.sum(axis=1)
    np.testing.assert_array_equal(d.mask, np.arange(max_len) < lengths[:, None])  # right padding
    assert np.all(d.ids[:, 0] == 1)  # CLS / BOS first
    scored = d.labels[d.labels != IGNORE]
    assert d.ids.max() < d.vocab_size and scored.min() >= 0 and scored.max() < d.num_classes


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"max_depth": 1, "max_args": 2, "max_len": 8},
        {"max_depth": 5, "max_args": 7, "max_len": 100, "branch_prob": 0.5},
    ],
)
def test_listops_labels_by_independent_parser(params):
    d = make_task("listops", n=400, seed=3, **params)
    max_depth, max_args = params.get("max_depth", 3), params.get("max_args", 5)
    max_len = params.get("max_len", 64)
    assert d.ids.shape[1] == max_len and d.num_classes == 10 and d.vocab_size == 18
    for ids, mask, label in zip(d.ids, d.mask, d.labels, strict=True):
        tokens = [DOC_LISTOPS[i] for i in ids[mask].tolist()]
        assert tokens[0] == "[CLS]"
        assert " ".join(tokens[1:]) == listops_decode(ids)
        value, depth, arities = parse_listops(tokens[1:])
        assert value == label
        assert 1 <= depth <= max_depth
        assert all(2 <= a <= max_args for a in arities)
        assert listops_evaluate(listops_decode(ids)) == label


def test_listops_reaches_the_depth_limit():
    d = make_task("listops", n=300, seed=1, max_depth=3, branch_prob=0.5)
    depths = {parse_listops(listops_decode(i).split())[1] for i in d.ids}
    assert depths == {1, 2, 3}


def _grammar_draws(rng, depth, max_depth, max_args, branch_prob):
    """The grammar of the module docstring, drawn recursively and built in full (what the
    generator did before it learnt to stop early): (tokens, value)."""
    op = ("MAX", "MIN", "MED", "SM")[int(rng.integers(4))]
    toks, vals = ["[", op], []
    for _ in range(int(rng.integers(2, max_args + 1))):
        if depth < max_depth and rng.random() < branch_prob:
            sub, val = _grammar_draws(rng, depth + 1, max_depth, max_args, branch_prob)
            toks += sub
        else:
            val = int(rng.integers(10))
            toks.append(str(val))
        vals.append(val)
    value = {"MAX": max, "MIN": min, "SM": lambda a: sum(a) % 10}.get(
        op, lambda a: sorted(a)[(len(a) - 1) // 2]
    )(vals)
    return toks + ["]"], value


def test_listops_draws_follow_the_grammar_in_order():
    """Where no expression is too long (so none is abandoned early), the generator makes
    exactly the expressions of the recursive grammar, from the same random draws."""
    rng = np.random.default_rng(11)
    want = [_grammar_draws(rng, 1, 2, 3, 0.4) for _ in range(200)]
    assert max(len(t) for t, _ in want) < 40  # depth 2, 3 args: at most 2 + 3·5 + 1 tokens
    d = make_task("listops", n=200, seed=11, max_depth=2, max_args=3, branch_prob=0.4, max_len=40)
    assert [listops_decode(i) for i in d.ids] == [" ".join(t) for t, _ in want]
    assert d.labels.tolist() == [v for _, v in want]


@pytest.mark.parametrize("max_depth", [50, 10**6])
def test_listops_abandons_an_expression_as_soon_as_it_is_too_long(monkeypatch, max_depth):
    """Arity up to a million, every argument a sub-expression: the tree would never end (at
    depth 50 a recursive build never returns; at depth 10⁶ it also exceeds Python's recursion
    limit). Each draw stops after at most max_len tokens, so the 100 tries cost a bounded
    number of random draws (counted; exceeding the bound fails instead of hanging)."""
    real = np.random.default_rng
    count = {"draws": 0}
    bound = 100 * 3 * 64  # tries × (≤ 3 draws per token: sub-expression?, operator, count) × len

    class Counting:
        def __init__(self, seed):
            self.rng = real(seed)

        def _count(self):
            count["draws"] += 1
            assert count["draws"] <= bound, "the generator builds the whole tree"

        def integers(self, *a, **kw):
            self._count()
            return self.rng.integers(*a, **kw)

        def random(self, *a, **kw):
            self._count()
            return self.rng.random(*a, **kw)

    monkeypatch.setattr(tasks.np.random, "default_rng", Counting)
    with pytest.raises(ValueError, match="no expression of at most max_len - 1 = 63 tokens in 100"):
        make_task("listops", n=5, seed=0, max_depth=max_depth, max_args=10**6, branch_prob=1.0,
                  max_tries=100)  # fmt: skip
    assert 0 < count["draws"] <= bound


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("listops", {"max_len": 10**6}, r"n · max_len = 1000 · 1000000 = 1000000000 tokens"),
        ("retrieval", {"n_pairs": 10**7}, r"n · \(1·n_pairs \+ 3\) = 1000 · 10000003"),
        ("retrieval", {"max_len": 10**7}, r"lower n or max_len"),
        ("retrieval", {"n_keys": 10**4, "n_values": 10**4}, r"vocabulary of 100020003 tokens"),
        ("markov", {"length": 10**6}, r"n · \(length \+ 2\) = 1000 · 1000002 .* lower n or length"),
        ("markov", {"n_symbols": 10**7}, r"n_topics · n_symbols = 4 · 10000000"),
    ],
)
def test_task_sizes_are_bounded_before_anything_is_built(name, params, message):
    assert MAX_TASK_TOKENS < 10**9
    with pytest.raises(ValueError, match=message):
        make_task(name, n=1000, seed=0, **params)


def test_task_length_matches_the_generated_arrays():
    for name, params in [("listops", {"max_len": 30}), ("retrieval", {"n_pairs": 5}),
                         ("retrieval", {"n_pairs": 5, "layout": "split", "max_len": 20}),
                         ("markov", {"length": 7})]:  # fmt: skip
        assert task_length(name, **params) == make_task(name, n=3, seed=0, **params).ids.shape[1]


def test_listops_evaluate_hand_computed():
    assert listops_evaluate("[ MED 1 2 3 4 ]") == 2  # even count: the lower median
    assert listops_evaluate("[ MED 9 1 5 ]") == 5
    assert listops_evaluate("[ SM 9 9 ]") == 8
    assert listops_evaluate("[ MAX 2 9 [ MIN 4 7 ] 0 ]") == 9
    assert listops_evaluate("[ MIN [ SM 5 6 ] [ MAX 3 2 ] ]") == 1
    assert LISTOPS_VOCAB[12:] == ("MAX", "MIN", "MED", "SM", "[", "]")


@pytest.mark.parametrize(
    "expr,msg",
    [
        ("[ MAX 1 ]", r"MAX closed at token 3 with 1 argument\(s\)"),
        ("[ MAX 1 2", "incomplete expression"),
        ("[ 1 2 ]", r"'\[' at token 0 must be followed by one of"),
        ("[ MAX 1 12 ]", "token '12' at 3 is not a single digit"),
        ("[ MAX 1 X ]", "unknown token 'X' at 3"),
        ("[ MAX 1 2 ] 3", "token '3' at 5 lies outside any expression"),
    ],
)
def test_listops_evaluate_rejects_malformed(expr, msg):
    with pytest.raises(ValueError, match=msg):
        listops_evaluate(expr)


@pytest.mark.parametrize("layout", ["fused", "split"])
def test_retrieval_labels_by_independent_parser(layout):
    n_keys, n_values, n_pairs, min_pairs = 5, 7, 9, 3
    d = make_task(
        "retrieval",
        n=400,
        seed=2,
        n_pairs=n_pairs,
        min_pairs=min_pairs,
        n_keys=n_keys,
        n_values=n_values,
        layout=layout,
        max_len=30,
    )
    assert d.ids.shape == (400, 30) and d.num_classes == n_values
    assert d.vocab_size == 3 + n_keys + n_values + n_keys * n_values
    width = 1 if layout == "fused" else 2
    n_seen = set()
    for ids, mask, label in zip(d.ids, d.mask, d.labels, strict=True):
        real = ids[mask]
        p = (len(real) - 3) // width
        assert len(real) == width * p + 3 and min_pairs <= p <= n_pairs
        n_seen.add(p)
        # documented ids: 1 CLS, 2 [Q], keys 3.., values 3 + n_keys.., then k{i}={j} fused
        assert real[0] == 1 and real[-2] == 2 and 3 <= real[-1] < 3 + n_keys
        query = real[-1] - 3
        body = real[1:-2]
        if layout == "fused":
            code = body - (3 + n_keys + n_values)
            assert np.all((code >= 0) & (code < n_keys * n_values))
            keys, values = code // n_values, code % n_values
        else:
            keys, values = body[0::2] - 3, body[1::2] - 3 - n_keys
            assert np.all((keys >= 0) & (keys < n_keys))
            assert np.all((values >= 0) & (values < n_values))
        assert values[keys == query].tolist() == [label]  # the query key is in one pair only
        toks = retrieval_decode(ids, n_keys=n_keys, n_values=n_values).split()
        assert toks[-1] == f"k{query}" and len(toks) == len(real)
    assert n_seen == set(range(min_pairs, n_pairs + 1))


def test_retrieval_answer_position_covers_the_sequence():
    d = make_task("retrieval", n=2000, seed=0, n_pairs=16, min_pairs=16)
    keys, query = (d.ids[:, 1:17] - 21) // 10, d.ids[:, 18] - 3
    where = np.argmax(keys == query[:, None], axis=1)
    counts = np.bincount(where, minlength=16)
    assert counts.min() > 0.5 * 2000 / 16  # roughly uniform, first pair to last


@pytest.mark.parametrize("name,min_share", [("listops", 0.06), ("retrieval", 0.08)])
def test_default_class_balance(name, min_share):
    d = make_task(name, n=4000, seed=0)
    hist = np.bincount(d.labels, minlength=d.num_classes)
    assert hist.min() >= min_share * 4000, hist  # every class is present in force
    assert hist.max() <= 0.2 * 4000, hist  # and none dominates


def test_make_task_bad_input():
    with pytest.raises(
        ValueError,
        match=r"unknown task 'lisops'; valid names: \['listops', 'markov', 'retrieval'\]",
    ):
        make_task("lisops", n=4, seed=0)
    with pytest.raises(TypeError, match=r"task 'retrieval' has no parameter\(s\) \['depth'\]"):
        make_task("retrieval", n=4, seed=0, depth=3)
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        make_task("listops", n=4, seed=-1)
    with pytest.raises(ValueError, match="max_len must be >= 6, got 5"):
        make_task("listops", n=4, seed=0, max_len=5)
    with pytest.raises(
        ValueError, match=r"no expression of at most max_len - 1 = 6 tokens in 3 draws"
    ):
        make_task("listops", n=50, seed=0, max_len=7, max_args=9, max_tries=3)
    with pytest.raises(ValueError, match="max_len must be >= 35, got 20"):
        make_task("retrieval", n=4, seed=0, max_len=20)
    with pytest.raises(ValueError, match="max_len must be >= 19, got 18"):
        make_task("retrieval", n=4, seed=0, n_pairs=8, layout="split", max_len=18)
    with pytest.raises(ValueError, match=r"layout must be one of \('fused', 'split'\), got 'x'"):
        make_task("retrieval", n=4, seed=0, layout="x")
    with pytest.raises(ValueError, match=r"min_pairs must be <= n_pairs \(4\), got 5"):
        make_task("retrieval", n=4, seed=0, n_pairs=4, min_pairs=5)
    with pytest.raises(ValueError, match="n_keys must be >= 2, got 1"):
        make_task("retrieval", n=4, seed=0, n_keys=1)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 18\), got 18 at index \(1,\)"):
        listops_decode(np.array([1, 18]))
    with pytest.raises(
        ValueError, match=r"ids must be one sequence of shape \(N,\), got shape \(2, 1\)"
    ):
        retrieval_decode(np.array([[1], [2]]))


# --------------------------------------------------------------------------- markov
def test_markov_follows_its_rules_and_labels_are_the_next_token():
    d = markov(2000, 3, length=12, n_symbols=6, n_topics=3, noise=0.2)
    rules = markov_rules(6, 3)
    assert d.kind == "next_token" and d.num_classes == d.vocab_size == 2 + 3 + 6
    assert d.ids.shape == (2000, 14) and np.all(d.ids[:, 0] == 1)
    topic = d.ids[:, 1] - 2
    x = d.ids[:, 2:] - 5  # the symbols
    assert topic.min() >= 0 and topic.max() < 3 and x.min() >= 0 and x.max() < 6
    # labels: after reading x_t (positions 2 … L), the next symbol; nothing else is scored
    np.testing.assert_array_equal(d.labels[:, 2:-1], d.ids[:, 3:])
    assert np.all(d.labels[:, :2] == IGNORE) and np.all(d.labels[:, -1] == IGNORE)
    # the chain follows π_z with probability 1 − noise + noise/n_symbols
    follow = rules[topic[:, None], x[:, :-1]] == x[:, 1:]
    assert abs(follow.mean() - (0.8 + 0.2 / 6)) < 0.01
    # the same rules for every split: they come from rules_seed, not from the data seed
    np.testing.assert_array_equal(markov_rules(6, 3), rules)
    assert not np.array_equal(markov_rules(6, 3, rules_seed=1), rules)


def test_markov_bad_input():
    with pytest.raises(ValueError, match=r"noise must lie in \[0, 1\], got 1.5"):
        markov(4, 0, noise=1.5)
    with pytest.raises(ValueError, match="length must be >= 2, got 1"):
        markov(4, 0, length=1)
    with pytest.raises(ValueError, match="n_symbols must be >= 2, got 1"):
        markov(4, 0, n_symbols=1)
