import keras
from keras import ops


def patch_backbone(filters=16, convolutions=4, activation="leaky_relu", dtype=None):
    """The reference notebook's per-patch CNN, `NormalizedFeature`'s default.

    `convolutions` times a 3x3 `Conv2D` with `filters` filters, same padding
    and `activation`, then `GlobalMaxPooling2D`. It maps `(B, p, p, C)` patches
    to `(B, filters)` features for any patch size.

    Args:
        filters: filters of every convolution.
        convolutions: number of convolutions.
        activation: their activation.
        dtype: dtype policy of the layers.

    Returns:
        A `keras.Sequential` named `"patch_backbone"`.

    Examples:
        >>> import numpy as np
        >>> backbone = patch_backbone(filters=8, convolutions=2)
        >>> tuple(backbone(np.zeros((5, 16, 16, 3), "float32")).shape)
        (5, 8)
    """
    layers = [
        keras.layers.Conv2D(
            filters, 3, padding="same", activation=activation, dtype=dtype
        )
        for _ in range(convolutions)
    ]
    layers.append(keras.layers.GlobalMaxPooling2D(dtype=dtype))
    return keras.Sequential(layers, name="patch_backbone")


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class NormalizedFeature(keras.layers.Layer):
    """Feature network: one unit-norm logit vector per patch.

    Every patch goes through the same backbone (the `N` patches are folded
    into the batch), then a Dense layer to `units`, then L2 normalisation. Unit
    norm makes the patches comparable: how much each one counts in the pooled
    prediction is decided by the attention, not by the size of its logits.

    Args:
        units: size of each output vector, usually the number of classes.
        backbone: any Keras layer or model mapping `(B * N, p, p, C)` patches to
            `(B * N, d)` features (for example a `keras.applications` model with
            `include_top=False, pooling="max", weights=None`). Defaults to
            `patch_backbone()`, the reference notebook's 4 x Conv2D 3x3 (16
            filters, leaky ReLU) + GlobalMaxPooling2D.
        epsilon: added under the square root of the norm, so an all-zero vector
            stays finite (and zero). A vector whose norm before normalising is
            `r` comes out with norm `r / sqrt(r**2 + epsilon)`: unit to within
            1e-6 for `r >= 1e-3` at the default, below 1 only for vectors
            about as small as `sqrt(epsilon)`.
        **kwargs: base layer arguments.

    Call arguments:
        - **inputs**: patches `(B, N, p, p, C)`.
        - **training**: Python bool, passed to the backbone.

    Returns:
        `(B, N, units)` vectors of unit L2 norm (float32), except for
        vectors near zero (see `epsilon`).

    Examples:
        >>> import numpy as np
        >>> layer = NormalizedFeature(3)
        >>> features = layer(np.random.rand(2, 5, 16, 16, 3).astype("float32"))
        >>> tuple(features.shape)
        (2, 5, 3)
        >>> norms = np.linalg.norm(keras.ops.convert_to_numpy(features), axis=-1)
        >>> bool(np.allclose(norms, 1.0, atol=1e-5))
        True
    """

    def __init__(self, units, backbone=None, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        if int(units) <= 0:
            raise ValueError(f"NormalizedFeature: units must be positive, got {units}.")
        self.units = int(units)
        self.backbone = backbone
        self.epsilon = epsilon
        # The default backbone gets its own attribute so that the config
        # still says `backbone=None` and rebuilds the default on load.
        self.patch_backbone = backbone or patch_backbone(dtype=self.dtype_policy)
        self.dense = keras.layers.Dense(units, dtype=self.dtype_policy, name="logits")

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(
                f"NormalizedFeature '{self.name}' expects patches of rank 5 "
                f"(B, N, p, p, C), got shape {tuple(input_shape)}."
            )
        folded = (None,) + tuple(input_shape[2:])
        if not self.patch_backbone.built:
            self.patch_backbone.build(folded)
        feature_shape = self.patch_backbone.compute_output_shape(folded)
        if len(feature_shape) != 2:
            raise ValueError(
                f"NormalizedFeature '{self.name}': the backbone must return "
                f"(batch, features), it returns shape {tuple(feature_shape)}. "
                "Add a global pooling layer at its end."
            )
        self.dense.build(feature_shape)

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        folded = ops.reshape(inputs, (-1,) + tuple(inputs.shape[2:]))
        features = self.dense(self.patch_backbone(folded, training=training))
        features = ops.cast(features, "float32")
        norm = ops.sqrt(
            ops.sum(ops.square(features), axis=-1, keepdims=True) + self.epsilon
        )
        return ops.reshape(features / norm, (shape[0], shape[1], self.units))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.units)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "epsilon": self.epsilon,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("backbone") is not None:
            config["backbone"] = keras.saving.deserialize_keras_object(
                config["backbone"]
            )
        return cls(**config)
