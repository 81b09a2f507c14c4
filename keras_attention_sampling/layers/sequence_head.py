import keras
from keras import ops

from keras_attention_sampling.layers.autoregressive_sampler import position_embedding


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class SequenceHead(keras.layers.Layer):
    """A small transformer over the patches, that knows where each one was.

    An alternative to `WeightedLogitPool` for evidence that only a *set* of
    patches shows (two regions that must agree, a count, a layout): each
    patch's feature vector is projected to `dim`, a sinusoidal embedding of
    its normalised position `(y / H, x / W)` is added, and, with
    `draw_order=True`, a learned embedding of its place in the draw order;
    a class token then attends over the sequence through `blocks` pre-norm
    transformer blocks (`keras.layers.MultiHeadAttention` and an MLP), and
    its final vector gives the class logits. With `shortcut=True` a linear
    classifier on the mean of the patch features is added to them, and the
    class token's logits start at zero. When the features have one value per
    class (the package's `NormalizedFeature` logits) the classifier starts as
    `shortcut_scale` times the identity, so the head starts as
    `WeightedLogitPool(logit_scale=shortcut_scale)` over draws with
    replacement: evidence that any one patch shows is learned as fast as by
    the pool, and the transformer only has to learn what the pool misses.
    That suits evidence that single patches show (see the synthetic
    lymphoma rows of the learning benchmark); where only a pair of patches tells
    the class it held the head at chance (the same/different task of the
    benchmarks), which is why it is off by default. The head works with
    `PatchSampler` and with `AutoregressiveSampler` alike.

    Args:
        units: number of classes.
        dim: width of the transformer.
        heads: attention heads per block.
        blocks: transformer blocks.
        mlp_dim: hidden size of each block's MLP.
        draw_order: add an embedding of the draw order (for an
            `AutoregressiveSampler`, whose order means something). Without
            it the head sees the patches as a set. In the benchmarks the
            order kept every seed learning where two patches must be
            compared, and cost points on unseen slides where single patches
            show the evidence: turn it off there.
        max_patches: longest sequence the draw-order embedding covers.
        shortcut: add a linear classifier on the mean patch feature to the
            class token's logits (which then start at zero).
        shortcut_scale: the classifier's starting kernel is this times the
            identity when the features have `units` values; Glorot-uniform
            otherwise. 3.0 is the reference notebook's `logit_scale`
            (`AttentionSamplingModel`'s for up to three classes).
        activation: applied to the logits; `None` returns them.
        **kwargs: base layer arguments.

    Call arguments:
        - **inputs**: list `[features, positions]`: features `(B, N, D)` and
          normalised patch centres `(B, N, 2)` in `[0, 1]`.
        - **training**: Python bool.

    Returns:
        float32 `(B, units)`.

    Examples:
        >>> import numpy as np
        >>> head = SequenceHead(2, dim=16, heads=2, blocks=1)
        >>> features = np.random.rand(3, 4, 8).astype("float32")
        >>> positions = np.random.rand(3, 4, 2).astype("float32")
        >>> tuple(head([features, positions]).shape)
        (3, 2)
    """

    def __init__(
        self,
        units,
        dim=32,
        heads=2,
        blocks=2,
        mlp_dim=64,
        draw_order=True,
        max_patches=64,
        shortcut=False,
        shortcut_scale=3.0,
        activation="softmax",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if dim % 4 or dim % heads:
            raise ValueError(
                "SequenceHead: dim must be a multiple of 4 and of heads. Received: "
                f"dim={dim}, heads={heads}"
            )
        self.units = int(units)
        self.dim = int(dim)
        self.heads = int(heads)
        self.blocks = int(blocks)
        self.mlp_dim = int(mlp_dim)
        self.draw_order = bool(draw_order)
        self.max_patches = int(max_patches)
        self.shortcut = bool(shortcut)
        self.shortcut_scale = float(shortcut_scale)
        self.activation = keras.activations.get(activation)
        policy = self.dtype_policy
        self.project = keras.layers.Dense(dim, dtype=policy, name="project")
        self.attention_norms, self.attentions = [], []
        self.mlp_norms, self.mlps_in, self.mlps_out = [], [], []
        for i in range(blocks):
            self.attention_norms.append(
                keras.layers.LayerNormalization(dtype=policy, name=f"norm_{i}a")
            )
            self.attentions.append(
                keras.layers.MultiHeadAttention(
                    heads, dim // heads, dtype=policy, name=f"attention_{i}"
                )
            )
            self.mlp_norms.append(
                keras.layers.LayerNormalization(dtype=policy, name=f"norm_{i}b")
            )
            self.mlps_in.append(
                keras.layers.Dense(
                    mlp_dim, activation="gelu", dtype=policy, name=f"mlp_{i}a"
                )
            )
            self.mlps_out.append(
                keras.layers.Dense(dim, dtype=policy, name=f"mlp_{i}b")
            )
        self.final_norm = keras.layers.LayerNormalization(
            dtype=policy, name="final_norm"
        )
        # With the shortcut the head starts as the pool, the transformer's
        # say growing from zero.
        self.logits = keras.layers.Dense(
            units,
            kernel_initializer="zeros" if self.shortcut else "glorot_uniform",
            dtype=policy,
            name="logits",
        )
        self.pooled_logits = None

    def build(self, input_shape):
        feature_shape, position_shape = input_shape
        if len(feature_shape) != 3 or tuple(position_shape)[1:] != (
            feature_shape[1],
            2,
        ):
            raise ValueError(
                f"SequenceHead '{self.name}' expects features (B, N, D) and positions "
                f"(B, N, 2). Received: {tuple(feature_shape)} and {tuple(position_shape)}"
            )
        self.class_token = self.add_weight(
            shape=(1, 1, self.dim), initializer="zeros", name="class_token"
        )
        if self.draw_order:
            self.order = self.add_weight(
                shape=(self.max_patches, self.dim),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
                name="order",
            )
        self.project.build(feature_shape)
        sequence = (feature_shape[0], None, self.dim)
        for i in range(self.blocks):
            self.attention_norms[i].build(sequence)
            self.attentions[i].build(sequence, sequence)
            self.mlp_norms[i].build(sequence)
            self.mlps_in[i].build(sequence)
            self.mlps_out[i].build((feature_shape[0], None, self.mlp_dim))
        self.final_norm.build((feature_shape[0], self.dim))
        self.logits.build((feature_shape[0], self.dim))
        if self.shortcut:
            square = feature_shape[2] == self.units
            self.pooled_logits = keras.layers.Dense(
                self.units,
                kernel_initializer=(
                    keras.initializers.Identity(self.shortcut_scale)
                    if square
                    else "glorot_uniform"
                ),
                dtype=self.dtype_policy,
                name="pooled_logits",
            )
            self.pooled_logits.build((feature_shape[0], feature_shape[2]))

    def call(self, inputs, training=None):
        features, positions = inputs
        batch, length = ops.shape(features)[0], ops.shape(features)[1]
        x = self.project(features)
        x = x + ops.cast(position_embedding(positions, self.dim), x.dtype)
        if self.draw_order:
            x = x + ops.cast(self.order[:length], x.dtype)
        token = ops.broadcast_to(
            ops.cast(self.class_token, x.dtype), (batch, 1, self.dim)
        )
        x = ops.concatenate([token, x], axis=1)
        for i in range(self.blocks):
            y = self.attention_norms[i](x)
            x = x + self.attentions[i](y, y, training=training)
            x = x + self.mlps_out[i](self.mlps_in[i](self.mlp_norms[i](x)))
        logits = self.logits(self.final_norm(x[:, 0]))
        if self.shortcut:
            logits = logits + self.pooled_logits(ops.mean(features, axis=1))
        return self.activation(ops.cast(logits, "float32"))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "dim": self.dim,
                "heads": self.heads,
                "blocks": self.blocks,
                "mlp_dim": self.mlp_dim,
                "draw_order": self.draw_order,
                "max_patches": self.max_patches,
                "shortcut": self.shortcut,
                "shortcut_scale": self.shortcut_scale,
                "activation": keras.activations.serialize(self.activation),
            }
        )
        return config
