"""The expectation estimator is exact: every ordered draw, enumerated.

For a small map (K cells, N draws) the probability-weighted sum over every
possible draw of `ExpectationPool`'s value and of its autodiff gradients (on
the active backend) must equal `mu = sum_i a_i f_i` and its gradients, with
the attention's gradient taken in logit space. The original library's
attention gradient without replacement fails this check; a numpy copy of it
shows that the check can fail.
"""

import itertools

import numpy as np
import pytest
from keras import ops
from layer_testing import run_layer_test, value_and_gradients

import keras_attention_sampling as kas

# (cells K, draws N); with replacement there are K^N ordered draws, without
# K! / (K - N)!.
CASES = [
    (True, 5, 1),
    (True, 4, 2),
    (True, 5, 3),
    (False, 5, 2),
    (False, 6, 3),
    (False, 5, 5),
    (False, 7, 4),
]


def _problem(k, d=3, seed=0):
    rng = np.random.default_rng(seed + k)
    logits = rng.normal(size=k).astype("float32")
    features = rng.normal(size=(k, d)).astype("float32")
    upstream = rng.normal(size=d).astype("float32")
    return logits, features, upstream


def _softmax(z):
    p = np.exp(z - z.max())
    return p / p.sum()


def _draws(a, n, replace):
    """Every ordered draw of n cells and its probability."""
    k = len(a)
    if replace:
        for draw in itertools.product(range(k), repeat=n):
            yield draw, float(np.prod(a[list(draw)]))
        return
    for draw in itertools.permutations(range(k), n):
        p, used = 1.0, 0.0
        for cell in draw:
            p *= a[cell] / (1.0 - used)
            used += a[cell]
        yield draw, p


def _exact(logits, features, upstream):
    """mu, and the gradients of <g, mu> in logit space and feature space."""
    a = _softmax(logits.astype("float64"))
    scores = features.astype("float64") @ upstream
    return a @ features, a * (scores - a @ scores), a[:, None] * upstream[None, :]


@pytest.mark.parametrize("replace, k, n", CASES)
def test_value_and_both_gradients_are_exact_in_expectation(replace, k, n):
    logits, features, upstream = _problem(k)
    pool = kas.ExpectationPool(replace=replace)
    a = _softmax(logits.astype("float64"))
    # Every ordered draw is one row of a batch, so one autodiff call of the
    # probability-weighted objective gives the probability-weighted
    # gradients (a gradient of a sum is the sum of the gradients).
    draws, probabilities = zip(*_draws(a, n, replace))
    cells = np.array(draws, "int32")  # (draws, n)
    weights = np.array(probabilities)

    def objective(z, f):
        attention = ops.softmax(z)
        estimate = pool([ops.take(f, cells, axis=0), ops.take(attention, cells)])
        scores = ops.sum(estimate * ops.convert_to_tensor(upstream), axis=-1)
        weighted = ops.sum(scores * ops.convert_to_tensor(weights.astype("float32")))
        return weighted, estimate

    estimates, (logit_grad, feature_grad) = value_and_gradients(
        objective, logits, features
    )
    value = weights @ estimates.astype("float64")
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-9)
    mu, mu_logit_grad, mu_feature_grad = _exact(logits, features, upstream)
    np.testing.assert_allclose(value, mu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logit_grad, mu_logit_grad, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(feature_grad, mu_feature_grad, rtol=1e-3, atol=1e-5)


def _library_logit_gradient(logits, features, upstream, n):
    """The original library's attention gradient without replacement, in
    numpy: w_k <g, F_k / q_k + sum_{j<k} f_j - (k - 1) f_k>, q_k = a_k / pm_k."""
    a = _softmax(logits.astype("float64"))
    total = np.zeros(len(a))
    for draw, p in _draws(a, n, replace=False):
        grad_a = np.zeros(len(a))
        for k, cell in enumerate(draw):
            pm = 1.0 - a[list(draw[:k])].sum()
            seen = sum(
                (a[j] * features[j] for j in draw[:k]), np.zeros(features.shape[1])
            )
            f_k = seen + pm * features[cell]
            earlier = sum((features[j] for j in draw[:k]), np.zeros(features.shape[1]))
            direction = f_k / (a[cell] / pm) + earlier - k * features[cell]
            grad_a[cell] += direction @ upstream / n
        total += p * a * (grad_a - a @ grad_a)
    return total


def test_the_check_rejects_the_original_librarys_biased_gradient():
    for k, n in [(5, 2), (6, 3)]:
        logits, features, upstream = _problem(k)
        biased = _library_logit_gradient(logits, features, upstream, n)
        exact = _exact(logits, features, upstream)[1]
        relative = np.abs(biased - exact).max() / np.abs(exact).max()
        assert relative > 0.3, relative


def test_expectation_pool_layer(tmp_path, rng):
    features = rng.normal(size=(2, 4, 3)).astype("float32")
    attention = rng.dirichlet(np.ones(4), size=2).astype("float32")
    run_layer_test(
        kas.ExpectationPool,
        {"replace": False, "logit_scale": 3.0, "activation": "softmax"},
        [features, attention],
        (2, 3),
        tmp_path,
        trainable=False,
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        output_dtypes=["float32"],
    )
    with pytest.raises(ValueError, match="ExpectationPool .* number of patches"):
        kas.ExpectationPool()([features, attention[:, :3]])
