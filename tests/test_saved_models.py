"""Files saved by earlier releases still load, predict as they did and resume."""

import os

import keras
import numpy as np
import pytest

import keras_attention_sampling as kas

DATA = os.path.join(os.path.dirname(__file__), "data", "v0.1.0")


@pytest.mark.parametrize(
    "name, cls",
    [
        ("attention_sampling_model", kas.AttentionSamplingModel),
        ("policy_gradient_model", kas.PolicyGradientModel),
    ],
)
def test_models_saved_by_0_1_load_predict_and_resume(name, cls):
    model = keras.models.load_model(os.path.join(DATA, f"{name}.keras"))
    assert isinstance(model, cls)
    images = np.load(os.path.join(DATA, "images.npy"))
    expected = np.load(os.path.join(DATA, f"{name}_predictions.npy"))
    # Both models pick the top-k cells at inference, so this is deterministic.
    np.testing.assert_allclose(
        model.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-5
    )
    assert int(model.attention_optimizer.iterations) == 2
    model.fit(images, np.arange(6) % 3, batch_size=3, epochs=1, verbose=0)
    assert int(model.attention_optimizer.iterations) == 4
