"""The benchmark scripts still run (tiny sizes); their figures live in
docs/benchmarks.md."""
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench"


def _run(*args):
    done = subprocess.run([sys.executable, str(BENCH / args[0]), *args[1:]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_profile_update_accounts_for_the_whole_update():
    out = _run("profile_update.py", "--rows", "16", "--updates", "1")
    assert "gv_chunks" in out and "coordinator" in out and "GFLOP/s" in out
    shares = [float(line.split("%")[0].split()[-1]) for line in out.splitlines()
              if line.strip().startswith(("gv_chunks", "grad_chunks", "curvature_chunks",
                                          "loss_chunks", "coordinator"))]
    assert len(shares) == 5 and abs(sum(shares) - 100.0) < 0.5


def test_ceiling_runs_one_pinned_copy():
    out = _run("ceiling.py", "--copies", "1", "--start-after", "0")
    assert "1 copies" in out and "ceiling on efficiency 100%" in out


def test_exact_sums_benchmark_prints_the_ratio():
    out = _run("exact_sums.py", "--T", "5", "--rows", "16")
    assert "of the chunk's Gv" in out and "2800000 values" in out
