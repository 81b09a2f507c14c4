import math

import keras
from keras import ops

from keras_attention_sampling._settings import renamed_keyword


def check_pool_shapes(layer, feature_shape, attention_shape):
    """Features `(B, N, U)` and attention `(B, N)`, or an error naming `layer`."""
    name = f"{type(layer).__name__} '{layer.name}'"
    if len(feature_shape) != 3 or len(attention_shape) != 2:
        raise ValueError(
            f"{name} expects features (B, N, U) and attention (B, N), got "
            f"shapes {tuple(feature_shape)} and {tuple(attention_shape)}."
        )
    for axis, label in ((0, "batch"), (1, "number of patches")):
        f, a = feature_shape[axis], attention_shape[axis]
        if f is not None and a is not None and f != a:
            raise ValueError(
                f"{name}: the features' {label} ({f}) differs from the "
                f"attention's ({a}); shapes {tuple(feature_shape)} and "
                f"{tuple(attention_shape)}."
            )


def check_logit_scale(layer_class, value):
    """A positive `logit_scale`, or an error naming the pool's class."""
    if not value > 0:
        raise ValueError(
            f"{layer_class}: logit_scale must be positive. Received: "
            f"logit_scale={value!r}"
        )


def default_logit_scale(num_classes):
    """The logit scale that lets a pool of unit-norm logits be 99.5% sure.

    The pooled logits have norm at most 1, so their scale `T` caps the
    confidence: the best unit vector for one of `K` classes leads each other
    class by `sqrt(K / (K - 1)) T`, so no prediction exceeds
    `1 / (1 + (K - 1) exp(-sqrt(K / (K - 1)) T))`. The reference notebook's
    `T = 3` puts that cap at 0.95 for its 3 classes, 0.72 for 10 and 0.17
    for 100. This returns the `T` whose cap is 0.995 for `num_classes`
    classes, `sqrt((K - 1) / K) log(199 (K - 1))`: 3.74 for 2 classes, 4.89
    for 3, 7.11 for 10, 9.84 for 100 (and 3 for a single class, whose
    prediction no scale changes). A cap of 0.994-0.996 did better than
    0.95 on both ten-class benchmarks and on three-class lymphoma slides
    at 30 epochs, and as well on the needles and at 10 epochs
    (docs/benchmarks.md, The logit scale). Until 2026-12-07 the cap was 0.95 and the scale never
    below the notebook's 3 (3 for three classes, 4.88 for ten).

    Args:
        num_classes: number of classes, a positive int.

    Returns:
        float.

    Examples:
        >>> round(default_logit_scale(3), 2)
        4.89
        >>> round(default_logit_scale(10), 2)
        7.11
    """
    if isinstance(num_classes, bool) or int(num_classes) != num_classes:
        raise ValueError(
            "default_logit_scale: num_classes must be a positive int. "
            f"Received: num_classes={num_classes!r}"
        )
    if num_classes < 1:
        raise ValueError(
            "default_logit_scale: num_classes must be positive. "
            f"Received: num_classes={num_classes!r}"
        )
    if num_classes == 1:
        return 3.0
    k = float(num_classes)
    # The cap's equation solved for T at a confidence of 0.995 (odds 199).
    return math.sqrt((k - 1) / k) * math.log(199 * (k - 1))


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class WeightedLogitPool(keras.layers.Layer):
    """Attention-weighted average of per-patch logits, then an activation.

    Computes `activation(T * sum_n a_n f_n / sum_n a_n)` where `a_n` is the
    attention of the n-th sampled patch, `f_n` its (unit-norm) logits and `T`
    the `logit_scale`. As in the reference notebook, the attention enters as a
    constant by default: the attention
    network is trained by the policy gradient, and letting the classification
    loss push on the weights as well would reward it for re-weighting the
    patches it already drew rather than for drawing better ones.

    Args:
        logit_scale: the factor `T` that multiplies the pooled unit-norm
            logits. Unit-norm vectors give logits in `[-1, 1]`; `T` sets how
            confident the prediction can get (the reference notebook uses 3).
            It multiplies, unlike `AttentionMap`'s `temperature`, which
            divides; release 0.1 called it `temperature`, and that keyword is
            still accepted.
        activation: applied to the scaled logits; `"softmax"` by default, or
            `None` to return logits for `from_logits=True` losses.
        attention_gradient: let the gradient flow into the attention weights.
        **kwargs: base layer arguments.

    Call arguments:
        - **inputs**: list `[features, attention]`: features `(B, N, U)` and
          the sampled attention `(B, N)`.

    Returns:
        float32 `(B, U)` predictions.

    Examples:
        >>> import numpy as np
        >>> pool = WeightedLogitPool(logit_scale=3.0)
        >>> features = np.eye(3, dtype="float32")[None]  # 3 patches, 3 classes
        >>> probs = pool([features, np.array([[0.7, 0.2, 0.1]], "float32")])
        >>> int(np.argmax(probs[0]))
        0
    """

    def __init__(
        self, logit_scale=1.0, activation="softmax", attention_gradient=False, **kwargs
    ):
        logit_scale = renamed_keyword(
            "WeightedLogitPool", kwargs, "temperature", "logit_scale", logit_scale
        )
        super().__init__(**kwargs)
        self.logit_scale = logit_scale
        self.activation = keras.activations.get(activation)
        self.attention_gradient = attention_gradient

    def __setattr__(self, name, value):
        # One check for the constructor and for later writes (the model's
        # `logit_scale` property writes here).
        if name == "logit_scale":
            check_logit_scale("WeightedLogitPool", value)
        super().__setattr__(name, value)

    def build(self, input_shape):
        check_pool_shapes(self, *input_shape)

    def call(self, inputs):
        features, attention = inputs
        check_pool_shapes(self, features.shape, attention.shape)
        features = ops.cast(features, "float32")
        attention = ops.cast(attention, "float32")
        if not self.attention_gradient:
            attention = ops.stop_gradient(attention)
        weights = attention / ops.maximum(
            ops.sum(attention, axis=1, keepdims=True), 1e-30
        )
        pooled = ops.sum(weights[..., None] * features, axis=1)
        return self.activation(self.logit_scale * pooled)

    def compute_output_shape(self, input_shape):
        feature_shape, _ = input_shape
        return (feature_shape[0], feature_shape[2])

    def compute_output_spec(self, inputs):
        features, attention = inputs
        check_pool_shapes(self, features.shape, attention.shape)
        return keras.KerasTensor((features.shape[0], features.shape[2]), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "logit_scale": self.logit_scale,
                "activation": keras.activations.serialize(self.activation),
                "attention_gradient": self.attention_gradient,
            }
        )
        return config
