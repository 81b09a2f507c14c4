import keras
from keras import ops

from keras_attention_sampling.layers.weighted_logit_pool import (
    check_logit_scale,
    check_pool_shapes,
)

# Drawn cells have a positive probability; the clamp only keeps the ratio
# a / a finite if one underflowed to 0.
_TINY = 1.1754944e-38


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class ExpectationPool(keras.layers.Layer):
    """Unbiased estimate of the attention's expected feature, `E_a[f]`.

    The estimator of the original attention-sampling paper: from `N` cells
    drawn from the attention `a`, in draw order, it estimates
    `mu = sum_i a_i f_i` without bias, and its gradients with respect to the
    features and to the drawn cells' attention are unbiased estimates of
    `mu`'s, so the classification loss trains the attention network
    directly, with no reward or baseline. With weights `w_k = 1 / N`:

    - with replacement, the value is `sum_k w_k f_k`; the gradient with
      respect to `f_k` is `w_k g` and with respect to `a_k` is
      `w_k <g, f_k> / a_k`;
    - without replacement (Gumbel-top-k order), with `pm_k = 1 - sum_{j<k}
      a_j` the mass left before draw `k`, the value is `sum_k w_k F_k` with
      `F_k = sum_{j<k} a_j f_j + pm_k f_k`; the gradient with respect to
      `f_k` is `(w_k pm_k + a_k sum_{m>k} w_m) g` and with respect to `a_k`
      is `<g, f_k> (w_k pm_k / a_k + sum_{m>k} w_m)`.

    Those gradients come from stop-gradients in `keras.ops`, so they are the
    same on every backend (the Concepts page derives them). The original
    library's attention gradient without replacement is biased; this one is
    exact in expectation, as `tests/test_expectation.py` checks by
    enumerating every ordered draw.

    Args:
        replace: whether the cells were drawn with replacement.
        logit_scale: factor applied to the estimate (1 by default).
        activation: applied after `logit_scale`; `None` by default, so the
            layer returns the estimate itself.
        **kwargs: base layer arguments.

    Call arguments:
        - **inputs**: list `[features, sampled_attention]`: features
          `(B, N, D)` and the attention of each drawn cell `(B, N)`, both in
          draw order. The attention must carry its gradient.
        - **replace**: overrides the constructor's `replace` (a model passes
          its sampler's, the one owner of that setting).

    Returns:
        float32 `(B, D)`: the estimate of `E_a[f]` (scaled and activated if
        asked).

    Examples:
        >>> import numpy as np
        >>> pool = ExpectationPool(replace=False)
        >>> features = np.eye(2, dtype="float32")[None]     # f_1, f_2
        >>> attention = np.array([[0.75, 0.25]], "float32")  # drawn: cell 1, then 2
        >>> estimate = pool([features, attention])  # mean of F_1 = f_1 and
        >>> [float(v) for v in keras.ops.convert_to_numpy(estimate)[0]]  # F_2 = mu
        [0.875, 0.125]
    """

    def __init__(self, replace=True, logit_scale=1.0, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.replace = bool(replace)
        self.logit_scale = logit_scale
        self.activation = keras.activations.get(activation)

    def __setattr__(self, name, value):
        # One check for the constructor and for later writes (the model's
        # `logit_scale` property writes here).
        if name == "logit_scale":
            check_logit_scale("ExpectationPool", value)
        super().__setattr__(name, value)

    def build(self, input_shape):
        check_pool_shapes(self, *input_shape)

    def call(self, inputs, replace=None):
        features, attention = inputs
        check_pool_shapes(self, features.shape, attention.shape)
        features = ops.cast(features, "float32")
        attention = ops.cast(attention, "float32")
        replace = self.replace if replace is None else replace
        # 1 in value; its gradient, 1 / a, turns a draw into an estimate.
        ratio = attention / ops.stop_gradient(ops.maximum(attention, _TINY))
        if replace:
            estimate = ops.mean(ratio[..., None] * features, axis=1)
        else:
            weighted = attention[..., None] * features
            seen = ops.cumsum(weighted, axis=1) - weighted  # sum_{j<k} a_j f_j
            mass_before = ops.cumsum(attention, axis=1) - attention
            remaining = ops.stop_gradient(1.0 - mass_before)  # pm_k
            terms = seen + (remaining * ratio)[..., None] * features
            estimate = ops.mean(terms, axis=1)
        return self.activation(self.logit_scale * estimate)

    def compute_output_shape(self, input_shape):
        feature_shape, _ = input_shape
        return (feature_shape[0], feature_shape[2])

    def compute_output_spec(self, inputs, replace=None):
        features, attention = inputs
        check_pool_shapes(self, features.shape, attention.shape)
        return keras.KerasTensor((features.shape[0], features.shape[2]), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "replace": self.replace,
                "logit_scale": self.logit_scale,
                "activation": keras.activations.serialize(self.activation),
            }
        )
        return config
