import keras
import numpy as np
from keras import ops

from keras_attention_sampling import sampling
from keras_attention_sampling.layers.attention_map import AttentionMap
from keras_attention_sampling.layers.normalized_feature import NormalizedFeature
from keras_attention_sampling.layers.patch_sampler import PatchSampler
from keras_attention_sampling.layers.weighted_logit_pool import WeightedLogitPool
from keras_attention_sampling.models.policy_gradient_model import PolicyGradientMixin


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class AttentionSamplingModel(PolicyGradientMixin, keras.Model):
    """Classifies megapixel images from a few attention-sampled patches.

    The full-resolution images are average-pooled by `scale`; the attention
    network turns that view into a distribution over its cells; `n_patches`
    cells are sampled and their `patch_size` patches are cut from the full
    image; the feature network gives each patch unit-norm logits; their
    attention-weighted average, scaled by `temperature`, goes through a
    softmax. `fit` trains the feature side by the compiled loss and the
    attention network by entropy-regularised REINFORCE (see
    `PolicyGradientMixin`).

    Args:
        num_classes: number of classes.
        attention_network: any layer or model mapping the low-resolution view
            `(B, h, w, C)` to probabilities `(B, h', w')` that sum to 1.
            Default `AttentionMap()`, the seed's network. An `AttentionMap`
            (and only it) gives the policy gradient exact log-probabilities.
        feature_network: a `NormalizedFeature`; default
            `NormalizedFeature(num_classes)` with the seed's backbone.
        scale: average-pooling factor of the low-resolution view (1 for
            none).
        n_patches: patches per image.
        patch_size: patch side in full-resolution pixels.
        replace: sample with replacement (default, as the seed) or without.
        padding: `"reflect"` or `"constant"` at the image borders.
        inference_sampling: `"sample"` or `"top_k"` for `predict`/`evaluate`.
        temperature: scale of the pooled unit-norm logits (seed: 3).
        attention_gradient: let the classification loss reach the attention
            through the pool weights too (off in the seed).
        reward: `"bounded"` `exp(-L)` (default) or `"negative_loss"` `-L`.
        baseline: `"mean"` (batch mean, default), `"leave_one_out"`,
            `"moving_average"` or `"none"`.
        baseline_momentum: decay of the moving-average baseline.
        entropy_weight: weight `lambda` of the entropy regulariser (0.05).
        samples_per_image: independent draws per image in a training batch
            (seed: 4).
        rescale: factor applied to the low-resolution view and to the
            patches, e.g. `1 / 255` for `uint8` images. Rescaling there rather
            than on the input keeps the full images `uint8` in memory.
        seed: seed of the patch sampler.
        **kwargs: `keras.Model` arguments (`name`, `dtype`, ...).

    Call arguments:
        - **images**: `(B, H, W, C)` full-resolution images, any numeric
          dtype; or a dict `{"images": images, "view": view}` whose `view`
          `(B, h, w, C)` is the low-resolution view made outside the model
          (from an image pyramid, a reduced decode or
          `kas.datasets.with_views`). `scale` is then not used; `rescale`
          still applies to the view. Patches are placed by the view's grid:
          cell `(i, j)` is centred at `((i + 0.5) H / h, (j + 0.5) W / w)`.
        - **training**: Python bool.
        - **return_details**: return the dict of `policy_forward` instead.
        - **samples_per_image**: independent draws per image; the outputs
          then have `B * samples_per_image` rows, draws of one image adjacent.

    Returns:
        float32 `(B, num_classes)` class probabilities.

    Examples:
        >>> import numpy as np
        >>> import keras_attention_sampling as kas
        >>> model = kas.AttentionSamplingModel(
        ...     3, scale=8, n_patches=4, patch_size=16, samples_per_image=2, seed=0
        ... )
        >>> model.compile(metrics=["accuracy"])
        >>> x = np.random.rand(4, 64, 64, 3).astype("float32")
        >>> history = model.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
        >>> tuple(model.predict(x, verbose=0).shape)
        (4, 3)
    """

    def __init__(
        self,
        num_classes,
        attention_network=None,
        feature_network=None,
        scale=5,
        n_patches=20,
        patch_size=50,
        replace=True,
        padding="reflect",
        inference_sampling="sample",
        temperature=3.0,
        attention_gradient=False,
        reward="bounded",
        baseline="mean",
        baseline_momentum=0.9,
        entropy_weight=0.05,
        samples_per_image=4,
        rescale=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_classes) <= 0 or int(scale) <= 0:
            raise ValueError(
                "AttentionSamplingModel: num_classes and scale must be positive, "
                f"got num_classes={num_classes}, scale={scale}."
            )
        self.num_classes = int(num_classes)
        self.scale = int(scale)
        self.n_patches = n_patches
        self.patch_size = patch_size
        self.replace = replace
        self.padding = padding
        self.inference_sampling = inference_sampling
        self.temperature = temperature
        self.attention_gradient = attention_gradient
        self.rescale = rescale
        self.seed = seed
        self.attention_network = attention_network or AttentionMap(
            dtype=self.dtype_policy, name="attention_map"
        )
        self.feature_network = feature_network or NormalizedFeature(
            self.num_classes, dtype=self.dtype_policy, name="normalized_feature"
        )
        self.sampler = PatchSampler(
            n_patches,
            patch_size,
            replace=replace,
            padding=padding,
            inference_sampling=inference_sampling,
            seed=seed,
            dtype=self.dtype_policy,
            name="patch_sampler",
        )
        self.pool = WeightedLogitPool(
            temperature,
            attention_gradient=attention_gradient,
            dtype=self.dtype_policy,
            name="weighted_logit_pool",
        )
        self._init_policy(
            reward, baseline, baseline_momentum, entropy_weight, samples_per_image
        )

    def build(self, input_shape):
        input_shape, view_shape = _split(input_shape)
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            raise ValueError(
                "AttentionSamplingModel expects images of rank 4 (B, H, W, C), "
                f"got shape {input_shape}."
            )
        if view_shape is None:
            low_shape = self._low_shape(input_shape)
        else:
            low_shape = tuple(view_shape)
            if len(low_shape) != 4:
                raise ValueError(
                    "AttentionSamplingModel expects a view of rank 4 "
                    f"(B, h, w, C), got shape {low_shape}."
                )
        if not self.attention_network.built:
            self.attention_network.build(low_shape)
        map_shape = tuple(self.attention_network.compute_output_shape(low_shape))
        if len(map_shape) != 3:
            raise ValueError(
                "AttentionSamplingModel: the attention network must return "
                f"(B, h, w) probabilities, it returns shape {map_shape}."
            )
        self.sampler.build((map_shape, input_shape))
        patch_shape = self.sampler.compute_output_shape((map_shape, input_shape))[0]
        if not self.feature_network.built:
            self.feature_network.build(patch_shape)
        feature_shape = self.feature_network.compute_output_shape(patch_shape)
        self.pool.build((feature_shape, patch_shape[:2]))
        self.built = True

    def _low_shape(self, input_shape):
        batch, height, width, channels = input_shape
        if height is not None and (height < self.scale or width < self.scale):
            raise ValueError(
                f"AttentionSamplingModel: images of {height}x{width} are smaller "
                f"than the downsampling scale {self.scale}."
            )
        return (batch, height // self.scale, width // self.scale, channels)

    def low_resolution(self, images, view=None):
        """The view the attention network reads, rescaled.

        `images` average-pooled by `scale` with `sampling.downsample`, which
        never holds the whole image in float; or, when given, `view`, made
        outside the step (an image pyramid level, a reduced decode), so the
        step never reads every pixel.
        """
        if view is None:
            low = sampling.downsample(images, self.scale, dtype=self.compute_dtype)
        else:
            low = ops.cast(view, self.compute_dtype)
        if self.rescale is not None:
            low = low * ops.cast(self.rescale, self.compute_dtype)
        return low

    def attention_variables(self):
        """Trainable variables of the attention network."""
        return self.attention_network.trainable_variables

    def sampler_replaces(self):
        return self.replace

    def policy_forward(self, images, training=False, samples_per_image=1):
        """Runs the whole pipeline and returns every intermediate result.

        Goes through `__call__`, so the model is built (and records its build
        config for saving) the first time, whichever of `fit` or `predict`
        comes first.

        Returns:
            Dict with `y_pred` `(B, classes)`, `log_attention` `(B, h, w)`,
            `cells` `(B, N)` flat sampled cells, `positions` `(B, N, 2)`,
            `sampled_attention` `(B, N)`, `patches` `(B, N, p, p, C)` and
            `patch_logits` `(B, N, classes)` (the unit-norm feature vectors).
        """
        return self(
            images,
            training=training,
            return_details=True,
            samples_per_image=samples_per_image,
        )

    def call(self, images, training=None, return_details=False, samples_per_image=1):
        images, view = _split(images)
        low = self.low_resolution(images, view)
        if isinstance(self.attention_network, AttentionMap):
            log_attention = self.attention_network(
                low, training=training, return_log_probs=True
            )
        else:
            log_attention = sampling.safe_log(
                self.attention_network(low, training=training)
            )
        image_index = None
        if samples_per_image > 1:
            # Repeat only the small map: the downsampling and the attention
            # network run once per image, and the patches of every draw are
            # gathered from the one full-resolution copy.
            log_attention = ops.repeat(log_attention, samples_per_image, axis=0)
            image_index = ops.repeat(
                ops.arange(ops.shape(images)[0], dtype="int32"), samples_per_image
            )
        cells = self.sampler.sample(log_attention, training=training)
        patches, sampled_attention, positions = self.sampler.extract(
            ops.exp(log_attention), images, cells, image_index=image_index
        )
        if self.rescale is not None:
            patches = patches * ops.cast(self.rescale, patches.dtype)
        patch_logits = self.feature_network(patches, training=training)
        y_pred = self.pool([patch_logits, sampled_attention])
        if not return_details:
            return y_pred
        return {
            "y_pred": y_pred,
            "log_attention": log_attention,
            "cells": cells,
            "positions": positions,
            "sampled_attention": sampled_attention,
            "patches": patches,
            "patch_logits": patch_logits,
        }

    def compute_output_shape(self, input_shape):
        return (_split(input_shape)[0][0], self.num_classes)

    def explain(self, images, batch_size=8):
        """Everything needed to show why each image got its prediction.

        Runs in inference mode, so patches are drawn as `predict` draws them
        (`inference_sampling`).

        Args:
            images: `(B, H, W, C)` array, or a dict of `images` and `view`
                arrays as `call` takes.
            batch_size: images per forward pass.

        Returns:
            Dict of numpy arrays: `probabilities` `(B, classes)`, `attention`
            `(B, h, w)`, `positions` `(B, N, 2)` patch centres `(y, x)` in
            pixels, `sampled_attention` `(B, N)`, `patch_logits`
            `(B, N, classes)` and `patches` `(B, N, p, p, C)`.
        """
        keys = (
            "y_pred",
            "log_attention",
            "positions",
            "sampled_attention",
            "patch_logits",
            "patches",
        )
        parts = {key: [] for key in keys}
        count = len(_split(images)[0])
        for start in range(0, count, batch_size):
            window = slice(start, start + batch_size)
            if isinstance(images, dict):
                batch = {k: ops.convert_to_tensor(v[window]) for k, v in images.items()}
            else:
                batch = ops.convert_to_tensor(images[window])
            outputs = self.policy_forward(batch, training=False)
            for key in keys:
                parts[key].append(ops.convert_to_numpy(outputs[key]))
        result = {key: np.concatenate(value) for key, value in parts.items()}
        result["probabilities"] = result.pop("y_pred")
        result["attention"] = np.exp(result.pop("log_attention"))
        return result

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "attention_network": keras.saving.serialize_keras_object(
                    self.attention_network
                ),
                "feature_network": keras.saving.serialize_keras_object(
                    self.feature_network
                ),
                "scale": self.scale,
                "n_patches": self.n_patches,
                "patch_size": self.patch_size,
                "replace": self.replace,
                "padding": self.padding,
                "inference_sampling": self.inference_sampling,
                "temperature": self.temperature,
                "attention_gradient": self.attention_gradient,
                "rescale": self.rescale,
                "seed": self.seed,
                **self._policy_config(),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("attention_network", "feature_network"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _split(inputs):
    """`(images, view)` from the model's input: a tensor, or the dict form."""
    if isinstance(inputs, dict):
        if set(inputs) != {"images", "view"}:
            raise ValueError(
                "AttentionSamplingModel: dict inputs must have exactly the keys "
                f"'images' and 'view', got {sorted(inputs)}."
            )
        return inputs["images"], inputs["view"]
    return inputs, None
