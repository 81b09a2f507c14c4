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
