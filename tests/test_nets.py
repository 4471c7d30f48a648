"""The built-in nets (:mod:`dhf.nets`): shapes, parameters, inits, and Gv against ``JᵀHJ``.

The dense references are :mod:`tests.references`'s: ``J`` by central
finite differences of a separately compiled function of ``s`` (and of the hidden
pre-activations, for structural damping), ``H`` the analytic Hessian of the loss in ``s``.
Parameter counts are computed here by hand, not by the builders.
"""
import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from dhf.errors import UserError
from dhf.nets import feedforward, init, recurrent
from dhf.worker import Worker
from tests.references import (assert_close_to, fd_jacobian, get_theta, loss_hessian,
                              one_hot, set_theta)

SEED = 666
N, T = 4, 4
WEIGHT = 0.7  # λμ, the structural-damping weight handed to gv_sum

#: numpy curvature of each hidden nonlinearity's matching loss
#: (dhf.losses.HIDDEN_CURVATURE).
CURVATURE = {
    "tanh": lambda a: 1.0 - np.tanh(a) ** 2,
    "logistic": lambda a: (1 / (1 + np.exp(-a))) * (1 - 1 / (1 + np.exp(-a))),
    "linear": np.ones_like,
}


# -- hand-counted parameters ------------------------------------------------------------
def ff_count(sizes, conns=None):
    conns = conns or {k: [k + 1] for k in range(len(sizes) - 1)}
    return (sum(sizes[j] * sizes[k] for j, posts in conns.items() for k in posts)
            + sum(sizes[1:]))


def rnn_count(n_in, hidden, n_out, rec=None, cell="tanh"):
    rec = range(len(hidden)) if rec is None else rec
    total, prev = 0, n_in
    for k, H in enumerate(hidden):
        if k not in rec:
            total += prev * H + H
        elif cell == "tanh":
            total += prev * H + H * H + H + H  # W_in, W_rec, b, h0
        else:
            total += 4 * (prev * H + H * H + H) + 2 * H  # 4 gates; h0, c0
        prev = H
    return total + prev * n_out + n_out


# -- data ------------------------------------------------------------------------------
def padded(rng, lengths, n_in, n_out, loss):
    """Three blocks of len(lengths) rows: trailing padding as zeros, the same padding as
    garbage, and the garbage rows fully unmasked (to show the garbage matters)."""
    mask = (np.arange(T)[None, :] < np.asarray(lengths)[:, None]).astype(float)
    x = rng.standard_normal((len(lengths), T, n_in))
    y = (one_hot(rng, (len(lengths), T), n_out) if loss == "softmax_xent"
         else rng.standard_normal((len(lengths), T, n_out)))
    pad = (mask == 0)[:, :, None]
    clean = [np.where(pad, 0.0, x), np.where(pad, 0.0, y), mask]
    garbage = [np.where(pad, 3 * rng.standard_normal(x.shape), x),
               np.where(pad, rng.random(y.shape), y), mask]
    unmasked = garbage[:2] + [np.ones_like(mask)]
    return [np.concatenate(parts) for parts in zip(clean, garbage, unmasked)]


# -- the model cases --------------------------------------------------------------------
def _ff_connectivity(rng):
    spec = feedforward([3, 4, 3, 3], nonlinearities=["relu", "softmax", "softmax"],
                       connectivity={0: [1, 2], 1: [2, 3], 2: [3]}, loss="softmax_xent")
    return spec, [rng.standard_normal((6, 3)), one_hot(rng, 6, 3)]


def _ff_logistic(rng):
    spec = feedforward([3, 4, 3, 2], nonlinearities=["softplus", "logistic", "logistic"],
                       loss="sigmoid_xent")
    return spec, [rng.standard_normal((6, 3)), (rng.random((6, 2)) > 0.5).astype(float)]


def _ff_tanh_output(rng):
    spec = feedforward([3, 4, 2], nonlinearities=["tanh", "tanh"], loss="squared_error",
                       init="uniform", init_scale=0.5)
    return spec, [rng.standard_normal((6, 3)), rng.standard_normal((6, 2))]


def _rnn_stack(rng):
    spec = recurrent(2, [3, 3, 3], 2, rec_layers=[0, 2], loss="squared_error")
    return spec, [rng.standard_normal((N, T, 2)), rng.standard_normal((N, T, 2))]


def _lstm_last(rng):
    spec = recurrent(2, [3], 2, cell="lstm", output_steps="last", loss="sigmoid_xent",
                     init="uniform", init_scale=0.8)
    return spec, [rng.standard_normal((N, T, 2)), (rng.random((N, 2)) > 0.5).astype(float)]


def _rnn_masked(rng):
    spec = recurrent(2, [3, 2], 3, mask=True, loss="softmax_xent", init="orthogonal",
                     init_scale=0.9)
    return spec, padded(rng, [4, 2, 3, 1], 2, 3, "softmax_xent")


def _lstm_masked(rng):
    spec = recurrent(2, [3], 2, cell="lstm", mask=True, loss="squared_error")
    return spec, padded(rng, [3, 4, 1, 2], 2, 2, "squared_error")


def _rnn_one_layer_masked(rng):
    """One tanh layer: the explicit Gv recurrences of dhf.curvature.recurrent."""
    spec = recurrent(2, [3], 2, mask=True, loss="sigmoid_xent", init="orthogonal",
                     init_scale=0.9)
    assert spec.gauss_newton is not None
    return spec, padded(rng, [4, 2, 3, 1], 2, 2, "sigmoid_xent")


def _rnn_one_layer_masked_generic(rng):
    """The same through the generic pushforward/pullback product."""
    import dataclasses

    spec, data = _rnn_one_layer_masked(rng)
    return dataclasses.replace(spec, gauss_newton=None), data


CASES = {
    "ff-connectivity-relu-softmax": _ff_connectivity,
    "ff-softplus-logistic": _ff_logistic,
    "ff-tanh-output-squared": _ff_tanh_output,
    "rnn-tanh-stack": _rnn_stack,
    "lstm-last": _lstm_last,
    "rnn-tanh-masked": _rnn_masked,
    "rnn-1layer-masked-explicit": _rnn_one_layer_masked,
    "rnn-1layer-masked-generic": _rnn_one_layer_masked_generic,
    "lstm-masked": _lstm_masked,
}
MASKED = ["rnn-tanh-masked", "rnn-1layer-masked-explicit", "rnn-1layer-masked-generic",
          "lstm-masked"]
#: Cases compiled by JAX (the default backend), per chunk shape, as well: the LSTM, whose
#: generic Gv graph no other JAX test checks against a dense reference.
if importlib.util.find_spec("jax") is not None:
    CASES.update({"lstm-last-jax": _lstm_last, "lstm-masked-jax": _lstm_masked})
    MASKED.append("lstm-masked-jax")


class Case:
    """A model at a random θ, one worker, and the dense ``JᵀHJ`` and ``J_aᵀ D J_a``.

    The references use the first ``n_rows`` rows (all of them, or the zero-padded block
    of a masked case).
    """

    def __init__(self, build, mode=None):
        rng = np.random.default_rng(SEED)
        self.spec, self.data = build(rng)
        self.params = self.spec.params
        self.theta = rng.normal(0.0, 0.5, get_theta(self.params).size)
        n_rows = len(self.data[0]) // (3 if self.spec.mask is not None else 1)
        self.rows = np.arange(n_rows)
        self.worker = Worker(self.spec, self.data, mode=mode)
        self.worker.prepare_curvature(self.theta, self.rows)
        data = [d[self.rows] for d in self.data]
        self.G_ref, self.S_ref, self.s = self._references(data)

    def _references(self, data):
        spec = self.spec
        hidden = list(spec.hidden)
        watched = [spec.output] + [a for a, _, _ in hidden]
        weights = [pt.ones_like(a) * (1.0 if w is None else w) for a, _, w in hidden]
        f = pytensor.function(spec.data_vars, watched + weights, on_unused_input="ignore")
        set_theta(self.params, self.theta)
        values = f(*data)
        sizes = [v.size for v in values[:len(watched)]]

        def flat():
            return np.concatenate([np.ravel(v) for v in f(*data)[:len(watched)]])

        J = np.split(fd_jacobian(flat, self.params, self.theta), np.cumsum(sizes)[:-1])
        s = values[0]
        H = loss_hessian(spec.loss, s)
        if spec.mask is not None:  # each output vector's block weighed by its mask
            H = H * np.repeat(data[-1].ravel(), s.shape[-1])[:, None]
        G = J[0].T @ H @ J[0]
        S = np.zeros_like(G)
        for (_, name, _), J_a, a, w in zip(hidden, J[1:], values[1:len(watched)],
                                           values[len(watched):]):
            D = (CURVATURE[name](a) * w).ravel()
            S += J_a.T @ (D[:, None] * J_a)
        return G, S, s


@pytest.fixture(scope="module")
def built():
    return {}


def _get(built, name):
    if name not in built:
        built[name] = Case(CASES[name], "JAX" if name.endswith("-jax") else None)
    return built[name]


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request, built):
    return _get(built, request.param)


@pytest.fixture(scope="module", params=MASKED, ids=MASKED)
def masked(request, built):
    return _get(built, request.param)


# -- Gv against the dense references ------------------------------------------------------
def test_gv_matches_dense_gauss_newton(case):
    assert np.abs(case.G_ref).max() > 1e-3
    rng = np.random.default_rng(SEED)
    for v in rng.standard_normal((3, case.theta.size)):
        assert_close_to(case.worker.gv_sum(v, 0.0), case.G_ref @ v)


def test_gv_with_structural_damping_matches_dense_reference(case):
    recurrent_net = case.spec.inputs[0].ndim == 3
    assert bool(case.spec.hidden) == recurrent_net  # FF nets expose no hidden terms
    weight = WEIGHT if recurrent_net else 0.0
    if recurrent_net:
        assert np.abs(case.S_ref).max() > 1e-3
    dense = np.stack([case.worker.gv_sum(e, weight) for e in np.eye(case.theta.size)],
                     axis=1)
    assert_close_to(dense, case.G_ref + weight * case.S_ref)


# -- masks --------------------------------------------------------------------------------
def test_masked_steps_change_nothing(masked):
    """Trailing padding holding garbage instead of zeros leaves the loss, the gradient
    and Gv (structural damping included) exactly as they were."""
    w, n = masked.worker, len(masked.rows)
    clean, garbage, unmasked = (np.arange(n) + i * n for i in range(3))
    theta = masked.theta
    np.testing.assert_array_equal(w.loss_sum(theta, clean), w.loss_sum(theta, garbage))
    np.testing.assert_allclose(w.grad_sum(theta, clean), w.grad_sum(theta, garbage),
                               rtol=1e-13, atol=0)
    assert not np.allclose(w.loss_sum(theta, unmasked), w.loss_sum(theta, garbage))

    rng = np.random.default_rng(SEED)
    v = rng.standard_normal(theta.size)
    gv = {}
    for name, rows in [("clean", clean), ("garbage", garbage), ("unmasked", unmasked)]:
        w.prepare_curvature(theta, rows)
        gv[name] = w.gv_sum(v, WEIGHT)
    w.prepare_curvature(theta, masked.rows)
    np.testing.assert_allclose(gv["garbage"], gv["clean"], rtol=1e-13, atol=0)
    assert not np.allclose(gv["unmasked"], gv["clean"])


def test_structural_damping_weighs_every_step_up_to_the_last_target():
    spec = recurrent(2, [3], 2, mask=True)
    (a, name, weights), = spec.hidden
    m = spec.mask
    f = pytensor.function([spec.inputs[0], m], pt.ones_like(a) * weights)
    mask = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=float)
    steps = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=float)
    out = f(np.zeros((4, 4, 2)), mask)
    assert name == "tanh" and out.shape == (4, 4, 3)  # time-major like a
    np.testing.assert_array_equal(out, np.repeat(steps.T[:, :, None], 3, axis=2))


def test_mask_needs_every_step_output():
    with pytest.raises(UserError, match="output_steps='all'"):
        recurrent(2, [3], 2, mask=True, output_steps="last")


# -- shapes and parameters -----------------------------------------------------------------
def test_output_shapes_and_parameter_counts(case):
    n, n_out = len(case.rows), case.spec.targets.ndim
    assert case.theta.size == sum(p.get_value().size for p in case.params)
    assert case.s.shape[0] == n and case.s.ndim == n_out
    assert case.s.shape == case.data[1][case.rows].shape  # s matches the targets


@pytest.mark.parametrize("sizes, conns", [
    ([3, 4, 2], None),
    ([3, 4, 5, 2], {0: [1, 2], 1: [2, 3], 2: [3]}),
    ([5, 2, 2, 2, 1], {0: [1, 4], 1: [2], 2: [3, 4], 3: [4]}),
])
def test_feedforward_parameters(sizes, conns):
    spec = feedforward(sizes, connectivity=conns)
    assert sum(p.get_value().size for p in spec.params) == ff_count(sizes, conns)
    edges = conns or {k: [k + 1] for k in range(len(sizes) - 1)}
    expected = {f"W_{j}_{k}": (sizes[j], sizes[k]) for j in edges for k in edges[j]}
    expected.update({f"b_{k}": (sizes[k],) for k in range(1, len(sizes))})
    assert {p.name: p.get_value().shape for p in spec.params} == expected
    assert list(spec.hidden) == []


@pytest.mark.parametrize("hidden, rec, cell, steps", [
    ([5], None, "tanh", "all"),
    ([4, 3], [1], "tanh", "last"),
    ([4, 3, 2], [0, 2], "lstm", "all"),
    ([3, 3], None, "lstm", "last"),
])
def test_recurrent_parameters_and_output_shape(hidden, rec, cell, steps):
    n_in, n_out = 2, 3
    spec = recurrent(n_in, hidden, n_out, rec_layers=rec, cell=cell, output_steps=steps)
    assert sum(p.get_value().size for p in spec.params) == rnn_count(n_in, hidden, n_out,
                                                                     rec, cell)
    rec_set = set(range(len(hidden)) if rec is None else rec)
    names = []
    for k in range(len(hidden)):
        names += ([f"W_in_{k}", f"W_rec_{k}", f"b_{k}", f"h0_{k}"]
                  + ([f"c0_{k}"] if cell == "lstm" else [])
                  if k in rec_set else [f"W_in_{k}", f"b_{k}"])
    assert spec.param_names == names + ["W_out", "b_out"]
    assert len(spec.hidden) == len(rec_set)

    s_fn = pytensor.function(spec.inputs, spec.output)
    s = s_fn(np.random.default_rng(SEED).standard_normal((N, 5, n_in)))
    assert s.shape == ((N, 5, n_out) if steps == "all" else (N, n_out))
    assert spec.targets.ndim == s.ndim


def test_matching_output_nonlinearity_keeps_s_as_logits():
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((5, 3))
    outputs = []
    for last in ["softmax", "linear"]:
        spec = feedforward([3, 4, 3], nonlinearities=["tanh", last], loss="softmax_xent")
        outputs.append(pytensor.function(spec.inputs, spec.output)(x))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.allclose(outputs[0].sum(axis=1), 1.0)  # logits, not probabilities
    with pytest.raises(UserError, match="must be 'softmax' or 'linear'"):
        feedforward([3, 4, 3], nonlinearities=["tanh", "tanh"], loss="softmax_xent")


@pytest.mark.parametrize("conns, message", [
    ({0: [1], 1: [1, 2]}, "to itself"),
    ({0: [2], 2: [1], 1: [2]}, "backwards"),
    ({0: [2]}, r"layer\(s\) \[1\] cannot be reached"),
    ({0: [1, 2], 1: [3], 2: [3]}, "not a layer index"),
    ({0: [1, 2], 1: []}, r"layer\(s\) \[1\] do not lead to the output"),
    ({0: [1, 1], 1: [2]}, "listed twice"),
])
def test_bad_connectivity_is_a_user_error(conns, message):
    with pytest.raises(UserError, match=message):
        feedforward([2, 3, 2], connectivity=conns)


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="nonlinearity 'cube'"):
        feedforward([2, 3, 2], nonlinearities=["cube", "linear"])
    with pytest.raises(UserError, match="one per layer"):
        feedforward([2, 3, 2], nonlinearities=["tanh"])
    with pytest.raises(UserError, match="cell 'gru'"):
        recurrent(2, [3], 2, cell="gru")
    with pytest.raises(UserError, match="rec_layers"):
        recurrent(2, [3], 2, rec_layers=[1])


# -- initialisations -----------------------------------------------------------------------
def _values(spec):
    return {p.name: p.get_value() for p in spec.params}


@pytest.mark.parametrize("build", [
    lambda seed: feedforward([4, 5, 2], init="sparse", seed=seed),
    lambda seed: recurrent(3, [4, 4], 2, rec_layers=[1], seed=seed),
    lambda seed: recurrent(3, [4], 2, cell="lstm", init="orthogonal", seed=seed),
], ids=["ff", "rnn", "lstm"])
def test_same_seed_same_values(build):
    a, b, c = _values(build(5)), _values(build(5)), _values(build(6))
    assert a.keys() == b.keys() == c.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert any(not np.array_equal(a[name], c[name]) for name in a if a[name].any())


@pytest.mark.parametrize("name", list(init.INITIALISERS))
def test_initialisers_are_seeded(name):
    draw = lambda: init.initialise(np.random.default_rng(3), (20, 30), name)  # noqa: E731
    np.testing.assert_array_equal(draw(), draw())


def test_sparse_init_has_fifteen_nonzeros_per_column():
    rng = np.random.default_rng(SEED)
    W = init.sparse(rng, (200, 300))
    assert ((W != 0).sum(axis=0) == 15).all()
    # Sutskever's scale: N(0, 1/15) for the nonzero weights.
    assert abs(W[W != 0].std() * np.sqrt(15) - 1) < 0.05
    small = init.sparse(rng, (10, 7))  # fan-in below 15: every connection
    assert (small != 0).all()
    np.testing.assert_array_equal((init.sparse(rng, (50, 40), 5, scale=1.0) != 0).sum(0), 5)


def test_dense_init_scales():
    rng = np.random.default_rng(SEED)
    G = init.gaussian(rng, (400, 300))
    assert abs(G.std() * np.sqrt(400) - 1) < 0.02
    U = init.uniform(rng, (400, 300), 0.2)
    assert np.abs(U).max() <= 0.2 and np.abs(U).max() > 0.19
    assert abs(init.uniform(rng, (400, 300)).std() * np.sqrt(400) - 1) < 0.02


@pytest.mark.parametrize("shape", [(6, 6), (7, 4), (4, 7)])
def test_orthogonal_is_orthogonal(shape):
    Q = init.orthogonal(np.random.default_rng(SEED), shape, gain=1.5)
    assert Q.shape == shape
    small = min(shape)
    gram = Q.T @ Q if shape[0] >= shape[1] else Q @ Q.T
    np.testing.assert_allclose(gram, 1.5 ** 2 * np.eye(small), atol=1e-12)


def test_spectral_radius_is_as_asked():
    W = init.sparse(np.random.default_rng(SEED), (40, 40))
    for rho in [0.5, 1.1]:
        assert np.isclose(
            np.abs(np.linalg.eigvals(init.spectral_radius(W, rho))).max(), rho)
    with pytest.raises(UserError, match="spectral radius is 0"):
        init.spectral_radius(np.triu(np.ones((3, 3)), 1), 1.1)


def test_recurrent_init_options():
    H = 4
    base = _values(recurrent(2, [H], 2, seed=1))
    scaled = _values(recurrent(2, [H], 2, seed=1, input_scale=0.25, spectral_radius=1.1))
    np.testing.assert_allclose(scaled["W_in_0"], 0.25 * base["W_in_0"])
    assert np.isclose(np.abs(np.linalg.eigvals(scaled["W_rec_0"])).max(), 1.1)
    for name in ["b_0", "h0_0", "b_out"]:
        assert not scaled[name].any()

    lstm = _values(recurrent(2, [H], 2, cell="lstm", spectral_radius=0.9, forget_bias=1.0))
    assert lstm["W_rec_0"].shape == (H, 4 * H) and lstm["W_in_0"].shape == (2, 4 * H)
    for gate in range(4):
        block = lstm["W_rec_0"][:, gate * H:(gate + 1) * H]
        assert np.isclose(np.abs(np.linalg.eigvals(block)).max(), 0.9)
    np.testing.assert_array_equal(lstm["b_0"],
                                  np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
    assert not lstm["c0_0"].any() and not lstm["h0_0"].any()


def test_sparse_recurrent_default_follows_sutskever():
    """Default init: 15 incoming connections per unit, N(0, 1/15), every matrix."""
    values = _values(recurrent(20, [30], 20, seed=2))
    for name in ["W_in_0", "W_rec_0", "W_out"]:
        assert ((values[name] != 0).sum(axis=0) == 15).all(), name


def test_initialise_dispatcher():
    rng = np.random.default_rng(SEED)
    W = init.initialise(rng, (30, 10), {"name": "sparse", "n_connections": 4}, gain=2.0)
    assert ((W != 0).sum(axis=0) == 4).all()
    np.testing.assert_array_equal(
        init.initialise(np.random.default_rng(1), (5, 5),
                        {"name": "uniform", "scale": 0.2}),
        init.uniform(np.random.default_rng(1), (5, 5), 0.2))
    with pytest.raises(UserError, match="unknown init 'he'"):
        init.initialise(rng, (3, 3), "he")
    with pytest.raises(UserError, match="unknown: density"):
        init.initialise(rng, (3, 3), {"name": "sparse", "density": 0.1})
    with pytest.raises(UserError, match="needs a 'name'"):
        init.initialise(rng, (3, 3), {"scale": 0.1})


@pytest.mark.parametrize("sizes, loss, last, conns", [
    ([3, 4, 3], "squared_error", "linear", None),
    ([3, 4, 3], "sigmoid_xent", "logistic", {0: [1, 2], 1: [2]}),
    ([3, 4, 3, 2], "softmax_xent", "linear", {0: [1, 3], 1: [2], 2: [3]})])
def test_dense_squared_gradients_are_the_per_example_ones(sizes, loss, last, conns):
    """The preconditioner's Σ_i (∂f_i/∂θ)², summed by the built-in feed-forward nets
    from one backward pass ((h²)ᵀ(δ²), spec.dense), against each example's gradient by
    central finite differences of its own loss, squared and summed; and against the
    one-gradient-per-row path that graphs without ``dense`` take."""
    import dataclasses

    nl = ["tanh"] * (len(sizes) - 2) + [last]
    spec = feedforward(sizes, nonlinearities=nl, connectivity=conns, loss=loss, seed=3)
    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(7, 3))
    Y = (one_hot(rng, (7,), sizes[-1]) if loss != "squared_error"
         else rng.normal(size=(7, sizes[-1])))
    theta = get_theta(spec.params)
    per_example = pytensor.function(spec.data_vars, spec.example_losses())
    J = fd_jacobian(lambda: per_example(X, Y), spec.params, theta)  # (examples, P)
    fast = Worker(spec, [X, Y], mode="FAST_COMPILE")
    slow = Worker(dataclasses.replace(spec, dense=()), [X, Y], mode="FAST_COMPILE")
    assert fast.batched_squared_grads and not slow.batched_squared_grads
    rows = np.arange(7)
    assert_close_to(fast.squared_grad_sum(theta, rows), np.square(J).sum(axis=0), rtol=1e-6)
    assert_close_to(fast.squared_grad_sum(theta, rows), slow.squared_grad_sum(theta, rows),
                    rtol=1e-10)
