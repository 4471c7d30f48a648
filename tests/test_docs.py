"""The README's and docs/'s examples run as printed: every ``dhf-train`` command line
(its options and config keys, through ``--dry-run``) and every Python block."""
from __future__ import annotations

import re
import shlex

import numpy as np
import pytest

from dhf.cli import main
from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Tokens that stand for something the reader fills in.
PLACEHOLDER = re.compile(r"NAME|RUN_DIR|\bDIR\b|FILE|=S$|=M$|=T$")


def _code_lines(text: str):
    """Lines of code blocks: fenced (but Python) and four-space indented, with
    backslash continuations joined."""
    fenced = lang = None
    joined = ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced, lang = (None, None) if fenced else (True, line[3:].strip())
            continue
        if (fenced and lang != "python") or (not fenced and line.startswith("    ")):
            joined += line.strip()
            if joined.endswith("\\"):
                joined = joined[:-1] + " "
                continue
            yield joined
        joined = ""


def train_commands() -> list[tuple[str, list[str]]]:
    """``(where, args)`` of each documented ``dhf-train`` invocation a reader can run as
    is (no placeholder, no file of their own, not a transcript of an error)."""
    found = []
    for doc in DOCS:
        for line in _code_lines(doc.read_text()):
            if line.startswith("$") or "dhf-train" not in line:
                continue
            command = line.split("&&")[-1].split(" # ")[0].split("   #")[0]
            try:
                tokens = shlex.split(command)
            except ValueError:
                continue
            starts = [i for i, t in enumerate(tokens) if t.endswith("dhf-train")]
            if not starts or (starts[0] and tokens[0] not in (
                    "mpirun", "mpiexec", "srun", ".venv/bin/mpirun")):
                continue
            args = tokens[starts[0] + 1:]
            if any(PLACEHOLDER.search(t) for t in args):
                continue
            files = [t.split("=", 1)[-1] for t in args if t.endswith((".toml", ".h5"))]
            if any(not (ROOT / f).exists() for f in files):
                continue
            found.append((f"{doc.name}: {line[:70]}", args))
    return found


COMMANDS = train_commands()


def test_the_docs_show_dhf_train_commands():
    assert len(COMMANDS) >= 15  # the scan finds them (a format change would hide them)


@pytest.mark.parametrize("args", [a for _, a in COMMANDS], ids=[w for w, _ in COMMANDS])
def test_a_documented_dhf_train_command_resolves(args, capsys, monkeypatch):
    """Its options exist and its config keys and values are valid: ``--dry-run`` (which
    also builds the model and checks the batches fit) succeeds."""
    monkeypatch.chdir(ROOT)
    if "--help" in args:
        with pytest.raises(SystemExit) as done:
            main(args)
        assert done.value.code == 0
        return
    assert main([a for a in args if a != "--resume"] + ["--dry-run"]) == 0, \
        capsys.readouterr().out


def python_blocks(doc) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)


def classifier_data():
    """What the README's and own-model.md's snippets take as given: a softmax classifier
    x -> s = x W + b and one-hot data."""
    import pytensor
    import pytensor.tensor as pt

    rng = np.random.default_rng(0)
    x, y = pt.matrix("x"), pt.matrix("y")
    W = pytensor.shared(np.zeros((4, 3)), name="W")
    b = pytensor.shared(np.zeros(3), name="b")
    s = pt.dot(x, W) + b

    def data(n):
        X = rng.normal(size=(n, 4))
        return X, np.eye(3)[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0)]

    (X, Y), (Xv, Yv) = data(600), data(200)
    return dict(x=x, y=y, W=W, b=b, s=s, X=X, Y=Y, Xv=Xv, Yv=Yv)


def autoencoder_data():
    """What own-model.md's autoencoder block takes as given (examples/autoencoder.py)."""
    import json

    import pytensor
    import pytensor.tensor as pt

    rng = np.random.default_rng(0)
    X = (rng.random((500, 12)) < 0.3).astype(float)
    return dict(rng=rng, n_visible=12, n_hidden=4, X_train=X[:400], X_valid=X[400:],
                pytensor=pytensor, pt=pt, json=json)


@pytest.mark.parametrize("doc, given", [("README.md", classifier_data),
                                        ("docs/own-model.md", classifier_data)])
def test_the_python_blocks_run_as_printed(doc, given, tmp_path, monkeypatch):
    import dhf

    monkeypatch.chdir(tmp_path)  # the autoencoder block writes its exports here
    blocks = python_blocks(ROOT / doc)
    assert blocks
    namespace = {"dhf": dhf, "np": np, **given()}
    for block in blocks:
        if "n_visible" in block:  # own-model.md's worked example
            namespace.update(autoencoder_data())
        exec(compile(block, doc, "exec"), namespace)
        assert "result" not in namespace or namespace["result"].updates > 0
    if doc == "docs/own-model.md":
        assert (tmp_path / "autoencoder.npz").exists()
