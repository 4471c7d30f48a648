"""Where an HF run's time went, from its metrics.jsonl: each phase's share of the
updates' ``seconds`` (the gradient with the curvature batch's forward pass, the
preconditioner, CG with its Gv products, backtracking with ρ and the line search; the
rest is the validation pass, and the training error's with ``run.train_error``), the part
of the phases spent in Allreduce, CG's seconds per iteration, and how much of CG its Gv
products took (the rest is CG's own vector work).

    python scripts/bench/time_split.py runs/ae/hf [more run directories]
"""
import argparse
import json
from pathlib import Path

PHASES = ("gradient", "preconditioner", "cg", "search")


def split(rows: list[dict]) -> dict:
    """Totals over the rows that have the split (HF updates): seconds per phase,
    Allreduce seconds, the updates' seconds and CG iterations."""
    rows = [r for r in rows if r.get("t_cg") is not None]
    total = {p: sum(r[f"t_{p}"] or 0.0 for r in rows) for p in PHASES}
    total["allreduce"] = sum(r["t_allreduce"] for r in rows)
    total["gv"] = sum(r.get("t_gv") or 0.0 for r in rows)
    total["seconds"] = sum(r["seconds"] for r in rows)
    total["cg_iters"] = sum(r["cg_iters"] for r in rows)
    total["updates"] = len(rows)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories")
    args = ap.parse_args()
    for run in args.runs:
        rows = [json.loads(line) for line in
                (Path(run) / "metrics.jsonl").read_text().splitlines()]
        t = split(rows)
        if not t["updates"]:
            print(f"{run}: no HF update with a time split")
            continue
        seconds = t["seconds"]
        rest = seconds - sum(t[p] for p in PHASES)
        shares = "  ".join(f"{p} {t[p] / seconds:.1%}" for p in PHASES)
        per_update = seconds / t["updates"]
        print(f"{run}: {t['updates']} updates, {seconds:.1f} s ({per_update:.2f} s per "
              f"update), {t['cg_iters']} CG iterations "
              f"({t['cg'] / max(t['cg_iters'], 1):.3f} s each)")
        print(f"  {shares}  validation {rest / seconds:.1%}  (Allreduce, inside the "
              f"phases: {t['allreduce'] / seconds:.1%})")
        if t["gv"]:
            print(f"  CG: Gv products {t['gv'] / seconds:.1%}, CG's own vector work "
                  f"{(t['cg'] - t['gv']) / seconds:.1%}")


if __name__ == "__main__":
    main()
