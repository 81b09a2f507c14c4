import math

import keras
from keras import ops

from keras_attention_sampling import sampling


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class AttentionMap(keras.layers.Layer):
    """Attention network: where in the image to look.

    A small convolutional network reads a (typically downscaled) view of the
    image and ends in a one-filter convolution whose output is turned into a
    probability distribution over all its cells by a softmax taken jointly
    over height and width. The default network is the reference notebook's:
    `blocks` times [Conv2D 3x3, leaky ReLU, same padding, BatchNormalization],
    then a 3x3 Conv2D with one filter, the head.

    The softmax is computed in float32 from log-probabilities, so the map is
    exact even under mixed precision, and `return_log_probs=True` gives
    log-probabilities that stay finite where a probability underflows to 0
    (the policy gradient needs them).

    Args:
        blocks: number of convolution blocks before the one-filter head. With
            `blocks=0` the layer is only the head and softmax, so any backbone
            can be placed before it.
        filters: filters of each block.
        kernel_size: kernel size of every convolution, head included.
        activation: activation of the blocks.
        temperature: the logits are divided by it before the softmax; above 1
            the map is flatter, below 1 sharper. (`WeightedLogitPool`'s
            `logit_scale` multiplies instead.)
        batch_norm: whether each block ends in BatchNormalization.
        batch_norm_momentum: momentum of the moving statistics. The default
            0.9 (Keras uses 0.99) lets the inference statistics keep up with
            an attention network that REINFORCE changes quickly.
        head_initializer: initializer of the head's kernel. `"zeros"` starts
            from the uniform map (every logit is the head's bias), so the
            first draws explore the whole image; the default is Keras'.
        uniform_mixing: the share `s` of the uniform distribution mixed into
            the map, `(1 - s) a + s / K` over the `K` cells: every cell keeps
            at least `s / K`, so sampling never stops exploring. The map (and
            its log-probabilities, computed in log space) is the mixture, so
            sampling, the policy gradient and the entropy all use it.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        - **inputs**: `(B, h, w, C)` images.
        - **training**: Python bool, for BatchNormalization.
        - **return_log_probs**: return log-probabilities instead of
          probabilities.

    Returns:
        float32 `(B, h, w)` tensor that sums to 1 over `(h, w)` (or its log).

    Examples:
        >>> import numpy as np
        >>> layer = AttentionMap()
        >>> attention = layer(np.zeros((2, 8, 12, 3), "float32"))
        >>> tuple(attention.shape)
        (2, 8, 12)
        >>> sums = keras.ops.convert_to_numpy(keras.ops.sum(attention, axis=(1, 2)))
        >>> bool(np.allclose(sums, 1.0))
        True
    """

    def __init__(
        self,
        blocks=3,
        filters=8,
        kernel_size=3,
        activation="leaky_relu",
        temperature=1.0,
        batch_norm=True,
        batch_norm_momentum=0.9,
        head_initializer="glorot_uniform",
        uniform_mixing=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if blocks < 0:
            raise ValueError(f"AttentionMap: blocks must be >= 0, got {blocks}.")
        if filters <= 0 or kernel_size <= 0:
            raise ValueError(
                "AttentionMap: filters and kernel_size must be positive, got "
                f"filters={filters}, kernel_size={kernel_size}."
            )
        if temperature <= 0:
            raise ValueError(
                f"AttentionMap: temperature must be positive, got {temperature}."
            )
        if not 0.0 <= uniform_mixing < 1.0:
            raise ValueError(
                "AttentionMap: uniform_mixing must be in [0, 1). Received: "
                f"uniform_mixing={uniform_mixing!r}"
            )
        self.blocks = blocks
        self.filters = filters
        self.kernel_size = kernel_size
        self.activation = activation
        self.temperature = temperature
        self.batch_norm = batch_norm
        self.batch_norm_momentum = batch_norm_momentum
        self.head_initializer = keras.initializers.get(head_initializer)
        self.uniform_mixing = float(uniform_mixing)
        self.block_layers = []
        for index in range(blocks):
            self.block_layers.append(
                keras.layers.Conv2D(
                    filters,
                    kernel_size,
                    padding="same",
                    activation=activation,
                    dtype=self.dtype_policy,
                    name=f"conv_{index}",
                )
            )
            if batch_norm:
                self.block_layers.append(
                    keras.layers.BatchNormalization(
                        momentum=batch_norm_momentum,
                        # Under tf.distribute, the global batch's statistics,
                        # so replicas train as one device and their moving
                        # statistics stay equal. JAX runs one program over
                        # the global batch, and the flag is TF's alone.
                        synchronized=keras.backend.backend() == "tensorflow",
                        dtype=self.dtype_policy,
                        name=f"batch_norm_{index}",
                    )
                )
        self.head = keras.layers.Conv2D(
            1,
            kernel_size,
            padding="same",
            kernel_initializer=self.head_initializer,
            dtype=self.dtype_policy,
            name="head",
        )

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "AttentionMap expects images of rank 4 (B, h, w, C), got shape "
                f"{tuple(input_shape)}."
            )
        shape = tuple(input_shape)
        for layer in self.block_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.head.build(shape)

    def call(self, inputs, training=None, return_log_probs=False):
        x = ops.cast(inputs, self.compute_dtype)
        for layer in self.block_layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                x = layer(x, training=training)
            else:
                x = layer(x)
        logits = ops.cast(self.head(x)[..., 0], "float32") / self.temperature
        log_probs = sampling.log_softmax_2d(logits)
        if self.uniform_mixing > 0:
            cells = ops.cast(ops.shape(logits)[1] * ops.shape(logits)[2], "float32")
            log_probs = ops.logaddexp(
                log_probs + math.log1p(-self.uniform_mixing),
                math.log(self.uniform_mixing) - ops.log(cells),
            )
        return log_probs if return_log_probs else ops.exp(log_probs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3])

    def compute_output_spec(self, inputs, training=None, return_log_probs=False):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "blocks": self.blocks,
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "activation": self.activation,
                "temperature": self.temperature,
                "batch_norm": self.batch_norm,
                "batch_norm_momentum": self.batch_norm_momentum,
                "head_initializer": keras.initializers.serialize(self.head_initializer),
                "uniform_mixing": self.uniform_mixing,
            }
        )
        return config
