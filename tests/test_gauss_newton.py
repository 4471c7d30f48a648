"""Gauss-Newton products against a dense ``J^T H J`` built independently in numpy.

``J`` comes from central finite differences of the model output ``s`` (a separately
compiled function, parameters set through ``set_value``); ``H`` is the analytic Hessian
of the loss in ``s``, one block per output vector.
"""
import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from dhf import losses
from dhf.curvature import gauss_newton_product
from dhf.curvature.gauss_newton import jacobian_vector
from dhf.nets import mlp, recurrent, rnn
from dhf.worker import Worker
from tests.references import (assert_close_to, fd_jacobian, get_theta, loss_hessian,
                              one_hot, set_theta)

SEED = 666


# -- independent numpy references ----------------------------------------------------
# -- the model cases -------------------------------------------------------------------
def _mlp_softmax(rng):
    spec = mlp([3, 4, 3], loss="softmax_xent")
    return spec, [rng.standard_normal((6, 3)), one_hot(rng, 6, 3)]


def _mlp_squared(rng):
    spec = mlp([3, 4, 2], loss="squared_error")
    return spec, [rng.standard_normal((6, 3)), rng.standard_normal((6, 2))]


def _rnn_last_sigmoid(rng):
    spec = rnn(2, 3, 2, loss="sigmoid_xent", output_steps="last")
    x = rng.standard_normal((5, 4, 2))
    return spec, [x, (rng.random((5, 2)) > 0.5).astype(float)]


def _rnn_all_squared(rng):
    spec = rnn(2, 3, 2, loss="squared_error", output_steps="all")
    return spec, [rng.standard_normal((5, 4, 2)), rng.standard_normal((5, 4, 2))]


#: name -> (builder, PyTensor mode of the workers).  The suite compiles with
#: FAST_COMPILE (tests/conftest.py); the RNN cases also run on the default Numba backend,
#: where the explicit recurrences' kernels are compiled into the graph.
CASES = {
    "mlp-softmax_xent": (_mlp_softmax, None),
    "mlp-squared_error": (_mlp_squared, None),
    "rnn-last-sigmoid_xent": (_rnn_last_sigmoid, None),
    "rnn-all-squared_error": (_rnn_all_squared, None),
    "rnn-last-sigmoid_xent-numba": (_rnn_last_sigmoid, "NUMBA"),
    "rnn-all-squared_error-numba": (_rnn_all_squared, "NUMBA"),
}
#: The JAX backend where it is installed (the ``jax`` extra; CI installs it), compiled per
#: chunk shape (dhf.static_shapes); the RNN's explicit recurrences run as jax.lax.scan
#: loops there.
if importlib.util.find_spec("jax") is not None:
    CASES.update({"mlp-softmax_xent-jax": (_mlp_softmax, "JAX"),
                  "rnn-last-sigmoid_xent-jax": (_rnn_last_sigmoid, "JAX"),
                  "rnn-all-squared_error-jax": (_rnn_all_squared, "JAX")})


#: The worker's Gv paths: cached forward states (the default), the forward pass recomputed
#: on every call, and the generic pushforward/pullback graph where a model (the RNN) has
#: explicit recurrences.
VARIANTS = {
    "cached": dict(cache_forward=True),
    "uncached": dict(cache_forward=False),
    "generic": dict(cache_forward=True, explicit_gv=False),
}


class Case:
    """A model at a random θ, its two workers and its dense reference ``J^T H J``.

    Both workers share the spec's shared variables; each loads θ on every call.
    """

    def __init__(self, build, mode=None):
        rng = np.random.default_rng(SEED)
        self.spec, self.data = build(rng)
        self.params = self.spec.params
        self.theta = rng.normal(0.0, 0.5, get_theta(self.params).size)
        self.rows = np.arange(len(self.data[0]))
        self.workers = {variant: Worker(self.spec, self.data, mode=mode, **options)
                        for variant, options in VARIANTS.items()}
        for worker in self.workers.values():
            worker.prepare_curvature(self.theta, self.rows)
        inputs = self.data[:len(self.spec.inputs)]
        s_fn = pytensor.function(self.spec.inputs, self.spec.output)
        set_theta(self.params, self.theta)
        self.s = s_fn(*inputs)
        J = fd_jacobian(lambda: s_fn(*inputs), self.params, self.theta)
        self.G_ref = J.T @ loss_hessian(self.spec.loss, self.s) @ J
        self._dense = {}

    def dense(self, variant):
        """The matrix whose columns are ``gv_sum(e_i)``."""
        if variant not in self._dense:
            worker = self.workers[variant]
            eye = np.eye(self.theta.size)
            self._dense[variant] = np.stack([worker.gv_sum(e) for e in eye], axis=1)
        return self._dense[variant]


@pytest.fixture(scope="module")
def built():
    """Cases built so far: each model compiles once per module."""
    return {}


def _get(built, name):
    if name not in built:
        built[name] = Case(*CASES[name])
    return built[name]


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request, built):
    return _get(built, request.param)


@pytest.fixture(scope="module")
def rnn_case(built):
    return _get(built, "rnn-last-sigmoid_xent")


# -- Gv against the dense reference ------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gv_columns_match_dense_reference(case, variant):
    assert case.G_ref.shape == (case.theta.size,) * 2
    assert np.abs(case.G_ref).max() > 1e-3  # the reference is not trivially zero
    assert_close_to(case.dense(variant), case.G_ref)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gv_of_random_vectors_matches_dense_reference(case, variant):
    rng = np.random.default_rng(SEED)
    for v in rng.standard_normal((3, case.theta.size)):
        assert_close_to(case.workers[variant].gv_sum(v), case.G_ref @ v)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("rnn-last-sigmoid")])
def test_structural_damping_adds_hidden_gauss_newton_term(built, name, variant):
    c, weight = _get(built, name), 0.7
    a_var, nonlinearity, _ = c.spec.hidden[0]
    assert nonlinearity == "tanh"
    a_fn = pytensor.function(c.spec.inputs, a_var)
    x = c.data[0]
    set_theta(c.params, c.theta)
    a = a_fn(x)
    assert a.shape == (x.shape[1], x.shape[0], 3)  # (T, N, H)
    J_a = fd_jacobian(lambda: a_fn(x), c.params, c.theta)
    D = 1.0 - np.tanh(a.ravel()) ** 2
    expected = weight * J_a.T @ (D[:, None] * J_a)

    worker = c.workers[variant]
    rng = np.random.default_rng(SEED)
    for v in rng.standard_normal((3, c.theta.size)):
        extra = worker.gv_sum(v, weight) - worker.gv_sum(v, 0.0)
        assert_close_to(extra, expected @ v)
    full = np.stack([worker.gv_sum(e, weight) for e in np.eye(c.theta.size)], axis=1)
    assert_close_to(full, c.G_ref + expected)


def test_public_gauss_newton_product_on_hand_built_graph():
    rng = np.random.default_rng(SEED)
    x, y = pt.matrix("x", dtype="float64"), pt.matrix("y", dtype="float64")
    W1 = pytensor.shared(rng.normal(size=(3, 4)), name="W1")
    b1 = pytensor.shared(rng.normal(size=4), name="b1")
    W2 = pytensor.shared(rng.normal(size=(4, 3)), name="W2")
    b2 = pytensor.shared(rng.normal(size=3), name="b2")
    params = [W1, b1, W2, b2]
    s = pt.dot(pt.tanh(pt.dot(x, W1) + b1), W2) + b2
    loss = -pt.sum(y * pt.log(pt.special.softmax(s, axis=-1)))

    tangents = [p.type() for p in params]
    Gv = gauss_newton_product(loss, s, params, tangents)
    assert len(Gv) == len(params)
    gv_fn = pytensor.function([x, y] + tangents, Gv)
    s_fn = pytensor.function([x], s)

    x_val, y_val = rng.standard_normal((5, 3)), one_hot(rng, 5, 3)
    theta = get_theta(params)
    J = fd_jacobian(lambda: s_fn(x_val), params, theta)
    G_ref = J.T @ loss_hessian("softmax_xent", s_fn(x_val)) @ J

    shapes = [p.get_value().shape for p in params]
    offsets = np.cumsum([0] + [int(np.prod(sh)) for sh in shapes])

    def gv(v):
        pieces = [v[lo:hi].reshape(sh) for sh, lo, hi in zip(shapes, offsets, offsets[1:])]
        out = gv_fn(x_val, y_val, *pieces)
        assert [o.shape for o in out] == shapes
        return np.concatenate([o.ravel() for o in out])

    G = np.stack([gv(e) for e in np.eye(theta.size)], axis=1)
    assert_close_to(G, G_ref)


# -- J v, the two ways of building it -------------------------------------------------
class _TanhWithoutPushforward(pytensor.graph.op.Op):
    """tanh with a pullback and no pushforward of its own, as a user's Op may be."""

    __props__ = ()

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        return pytensor.graph.basic.Apply(self, [x], [x.type()])

    def perform(self, node, inputs, output_storage):
        output_storage[0][0] = np.tanh(inputs[0])

    def pullback(self, inputs, outputs, cotangents):
        return [cotangents[0] * (1.0 - outputs[0] ** 2)]


def _scan_rnn(rng, step_tanh, out=lambda h: h):
    """A hand-built tanh RNN in ``scan`` (T = 4, 3 rows, 2 → 3 units), its ``s`` the
    last state (through ``out``)."""
    x = pt.tensor3("x", dtype="float64")
    W_in = pytensor.shared(rng.normal(size=(2, 3)), name="W_in")
    W_rec = pytensor.shared(0.5 * rng.normal(size=(3, 3)), name="W_rec")
    h = pytensor.scan(lambda x_t, h: step_tanh(pt.dot(x_t, W_in) + pt.dot(h, W_rec)),
                      sequences=[x.dimshuffle(1, 0, 2)],
                      outputs_info=[pt.zeros((x.shape[0], 3), dtype="float64")],
                      return_updates=False)
    return x, out(h[-1]), [W_in, W_rec], rng.standard_normal((3, 4, 2))


def _lstm_graph(rng):
    spec = recurrent(2, [3], 2, cell="lstm", output_steps="last", loss="sigmoid_xent")
    return spec.inputs[0], spec.output, spec.params, rng.standard_normal((3, 4, 2))


#: The Op without a pushforward inside the loop is differentiated by pullbacks within
#: the step, which leaves the tangent loop a forward loop; after the loop, it makes the
#: whole J v the pullback of a pullback.
GRAPHS = {"lstm": _lstm_graph, "scan-rnn": lambda rng: _scan_rnn(rng, pt.tanh),
          "scan-rnn-step-without-pushforward":
              lambda rng: _scan_rnn(rng, _TanhWithoutPushforward()),
          "scan-rnn-output-without-pushforward":
              lambda rng: _scan_rnn(rng, pt.tanh, out=_TanhWithoutPushforward())}


def _backward_loops(outputs) -> int:
    """Scans in the graph of ``outputs`` that run a gradient's loop (mit-mot states)."""
    from pytensor.graph.traversal import apply_ancestors
    from pytensor.scan.op import Scan

    return sum(1 for node in apply_ancestors(outputs)
               if isinstance(node.op, Scan) and node.op.info.n_mit_mot > 0)


@pytest.mark.parametrize("through", ["ops", "pullbacks"])
@pytest.mark.parametrize("graph", list(GRAPHS))
def test_jacobian_vector_matches_finite_differences(graph, through):
    """Both forms of J v, through a ``scan``, against central differences of ``s`` along
    ``v``; the Ops' pushforward makes the tangent loop a forward loop (no scan with
    mit-mot states), and an Op without one outside the loop makes it the pullbacks."""
    rng = np.random.default_rng(SEED)
    x, s, params, x_val = GRAPHS[graph](rng)
    tangents = [p.type() for p in params]
    (Jv,) = jacobian_vector([s], params, tangents, through)
    own_loop = through != "pullbacks" and graph != "scan-rnn-output-without-pushforward"
    assert (_backward_loops([Jv]) == 0) == own_loop
    jv_fn = pytensor.function([x] + tangents, Jv)
    s_fn = pytensor.function([x], s)
    theta = get_theta(params)
    v = rng.standard_normal(theta.size)
    shapes = [p.get_value().shape for p in params]
    pieces = np.split(v, np.cumsum([int(np.prod(sh)) for sh in shapes])[:-1])
    eps = 1e-6
    set_theta(params, theta + eps * v)
    plus = s_fn(x_val)
    set_theta(params, theta - eps * v)
    minus = s_fn(x_val)
    set_theta(params, theta)
    got = jv_fn(x_val, *[piece.reshape(sh) for piece, sh in zip(pieces, shapes)])
    assert_close_to(got, (plus - minus) / (2 * eps))


def test_tangent_loop_carries_the_tangent_alone():
    """The Ops' own J v through a ``scan``: its loop carries ``ḣ`` alone, reading
    ``h_{t-1}`` from the scan's output, and keeps one product a step (``ḣ_{t-1} W_rec``),
    the others (``x_t Ẇ_in``, ``h_{t-1} Ẇ_rec``, an LSTM's gates) computed for all steps
    before it.  PyTensor's own ``Scan.pushforward`` carries ``h`` beside ``ḣ`` (LSTM:
    ``h``, ``c`` and their tangents) and so runs the forward recurrence again."""
    from pytensor.gradient import pushforward
    from pytensor.graph.traversal import apply_ancestors
    from pytensor.scan.op import Scan

    rng = np.random.default_rng(SEED)
    for build, n_states in ((lambda: _scan_rnn(rng, pt.tanh), 1),
                            (lambda: _lstm_graph(rng), 2)):
        x, s, params, _ = build()
        tangents = [p.type() for p in params]
        forward = set(apply_ancestors([s]))
        for Jv, carried, products in (
                (jacobian_vector([s], params, tangents, "ops")[0], n_states, 1),
                (pushforward(s, params, tangents, use_op_pushforward=True), 2 * n_states,
                 None)):
            (loop,) = [node.op for node in apply_ancestors([Jv])
                       if isinstance(node.op, Scan) and node not in forward]
            assert len(loop.info.sit_sot_in_slices) == carried
            step = [type(n.op).__name__ for n in loop.fgraph.toposort()]
            assert products is None or step.count("Dot") == products, step


def test_auto_takes_the_ops_pushforward_where_there_is_a_scan():
    rng = np.random.default_rng(SEED)
    x, s, params, _ = _scan_rnn(rng, pt.tanh)
    (Jv,) = jacobian_vector([s], params, [p.type() for p in params], "auto")
    assert _backward_loops([Jv]) == 0
    x = pt.matrix("x", dtype="float64")
    W = pytensor.shared(rng.normal(size=(2, 3)), name="W")
    s, dW = pt.tanh(pt.dot(x, W)), W.type()
    same = pytensor.graph.basic.equal_computations
    auto = jacobian_vector([s], [W], [dW], "auto")
    assert same(auto, jacobian_vector([s], [W], [dW], "pullbacks"))
    assert not same(auto, jacobian_vector([s], [W], [dW], "ops"))


def test_jacobian_vector_refuses_an_unknown_form():
    rng = np.random.default_rng(SEED)
    x, s, params, _ = _scan_rnn(rng, pt.tanh)
    with pytest.raises(ValueError, match="through must be"):
        jacobian_vector([s], params, [p.type() for p in params], "forward")


# -- structure of G ------------------------------------------------------------------
def test_gauss_newton_matrix_is_symmetric(case):
    worker = case.workers["cached"]
    rng = np.random.default_rng(SEED)
    G = case.dense("cached")
    scale = np.abs(G).max()
    assert np.abs(G - G.T).max() <= 1e-10 * scale
    for u, v in rng.standard_normal((5, 2, case.theta.size)):
        uGv, vGu = u @ worker.gv_sum(v), v @ worker.gv_sum(u)
        assert abs(uGv - vGu) <= 1e-10 * max(abs(uGv), abs(vGu), scale)


def test_gauss_newton_matrix_is_positive_semidefinite(case):
    worker = case.workers["cached"]
    rng = np.random.default_rng(SEED)
    G = case.dense("cached")
    scale = np.abs(G).max()
    for v in rng.standard_normal((50, case.theta.size)):
        assert v @ worker.gv_sum(v) >= -1e-10 * scale * (v @ v)
    eigenvalues = np.linalg.eigvalsh(0.5 * (G + G.T))
    assert eigenvalues.min() >= -1e-10 * eigenvalues.max()
    assert eigenvalues.max() > 0


# -- the loss Hessian in s -------------------------------------------------------------
@pytest.mark.parametrize("name", losses.LOSSES)
def test_analytic_hessian_product_matches_autodiff(name):
    rng = np.random.default_rng(SEED)
    s, y, u = (pt.tensor3(n, dtype="float64") for n in "syu")
    loss = pt.sum(losses.elementwise(name, s, y))
    (autodiff,) = gauss_newton_product(loss, s, [s], [u])  # J = I: Gv is H_L u
    fn = pytensor.function([s, y, u], [losses.hessian_product(name, s, u), autodiff])

    s_val, u_val = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    y_val = one_hot(rng, (2, 3), 4) if name == "softmax_xent" else rng.random((2, 3, 4))
    analytic, auto = fn(s_val, y_val, u_val)
    reference = (loss_hessian(name, s_val) @ u_val.ravel()).reshape(u_val.shape)
    np.testing.assert_allclose(analytic, reference, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(auto, reference, rtol=1e-12, atol=1e-14)
