"""examples/ run as a user would run them."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("sklearn", [True, False])
def test_autoencoder_example_trains_and_exports(tmp_path, sklearn):
    """The documented command, with scikit-learn's digits and without scikit-learn
    (which neither install of the README brings): it trains and writes its parameters
    into --out, not into the directory it runs in."""
    env = dict(os.environ)
    if sklearn:
        pytest.importorskip("sklearn")
    else:  # an sklearn that cannot be imported, first on the path
        hidden = tmp_path / "hidden" / "sklearn"
        hidden.mkdir(parents=True)
        (hidden / "__init__.py").write_text("raise ImportError('not installed')\n")
        env["PYTHONPATH"] = str(tmp_path / "hidden")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "autoencoder.py"),
                           "--updates", "3", "--out", "ae"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("cross-entropy")][0]
    assert ("(digits)" if sklearn else "(patterns)") in line
    first, last = (float(v) for v in line.split(": ")[1].split(" in ")[0].split(" -> "))
    assert last < first
    npz = np.load(tmp_path / "ae" / "params.npz")
    as_json = json.loads((tmp_path / "ae" / "params.json").read_text())
    assert set(npz.files) == set(as_json) == {"W", "b_h", "b_v"}
    np.testing.assert_array_equal(npz["W"], np.array(as_json["W"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ae"] + ["hidden"] * (not sklearn)


@pytest.mark.slow
def test_the_gru_example_learns_as_documented():
    """``python examples/gru.py``, as the docs print it: a GRU in scan, no built-in
    model, through dhf.train's generic Gv on the default backend, remembers the first of
    20 bits: under 5 % of the validation rows wrong within its 20 updates (chance is
    50 %, where it stayed with the update gate's bias at zero)."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "gru.py")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "own model" in done.stdout  # the start line
    last = done.stdout.strip().splitlines()[-1]
    wrong, updates = re.fullmatch(r"([\d.]+)% of the validation rows wrong after (\d+) "
                                  r"updates", last).groups()
    assert float(wrong) < 5.0 and int(updates) <= 20, done.stdout[-3000:]


def test_gru_example_is_the_gru_of_its_equations():
    """The example's graph against a GRU written here from Chung et al. (2014)'s
    equations (update gate z, reset gate r applied to h before U_c), step by step in
    NumPy on the example's own weights."""
    import importlib.util

    import pytensor

    spec_file = importlib.util.spec_from_file_location("gru_example",
                                                       ROOT / "examples" / "gru.py")
    example = importlib.util.module_from_spec(spec_file)
    spec_file.loader.exec_module(example)
    chrono = {p.name: p.get_value() for p in example.gru(2, 50, 3, t_max=20).params}
    assert np.all((chrono["b_z"] >= -np.log(19)) & (chrono["b_z"] <= 0))  # -log U(1, 19)
    assert np.ptp(chrono["b_z"]) > 1 and not chrono["b_r"].any()
    spec = example.gru(2, 5, 3, seed=7)
    rng = np.random.default_rng(0)
    for p in spec.params:  # biases too (they start at zero)
        p.set_value(rng.standard_normal(p.get_value().shape))
    w = {p.name: p.get_value() for p in spec.params}
    x = rng.standard_normal((4, 6, 2))

    def sigmoid(a):
        return 1.0 / (1.0 + np.exp(-a))

    h = np.zeros((4, 5))
    for t in range(6):
        z = sigmoid(x[:, t] @ w["W_z"] + h @ w["U_z"] + w["b_z"])
        r = sigmoid(x[:, t] @ w["W_r"] + h @ w["U_r"] + w["b_r"])
        c = np.tanh(x[:, t] @ w["W_c"] + (r * h) @ w["U_c"] + w["b_c"])
        h = (1 - z) * h + z * c
    reference = h @ w["W_out"] + w["b_out"]
    output = pytensor.function(spec.inputs, spec.output)(x)
    np.testing.assert_allclose(output, reference, rtol=1e-12, atol=1e-12)
