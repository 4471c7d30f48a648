r"""The ``hessianfree`` package's ``plant`` demo: an RNN that drives a dynamical system.

The network's output is not read off directly: it is a control signal fed into a plant,
a 2-d system with state :math:`z_t = (p_t, v_t)` (position, velocity), whose state is the
network's *next input* — the inputs depend on the outputs, so there is no fixed input
sequence, only an initial state.  As in ``hessianfree.demos.plant``:

.. math::
    h_t &= \tanh(z_t W_{in} + h_{t-1} W_{rec} + b), \qquad
    u_t = h_t W_{out} + b_{out}, \\
    z_{t+1} &= z_t A + u_t B(z_t), \qquad
    A = \begin{pmatrix} 1 & 0 \\ 0.2 & 1 \end{pmatrix}, \quad
    B(z) = \begin{pmatrix} 0 & 0 \\ 0 & \tanh p \end{pmatrix},

i.e. :math:`p_{t+1} = p_t + 0.2 v_t` and :math:`v_{t+1} = v_t + u_{t,2} \tanh p_t`.
Each sequence starts at :math:`z_0 \sim U(-½, ½)^2` and must end, after ``T`` steps
(the demo's ``sig_len = 15``), at position 1 with velocity 0: squared error on
:math:`s = z_T`.  The plant is a PyTensor step function inside the recurrence, so the
gradient and the Gauss-Newton product flow through it by autodiff (the package needed a
hand-written ``d_activation``).  Solved when every validation run ends within
``TOLERANCE`` of the target in both position and velocity.
"""
from __future__ import annotations

import numpy as np

name = "plant"
TOLERANCE = 0.1
A = np.array([[1.0, 0.0], [0.2, 1.0]])
TARGET = np.array([1.0, 0.0])  # position 1, velocity 0

defaults = {"task": {"T": 15, "n_train": 2000, "n_valid": 200},
            "model": {"hidden": 16, "init": "gaussian", "init_scale": 0.5},
            "optimizer": {"gradient_batch": 500, "curvature_batch": 500,
                          "backtrack_batch": 500, "cg_max_iters": 50,
                          "init_damping": 1.0, "structural_damping": 0.03}}


def generate(params: dict, n: int, rng: np.random.Generator, first_row: int = 0
             ) -> list[np.ndarray]:
    """``[z0 (n, 2), target (n, 2)]``: initial states and the state to reach (rows are
    independent draws: ``first_row`` is not needed)."""
    return [rng.uniform(-0.5, 0.5, (n, 2)), np.tile(TARGET, (n, 1))]


def plant_step(z, u):
    """:math:`z A + u B(z)` for a batch: the plant's next state."""
    import pytensor.tensor as pt

    p, v = z[:, 0], z[:, 1]
    return pt.stack([p + 0.2 * v, v + u[:, 1] * pt.tanh(p)], axis=1)


def build_model(config: dict):
    import pytensor
    import pytensor.tensor as pt

    from dhf.model import ModelSpec
    from dhf.nets.init import initialise

    m, run = config["model"], config["run"]
    T, H, dtype = config["task"]["T"], m["hidden"], run["dtype"]
    rng = np.random.default_rng(run["seed"])

    def shared(value, label):
        return pytensor.shared(np.asarray(value, dtype=dtype), name=label)

    def weights(shape):
        return initialise(rng, shape, m["init"], gain=m["init_scale"])

    W_in, W_rec = shared(weights((2, H)), "W_in"), shared(weights((H, H)), "W_rec")
    b, h0 = shared(np.zeros(H), "b"), shared(np.zeros(H), "h0")
    W_out, b_out = shared(weights((H, 2)), "W_out"), shared(np.zeros(2), "b_out")

    z0 = pt.matrix("z0", dtype=dtype)
    target = pt.matrix("target", dtype=dtype)

    def step(z, h_prev):
        a = pt.dot(z, W_in) + pt.dot(h_prev, W_rec) + b
        h = pt.tanh(a)
        return plant_step(z, pt.dot(h, W_out) + b_out), h, a

    z, _, a = pytensor.scan(step, outputs_info=[z0, pt.alloc(h0, z0.shape[0], H), None],
                            n_steps=T, return_updates=False, name="plant")
    return ModelSpec(inputs=[z0], targets=target, params=[W_in, W_rec, b, h0, W_out, b_out],
                     output=z[-1], loss="squared_error", hidden=[(a, "tanh", None)],
                     error="abs", error_tolerance=TOLERANCE)
