"""The benchmark scripts still run (tiny sizes); their figures live in
docs/benchmarks.md."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench"


def _run(*args):
    done = subprocess.run([sys.executable, str(BENCH / args[0]), *args[1:]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_profile_update_accounts_for_the_whole_update():
    pytest.importorskip("jax")  # (under Numba, a cold compile of minutes; same script)
    out = _run("profile_update.py", "--rows", "16", "--updates", "1", "--backend", "jax")
    assert "gv_chunks" in out and "coordinator" in out and "GFLOP/s" in out
    shares = [float(line.split("%")[0].split()[-1]) for line in out.splitlines()
              if line.strip().startswith(("gv_chunks", "grad_chunks", "curvature_chunks",
                                          "loss_chunks", "coordinator"))]
    assert len(shares) == 5 and abs(sum(shares) - 100.0) < 0.5


def test_ceiling_runs_one_pinned_copy():
    out = _run("ceiling.py", "--copies", "1", "--start-after", "0")
    assert "1 copies" in out and "ceiling on efficiency 100%" in out


def test_exact_sums_benchmark_prints_the_ratio():
    out = _run("exact_sums.py", "--T", "5", "--rows", "16", "--ranks", "2")
    assert "of the chunk's Gv" in out and "2800000 values" in out
    assert "as 5 exact-sum bins (112 MB)" in out


def test_vs_torch_checks_both_gradients_agree_before_timing():
    pytest.importorskip("torch")
    out = _run("vs_torch.py", "--T", "5", "--rows", "32", "--backends", "numba",
               "--repeats", "1")
    assert out.splitlines()[-1].startswith("| numba |")


def test_time_split_adds_up_a_run_of_known_rows(tmp_path):
    import json

    rows = [{"update": u, "seconds": 10.0, "cg_iters": 20, "t_gradient": 1.0,
             "t_preconditioner": 0.5, "t_cg": 7.0, "t_search": 0.5, "t_allreduce": 2.0,
             "t_gv": 6.0}
            for u in (1, 2)] + [{"update": 3, "seconds": 1.0, "t_cg": None}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = _run("time_split.py", str(tmp_path))
    assert "2 updates, 20.0 s (10.00 s per update), 40 CG iterations (0.350 s each)" in out
    assert "gradient 10.0%  preconditioner 5.0%  cg 70.0%  search 5.0%  validation 10.0%" \
        in out
    assert "Allreduce, inside the phases: 20.0%" in out
    assert "CG: Gv products 60.0%, CG's own vector work 10.0%" in out


def test_models_benchmark_prints_a_row_per_model_and_backend():
    out = _run("models.py", "--T", "3", "--rows", "16", "--models", "tanh_rnn",
               "tanh_rnn_generic", "--backends", "auto", "--ranks", "1", "--updates", "1")
    rows = [line for line in out.splitlines() if line.startswith("| tanh_rnn")]
    assert len(rows) == 2 and all(len(r.split("|")) == 11 for r in rows), out


def test_chunk_plans_benchmark_prints_both_plans_and_their_ratio():
    pytest.importorskip("jax")
    out = _run("chunk_plans.py", "--T", "3", "--rows", "64", "--models", "tanh_rnn",
               "--ranks", "1", "--updates", "1", "--cg-iters", "2")
    rows = [line for line in out.splitlines() if line.startswith("| tanh_rnn | 1 |")]
    assert len(rows) == 1 and len(rows[0].split("|")) == 7, out


def test_scaling_model_prints_the_model_beside_a_measured_update():
    pytest.importorskip("jax")
    out = _run("scaling_model.py", "--models", "default", "--rows-scale", "0.02",
               "--cg-iters", "2", "--ranks", "1", "4", "--check", "1")
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| ")
            and line.split("|")[1].strip().isdigit()]
    assert [r[1].strip() for r in rows] == ["1", "4"], out
    assert rows[0][10].strip() and not rows[1][10].strip()  # measured at 1 rank only
    assert "the exact Allreduce at 2 ranks of one value" in out


def test_masked_benchmark_prints_each_case_against_the_unmasked_one():
    pytest.importorskip("jax")
    out = _run("masked.py", "--T", "4", "--batch", "16", "--ranks", "1", "--updates", "1",
               "--cases", "last", "masked", "--gv-backend", "jax")
    rows = [line for line in out.splitlines() if line.startswith("| last")
            or line.startswith("| masked")]
    assert len(rows) == 2 and rows[0].count("(1.00×)") == 4, out


def test_recurrences_benchmark_times_both_forms():
    pytest.importorskip("jax")
    out = _run("recurrences.py", "--T", "4", "--rows", "3", "--H", "5")
    assert "| R-forward |" in out and "| backward |" in out


def test_pushforward_benchmark_checks_both_forms_agree():
    pytest.importorskip("jax")
    out = _run("pushforward.py", "--T", "3", "--rows", "8", "--models", "tanh_rnn_generic",
               "--backends", "jax", "--repeats", "1")
    (row,) = [line for line in out.splitlines() if line.startswith("| tanh_rnn_generic")]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert len(cells) == 8 and float(cells[-1]) < 1e-5, out
