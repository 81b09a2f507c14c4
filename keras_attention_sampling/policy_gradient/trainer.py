import importlib

import keras
from keras import ops

from keras_attention_sampling import policy_gradient, sampling
from keras_attention_sampling.layers.patch_sampler import PatchSampler
from keras_attention_sampling.layers.reward_baseline import RewardBaseline

POLICY_ARGUMENTS = (
    "reward",
    "baseline",
    "baseline_momentum",
    "entropy_weight",
    "samples_per_image",
)


def default_attention_optimizer():
    """The seed's attention optimiser: Adam 1e-3 with first-moment decay 0.999."""
    return keras.optimizers.Adam(learning_rate=1e-3, beta_1=0.999)


def _per_sample(loss):
    """The compiled loss as a function giving one value per image."""
    loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        config["reduction"] = None
        return loss.__class__.from_config(config)
    if callable(loss):
        return loss
    raise ValueError(f"Cannot use {loss!r} as a per-image loss.")


class _OptimizerRouter:
    """Sends the attention network's variables to the attention optimiser.

    Routing by object identity, not by regexes over variable paths, so a
    renamed layer can never silently send the attention network to the
    feature optimiser.
    """

    def __init__(self, feature_optimizer, attention_optimizer, attention_variables):
        self.default_optimizer = feature_optimizer
        self.attention_optimizer = attention_optimizer
        self._attention_variables = attention_variables
        self._attention_ids = None

    def values(self):
        return [self.default_optimizer, self.attention_optimizer]

    def __call__(self, variable):
        # MultiOptimizer asks once per variable while it builds; the set is
        # taken then (not at compile time, when the model may be unbuilt).
        if self._attention_ids is None:
            self._attention_ids = {id(v) for v in self._attention_variables()}
        if id(variable) in self._attention_ids:
            return self.attention_optimizer
        return self.default_optimizer


class PolicyGradientMixin:
    """Training by cross-entropy plus the entropy-regularised policy gradient.

    Mixed into a `keras.Model` whose forward pass samples patches from an
    attention map. The subclass provides
    `policy_forward(x, training, samples_per_image)`, returning a dict with
    `y_pred`, `log_attention` `(B, h, w)` and `cells` `(B, N)`, and
    `attention_variables()`.

    One total loss is differentiated: the mean classification loss (which
    reaches only the feature side, since the pool holds the attention
    constant) plus the mean REINFORCE surrogate (which reaches only the
    attention network). A `keras.optimizers.MultiOptimizer` then applies each
    variable's gradient with its own optimiser, so checkpoints carry both
    optimisers' state. Only the gradient plumbing differs per backend
    (`keras_attention_sampling/trainers/`).
    """

    def _init_policy(
        self,
        reward="bounded",
        baseline="mean",
        baseline_momentum=0.9,
        entropy_weight=0.05,
        samples_per_image=4,
    ):
        if reward not in policy_gradient.REWARDS:
            raise ValueError(
                f"{type(self).__name__}: reward must be one of "
                f"{policy_gradient.REWARDS}, got {reward!r}."
            )
        if int(samples_per_image) < 1:
            raise ValueError(
                f"{type(self).__name__}: samples_per_image must be >= 1, got "
                f"{samples_per_image}."
            )
        self.reward = reward
        self.baseline = baseline
        self.baseline_momentum = baseline_momentum
        self.entropy_weight = entropy_weight
        self.samples_per_image = int(samples_per_image)
        self.reward_baseline = RewardBaseline(
            baseline, baseline_momentum, name="reward_baseline"
        )
        self.entropy_tracker = keras.metrics.Mean(name="entropy")
        self.reward_tracker = keras.metrics.Mean(name="reward")

    def _policy_config(self):
        return {name: getattr(self, name) for name in POLICY_ARGUMENTS}

    # -- compilation -------------------------------------------------------

    def compile(
        self,
        optimizer="adam",
        attention_optimizer=None,
        loss="sparse_categorical_crossentropy",
        metrics=None,
        **kwargs,
    ):
        """Configures the model for training.

        Args:
            optimizer: optimiser of the feature network and the pool (default
                Adam 1e-3).
            attention_optimizer: optimiser of the attention network (default
                Adam 1e-3 with `beta_1=0.999`, as in the seed).
            loss: classification loss; it must give one value per image. Its
                per-image values are also the (negative) rewards.
            metrics: compiled metrics, as in `keras.Model.compile`.
            **kwargs: other `keras.Model.compile` arguments (`jit_compile`,
                `steps_per_execution`, ...).
        """
        feature_optimizer = keras.optimizers.get(optimizer)
        if attention_optimizer is None:
            attention_optimizer = default_attention_optimizer()
        attention_optimizer = keras.optimizers.get(attention_optimizer)
        if feature_optimizer is attention_optimizer:
            raise ValueError(
                f"{type(self).__name__}.compile: optimizer and "
                "attention_optimizer must be two different objects."
            )
        router = _OptimizerRouter(
            feature_optimizer, attention_optimizer, self.attention_variables
        )
        super().compile(
            optimizer=keras.optimizers.MultiOptimizer(router),
            loss=loss,
            metrics=metrics,
            **kwargs,
        )
        self.per_sample_loss = _per_sample(loss)
        self._policy_compile_config = {
            "optimizer": keras.saving.serialize_keras_object(feature_optimizer),
            "attention_optimizer": keras.saving.serialize_keras_object(
                attention_optimizer
            ),
            "loss": keras.saving.serialize_keras_object(loss),
            "metrics": keras.saving.serialize_keras_object(metrics),
            **{
                key: value
                for key, value in kwargs.items()
                if key in ("run_eagerly", "jit_compile", "steps_per_execution")
            },
        }

    @property
    def feature_optimizer(self):
        """The optimiser of everything but the attention network."""
        return self._inner_optimizers()[0]

    @property
    def attention_optimizer(self):
        """The optimiser of the attention network."""
        return self._inner_optimizers()[1]

    def _inner_optimizers(self):
        optimizer = self.optimizer
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # loss scaling
        return inner.optimizers

    def get_compile_config(self):
        return dict(getattr(self, "_policy_compile_config", {}))

    def compile_from_config(self, config):
        config = dict(config)
        for key in ("optimizer", "attention_optimizer", "loss", "metrics"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # -- the step, written once for every backend ---------------------------

    def policy_step(self, x, y, sample_weight=None, training=False):
        """Forward pass, losses and metric updates of one batch.

        Returns the total loss: mean classification loss plus mean policy
        surrogate (plus any regularisation losses). Backend trainers
        differentiate it.
        """
        # Independent draws of the same image lower the variance of both the
        # prediction and the policy gradient; `policy_forward` makes them.
        k = self.samples_per_image if training else 1
        if k > 1:
            y, sample_weight = _repeat((y, sample_weight), k)
        outputs = self.policy_forward(x, training=training, samples_per_image=k)
        y_pred = outputs["y_pred"]
        log_attention = outputs["log_attention"]
        per_image = ops.cast(self.per_sample_loss(y, y_pred), "float32")
        batch = ops.shape(per_image)[0]
        if sample_weight is None:
            weights = ops.ones_like(per_image)
        else:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (batch,))
        classification = ops.sum(per_image * weights) / ops.cast(batch, "float32")

        rewards = policy_gradient.reward_from_loss(per_image, self.reward)
        baseline = self.reward_baseline(rewards, training=training, samples_per_image=k)
        flat_log_attention = ops.reshape(log_attention, (batch, -1))
        draw_log_probs = sampling.draw_log_prob(
            flat_log_attention, outputs["cells"], replace=self.sampler_replaces()
        )
        surrogate = policy_gradient.policy_surrogate(
            draw_log_probs, rewards, baseline, log_attention, self.entropy_weight
        )
        attention_loss = ops.sum(surrogate * weights) / ops.cast(batch, "float32")
        total = classification + attention_loss
        if self.losses:
            total = total + sum(self.losses)

        self._loss_tracker.update_state(classification, sample_weight=batch)
        self.entropy_tracker.update_state(
            policy_gradient.attention_entropy(log_attention)
        )
        self.reward_tracker.update_state(rewards)
        self.compute_metrics(x, y, y_pred, sample_weight)
        return total

    def train_step(self, *args):
        return _backend_trainer().train_step(self, *args)

    def test_step(self, *args):
        return _backend_trainer().test_step(self, *args)


def _repeat(structure, k):
    return keras.tree.map_structure(
        lambda t: None if t is None else ops.repeat(t, k, axis=0), structure
    )


def _backend_trainer():
    backend = keras.backend.backend()
    try:
        return importlib.import_module(f"keras_attention_sampling.trainers._{backend}")
    except ModuleNotFoundError as error:
        raise NotImplementedError(
            f"keras_attention_sampling has no policy-gradient train_step for the "
            f"{backend!r} backend; use tensorflow, jax or torch."
        ) from error


class _Unsaved:
    # Holds an object without letting Keras track (and save) it twice.
    def __init__(self, value):
        self.value = value


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class PolicyGradientModel(PolicyGradientMixin, keras.Model):
    """A functional model of the package's layers, trained by policy gradient.

    Wire `AttentionMap`, `PatchSampler`, `NormalizedFeature` and
    `WeightedLogitPool` (or your own parts around them) into a functional
    graph, then build this model from its inputs and outputs. It finds the
    model's single `PatchSampler` and trains the network that produced its
    attention input with the same entropy-regularised REINFORCE as
    `AttentionSamplingModel`; everything else is trained by the compiled loss.

    Args:
        inputs: the functional inputs (the full-resolution images).
        outputs: the prediction, a `(B, classes)` tensor.
        reward: `"bounded"` (`exp(-L)`, default) or `"negative_loss"`.
        baseline: `"mean"`, `"leave_one_out"`, `"moving_average"` or `"none"`.
        baseline_momentum: decay of the moving-average baseline.
        entropy_weight: weight of the entropy regulariser.
        samples_per_image: independent draws per image in a training batch.
        **kwargs: `keras.Model` arguments (`name`, ...).

    Returns:
        A `keras.Model`; `compile` takes an extra `attention_optimizer`.

    Raises:
        ValueError: if the graph has no `PatchSampler`, or more than one.

    Examples:
        >>> import keras, numpy as np
        >>> import keras_attention_sampling as kas
        >>> images = keras.Input((64, 64, 3))
        >>> low = keras.layers.AveragePooling2D(8)(images)
        >>> attention = kas.AttentionMap(blocks=1)(low)
        >>> patches, weights, _ = kas.PatchSampler(2, 16, seed=1)([attention, images])
        >>> features = kas.NormalizedFeature(3)(patches)
        >>> outputs = kas.WeightedLogitPool(3.0)([features, weights])
        >>> model = kas.PolicyGradientModel(images, outputs, samples_per_image=2)
        >>> model.compile(metrics=["accuracy"])
        >>> x = np.random.rand(4, 64, 64, 3).astype("float32")
        >>> history = model.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'entropy', 'loss', 'reward']
    """

    def __init__(
        self,
        inputs,
        outputs,
        reward="bounded",
        baseline="mean",
        baseline_momentum=0.9,
        entropy_weight=0.05,
        samples_per_image=4,
        **kwargs,
    ):
        super().__init__(inputs, outputs, **kwargs)
        samplers = [layer for layer in self.layers if isinstance(layer, PatchSampler)]
        if len(samplers) != 1:
            raise ValueError(
                "PolicyGradientModel needs exactly one PatchSampler in its graph, "
                f"found {len(samplers)}."
            )
        sampler = samplers[0]
        attention, images = sampler.input
        positions = sampler.output[2]
        self._sampler = _Unsaved(sampler)
        self._map_shape = tuple(attention.shape[1:3])
        self._image_shape = tuple(images.shape[1:3])
        prediction = self.outputs[0]
        self._policy_view = _Unsaved(
            keras.Model(self.inputs, [prediction, attention, positions])
        )
        self._attention_network = _Unsaved(keras.Model(self.inputs, attention))
        self._init_policy(
            reward, baseline, baseline_momentum, entropy_weight, samples_per_image
        )

    def attention_variables(self):
        """Trainable variables of the network that produces the attention."""
        return self._attention_network.value.trainable_variables

    def sampler_replaces(self):
        return self._sampler.value.replace

    def policy_forward(self, x, training=False, samples_per_image=1):
        if samples_per_image > 1:
            # The graph is the user's, so the whole input is repeated.
            x = _repeat(x, samples_per_image)
        y_pred, attention, positions = self._policy_view.value(x, training=training)
        cells = sampling.centres_to_cells(positions, self._map_shape, self._image_shape)
        return {
            "y_pred": y_pred,
            "log_attention": sampling.safe_log(attention),
            "cells": cells,
        }

    def get_config(self):
        # Keras serialises the graph only for plain functional constructors,
        # so the graph is described by a plain functional model over it.
        config = keras.Model(self.inputs, self.outputs, name=self.name).get_config()
        config.update(self._policy_config())
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        policy = {key: config.pop(key) for key in POLICY_ARGUMENTS if key in config}
        graph = keras.Model.from_config(config, custom_objects=custom_objects)
        return cls(graph.inputs, graph.outputs, name=graph.name, **policy)
