import os

# Keep JAX on CPU, quiet, and deterministic in tests.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# backend="auto" on MuJoCo robots is native here, whatever MJX would measure (sim.backend_choice)
os.environ.setdefault("PROTEUS_AUTO_BACKEND", "native")

import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's compiled programs after each test module. XLA's CPU JIT maps memory for every
    executable it keeps; a worker that runs hundreds of tests without freeing them reaches Linux's
    ``vm.max_map_count`` (65530 by default) and the next compilation segfaults inside XLA (seen at
    ~52k maps and growing, in tests/test_runs.py, after 270 tests in one worker)."""
    yield
    import sys

    jax = sys.modules.get("jax")
    if jax is not None:
        jax.clear_caches()
        gc.collect()
