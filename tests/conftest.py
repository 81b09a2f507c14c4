import os
import shutil
import tempfile

# Compiling takes about half of the JAX pass, and many tests compile the same
# programs (the learning tests' seeds, the distribution workers' steps). A
# compilation cache in a directory of this run's own lets those reuse one
# compilation, across the worker processes too (they inherit the variables),
# without carrying anything over from an earlier run. A cache directory the
# user set is kept. JAX reads these when it is imported, so they come first.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JAX_CACHE = tempfile.mkdtemp(prefix="kas-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
else:
    _JAX_CACHE = None

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    if _JAX_CACHE:
        shutil.rmtree(_JAX_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    # Each test starts from the same global seed and float32 policy, so a
    # failing test does not leak a mixed-precision policy into the next.
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# Files that exercise no backend-specific code path (numpy data pipelines,
# pictures, the example's command line) run once, on TensorFlow; the suite's
# other files run on every backend.
BACKEND_INDEPENDENT = {
    "test_datasets.py",
    "test_visualize.py",
    "test_lymphoma_example.py",
    "test_slide_reader.py",
    "test_slides_example.py",
}


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason="backend-independent; runs on the TensorFlow pass")
    for item in items:
        if item.path.name in BACKEND_INDEPENDENT:
            item.add_marker(skip)
