"""dhf-plot draws a real run's metrics into a PNG that opens."""
import builtins

import pytest

from dhf.cli import main, plot_main
from tests.conftest import tiny_args


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("plot") / "run"
    assert main(tiny_args() + ["--out", str(out)]) == 0
    return out


def test_plot_writes_a_png_that_opens(run_dir, tmp_path):
    import matplotlib.image

    png = tmp_path / "curves.png"
    assert plot_main([str(run_dir), str(run_dir), "--out", str(png)]) == 0
    assert png.stat().st_size > 20_000
    height, width, _ = matplotlib.image.imread(png).shape
    assert (width, height) == (1800, 800)


def test_missing_run_directory_is_one_line(tmp_path, capsys):
    assert plot_main([str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "metrics.jsonl: not found" in out[0]


def test_missing_matplotlib_says_how_to_install(run_dir, tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert plot_main([str(run_dir), "--out", str(tmp_path / "x.png")]) == 2
    assert "pip install 'dhf[plot]'" in capsys.readouterr().out


def test_infinite_rho_is_drawn_on_the_panels_edge():
    """A failed step's ρ = −∞ is written as −1e308; it must not squash the panel."""
    from dhf.plot import PANELS, _series

    rows = [{"update": 1, "rho": 0.9, "seconds": 1.0}, {"update": 2, "rho": -1e308},
            {"update": 3, "rho": float("nan")}, {"update": 4, "damping": 1e308}]
    clip = next(p[4] for p in PANELS if p[0] == "rho")
    assert _series(rows, "rho", "time", clip) == ([1.0, 1.0], [0.9, -1.0])
    assert _series([{"update": 1, "loss": 2.0, "seconds": 1.0, "wall": 31.0}], "loss",
                   "time") == ([31.0], [2.0])  # start-up included
    assert _series(rows, "rho", "update", clip) == ([1, 2], [0.9, -1.0])
    assert _series(rows, "damping", "update") == ([], [])


def test_runs_are_labelled_with_their_optimiser_task_and_T(run_dir, tmp_path):
    """The legend names the optimiser (the tutorial's HF against SGD and Adam), not
    only a directory."""
    import shutil

    from dhf.plot import run_label

    assert run_label(run_dir) == f"HF, memorization, T = 6 ({run_dir.name})"
    not_recurrent = run_label(run_dir, recurrent=lambda task: False)
    assert not_recurrent == f"HF, memorization ({run_dir.name})"
    adam = tmp_path / "with-adam"
    shutil.copytree(run_dir, adam)
    config = (adam / "config.toml").read_text().replace('name = "hf"', 'name = "adam"')
    (adam / "config.toml").write_text(config)
    assert run_label(adam).startswith("Adam, memorization")


def test_update_axes_have_whole_ticks(run_dir, tmp_path):
    """λ, ρ, CG and every other panel against updates: ticks at whole updates only."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from dhf import plot

    saved = {}
    real_close = plt.close
    plt.close = lambda fig: saved.setdefault("fig", fig)
    try:
        plot.plot_runs([str(run_dir)], tmp_path / "curves.png")
    finally:
        plt.close = real_close
    fig = saved["fig"]
    for ax, panel in zip(fig.axes, plot.PANELS):
        if panel[2] == "update":
            ticks = ax.get_xticks()
            assert all(float(t).is_integer() for t in ticks), (panel[1], ticks)
    real_close(fig)
