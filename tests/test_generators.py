"""Statistics of the benchmark data generators (numpy only, no PyTensor).

Every expectation here is re-derived from the inputs or written out by hand from the
sources (Sutskever's ``pathological.py`` at T = 200, ``hessianfree.demos``), never read
back from the generators' own helpers.
"""
from __future__ import annotations

import numpy as np
import pytest

from dhf.tasks import demos, pathological
from dhf.tasks.pathological import sequence_lengths

ALL = {**pathological.PROBLEMS, **demos.PROBLEMS}

# name: (n_in, n_out, loss, error, tolerance, recurrent, error_last_step_only, default_T)
TABLE = {
    "addition": (2, 1, "squared_error", "abs", 0.04, True, False, 200),
    "multiplication": (2, 1, "squared_error", "abs", 0.04, True, False, 200),
    "xor": (2, 1, "sigmoid_xent", "sign", 0.0, True, False, 100),
    "temporal_order_2bit": (8, 4, "softmax_xent", "argmax", 0.0, True, False, 200),
    "temporal_order_3bit": (8, 8, "softmax_xent", "argmax", 0.0, True, False, 200),
    "random_permutation": (100, 100, "softmax_xent", "argmax", 0.0, True, True, 200),
    "noiseless_memorization_5bit": (4, 3, "softmax_xent", "argmax", 0.0, True, False, 200),
    "noiseless_memorization_20bit": (7, 6, "softmax_xent", "argmax", 0.0, True, False, 200),
    "ff_xor": (2, 1, "squared_error", "abs", 0.5, False, False, 1),
    "ff_xor_xent": (2, 2, "softmax_xent", "argmax", 0.0, False, False, 1),
    "integrator": (1, 1, "squared_error", "abs", 0.04, True, False, 10),
    "adding": (2, 1, "squared_error", "abs", 0.04, True, False, 50),
}

VARIABLE_LENGTH = ("addition", "multiplication", "xor", "temporal_order_2bit",
                   "temporal_order_3bit")
OPERANDS = ("addition", "multiplication", "xor")
SMALL_T = {"noiseless_memorization_5bit": 11, "noiseless_memorization_20bit": 21}

# Marker windows [lo, hi), written out by hand from the original's percentages of T and the
# clamping rule (after step 0, after the previous window, before the end cue).
WINDOWS = {
    "addition": {10: [(1, 2), (2, 5)], 30: [(1, 3), (3, 15)], 200: [(2, 20), (20, 100)]},
    "xor": {10: [(1, 2), (3, 5)], 30: [(1, 6), (9, 15)], 100: [(2, 20), (30, 50)],
            200: [(4, 40), (60, 100)]},
    "temporal_order_2bit": {10: [(1, 2), (4, 6)], 30: [(1, 4), (12, 16)],
                            200: [(2, 21), (80, 101)]},
    "temporal_order_3bit": {10: [(1, 2), (3, 5), (5, 7)], 30: [(1, 4), (9, 13), (15, 19)],
                            200: [(2, 21), (60, 81), (100, 121)]},
}
WINDOWS["multiplication"] = WINDOWS["addition"]
CUE_LAG = {"temporal_order_2bit": 1, "temporal_order_3bit": 0}


def generate(name, T, n, seed=0):
    return ALL[name].generate(T, n, np.random.default_rng(seed))


def times_for(name):
    """Small, medium and the paper's T, each valid for the problem."""
    return (SMALL_T.get(name, 10), 30, 200)


def end_steps(mask):
    """The step of each row's single target, after checking there is exactly one."""
    assert np.array_equal(mask.sum(axis=1), np.ones(len(mask)))
    return mask.argmax(axis=1)


def symbols(x):
    """Symbol index at each step of a one-hot input, after checking it is one-hot."""
    assert np.array_equal(x.sum(axis=-1), np.ones(x.shape[:-1]))
    return x.argmax(axis=-1)


# -- the table and the generic contract ------------------------------------------------

def test_problem_table():
    assert set(pathological.PROBLEMS) == set(TABLE) - set(demos.PROBLEMS)
    assert set(demos.PROBLEMS) == {"ff_xor", "ff_xor_xent", "integrator", "adding"}
    for name, expected in TABLE.items():
        p = ALL[name]
        assert p.name == name
        assert (p.n_in, p.n_out, p.loss, p.error, p.tolerance, p.recurrent,
                p.error_last_step_only, p.default_T) == expected
        assert p.doc


@pytest.mark.parametrize("name", sorted(ALL))
def test_shapes_dtypes_and_mask(name):
    p = ALL[name]
    for T in (times_for(name) if p.recurrent else (1, 7)):
        n = 9
        x, y, mask = generate(name, T, n)
        for a in (x, y, mask):
            assert a.dtype == np.float64
        assert set(np.unique(mask)) <= {0.0, 1.0}
        if not p.recurrent:
            assert x.shape == (n, p.n_in) and y.shape == (n, p.n_out)
            assert np.array_equal(mask, np.ones(n))
            continue
        max_t = max(11 * T // 10, T + 1) if name in VARIABLE_LENGTH else T
        assert x.shape == (n, max_t, p.n_in)
        assert y.shape == (n, max_t, p.n_out)
        assert mask.shape == (n, max_t)


@pytest.mark.parametrize("name", sorted(ALL))
def test_deterministic_given_seed(name):
    T = ALL[name].default_T
    first, again, other = (generate(name, T, 16, seed) for seed in (3, 3, 4))
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("name", ["addition", "xor", "temporal_order_2bit",
                                  "temporal_order_3bit", "adding"])
def test_single_target_at_the_last_step_and_zero_inputs_after(name):
    for T in times_for(name):
        x, y, mask = generate(name, T, 200)
        t_end = end_steps(mask)
        length = t_end + 1
        assert np.array_equal(sequence_lengths(x, mask), length)
        past = np.arange(x.shape[1]) >= length[:, None]
        assert not x[past].any() and not y[past].any()
        before = np.arange(x.shape[1]) < t_end[:, None]
        assert not y[before].any()


@pytest.mark.parametrize("name", ["random_permutation", "noiseless_memorization_5bit",
                                  "noiseless_memorization_20bit", "integrator"])
def test_fixed_length_problems_have_a_full_mask(name):
    for T in times_for(name):
        x, _, mask = generate(name, T, 8)
        assert np.array_equal(mask, np.ones((8, T)))
        assert np.array_equal(sequence_lengths(x, mask), np.full(8, T))


@pytest.mark.parametrize("name,T", [("addition", 5), ("xor", 5), ("random_permutation", 1),
                                    ("noiseless_memorization_5bit", 10),
                                    ("noiseless_memorization_20bit", 20), ("adding", 1)])
def test_too_small_T_is_refused(name, T):
    with pytest.raises(ValueError, match="too small"):
        generate(name, T, 4)


@pytest.mark.parametrize("name", sorted(ALL))
def test_min_T_is_the_shortest_T_the_generator_lays_out(name):
    """``min_T`` (what the config checks before any work) is exact: the generator
    accepts it and refuses one step less."""
    p = ALL[name]
    for T in range(p.min_T, p.min_T + 12):
        generate(name, T, 4)
    if p.min_T > 1:
        with pytest.raises(ValueError, match="too small"):
            generate(name, p.min_T - 1, 4)


def test_sequence_lengths():
    x = np.zeros((4, 6, 2))
    mask = np.zeros((4, 6))
    x[0, :3, 0] = 1.0                      # inputs only: length 3
    x[1, 1, 1] = -1.0
    mask[1, 4] = 1.0                       # the mask reaches further: length 5
    x[2, 5, 0] = 0.5                       # nonzero input at the last step: length 6
    assert np.array_equal(sequence_lengths(x, mask), [3, 5, 6, 0])


# -- lengths and marker windows ----------------------------------------------------------

@pytest.mark.parametrize("name", VARIABLE_LENGTH)
def test_lengths_span_T_plus_one_to_1_1_T(name):
    for T in (10, 30, 200):
        _, _, mask = generate(name, T, 600)
        length = end_steps(mask) + 1
        hi = max(11 * T // 10, T + 1)
        assert length.min() == T + 1 and length.max() == hi


def marker_steps(name, x):
    """Marked steps per row, in time order: the ``+1`` marker channel for the operand
    problems, the X/Y symbols (4, 5) for temporal order."""
    if name in OPERANDS:
        hits = x[:, :, 1] == 1.0
    else:
        hits = np.isin(symbols_or_pad(x), (4, 5))
    count = hits.sum(axis=1)
    assert np.all(count == count[0])
    return np.nonzero(hits)[1].reshape(len(x), count[0])


def symbols_or_pad(x):
    """Symbol index per step, −1 on zero (padding) steps."""
    return np.where(x.any(axis=-1), x.argmax(axis=-1), -1)


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_markers_fill_their_windows(name):
    for T, windows in WINDOWS[name].items():
        x, _, _ = generate(name, T, 2000)
        steps = marker_steps(name, x)
        assert steps.shape[1] == len(windows)
        for k, (lo, hi) in enumerate(windows):
            assert steps[:, k].min() == lo and steps[:, k].max() == hi - 1


@pytest.mark.parametrize("name", OPERANDS)
def test_operand_start_and_end_cues(name):
    for T in (10, 30, 200):
        x, _, mask = generate(name, T, 300)
        t_end = end_steps(mask)
        rows = np.arange(len(x))
        assert np.all(x[:, 0, 1] == -1.0)
        assert np.all(x[rows, t_end - 3, 1] == -1.0)
        assert np.array_equal((x[:, :, 1] == -1.0).sum(axis=1), np.full(len(x), 2))
        assert set(np.unique(x[:, :, 1])) == {-1.0, 0.0, 1.0}


@pytest.mark.parametrize("name", ["temporal_order_2bit", "temporal_order_3bit"])
def test_temporal_order_symbols(name):
    for T in (10, 30, 200):
        x, _, mask = generate(name, T, 300)
        t_end = end_steps(mask)
        s = symbols_or_pad(x)
        inside = np.arange(x.shape[1]) <= t_end[:, None]
        assert np.array_equal(x[inside].sum(axis=-1), np.ones(inside.sum()))
        assert np.all(s[:, 0] == 7)
        cue = np.arange(x.shape[1]) == (t_end - CUE_LAG[name])[:, None]
        assert np.array_equal(s == 6, cue)
        distractors = inside & ~np.isin(s, (4, 5, 6, 7))
        assert set(np.unique(s[distractors])) == {0, 1, 2, 3}


# -- targets re-derived from the inputs ----------------------------------------------------

@pytest.mark.parametrize("name,op", [("addition", np.add), ("multiplication", np.multiply),
                                     ("xor", lambda a, b: np.logical_xor(a, b) * 1.0)])
def test_operand_targets(name, op):
    for T in (10, 30, 200):
        x, y, mask = generate(name, T, 500)
        rows = np.arange(len(x))
        steps = marker_steps(name, x)
        a, b = x[rows, steps[:, 0], 0], x[rows, steps[:, 1], 0]
        assert np.array_equal(y[rows, end_steps(mask), 0], op(a, b))


def test_operand_value_distributions():
    x, y, mask = generate("addition", 200, 3000)
    inside = np.arange(x.shape[1]) <= end_steps(mask)[:, None]
    values = x[:, :, 0][inside]
    assert values.min() >= 0.0 and values.max() < 1.0
    assert abs(values.mean() - 0.5) < 0.01
    assert abs(y.sum(axis=(1, 2)).mean() - 1.0) < 0.03          # E[a + b] = 1
    _, y, _ = generate("multiplication", 200, 3000)
    assert abs(y.sum(axis=(1, 2)).mean() - 0.25) < 0.02         # E[a b] = 1/4
    x, y, _ = generate("xor", 100, 3000)
    assert set(np.unique(x[:, :, 0])) == {0.0, 1.0}
    assert 0.45 < y.sum(axis=(1, 2)).mean() < 0.55


@pytest.mark.parametrize("name,n_classes", [("temporal_order_2bit", 4),
                                            ("temporal_order_3bit", 8)])
def test_temporal_order_class_is_the_order_of_the_markers(name, n_classes):
    for T in (10, 30, 200):
        n = 8 * 125 + 3
        x, y, mask = generate(name, T, n)
        rows = np.arange(n)
        s = symbols_or_pad(x)
        steps = marker_steps(name, x)
        bits = s[rows[:, None], steps] - 4                     # X = 0, Y = 1, in time order
        expected = bits @ (2 ** np.arange(bits.shape[1] - 1, -1, -1))
        t_end = end_steps(mask)
        assert np.array_equal(symbols(y[rows, t_end]), expected)
        counts = np.bincount(expected, minlength=n_classes)
        assert counts.max() - counts.min() <= 1


# -- random permutation and memorization -------------------------------------------------

def test_random_permutation_predicts_the_next_symbol_and_then_the_first():
    for T in (10, 30, 200):
        x, y, _ = generate("random_permutation", T, 300)
        s, target = symbols(x), symbols(y)
        assert np.array_equal(target[:, :-1], s[:, 1:])
        assert np.array_equal(target[:, -1], s[:, 0])
        assert set(np.unique(s[:, 0])) == {0, 1}
        assert np.bincount(s[:, 0]).tolist() == [150, 150]
        assert s[:, 1:].min() == 2 and s[:, 1:].max() == 99
    counts = np.bincount(s[:, 1:].ravel(), minlength=100)[2:]
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()


@pytest.mark.parametrize("name,k,alphabet", [("noiseless_memorization_5bit", 5, 2),
                                             ("noiseless_memorization_20bit", 10, 5)])
def test_memorization_layout(name, k, alphabet):
    blank, cue = alphabet, alphabet + 1
    for T in (2 * k + 1, 30, 200):
        x, y, _ = generate(name, T, 64)
        s, target = symbols(x), symbols(y)
        pattern = s[:, :k]
        assert pattern.max() < alphabet
        assert np.all(s[:, k:T - k - 1] == blank) and np.all(s[:, T - k:] == blank)
        assert np.all(s[:, T - k - 1] == cue)
        assert np.all(target[:, :T - k] == blank)
        assert np.array_equal(target[:, T - k:], pattern)


def test_memorization_5bit_tiles_all_32_patterns():
    x, _, _ = generate("noiseless_memorization_5bit", 200, 64)
    codes = symbols(x)[:, :5] @ (2 ** np.arange(4, -1, -1))
    assert np.bincount(codes, minlength=32).tolist() == [2] * 32


def test_memorization_20bit_symbols_are_uniform():
    x, _, _ = generate("noiseless_memorization_20bit", 30, 2000)
    counts = np.bincount(symbols(x)[:, :10].ravel(), minlength=5)
    assert np.all(np.abs(counts / counts.sum() - 0.2) < 0.02)


# -- hessianfree demos ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["ff_xor", "ff_xor_xent"])
def test_ff_xor_tiles_the_four_patterns(name):
    x, y, _ = generate(name, 1, 4)
    assert sorted(map(tuple, x)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    x, y, _ = generate(name, 1, 10)
    counts = np.bincount((2 * x[:, 0] + x[:, 1]).astype(int), minlength=4)
    assert sorted(counts.tolist()) == [2, 2, 3, 3]
    xor = (x[:, 0] != x[:, 1]) * 1.0
    if name == "ff_xor":
        assert np.array_equal(y[:, 0], xor)
    else:
        assert np.array_equal(y, np.column_stack([1 - xor, xor]))


def test_integrator_targets_are_the_running_integral():
    for T in (2, 10, 200):
        n = 15
        x, y, _ = generate("integrator", T, n)
        c = x[:, 0, 0]
        assert np.all((c >= 0.1) & (c < 0.9))
        assert np.array_equal(x[:, :, 0], np.repeat(c[:, None], T, axis=1))
        integral = np.concatenate([np.zeros((n, 1)), np.cumsum(x[:, :-1, 0], axis=1)],
                                  axis=1) / (T - 1)
        assert np.allclose(y[:, :, 0], integral, rtol=0, atol=1e-12)


def test_adding_demo():
    for T, (first, second) in {10: ((0, 1), (1, 5)), 50: ((0, 5), (5, 25)),
                               200: ((0, 20), (20, 100))}.items():
        x, y, mask = generate("adding", T, 3000)
        rows = np.arange(len(x))
        assert np.array_equal(end_steps(mask), np.full(len(x), T - 1))
        steps = np.nonzero(x[:, :, 1])[1].reshape(len(x), 2)
        assert steps[:, 0].min() == first[0] and steps[:, 0].max() == first[1] - 1
        assert steps[:, 1].min() == second[0] and steps[:, 1].max() == second[1] - 1
        assert set(np.unique(x[:, :, 1])) == {0.0, 1.0}
        a, b = x[rows, steps[:, 0], 0], x[rows, steps[:, 1], 0]
        assert np.array_equal(y[:, -1, 0], a + b)
        assert 0.0 <= x[:, :, 0].min() and x[:, :, 0].max() < 1.0
