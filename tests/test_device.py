"""Where a rank computes: JAX's CPU client started with one compute thread."""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

#: A child process: the client started through dhf.device.one_xla_thread, then a matmul
#: loop large enough for XLA to split over every thread its pool has; prints whether
#: the client was narrowed, the CPU seconds per wall second of the loop, and whether
#: every thread has its CPUs back.
CHILD = textwrap.dedent("""
    import os, resource, time
    import numpy as np
    from dhf.device import one_xla_thread
    cpus = os.sched_getaffinity(0)
    narrowed = one_xla_thread()
    import jax, jax.numpy as jnp
    a = jnp.asarray(np.random.default_rng(0).random((1500, 1500), dtype=np.float32))
    f = jax.jit(lambda a: (a @ a).sum())
    f(a).block_until_ready()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(40):
        f(a).block_until_ready()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    restored = all(os.sched_getaffinity(int(t)) == cpus
                   for t in os.listdir("/proc/self/task"))
    print(narrowed, round(cpu / wall, 2), restored)
""")


def run_child(**env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                            "NUMBA_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", CHILD], env={**environ, **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    narrowed, ratio, restored = done.stdout.split()
    return narrowed == "True", float(ratio), restored == "True"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity")
                    or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and two CPUs")
def test_xla_computes_on_one_thread_and_nothing_stays_pinned():
    """XLA sizes its pool by the CPUs the starting thread may use; one_xla_thread
    narrows that to one for the client's start only: the matmul then keeps about one
    CPU busy (XLA's own pool would keep every core busy), and every thread of the
    process may still run on all the CPUs it had."""
    narrowed, ratio, restored = run_child()
    assert narrowed and restored
    assert ratio < 1.3


def test_a_thread_count_the_user_set_leaves_xla_alone():
    narrowed, _, restored = run_child(OMP_NUM_THREADS="2")
    assert not narrowed and restored


def test_an_empty_thread_variable_is_no_thread_count():
    narrowed, _, restored = run_child(OMP_NUM_THREADS="")
    assert narrowed and restored


def test_a_cpu_run_never_starts_jaxs_gpu_client():
    """``run.device = "cpu"`` under JAX: the CPU alone is JAX's platform, set before
    any client starts (on a GPU node each CPU rank would otherwise start the GPU
    client, which reserves 75 % of the card's memory, and compute there by default)."""
    child = textwrap.dedent("""
        import jax
        from jax._src import xla_bridge
        from dhf.backends import modes
        modes({"backend": "jax", "gv_backend": "auto", "device": "cpu"})
        print(jax.config.jax_platforms, xla_bridge.backends_are_initialized(),
              jax.default_backend(), sorted(xla_bridge.backends()))
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["cpu", "True", "cpu", "['cpu']"]
