import functools
import inspect

import keras
import numpy as np
from keras import ops

from keras_attention_sampling import sampling
from keras_attention_sampling._settings import (
    LayerSetting,
    drop_compiled_functions,
    renamed_keyword,
)
from keras_attention_sampling.layers.attention_map import AttentionMap
from keras_attention_sampling.layers.autoregressive_sampler import AutoregressiveSampler
from keras_attention_sampling.layers.downsample import Downsample
from keras_attention_sampling.layers.expectation_pool import ExpectationPool
from keras_attention_sampling.layers.normalized_feature import NormalizedFeature
from keras_attention_sampling.layers.patch_sampler import PatchSampler
from keras_attention_sampling.layers.sequence_head import SequenceHead
from keras_attention_sampling.layers.tissue_mask import TissueMask
from keras_attention_sampling.layers.weighted_logit_pool import (
    WeightedLogitPool,
    default_logit_scale,
)
from keras_attention_sampling.policy_gradient.trainer import PolicyGradientMixin


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class AttentionSamplingModel(PolicyGradientMixin, keras.Model):
    """Classifies megapixel images from a few attention-sampled patches.

    The full-resolution images are average-pooled by `scale` into the view;
    the attention network turns the view into a distribution over its cells;
    `n_patches` cells are sampled and their `patch_size` patches are cut from
    the full image; the feature network gives each patch unit-norm logits.
    By default (`estimator="expectation"`, the original paper's) an
    `ExpectationPool` turns them into an unbiased estimate of the
    attention-weighted average of every cell's logits, multiplied by
    `logit_scale` and put through a softmax; `fit` trains the whole model by
    the compiled loss through it (with no entropy regulariser unless
    `entropy_weight` is given). With `estimator="reinforce"` (the reference
    notebook's) the pool is a `WeightedLogitPool` and the attention network is
    trained by entropy-regularised REINFORCE instead (see
    `PolicyGradientMixin`); a `head` or an `AutoregressiveSampler` given as a
    part needs it, and is given it by default.

    Pixel values in `[0, 255]` go in, as `uint8` or float, like the
    `keras.applications` models that include their preprocessing. The model
    maps them to `[-0.5, 0.5]` (`x * rescale + offset`) in the view and in the
    patches alike, so the full images can stay `uint8` in memory. Centred
    inputs let the reference notebook's networks learn much more reliably
    than inputs in `[0, 1]` (see the Concepts page). Give other `rescale` and
    `offset` for other inputs: `rescale=1.0, offset=-0.5` for images already
    in `[0, 1]`.

    Every setting is owned by one layer of the model and the model's
    attribute of the same name reads and writes it there: `scale` is
    `downsample.scale`; `n_patches`, `patch_size`, `replace`, `padding`,
    `inference_sampling` and `seed` are `sampler`'s; `logit_scale` (and, for
    REINFORCE, `attention_gradient`) are `pool`'s; `rescale` and `offset` are
    `rescaling`'s (a `keras.layers.Rescaling`); `baseline` and
    `baseline_momentum` are `reward_baseline`'s. A write, such as
    `model.inference_sampling = "top_k"` on a loaded model, takes effect at
    the next `fit`, `evaluate` or `predict`.

    Args:
        num_classes: number of classes.
        attention_network: any layer or model mapping the view `(B, h, w, C)`
            to probabilities `(B, h', w')` that sum to 1. Default
            `AttentionMap()`, the reference notebook's network. An
            `AttentionMap` (and only it) gives the policy gradient exact
            log-probabilities.
        feature_network: a layer mapping patches `(B, N, p, p, C)` to
            `(B, N, D)` features (`D = num_classes` for the pools); default
            `NormalizedFeature(num_classes)` with the reference notebook's
            backbone.
        sampler: the part that draws the cells: a `PatchSampler` (built
            from the sampler arguments below when not given) or an
            `AutoregressiveSampler`. When given, it owns `n_patches`,
            `patch_size`, `replace`, `padding`, `inference_sampling` and
            `seed`: leave those arguments out.
        head: the part that turns the patches' features into the
            prediction, in place of the pool: a `SequenceHead`, say (with
            REINFORCE). When given, leave `logit_scale` and
            `attention_gradient` out.
        scale: average-pooling factor of the view (1 for none).
        n_patches: patches per image.
        patch_size: patch side in full-resolution pixels.
        replace: sample with replacement (the reference notebook's) or
            without.
        padding: `"reflect"` or `"constant"` at the image borders.
        inference_sampling: `"sample"` or `"top_k"` for `predict`/`evaluate`.
        logit_scale: factor of the pooled unit-norm logits (release 0.1
            called it `temperature`, which is still accepted). It caps the
            confidence, the more so the more classes. `None` (the default)
            is `kas.default_logit_scale(num_classes)`, the scale whose cap
            is 0.995: 4.89 for three classes, 7.11 for ten (the reference
            notebook's 3 caps three classes at 0.95 and ten at 0.72; see
            docs/benchmarks.md, The logit scale). The value is saved, so a
            model keeps its scale when the rule changes.
        attention_gradient: with REINFORCE, let the classification loss reach
            the attention through the pool weights too (off in the reference
            notebook). The expectation estimator always does.
        rescale: factor of the normalisation `x * rescale + offset` of the
            view and the patches (`None` for 1).
        offset: offset of that normalisation.
        tissue_mask: `None`, `True` or a `kas.TissueMask`: restrict the
            attention to the cells of the view that show tissue (for slides,
            which are mostly bare glass). `True` is `TissueMask()`.
        seed: seed of the patch sampler.
        **kwargs: the policy-gradient settings of `PolicyGradientMixin`
            (`estimator`, `reward`, `baseline`, `baseline_momentum`,
            `entropy_weight`, `samples_per_image`), then `keras.Model`
            arguments (`name`, `dtype`, ...).

    Call arguments:
        - **images**: `(B, H, W, C)` full-resolution images, any numeric
          dtype; or a dict `{"images": images, "view": view}` whose `view`
          `(B, h, w, C)` was made outside the model, in the images' value
          range (from an image pyramid, a reduced decode or
          `kas.datasets.with_views`). `scale` is then not used. Patches are
          placed by the view's grid: cell `(i, j)` is centred at
          `((i + 0.5) H / h, (j + 0.5) W / w)`. Or, with sampling made data
          (patches read from disk by `kas.slides.SlideDataset`), a dict of
          the `view`, the drawn `cells` `(B * k, N)` (flat cells of the map,
          `k = samples_per_image`), their `patches` `(B * k, N, p, p, C)`
          and, for training, `proposal_log_probs` `(B * k,)` from `propose`.
          Positions are then in view pixels.
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
        >>> x = np.random.randint(0, 256, (4, 64, 64, 3), dtype="uint8")
        >>> history = model.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
        >>> tuple(model.predict(x, verbose=0).shape)
        (4, 3)
        >>> model.inference_sampling = "top_k"  # written to model.sampler
        >>> model.sampler.inference_sampling
        'top_k'
    """

    scale = LayerSetting("downsample")
    n_patches = LayerSetting("sampler")
    patch_size = LayerSetting("sampler")
    replace = LayerSetting("sampler")
    padding = LayerSetting("sampler")
    inference_sampling = LayerSetting("sampler")
    seed = LayerSetting("sampler", writable=False)
    logit_scale = LayerSetting("pool")
    rescale = LayerSetting("rescaling", "scale")
    offset = LayerSetting("rescaling")

    def __init__(
        self,
        num_classes,
        attention_network=None,
        feature_network=None,
        sampler=None,
        head=None,
        scale=5,
        n_patches=20,
        patch_size=50,
        replace=True,
        padding="reflect",
        inference_sampling="sample",
        logit_scale=None,
        attention_gradient=False,
        rescale=1 / 255,
        offset=-0.5,
        tissue_mask=None,
        seed=None,
        **kwargs,
    ):
        logit_scale = renamed_keyword(
            "AttentionSamplingModel", kwargs, "temperature", "logit_scale", logit_scale
        )
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or int(num_classes) != num_classes:
            raise ValueError(
                "AttentionSamplingModel: num_classes must be a positive int. "
                f"Received: num_classes={num_classes!r}"
            )
        if num_classes <= 0:
            raise ValueError(
                "AttentionSamplingModel: num_classes must be positive. "
                f"Received: num_classes={num_classes!r}"
            )
        self.num_classes = int(num_classes)
        if logit_scale is None and head is None:
            logit_scale = default_logit_scale(self.num_classes)
        policy = self.dtype_policy
        self.attention_network = attention_network or AttentionMap(
            dtype=policy, name="attention_map"
        )
        self.feature_network = feature_network or NormalizedFeature(
            self.num_classes, dtype=policy, name="normalized_feature"
        )
        given = dict(
            n_patches=n_patches,
            patch_size=patch_size,
            replace=replace,
            padding=padding,
            inference_sampling=inference_sampling,
            seed=seed,
            logit_scale=logit_scale,
            attention_gradient=attention_gradient,
        )
        _check_parts(sampler, head, given, self.estimator)
        self._resolve_estimator(
            head is None and not isinstance(sampler, AutoregressiveSampler)
        )
        self.sampler = sampler or PatchSampler(
            n_patches,
            patch_size,
            replace=replace,
            padding=padding,
            inference_sampling=inference_sampling,
            seed=seed,
            dtype=policy,
            name="patch_sampler",
        )
        if head is not None:
            self.pool = head
        elif self.estimator == "reinforce":
            self.pool = WeightedLogitPool(
                logit_scale,
                attention_gradient=attention_gradient,
                dtype=policy,
                name="weighted_logit_pool",
            )
        else:
            self.pool = ExpectationPool(
                replace,
                logit_scale=logit_scale,
                activation="softmax",
                dtype=policy,
                name="expectation_pool",
            )
        self.downsample = Downsample(scale, dtype=policy, name="downsample")
        self.rescaling = keras.layers.Rescaling(
            1.0 if rescale is None else rescale, offset, dtype=policy, name="rescaling"
        )
        if tissue_mask is True:
            tissue_mask = TissueMask(name="tissue_mask")
        if not (tissue_mask is None or tissue_mask is False):
            if not isinstance(tissue_mask, TissueMask):
                raise ValueError(
                    "AttentionSamplingModel: tissue_mask must be None, True or a "
                    f"kas.TissueMask. Received: tissue_mask={tissue_mask!r}"
                )
        self.tissue_mask = tissue_mask or None

    @property
    def attention_gradient(self):
        """Whether the classification loss reaches the attention network
        (`pool.attention_gradient` with REINFORCE, always with the
        expectation estimator, never through a head)."""
        return getattr(
            self.pool, "attention_gradient", isinstance(self.pool, ExpectationPool)
        )

    @attention_gradient.setter
    def attention_gradient(self, value):
        if not isinstance(self.pool, WeightedLogitPool):
            raise AttributeError(
                "AttentionSamplingModel.attention_gradient is fixed with "
                f"estimator={self.estimator!r}."
            )
        self.pool.attention_gradient = bool(value)
        drop_compiled_functions(self)

    @property
    def head(self):
        """The part that makes the prediction: the pool, or the given head."""
        return self.pool

    def build(self, input_shape):
        image_shape, view_shape, drawn_shapes = _split(input_shape)
        if drawn_shapes is not None:
            # Drawn inputs: the patches come cut; the images' size is unknown.
            patch_shape = tuple(drawn_shapes["patches"])
            image_shape = (None, None, None, patch_shape[-1])
        image_shape = tuple(image_shape)
        if len(image_shape) != 4:
            raise ValueError(
                "AttentionSamplingModel expects images of rank 4 (B, H, W, C), "
                f"got shape {image_shape}."
            )
        if view_shape is None:
            view_shape = self.downsample.compute_output_shape(image_shape)
        view_shape = tuple(view_shape)
        if len(view_shape) != 4:
            raise ValueError(
                "AttentionSamplingModel expects a view of rank 4 (B, h, w, C), "
                f"got shape {view_shape}."
            )
        if not self.attention_network.built:
            self.attention_network.build(view_shape)
        map_shape = tuple(self.attention_network.compute_output_shape(view_shape))
        if len(map_shape) != 3:
            raise ValueError(
                "AttentionSamplingModel: the attention network must return "
                f"(B, h, w) probabilities, it returns shape {map_shape}."
            )
        sampled_shape = self.sampler.compute_output_shape((map_shape, image_shape))[0]
        if drawn_shapes is not None:
            _check_drawn(self, drawn_shapes)
        patch_shape = sampled_shape
        if not self.rescaling.built:
            # A loaded model rebuilds it here; else Keras' JAX `predict` runs
            # an eager forward pass to build it.
            self.rescaling.build(image_shape)
        if not self.feature_network.built:
            self.feature_network.build(patch_shape)
        feature_shape = tuple(self.feature_network.compute_output_shape(patch_shape))
        # Parts given to the model come back from a saved file built (and
        # locked); only the shapes are checked then.
        if not self.sampler.built:
            fed_back = isinstance(self.sampler, AutoregressiveSampler)
            self.sampler.build(
                (map_shape, image_shape, *((feature_shape,) if fed_back else ()))
            )
        if isinstance(self.pool, SequenceHead):
            if self.pool.units != self.num_classes:
                raise ValueError(
                    f"AttentionSamplingModel: the head gives {self.pool.units} "
                    f"outputs, not one per class (num_classes={self.num_classes})."
                )
            if not self.pool.built:
                self.pool.build((feature_shape, (*patch_shape[:2], 2)))
        else:
            if feature_shape[-1] != self.num_classes:
                raise ValueError(
                    "AttentionSamplingModel: the feature network gives vectors of "
                    f"{feature_shape[-1]} values, not one per class "
                    f"(num_classes={self.num_classes})."
                )
            if not self.pool.built:
                self.pool.build((feature_shape, patch_shape[:2]))
        self.built = True

    def attention_variables(self):
        """Trainable variables of the policy: the attention network's, and
        an `AutoregressiveSampler`'s own."""
        return (
            self.attention_network.trainable_variables
            + self.sampler.trainable_variables
        )

    def policy_forward(self, images, training=False, samples_per_image=1):
        """Runs the whole pipeline and returns every intermediate result.

        Goes through `__call__`, so the model is built (and records its build
        config for saving) the first time, whichever of `fit` or `predict`
        comes first.

        Returns:
            Dict with `y_pred` `(B, classes)`, `log_attention` `(B, h, w)`,
            `cells` `(B, N)` flat sampled cells, `draw_log_probs` `(B, N)`
            (their log-probabilities under the sampler's scheme),
            `positions` `(B, N, 2)`, `sampled_attention` `(B, N)`, `patches`
            `(B, N, p, p, C)` as cut from the images, before normalisation,
            and `patch_logits` `(B, N, classes)` (the unit-norm feature
            vectors).
        """
        return self(
            images,
            training=training,
            return_details=True,
            samples_per_image=samples_per_image,
        )

    def call(self, images, training=None, return_details=False, samples_per_image=1):
        images, view, drawn = _split(images)
        if view is None:
            view = self.downsample(images)
        log_attention = self.attention_log_probs(view, training=training)
        image_index = None
        if drawn is not None:
            # The loader drew the rows of each view together, as many as it
            # was asked for (the step's draws per image): one map per row.
            rows = ops.shape(drawn["cells"])[0]
            per_view = rows // ops.shape(view)[0]
            log_attention = ops.take(
                log_attention, ops.arange(rows, dtype="int32") // per_view, axis=0
            )
        elif samples_per_image > 1:
            # Repeat only the small map: the view and the attention network
            # are computed once per image, and the patches of every draw are
            # gathered from the one full-resolution copy.
            log_attention = ops.repeat(log_attention, samples_per_image, axis=0)
            image_index = ops.repeat(
                ops.arange(ops.shape(images)[0], dtype="int32"), samples_per_image
            )
        details = {}
        if drawn is not None:
            # Sampling was data: the cells came with their patches, read
            # outside the step; only their log-probabilities are recomputed
            # here, under the weights being differentiated.
            cells = ops.cast(drawn["cells"], "int32")
            patches = drawn["patches"]
            flat = ops.reshape(ops.exp(log_attention), (ops.shape(cells)[0], -1))
            sampled_attention = ops.take_along_axis(flat, cells, axis=1)
            positions = sampling.cells_to_centres(
                cells, tuple(log_attention.shape[1:3]), tuple(view.shape[1:3])
            )
            patch_logits = self.feature_network(
                self.rescaling(patches), training=training
            )
            details["draw_log_probs"] = self.sampler.draw_log_prob(log_attention, cells)
            if "proposal_log_probs" in drawn:
                details["importance"] = importance_weights(
                    details["draw_log_probs"], drawn["proposal_log_probs"]
                )
        elif isinstance(self.sampler, AutoregressiveSampler):

            def encode(patches):
                return self.feature_network(self.rescaling(patches), training=training)

            details = self.sampler.draw(
                log_attention,
                images,
                encode,
                training=training,
                image_index=image_index,
            )
            cells, patches = details["cells"], details["patches"]
            sampled_attention, positions = (
                details["sampled_attention"],
                details["positions"],
            )
            patch_logits = details["features"]
        else:
            cells = self.sampler.sample(log_attention, training=training)
            patches, sampled_attention, positions = self.sampler.extract(
                ops.exp(log_attention), images, cells, image_index=image_index
            )
            patch_logits = self.feature_network(
                self.rescaling(patches), training=training
            )
            details["draw_log_probs"] = self.sampler.draw_log_prob(log_attention, cells)
        if isinstance(self.pool, SequenceHead):
            size = ops.cast(
                ops.shape(images if drawn is None else view)[1:3], "float32"
            )
            y_pred = self.pool([patch_logits, positions / size], training=training)
        elif isinstance(self.pool, ExpectationPool):
            # In draw order, with the sampler's scheme: the one owner of it.
            y_pred = self.pool(
                [patch_logits, sampled_attention], replace=self.sampler.replace
            )
        else:
            y_pred = self.pool([patch_logits, sampled_attention])
        if not return_details:
            if drawn is not None and samples_per_image == 1:
                # One row per image: the mean over the draws the loader made
                # (a training loader's batch seen outside the step).
                y_pred = ops.mean(
                    ops.reshape(y_pred, (ops.shape(view)[0], -1, self.num_classes)),
                    axis=1,
                )
            return y_pred
        outputs = {
            "y_pred": y_pred,
            "log_attention": log_attention,
            "cells": cells,
            "draw_log_probs": details["draw_log_probs"],
            "positions": positions,
            "sampled_attention": sampled_attention,
            "patches": patches,
            "patch_logits": patch_logits,
        }
        for key in ("entropy", "step_log_attention", "importance"):
            if key in details:
                outputs[key] = details[key]
        return outputs

    def attention_log_probs(self, view, training=False, network=None):
        """Log-probabilities `(B, h, w)` of the attention map of a view.

        The view (in the images' value range) is normalised, the attention
        network maps it, and the tissue mask, if any, is applied. `network`
        replaces the call of the attention network on the normalised view,
        so that `propose` can run it with other variable values.
        """
        mask = None if self.tissue_mask is None else self.tissue_mask(view)
        normalised = self.rescaling(view)
        network = network or self.attention_network
        if isinstance(self.attention_network, AttentionMap):
            log_attention = network(
                normalised, training=training, return_log_probs=True
            )
        else:
            log_attention = sampling.safe_log(network(normalised, training=training))
        if mask is not None:
            log_attention = sampling.masked_log_probs(log_attention, mask)
        return log_attention

    def propose(self, view, samples_per_image=1, training=False, seed=0, state=None):
        """Draws cells for views outside the step: sampling made data.

        A loader that reads patches from disk (`kas.slides.SlideDataset`)
        asks here which cells to read. The cells are drawn as the sampler
        draws them (`inference_sampling` outside training), from the map
        that the attention network gives with the variable values `state`
        (`(trainable, non_trainable)`, as `attention_state` returns; default
        the current ones) and in the same mode (`training`) as the step that
        will learn from them. The step recomputes their log-probabilities
        under its own weights and weights each image by the ratio to the
        `log_probs` returned here, so draws made with weights a few steps old
        still give an unbiased gradient. It never touches the sampler's seed
        state, so loader threads may call it concurrently.

        Args:
            view: `(B, h, w, C)` views, in the images' value range.
            samples_per_image: independent draws per view (rows of one view
                adjacent), as the step repeats them.
            training: the mode of the step the cells are for.
            seed: integer seed of these draws.
            state: attention variable values, or `None` for the current ones.

        Returns:
            `(cells, log_probs)`: int32 numpy `(B * k, N)` flat cells of the
            map, and float32 numpy `(B * k,)` the log-probability of each
            row's draws.
        """
        view = ops.convert_to_tensor(view)
        network = self.attention_network
        if not network.built:
            network.build(tuple(view.shape))
        if state is None:
            state = self.attention_state()

        def stateless(normalised, **kwargs):
            outputs, _ = network.stateless_call(*state, normalised, **kwargs)
            return outputs

        log_attention = self.attention_log_probs(
            view, training=training, network=stateless
        )
        if samples_per_image > 1:
            log_attention = ops.repeat(log_attention, samples_per_image, axis=0)
        flat = ops.reshape(log_attention, (ops.shape(log_attention)[0], -1))
        if not training and self.inference_sampling == "top_k":
            cells = sampling.top_cells(flat, self.n_patches)
        else:
            cells = sampling.sample_cells(flat, self.n_patches, self.replace, seed=seed)
        log_probs = ops.sum(self.sampler.draw_log_prob(flat, cells), axis=-1)
        return (
            ops.convert_to_numpy(cells).astype("int32"),
            ops.convert_to_numpy(log_probs).astype("float32"),
        )

    def attention_state(self):
        """Copies of the attention network's variable values, as numpy:
        `(trainable, non_trainable)`, for `propose`."""
        network = self.attention_network
        return (
            [np.array(ops.convert_to_numpy(v)) for v in network.trainable_variables],
            [
                np.array(ops.convert_to_numpy(v))
                for v in network.non_trainable_variables
            ],
        )

    def compute_output_shape(self, input_shape):
        images, view, _ = _split(input_shape)
        return ((images if images is not None else view)[0], self.num_classes)

    # -- slides: the same methods, with patches read from disk ----------

    def fit(self, x=None, y=None, batch_size=None, callbacks=None, **kwargs):
        """`keras.Model.fit`; `x` may also name slides (see `kas.slides`).

        Slides come as a `kas.slides.SlideDataset`, a `SlideIndex`, a CSV of
        `path,label`, a folder of class folders, or a list of slide paths
        with `y` their labels; the patches are then read from disk where the
        attention looks (one slide per example, `batch_size` slides a
        batch), and `validation_data` may name slides too.
        """
        slides = _slides()
        if slides is not None and slides.is_slide_data(x):
            x = slides.as_slide_dataset(
                self, x, y, training=True, batch_size=batch_size
            )
            y = batch_size = None
            x.hold_weights()
            callbacks = [*(callbacks or []), x.follow_weights()]
            validation = kwargs.get("validation_data")
            if validation is not None and slides.is_slide_data(validation):
                kwargs["validation_data"] = slides.as_slide_dataset(
                    self, validation, batch_size=x.batch_size
                )
        return super().fit(x, y, batch_size=batch_size, callbacks=callbacks, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
        """`keras.Model.evaluate`; `x` may also name slides, as for `fit`."""
        slides = _slides()
        if slides is not None and slides.is_slide_data(x):
            x = slides.as_slide_dataset(self, x, y, batch_size=batch_size)
            y = batch_size = None
            x.hold_weights()
        return super().evaluate(x, y, batch_size=batch_size, **kwargs)

    def predict(self, x, batch_size=None, **kwargs):
        """`keras.Model.predict`; `x` may also be a `Slide`, a slide path or
        a list of them (or a `SlideDataset`): one row per slide."""
        slides = _slides()
        if slides is not None and slides.is_slide_data(x):
            x = slides.as_slide_dataset(self, x, batch_size=batch_size)
            batch_size = None
            x.hold_weights()
        return super().predict(x, batch_size=batch_size, **kwargs)

    def explain(self, images, batch_size=8):
        """Everything needed to show why each image got its prediction.

        Runs in inference mode, so patches are drawn as `predict` draws them
        (`inference_sampling`).

        Args:
            images: `(B, H, W, C)` array, or a dict of `images` and `view`
                arrays as `call` takes; or slides (a `Slide`, a path, a
                list of them or a `SlideDataset`), whose patches are read
                from disk.
            batch_size: images per forward pass.

        Returns:
            Dict of numpy arrays: `probabilities` `(B, classes)`, `attention`
            `(B, h, w)`, `cells` `(B, N)`, `positions` `(B, N, 2)` patch
            centres `(y, x)` in pixels, `sampled_attention` `(B, N)`,
            `patch_logits` `(B, N, D)` and `patches` `(B, N, p, p, C)` as cut
            from the images (their dtype, before normalisation). With an
            `AutoregressiveSampler`, also `step_attention` `(B, N, h, w)`:
            the map each draw was made from, in draw order (`cells` is in
            that order too). For slides, `positions` are level-0 pixels of
            each slide, and `view` `(B, h, w, C)` holds the views the
            attention was computed on (padded to one shape).
        """
        slides = _slides()
        if slides is not None and slides.is_slide_data(images):
            return slides.explain_slides(
                self, slides.as_slide_dataset(self, images, batch_size=1)
            )
        keys = (
            "y_pred",
            "log_attention",
            "cells",
            "positions",
            "sampled_attention",
            "patch_logits",
            "patches",
        )
        if isinstance(self.sampler, AutoregressiveSampler):
            keys += ("step_log_attention",)
        parts = {key: [] for key in keys}
        pixels = _split(images)[0]
        for start in range(0, len(pixels), batch_size):
            window = slice(start, start + batch_size)
            if isinstance(images, dict):
                batch = {k: ops.convert_to_tensor(v[window]) for k, v in images.items()}
            else:
                batch = ops.convert_to_tensor(images[window])
            outputs = self._explain_forward(batch)
            for key in keys:
                parts[key].append(ops.convert_to_numpy(outputs[key]))
        result = {key: np.concatenate(value) for key, value in parts.items()}
        result["probabilities"] = result.pop("y_pred")
        result["attention"] = np.exp(result.pop("log_attention"))
        if "step_log_attention" in result:
            result["step_attention"] = np.exp(result.pop("step_log_attention"))
        # Cut pixels are exact in the compute dtype; give them back as they were.
        result["patches"] = result["patches"].astype(np.asarray(pixels[:1]).dtype)
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
                "rescale": self.rescale,
                "offset": self.offset,
                "tissue_mask": keras.saving.serialize_keras_object(self.tissue_mask),
                **self._policy_config(),
            }
        )
        # A sampler or head given as a part is stored whole; the default ones
        # by the arguments that rebuild them.
        if type(self.sampler) is PatchSampler:
            config.update({name: getattr(self, name) for name in SAMPLER_ARGUMENTS})
        else:
            config["sampler"] = keras.saving.serialize_keras_object(self.sampler)
        if isinstance(self.pool, (WeightedLogitPool, ExpectationPool)):
            config.update({name: getattr(self, name) for name in POOL_ARGUMENTS})
        else:
            config["head"] = keras.saving.serialize_keras_object(self.pool)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in (
            "attention_network",
            "feature_network",
            "sampler",
            "head",
            "tissue_mask",
        ):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        # Saved before the expectation estimator existed: REINFORCE was the
        # only one (the default is now the model's choice).
        config.setdefault("estimator", "reinforce")
        if "offset" not in config:
            # Saved by release 0.1, whose only normalisation was `rescale`
            # (None for none).
            config["offset"] = 0.0
            if config.get("rescale") is None:
                config["rescale"] = 1.0
        return cls(**config)


SAMPLER_ARGUMENTS = (
    "n_patches",
    "patch_size",
    "replace",
    "padding",
    "inference_sampling",
    "seed",
)
POOL_ARGUMENTS = ("logit_scale", "attention_gradient")


def _check_parts(sampler, head, given, estimator):
    """A given part owns its settings: the model's arguments for them must be
    left at their defaults."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(
            AttentionSamplingModel
        ).parameters.items()
    }
    for part, names, label in (
        (sampler, SAMPLER_ARGUMENTS, "sampler"),
        (head, POOL_ARGUMENTS, "head"),
    ):
        changed = [
            name for name in names if part is not None and given[name] != defaults[name]
        ]
        if changed:
            raise ValueError(
                f"AttentionSamplingModel: with a {label} given, set "
                f"{', '.join(changed)} on the {label} itself (it owns them)."
            )
    if head is not None and estimator == "expectation":
        raise ValueError(
            "AttentionSamplingModel: a head replaces the pool, so it needs "
            f"estimator='reinforce'. Received: estimator={estimator!r}"
        )
    if isinstance(sampler, AutoregressiveSampler) and estimator == "expectation":
        raise ValueError(
            "AttentionSamplingModel: the expectation estimator needs "
            "independent draws from one map, which an AutoregressiveSampler "
            f"does not make; use estimator='reinforce'. Received: "
            f"estimator={estimator!r}"
        )


@functools.cache
def _slides():
    """`kas.slides`, or `None` where the [slides] extra is not installed
    (then no input can be slides). Looked up once: `fit`, `evaluate`,
    `predict` and `explain` ask at every call."""
    try:
        from keras_attention_sampling import slides
    except ImportError:
        return None
    return slides


DRAWN_KEYS = ("view", "cells", "patches")


def _split(inputs):
    """`(images, view, drawn)` from the model's input: a tensor, the dict of
    images and view, or the dict of drawn patches (`drawn` holds `cells`,
    `patches` and perhaps `proposal_log_probs`)."""
    if not isinstance(inputs, dict):
        return inputs, None, None
    keys = set(inputs)
    if keys == {"images", "view"}:
        return inputs["images"], inputs["view"], None
    if set(DRAWN_KEYS) <= keys <= {*DRAWN_KEYS, "proposal_log_probs"}:
        drawn = {key: inputs[key] for key in keys - {"view"}}
        return None, inputs["view"], drawn
    raise ValueError(
        "AttentionSamplingModel: dict inputs must have exactly the keys 'images' "
        "and 'view', or 'view', 'cells' and 'patches' (and optionally "
        f"'proposal_log_probs'), got {sorted(inputs)}."
    )


def _check_drawn(model, shapes):
    """The drawn cells and patches must be what the sampler would draw."""
    name = "AttentionSamplingModel"
    if isinstance(model.sampler, AutoregressiveSampler):
        raise ValueError(
            f"{name}: an AutoregressiveSampler chooses each cell from the patches "
            "before it, so its cells cannot be drawn outside the step; give "
            "images instead of drawn patches."
        )
    cells, patches = tuple(shapes["cells"]), tuple(shapes["patches"])
    if len(cells) != 2 or cells[1] not in (None, model.n_patches):
        raise ValueError(
            f"{name}: drawn cells must be (B, n_patches={model.n_patches}), got "
            f"shape {cells}."
        )
    if len(patches) != 5 or patches[1:4] != (
        model.n_patches,
        model.patch_size,
        model.patch_size,
    ):
        raise ValueError(
            f"{name}: drawn patches must be (B, {model.n_patches}, "
            f"{model.patch_size}, {model.patch_size}, C), got shape {patches}."
        )
    proposal = shapes.get("proposal_log_probs")
    if proposal is not None and len(tuple(proposal)) != 1:
        raise ValueError(
            f"{name}: proposal_log_probs must be (B,), one per row of cells, got "
            f"shape {tuple(proposal)}."
        )


def importance_weights(draw_log_probs, proposal_log_probs):
    """Per row, `p(cells) / q(cells)`: the probability of the drawn cells
    under the weights being trained over their probability when they were
    drawn. Held constant, it weights each image's loss so that the gradient
    is the on-policy one in expectation; it is 1 when the cells were drawn
    with the same weights."""
    log_ratio = ops.sum(draw_log_probs, axis=-1) - ops.cast(
        proposal_log_probs, "float32"
    )
    return ops.stop_gradient(ops.exp(log_ratio))
