"""What dropping ``fastmath`` cost dhf's recurrence kernels (Martens & Sutskever issue,
defect 6), in one run: each kernel compiled with and without it, timed interleaved
(best of 30; T = 100, 64 rows, H = 100, float32), then fed a NaN in ``h``.

    OMP_NUM_THREADS=1 python scripts/bench/fastmath.py
"""
import time

import numba
import numpy as np

from dhf.curvature import tanh_recurrence

T, N, H = 100, 64, 100


def main() -> None:
    rng = np.random.default_rng(0)
    f = np.float32
    drive = rng.normal(size=(T, N, H)).astype(f)
    h = np.tanh(rng.normal(size=(T, N, H))).astype(f)
    h0 = rng.normal(size=(N, H)).astype(f)
    W = (0.1 * rng.normal(size=(H, H))).astype(f)
    kernels = {fm: (numba.njit(fastmath=fm)(tanh_recurrence.r_forward),
                    numba.njit(fastmath=fm)(tanh_recurrence.backward))
               for fm in (False, True)}
    calls = {"r_forward": lambda k, h: k[0](drive, h, h0, h0, W, W),
             "backward": lambda k, h: k[1](drive, h, h0, W)}
    best = {(fm, name): np.inf for fm in kernels for name in calls}
    for _ in range(31):  # the first round compiles
        for fm, k in kernels.items():
            for name, call in calls.items():
                t0 = time.perf_counter()
                call(k, h)
                best[fm, name] = min(best[fm, name], time.perf_counter() - t0)
    for name in calls:
        off, on = best[False, name], best[True, name]
        print(f"{name:10s} fastmath off {off * 1e3:.2f} ms, on {on * 1e3:.2f} ms, "
              f"off/on {off / on:.2f}")
    bad = h.copy()
    bad[50, 3, 7] = np.nan
    for fm, k in kernels.items():
        finite = [bool(np.isfinite(call(k, bad)[0]).all()) for call in calls.values()]
        print(f"fastmath {str(fm):5s}: a NaN in h comes out NaN: "
              f"{'yes' if not any(finite) else 'NO'}")


if __name__ == "__main__":
    main()
