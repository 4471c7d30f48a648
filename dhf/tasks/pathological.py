r"""The pathological long-range problems of Martens & Sutskever (2011), as numpy generators.

Each problem is a :class:`Problem`; ``PROBLEMS`` maps ``task.name`` to it.  The definitions
follow Ilya Sutskever's released code ("release A, pathological problems", 2011:
``opt/d/seq/pathological.py`` and ``opt/d/seq/utils/__init__.py`` of ``barapa/HF-RNN``),
which builds every problem from one global ``T`` (200 there) through ``factor = T/100``.
Here ``T`` is an argument and every step count is ``⌊p·T/100⌋`` for the percentage ``p``
the released code uses, so ``T = 200`` reproduces its numbers exactly.

Conventions shared by all generators
------------------------------------
``generate(T, n, rng) -> [x, y, mask]``, float64, rows first: ``x`` is ``(n, maxT, n_in)``,
``y`` is ``(n, maxT, n_out)``, ``mask`` is ``(n, maxT)`` with 1 where a target counts.

Variable-length problems draw the step of their single target ``t_end`` uniformly from
``[T_min, T_max)`` (numpy ``randint`` semantics, as in the original), so a sequence has
``t_end + 1`` steps, between ``T_min + 1`` and ``T_max``; arrays are padded to
``maxT = T_max``.  The mask holds one 1, at ``t_end``.  Inputs past ``t_end`` are zero.
Fixed-length problems (random permutation, memorization) have exactly ``T`` steps and a
mask of ones.  Smallest valid ``T``: 6 for the operand problems, 4 for temporal order, 2
for random permutation, ``2K + 1`` for a ``K``-symbol memorization (11 and 21).

Marker windows are half-open ``[lo, hi)``.  For small ``T`` (down to about 10) they are
clamped so that every marker lies after the start symbol at step 0, after the previous
window, and before the end-of-sequence cue; a ``T`` too small for that raises
``ValueError``.  At ``T = 200`` no clamp is active.

Classes are balanced the way the original intends ("precisely equally probable"): the
original assigns class ``b mod k`` to row ``b``; here the same exact balance is drawn as a
random permutation of ``arange(n) mod k`` (:func:`balanced_labels`), so that no class is
tied to a row position — a strided shard ``rows[r::size]`` would otherwise see only some
classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Problem:
    """A benchmark problem: its shapes, loss, success criterion and data generator.

    ``error`` says how one prediction is judged wrong: ``"abs"`` when ``|s − y| >
    tolerance`` on any output, ``"sign"`` when ``(s > 0) != (y > 0.5)`` (sigmoid outputs),
    ``"argmax"`` when ``argmax s != argmax y`` (softmax outputs).  ``num_outputs(T)`` is
    the release's ``num_outputs``, which sets its λ₀ = 0.01 × num_outputs
    (``opt/d/seq/utils``: 8 for both temporal-order problems, T for random permutation,
    symbols × alphabet × T for the memorisations).
    """

    name: str
    n_in: int
    n_out: int
    loss: str
    error: str
    tolerance: float
    recurrent: bool
    generate: Callable
    error_last_step_only: bool = False
    default_T: int = 200
    doc: str = ""
    num_outputs: Callable[[int], int] = lambda T: 1
    release_T_factor: int = 1  # the release's global T over this T (2 for xor)
    min_T: int = 1  # the shortest T the generator can lay out (tests check it is exact)
    balanced_classes: bool = False  # generate(..., first_row=) balances its classes


# -- shared helpers ------------------------------------------------------------------------

def balanced_labels(n: int, k: int, rng: np.random.Generator, first_row: int = 0
                    ) -> np.ndarray:
    """``n`` labels in ``0..k-1``, each used ``⌊n/k⌋`` or ``⌈n/k⌉`` times, in random
    order: the classes ``(first_row + i) mod k`` of rows ``first_row …``, shuffled.

    Rows generated a block at a time (fresh data) pass each block's first global row, so
    that any run of consecutive rows, a whole batch of them, is balanced as the release's
    ``b % k`` balances each minibatch.
    """
    return rng.permutation((first_row + np.arange(n)) % k)


def one_hot(symbols: np.ndarray, size: int) -> np.ndarray:
    """Float64 one-hot encoding along a new last axis of length ``size``."""
    return np.eye(size)[symbols]


def sequence_lengths(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """True length of each row of ``x (n, maxT, dim)``: the number of steps up to and
    including the last one with a nonzero input or a nonzero mask (0 for an empty row)."""
    active = np.any(x != 0, axis=-1) | (mask != 0)
    max_t = active.shape[1]
    last = max_t - 1 - np.argmax(active[:, ::-1], axis=1)
    return np.where(active.any(axis=1), last + 1, 0)


def _steps(T: int, percent: int) -> int:
    """``⌊percent·T/100⌋``: the original's ``int(x * factor)`` with ``factor = T/100``."""
    return percent * T // 100


def _length_range(T: int) -> tuple[int, int]:
    """``(T_min, T_max) = (T, ⌊1.1T⌋)`` for the target step ``t_end ∈ [T_min, T_max)``
    (the original's ``f(100), f(110)``), widened to ``T + 1`` when ``T < 10``."""
    return T, max(_steps(T, 110), T + 1)


def _marker_windows(bounds: list[tuple[int, int]], stop: int) -> list[tuple[int, int]]:
    """Clamp half-open windows ``[lo, hi)`` so each is nonempty, starts after step 0 and
    after the previous window, and the last ends at or before ``stop``."""
    windows, first_free = [], 1
    for lo, hi in bounds:
        lo = max(lo, first_free)
        hi = max(hi, lo + 1)
        windows.append((lo, hi))
        first_free = hi
    if windows[-1][1] > stop:
        raise ValueError(f"T is too small: marker windows {windows} do not fit before "
                         f"step {stop}")
    return windows


def _zero_past_end(x: np.ndarray, t_end: np.ndarray) -> None:
    """Zero every input step after each row's target step ``t_end`` (in place)."""
    x[np.arange(x.shape[1]) > t_end[:, None]] = 0.0


def _target_at_end(t_end: np.ndarray, max_t: int, values: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``y (n, max_t, dim)`` holding ``values (n, dim)`` at ``t_end``, and the mask of
    that one step."""
    n = len(t_end)
    rows = np.arange(n)
    y = np.zeros((n, max_t, values.shape[1]))
    y[rows, t_end] = values
    mask = np.zeros((n, max_t))
    mask[rows, t_end] = 1.0
    return y, mask


# -- addition, multiplication, xor (the released code's ``op_cls``) ------------------------

def _two_operands(T: int, n: int, rng: np.random.Generator, *, draw: Callable,
                  op: Callable, windows: tuple[tuple[int, int], tuple[int, int]]) -> list:
    r"""The two-operand problems of Hochreiter & Schmidhuber (1997), in Sutskever's code.

    Two input channels per step: a value ``v_t`` drawn by ``draw`` and a marker ``m_t``.
    ``m_0 = −1`` (start), ``m_i = m_j = 1`` at one step ``i`` in the first window and one
    step ``j`` in the second, ``m_{t_end−3} = −1`` (the "about to predict" cue the original
    adds), else 0.  The single target, at ``t_end ∈ [T, 1.1T)``, is ``op(v_i, v_j)``.
    ``windows`` are percentages of ``T``; the cue bounds the last window.

    Deviation: the original fills the value channel with noise up to ``T_max`` for every
    row; here inputs past ``t_end`` are zero (the padding convention).  The operands are the
    noise values at the marked steps, which has the original's distribution (it draws
    them separately from the same ``inp_dist``).
    """
    t_min, t_max = _length_range(T)
    (a_lo, a_hi), (b_lo, b_hi) = _marker_windows(
        [(_steps(T, lo), _steps(T, hi)) for lo, hi in windows], stop=t_min - 3)
    rows = np.arange(n)
    t_end = rng.integers(t_min, t_max, size=n)
    first = rng.integers(a_lo, a_hi, size=n)
    second = rng.integers(b_lo, b_hi, size=n)
    values = draw(rng, (n, t_max))

    x = np.zeros((n, t_max, 2))
    x[:, :, 0] = values
    x[:, 0, 1] = -1.0
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    x[rows, t_end - 3, 1] = -1.0
    _zero_past_end(x, t_end)
    target = op(values[rows, first], values[rows, second])
    y, mask = _target_at_end(t_end, t_max, target[:, None].astype(np.float64))
    return [x, y, mask]


def _uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.random(shape)


def _bits(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 2, size=shape).astype(np.float64)


def _addition(T: int, n: int, rng: np.random.Generator) -> list:
    """Addition: ``y = v_i + v_j``, ``v ~ U[0, 1)``, markers in ``[T/100, T/10)`` and
    ``[T/10, T/2)``, length ``t_end + 1 ∈ [T + 1, 1.1T]``.  No normalisation: the target
    lies in ``[0, 2)`` (the LSTM paper's ``0.5 + (a + b)/4`` is not used).
    Martens & Sutskever (2011); Sutskever's ``pathological.add``."""
    return _two_operands(T, n, rng, draw=_uniform, op=np.add, windows=((1, 10), (10, 50)))


def _multiplication(T: int, n: int, rng: np.random.Generator) -> list:
    """Multiplication: ``y = v_i · v_j``, otherwise as addition.  Values are in ``[0, 1)``,
    not signed: with ``randn`` the problem would contain xor on the signs (the original's
    comment).  Martens & Sutskever (2011); Sutskever's ``pathological.mult``."""
    return _two_operands(T, n, rng, draw=_uniform, op=np.multiply,
                         windows=((1, 10), (10, 50)))


def _bitwise_xor(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_xor(a.astype(np.int64), b.astype(np.int64))


def _xor(T: int, n: int, rng: np.random.Generator) -> list:
    """XOR: values are fair bits, ``y = v_i xor v_j``, sigmoid output with cross-entropy.

    Length ``t_end + 1 ∈ [T + 1, 1.1T]``, markers in ``[T/50, T/5)`` and ``[0.3T, 0.5T)``.
    Deviation in naming only: the original writes xor in terms of the global ``T`` as
    lengths ``[T/2, 0.55T)`` with windows ``[T/100, T/10)`` and ``[0.15T, 0.25T)``, so its
    XOR runs at half the other problems' length (100 at the global ``T = 200``: "harder
    … success is very rare").  Here ``T`` is XOR's own minimum length, as for the other
    problems, and ``default_T = 100`` gives exactly the original's sequences.
    Martens & Sutskever (2011); Sutskever's ``pathological.xor``."""
    return _two_operands(T, n, rng, draw=_bits, op=_bitwise_xor,
                         windows=((2, 20), (30, 50)))


# -- temporal order (the released code's ``temporal2`` / ``temporal3``) --------------------

N_TEMPORAL_SYMBOLS = 8
DISTRACTORS = 4          # symbols 0..3: the LSTM paper's a, b, c, d
MARKER_X = 4             # X; Y is MARKER_X + 1
CUE, START = 6, 7        # the LSTM paper's E (predict now) and B (begin)


def _temporal_order(T: int, n: int, rng: np.random.Generator, *,
                    windows: tuple[tuple[int, int], ...], cue_lag: int,
                    first_row: int = 0) -> list:
    r"""Temporal order (Hochreiter & Schmidhuber 1997, task 6), as Sutskever codes it.

    Inputs are 1-of-8 symbols: distractors ``0..3`` drawn uniformly at every step, ``START``
    at step 0, ``CUE`` at ``t_end − cue_lag``, and one marker ``X`` or ``Y`` in each window
    (inclusive percentage bounds of ``T``, as the original draws ``randint(lo, hi + 1)``).
    With ``K`` markers the class is the binary number they spell in order of time,
    ``X = 0``, ``Y = 1``, first marker most significant: ``c = Σ_k b_k 2^{K−1−k}``, one
    of ``2^K`` softmax outputs at ``t_end ∈ [T, 1.1T)``.  Classes are exactly balanced.

    Deviations: inputs past ``t_end`` are zero (the original keeps distractors there);
    for ``K = 3`` the original's code makes the *first* marker the least significant bit
    (its docstring lists the classes the other way), a relabelling that changes nothing
    to learn — the first-most-significant order is used for both problems.
    """
    n_markers = len(windows)
    n_classes = 2 ** n_markers
    t_min, t_max = _length_range(T)
    steps = _marker_windows([(_steps(T, lo), _steps(T, hi) + 1) for lo, hi in windows],
                            stop=t_min - cue_lag)
    rows = np.arange(n)
    labels = balanced_labels(n, n_classes, rng, first_row)
    t_end = rng.integers(t_min, t_max, size=n)
    symbols = rng.integers(0, DISTRACTORS, size=(n, t_max))
    symbols[:, 0] = START
    symbols[rows, t_end - cue_lag] = CUE
    for k, (lo, hi) in enumerate(steps):
        bit = (labels >> (n_markers - 1 - k)) & 1
        symbols[rows, rng.integers(lo, hi, size=n)] = MARKER_X + bit

    x = one_hot(symbols, N_TEMPORAL_SYMBOLS)
    _zero_past_end(x, t_end)
    y, mask = _target_at_end(t_end, t_max, one_hot(labels, n_classes))
    return [x, y, mask]


def _temporal_order_2bit(T: int, n: int, rng: np.random.Generator, first_row: int = 0
                         ) -> list:
    """2-bit temporal order: markers in ``[T/100, T/10]`` and ``[0.4T, 0.5T]`` (inclusive),
    4 classes (XX, XY, YX, YY).  As in the original's ``temporal2``, the cue is at
    ``t_end − 1`` and the target step ``t_end`` shows one more distractor.
    Martens & Sutskever (2011); Sutskever's ``pathological.temporal2``."""
    return _temporal_order(T, n, rng, windows=((1, 10), (40, 50)), cue_lag=1,
                           first_row=first_row)


def _temporal_order_3bit(T: int, n: int, rng: np.random.Generator, first_row: int = 0
                         ) -> list:
    """3-bit temporal order: markers in ``[T/100, T/10]``, ``[0.3T, 0.4T]`` and
    ``[0.5T, 0.6T]`` (inclusive), 8 classes.  As in the original's ``temporal3``, the cue is
    the input at the target step ``t_end`` itself.  (The released ``temporal3`` cannot run:
    it reads the undefined attributes ``self.v`` and ``self.o``; the intent is clear.)
    Martens & Sutskever (2011); Sutskever's ``pathological.temporal3``."""
    return _temporal_order(T, n, rng, windows=((1, 10), (30, 40), (50, 60)), cue_lag=0,
                           first_row=first_row)


# -- random permutation (the released code's ``perm_mem``) ---------------------------------

N_PERMUTATION_SYMBOLS = 100


def _random_permutation(T: int, n: int, rng: np.random.Generator, first_row: int = 0
                        ) -> list:
    r"""Random permutation: predict the next symbol; the last one is the first one.

    1-of-100 inputs over exactly ``T`` steps: ``s_0 ∈ {0, 1}`` (exactly balanced), then
    ``s_1 … s_{T−1}`` uniform on ``{2, …, 99}`` (independent draws — despite the name, not
    a permutation, as the original's docstring says).  Targets at every step (mask all 1):
    ``y_t = s_{t+1}`` for ``t < T − 1`` and ``y_{T−1} = s_0``, the only long-range one;
    success is judged at the last step only.
    Martens & Sutskever (2011); Sutskever's ``pathological.rand_perm``."""
    if T < 2:
        raise ValueError(f"T is too small for random_permutation: {T} < 2")
    first = balanced_labels(n, 2, rng, first_row)
    rest = rng.integers(2, N_PERMUTATION_SYMBOLS, size=(n, T - 1))
    x = one_hot(np.column_stack([first, rest]), N_PERMUTATION_SYMBOLS)
    y = one_hot(np.column_stack([rest, first]), N_PERMUTATION_SYMBOLS)
    return [x, y, np.ones((n, T))]


# -- noiseless memorization (the released code's ``raw_mem``) ------------------------------

def _memorization(T: int, patterns: np.ndarray, alphabet: int) -> list:
    r"""Noiseless memorization of ``patterns (n, K)`` over ``alphabet`` symbols.

    Exactly ``T`` steps.  Inputs are 1-of-(alphabet + 2): the pattern at steps ``0..K−1``,
    ``BLANK = alphabet`` at every other step except ``CUE = alphabet + 1`` at
    ``T − K − 1``; so ``T − 2K − 1`` blanks separate the pattern from the cue.  Outputs are
    1-of-(alphabet + 1): ``BLANK`` at steps ``0..T−K−1`` and the pattern at the last ``K``
    steps.  The mask is all 1: the output is required at every step, as in the original's
    ``raw_mem5`` / ``raw_mem20`` (not its ``…_only_last_bits`` variants).

    Deviation: the released code sizes inputs and outputs as ``alphabet`` only, so its
    blank (channel −1) and cue (channel −2) overwrite pattern symbols (with 2 symbols the
    blank *is* bit 1); its own comment calls the blank "a third symbol".  The extra
    channels here are what it intends.
    """
    n, k = patterns.shape
    if T < 2 * k + 1:
        raise ValueError(f"T is too small for a {k}-symbol memorization: {T} < {2 * k + 1}")
    blank, cue = alphabet, alphabet + 1
    inputs = np.full((n, T), blank)
    inputs[:, :k] = patterns
    inputs[:, T - k - 1] = cue
    targets = np.full((n, T), blank)
    targets[:, T - k:] = patterns
    return [one_hot(inputs, alphabet + 2), one_hot(targets, alphabet + 1), np.ones((n, T))]


def _memorization_5bit(T: int, n: int, rng: np.random.Generator, first_row: int = 0
                       ) -> list:
    """5-bit noiseless memorization: 5 binary symbols.  The original's batch is the 32
    possible patterns, each once; here the ``n`` rows tile the 32 patterns in random order
    (each used ``⌊n/32⌋`` or ``⌈n/32⌉`` times), bits most significant first.
    Martens & Sutskever (2011); Sutskever's ``pathological.raw_mem5``."""
    codes = balanced_labels(n, 2 ** 5, rng, first_row)
    patterns = (codes[:, None] >> np.arange(4, -1, -1)) & 1
    return _memorization(T, patterns, alphabet=2)


def _memorization_20bit(T: int, n: int, rng: np.random.Generator) -> list:
    """"20-bit" noiseless memorization: ten uniform 5-ary symbols (5^10 ≈ 2^23 patterns,
    drawn independently per row).  Martens & Sutskever (2011); Sutskever's
    ``pathological.raw_mem20``."""
    return _memorization(T, rng.integers(0, 5, size=(n, 10)), alphabet=5)


# -- the problems --------------------------------------------------------------------------

ADDITION = Problem(
    "addition", n_in=2, n_out=1, loss="squared_error", error="abs", tolerance=0.04,
    recurrent=True, generate=_addition,
    min_T=6,
    doc="sum of the two marked U[0,1) values, read out at the end of a T..1.1T sequence")
MULTIPLICATION = Problem(
    "multiplication", n_in=2, n_out=1, loss="squared_error", error="abs", tolerance=0.04,
    recurrent=True, generate=_multiplication,
    min_T=6,
    doc="product of the two marked U[0,1) values, read out at the end of the sequence")
XOR = Problem(
    "xor", n_in=2, n_out=1, loss="sigmoid_xent", error="sign", tolerance=0.0,
    recurrent=True, generate=_xor, default_T=100, release_T_factor=2,
    min_T=6,
    doc="xor of the two marked bits among random bits, read out at the end")
TEMPORAL_ORDER_2BIT = Problem(
    "temporal_order_2bit", n_in=N_TEMPORAL_SYMBOLS, n_out=4, loss="softmax_xent",
    error="argmax", tolerance=0.0, recurrent=True, generate=_temporal_order_2bit,
    balanced_classes=True,
    num_outputs=lambda T: 8,
    min_T=4,
    doc="class of the order of two X/Y markers among distractor symbols")
TEMPORAL_ORDER_3BIT = Problem(
    "temporal_order_3bit", n_in=N_TEMPORAL_SYMBOLS, n_out=8, loss="softmax_xent",
    error="argmax", tolerance=0.0, recurrent=True, generate=_temporal_order_3bit,
    balanced_classes=True,
    num_outputs=lambda T: 8,
    min_T=4,
    doc="class of the order of three X/Y markers among distractor symbols")
RANDOM_PERMUTATION = Problem(
    "random_permutation", n_in=N_PERMUTATION_SYMBOLS, n_out=N_PERMUTATION_SYMBOLS,
    loss="softmax_xent", error="argmax", tolerance=0.0, recurrent=True,
    generate=_random_permutation, balanced_classes=True, error_last_step_only=True,
    num_outputs=lambda T: T,
    min_T=2,
    doc="predict the next of 100 symbols; the last target is the first symbol (0 or 1)")
NOISELESS_MEMORIZATION_5BIT = Problem(
    "noiseless_memorization_5bit", n_in=4, n_out=3, loss="softmax_xent", error="argmax",
    tolerance=0.0, recurrent=True, generate=_memorization_5bit,
    balanced_classes=True,
    num_outputs=lambda T: 2 * 5 * T,
    min_T=11,
    doc="reproduce 5 bits after a blank delay and a cue; output required at every step")
NOISELESS_MEMORIZATION_20BIT = Problem(
    "noiseless_memorization_20bit", n_in=7, n_out=6, loss="softmax_xent", error="argmax",
    tolerance=0.0, recurrent=True, generate=_memorization_20bit,
    num_outputs=lambda T: 5 * 10 * T,
    min_T=21,
    doc="reproduce ten 5-ary symbols after a blank delay and a cue, at every step")

PROBLEMS = {p.name: p for p in (ADDITION, MULTIPLICATION, XOR, TEMPORAL_ORDER_2BIT,
                                TEMPORAL_ORDER_3BIT, RANDOM_PERMUTATION,
                                NOISELESS_MEMORIZATION_5BIT, NOISELESS_MEMORIZATION_20BIT)}
