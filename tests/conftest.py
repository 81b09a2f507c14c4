import keras
import numpy as np
import pytest


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
