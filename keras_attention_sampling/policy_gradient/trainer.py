"""The training step of attention sampling, written once for every backend."""

import contextlib
import contextvars
import functools
import importlib
import inspect

import keras
from keras import ops

from keras_attention_sampling._settings import (
    LayerSetting,
    drop_compiled_functions,
)
from keras_attention_sampling.policy_gradient import reinforce
from keras_attention_sampling.policy_gradient.reward_baseline import RewardBaseline

ESTIMATORS = ("reinforce", "expectation")
# `entropy_weight=None` gives each estimator its own, chosen by the learning
# and Megapixel-MNIST benchmarks (docs/benchmarks.md): 0.01 for REINFORCE,
# where the reference notebook's 0.05 held the map near uniform for longer
# and lost more seeds; none for the expectation estimator, which learns
# where to look from the classification loss itself.
ESTIMATOR_ENTROPY_WEIGHTS = {"reinforce": 0.01, "expectation": 0.0}

_GLOBAL_MEAN = contextvars.ContextVar("global_mean", default=ops.mean)


@contextlib.contextmanager
def global_mean(mean):
    """Inside the block, `policy_step` takes batch means with `mean`.

    A data-parallel replica sees only its shard of the batch; its backend
    plumbing passes a mean over every replica, so that the baseline is the
    one a single device would compute on the whole batch.
    """
    token = _GLOBAL_MEAN.set(mean)
    try:
        yield
    finally:
        _GLOBAL_MEAN.reset(token)


def default_attention_optimizer():
    """The attention optimiser when none is given: Adam 1e-3, `beta_1=0.9`.

    The reference notebook's `beta_1=0.999` averages the policy gradient over
    about a thousand steps; its momentum then keeps pushing the map long after
    the rewards have changed, and on the learning benchmark it learned fewer
    seeds than Keras' usual 0.9 (docs/benchmarks.md, "Learning on every
    seed"). `reference_settings()` gives the notebook's.
    """
    return keras.optimizers.Adam(learning_rate=1e-3, beta_1=0.9)


def reference_settings():
    """The reference notebook's training settings, as one set of arguments.

    The package's defaults differ from them where the learning benchmark
    showed a setting that learns on more seeds (docs/benchmarks.md): inputs
    centred to `[-0.5, 0.5]` instead of `[0, 1]`, the expectation estimator
    instead of REINFORCE, the attention optimiser's `beta_1=0.9` instead
    of 0.999, and REINFORCE's entropy weight 0.01 instead of 0.05. These
    arguments put all four back, with the notebook's baseline, reward,
    draws per image and logit scale 3 written out (the package's default
    logit scale grows with the classes, 4.89 for three, see
    `kas.default_logit_scale`).

    Returns:
        A dict of `"model"`, the keyword arguments of `AttentionSamplingModel`
        (or of `PolicyGradientModel`, less `rescale`, `offset` and
        `logit_scale`, which its own pool layer takes), and
        `"compile"`, those of its `compile` (fresh optimisers at every call).

    Examples:
        >>> import keras_attention_sampling as kas
        >>> reference = kas.reference_settings()
        >>> model = kas.AttentionSamplingModel(3, **reference["model"])
        >>> model.compile(**reference["compile"])
        >>> model.estimator, model.rescale, model.offset
        ('reinforce', 0.00392156862745098, 0.0)
        >>> float(model.attention_optimizer.beta_1)
        0.999
    """
    return {
        "model": {
            "estimator": "reinforce",
            "reward": "bounded",
            "baseline": "mean",
            "entropy_weight": 0.05,
            "samples_per_image": 4,
            "rescale": 1 / 255,
            "offset": 0.0,
            "logit_scale": 3.0,
        },
        "compile": {
            "optimizer": keras.optimizers.Adam(learning_rate=1e-3),
            "attention_optimizer": keras.optimizers.Adam(
                learning_rate=1e-3, beta_1=0.999
            ),
        },
    }


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
    attention map (`AttentionSamplingModel`, `PolicyGradientModel`). The model
    provides `policy_forward(x, training, samples_per_image)`, returning a
    dict with `y_pred`, `log_attention` `(B, h, w)` and `draw_log_probs`
    `(B, N)` (from the sampler that drew the cells), and optionally
    `entropy` `(B,)` (else the entropy of `log_attention`), and
    `attention_variables()`.

    One total loss is differentiated. With `estimator="reinforce"` it is the
    mean classification loss (which reaches only the feature side, since the
    pool holds the attention constant) plus the mean REINFORCE surrogate
    (which reaches only the attention network). With `"expectation"` the pool
    is an `ExpectationPool`, whose unbiased gradient carries the
    classification loss to the attention network too, and only the entropy
    regulariser is added. A `keras.optimizers.MultiOptimizer` then applies
    each variable's gradient with its own optimiser, so checkpoints carry both
    optimisers' state. Only the gradient plumbing differs per backend
    (`_tensorflow.py`, `_jax.py` and `_torch.py` beside this module).

    These keyword arguments are the policy gradient's settings, written here
    once for both models:

    Args:
        *args: the model's own positional arguments.
        estimator: `"expectation"` (the original paper's: the
            classification loss through an `ExpectationPool`), `"reinforce"`
            (the reference notebook's: a score-function gradient of the
            expected reward), or `None`, the model's choice: the expectation
            estimator wherever the model's parts allow it (see each model).
        reward: `"bounded"` gives `exp(-L)` (the reference notebook's),
            `"negative_loss"` gives `-L`.
        baseline: `"mean"` (batch mean, the reference notebook's),
            `"leave_one_out"`, `"moving_average"` or `"none"`; see
            `RewardBaseline`, which owns it.
        baseline_momentum: decay of the moving-average baseline.
        entropy_weight: weight `lambda` of the entropy regulariser: a number,
            a `keras.optimizers.schedules.LearningRateSchedule` of the
            attention optimiser's step (e.g. `PolynomialDecay(0.05, 10000,
            0.005)` to explore less as training goes on), or `None`, the
            estimator's choice: 0.01 with `"reinforce"` (until 2026-12-07
            the reference notebook's 0.05), 0 with `"expectation"`, whose
            gradient already carries the classification loss to the
            attention (0.05 kept a 64 x 64 map uniform on Megapixel MNIST at
            one patch; see docs/benchmarks.md). The model's config holds
            the number.
        samples_per_image: independent draws of patches per image in a
            training batch (the reference notebook's 4).
        **kwargs: the model's other arguments.
    """

    def __init__(
        self,
        *args,
        estimator=None,
        reward="bounded",
        baseline="mean",
        baseline_momentum=0.9,
        entropy_weight=None,
        samples_per_image=4,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if estimator is not None and estimator not in ESTIMATORS:
            raise ValueError(
                f"{type(self).__name__}: estimator must be one of {ESTIMATORS}. "
                f"Received: estimator={estimator!r}"
            )
        self._estimator = estimator
        self.reward = reward
        self.entropy_weight = entropy_weight
        self.samples_per_image = samples_per_image
        self.reward_baseline = RewardBaseline(
            baseline, baseline_momentum, name="reward_baseline"
        )
        self.entropy_tracker = keras.metrics.Mean(name="entropy")
        self.reward_tracker = keras.metrics.Mean(name="reward")

    @property
    def estimator(self):
        """`"reinforce"` or `"expectation"`, fixed at construction (it decides
        which pool the model has)."""
        return self._estimator

    def _resolve_estimator(self, expectation_applies):
        """Called by the model once its parts are known: an estimator left
        at `None` becomes the expectation estimator where it applies, else
        REINFORCE. (Each model checks an estimator given explicitly.)"""
        if self._estimator is None:
            self._estimator = "expectation" if expectation_applies else "reinforce"
        if self._entropy_weight is None:
            # A direct call: TensorFlow's attribute tracking skips a property
            # setter given the value the attribute already holds (None).
            self._set_entropy_weight(None)

    baseline = LayerSetting("reward_baseline", "mode")
    baseline_momentum = LayerSetting("reward_baseline", "momentum")

    @property
    def reward(self):
        """The reward, `"bounded"` or `"negative_loss"`."""
        return self._reward

    @reward.setter
    def reward(self, value):
        if value not in reinforce.REWARDS:
            raise ValueError(
                f"{type(self).__name__}: reward must be one of "
                f"{reinforce.REWARDS}. Received: reward={value!r}"
            )
        self._reward = value
        drop_compiled_functions(self)

    @property
    def entropy_weight(self):
        """Weight of the entropy regulariser: a number or a schedule."""
        return self._entropy_weight

    @entropy_weight.setter
    def entropy_weight(self, value):
        self._set_entropy_weight(value)

    def _set_entropy_weight(self, value):
        if isinstance(value, dict):  # as get_config stores a schedule
            value = keras.saving.deserialize_keras_object(value)
        if value is None:
            # The estimator's choice; until the model knows its parts (and
            # so its estimator), it stays None.
            if self._estimator is not None:
                value = ESTIMATOR_ENTROPY_WEIGHTS[self._estimator]
        elif not isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
            value = float(value)
        self._entropy_weight = value
        drop_compiled_functions(self)

    def entropy_weight_now(self):
        """The entropy weight at the attention optimiser's current step."""
        if isinstance(self._entropy_weight, float):
            return self._entropy_weight
        step = self.attention_optimizer.iterations
        return ops.cast(self._entropy_weight(step), "float32")

    @property
    def samples_per_image(self):
        """Independent draws per image in a training batch."""
        return self._samples_per_image

    @samples_per_image.setter
    def samples_per_image(self, value):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(
                f"{type(self).__name__}: samples_per_image must be >= 1. "
                f"Received: samples_per_image={value!r}"
            )
        self._samples_per_image = int(value)
        drop_compiled_functions(self)

    def _policy_config(self):
        config = {name: getattr(self, name) for name in POLICY_ARGUMENTS}
        if not isinstance(config["entropy_weight"], float):
            config["entropy_weight"] = keras.saving.serialize_keras_object(
                config["entropy_weight"]
            )
        return config

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
                `default_attention_optimizer()`, Adam 1e-3 with `beta_1=0.9`;
                the reference notebook's has `beta_1=0.999`).
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
            y, sample_weight = repeat_batch((y, sample_weight), k)
        outputs = self.policy_forward(x, training=training, samples_per_image=k)
        y_pred = outputs["y_pred"]
        log_attention = outputs["log_attention"]
        per_image = ops.cast(self.per_sample_loss(y, y_pred), "float32")
        batch = ops.shape(per_image)[0]
        if sample_weight is None:
            weights = ops.ones_like(per_image)
        else:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (batch,))
        if "importance" in outputs:
            # Cells drawn outside the step (from slides): each image's terms
            # weighted by p(cells) / q(cells) keep the gradient on-policy.
            weights = weights * outputs["importance"]
        classification = ops.sum(per_image * weights) / ops.cast(batch, "float32")

        rewards = reinforce.reward_from_loss(per_image, self.reward)
        entropy = outputs.get("entropy")
        if entropy is None:
            entropy = reinforce.attention_entropy(log_attention)
        if self.estimator == "reinforce":
            baseline = self.reward_baseline(
                rewards,
                training=training,
                samples_per_image=k,
                batch_mean=_GLOBAL_MEAN.get()(rewards),
            )
            surrogate = reinforce.policy_surrogate(
                outputs["draw_log_probs"],
                rewards,
                baseline,
                entropy_weight=self.entropy_weight_now(),
                entropy=entropy,
            )
        else:
            # The pool already carries the loss to the attention network.
            surrogate = -self.entropy_weight_now() * entropy
        attention_loss = ops.sum(surrogate * weights) / ops.cast(batch, "float32")
        total = classification + attention_loss
        if self.losses:
            total = total + sum(self.losses)

        self._loss_tracker.update_state(classification, sample_weight=batch)
        self.entropy_tracker.update_state(entropy)
        self.reward_tracker.update_state(rewards)
        self.compute_metrics(x, y, y_pred, sample_weight)
        return total

    def train_step(self, *args):
        return _backend_trainer().train_step(self, *args)

    def test_step(self, *args):
        return _backend_trainer().test_step(self, *args)

    def _maybe_symbolic_build(self, *args, **kwargs):
        # Called by Keras' TensorFlow trainer only, before `fit` under a
        # strategy; see `_tensorflow.maybe_symbolic_build`.
        return _backend_trainer().maybe_symbolic_build(self, *args, **kwargs)

    def _explain_forward(self, inputs):
        """`policy_forward` in inference mode, compiled where `predict` is
        compiled and eager backends would be slow (JAX); what `explain`
        runs on each batch."""
        if not self.built:
            # The first call builds the model, which a compiled program cannot.
            return self.policy_forward(inputs, training=False)
        if getattr(self, "explain_function", None) is None:
            # Eager TensorFlow and torch run whole kernels; only JAX compiles
            # each operation apart, so only it brings a compiled pass.
            make = getattr(_backend_trainer(), "explain_function", None)
            self.explain_function = (
                make(self)
                if make
                else functools.partial(self.policy_forward, training=False)
            )
        return self.explain_function(inputs)

    def predict_step(self, *args):
        # The plumbing gives each data-parallel replica its own draws.
        return _backend_trainer().predict_step(self, *args)


# The policy gradient's settings, as `get_config` stores them: the mixin's
# keyword-only arguments.
POLICY_ARGUMENTS = tuple(
    name
    for name, parameter in inspect.signature(
        PolicyGradientMixin.__init__
    ).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)


def repeat_batch(structure, k):
    """Every tensor of `structure` repeated `k` times along the batch, copies adjacent."""
    return keras.tree.map_structure(
        lambda t: None if t is None else ops.repeat(t, k, axis=0), structure
    )


def _backend_trainer():
    backend = keras.backend.backend()
    try:
        return importlib.import_module(
            f"keras_attention_sampling.policy_gradient._{backend}"
        )
    except ModuleNotFoundError as error:
        raise NotImplementedError(
            f"keras_attention_sampling has no policy-gradient train_step for the "
            f"{backend!r} backend; use tensorflow, jax or torch."
        ) from error
