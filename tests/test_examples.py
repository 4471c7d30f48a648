"""examples/ run as a user would run them."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_autoencoder_example_trains_and_exports(tmp_path):
    pytest.importorskip("sklearn")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "autoencoder.py"), "3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("cross-entropy")][0]
    first, last = (float(v) for v in line.split(": ")[1].split(" in ")[0].split(" -> "))
    assert last < first
    npz = np.load(tmp_path / "autoencoder.npz")
    as_json = json.loads((tmp_path / "autoencoder.json").read_text())
    assert set(npz.files) == set(as_json) == {"W", "b_h", "b_v"}
    np.testing.assert_array_equal(npz["W"], np.array(as_json["W"]))


@pytest.mark.slow
def test_gru_example_trains_a_scan_graph_of_its_own(tmp_path):
    """A GRU in scan, no built-in model: dhf.train's generic Gv path on the default
    backend, with a run directory whose metrics show the loss falling."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "gru.py"), "--updates",
                           "4", "--T", "8", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "of the validation rows wrong after 4 updates" in done.stdout, done.stdout
    assert "own model" in done.stdout  # the start line
    rows = [json.loads(line) for line in
            (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[-1]["valid_loss"] < rows[0]["valid_loss"]
