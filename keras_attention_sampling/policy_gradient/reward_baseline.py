import keras
from keras import ops

from keras_attention_sampling.policy_gradient.reinforce import BASELINES


@keras.saving.register_keras_serializable(package="keras_attention_sampling")
class RewardBaseline(keras.layers.Layer):
    """The baseline subtracted from the rewards of a batch.

    A baseline lowers the variance of the REINFORCE estimate without biasing
    it, as long as it does not depend on the draw it is subtracted from.

    Args:
        mode: `"mean"`, the batch's mean reward (the reference notebook's);
            `"leave_one_out"`, for each draw the mean reward of the other
            draws of the same image (needs `samples_per_image > 1`; it
            removes how hard the image is from the reward, leaving only how
            well the draw chose its patches);
            `"moving_average"`, a bias-corrected exponential moving average of
            past batch means; or `"none"`.
        momentum: decay of the moving average.
        **kwargs: base layer arguments.

    Call arguments:
        - **rewards**: float32 `(B,)`.
        - **training**: update the moving average (only in training).
        - **samples_per_image**: number `k` of adjacent draws of each image
          in `rewards`, for `"leave_one_out"`.
        - **batch_mean**: the mean reward of the whole batch, when `rewards`
          is one replica's shard of it (data-parallel training passes the
          global mean, so that the baseline is the one a single device
          would use). Default: the mean of `rewards`.

    Returns:
        float32 baseline: a scalar, or `(B,)` for `"leave_one_out"`.

    Examples:
        >>> import numpy as np
        >>> float(RewardBaseline("mean")(np.array([0.2, 0.4], "float32")))
        0.3...
    """

    def __init__(self, mode="mean", momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode
        self.momentum = momentum
        self.moving_reward = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            name="moving_reward",
            dtype="float32",
        )
        self.updates = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            name="updates",
            dtype="float32",
        )
        # Its state has no input shape to wait for. Left unbuilt, it kept the
        # model's `_flatten_layers` unbuilt forever, and Keras' JAX `predict`
        # then ran one eager forward pass on every call to build it.
        self.built = True

    def __setattr__(self, name, value):
        # One check for the constructor and for later writes (the model's
        # `baseline` and `baseline_momentum` properties write here).
        if name == "mode" and value not in BASELINES:
            raise ValueError(
                f"RewardBaseline: mode must be one of {BASELINES}. Received: "
                f"mode={value!r}"
            )
        if name == "momentum" and not 0.0 <= value < 1.0:
            raise ValueError(
                f"RewardBaseline: momentum must be in [0, 1). Received: "
                f"momentum={value!r}"
            )
        super().__setattr__(name, value)

    def call(self, rewards, training=None, samples_per_image=1, batch_mean=None):
        rewards = ops.cast(rewards, "float32")
        if batch_mean is None:
            batch_mean = ops.mean(rewards)
        if self.mode == "none":
            return ops.zeros((), "float32")
        if self.mode == "mean":
            return batch_mean
        if self.mode == "leave_one_out":
            k = int(samples_per_image)
            if k < 2:
                # One draw per image (e.g. in evaluation): nothing to leave
                # out, the batch mean is the closest unbiased choice.
                return batch_mean
            per_image = ops.reshape(rewards, (-1, k))
            others = (ops.sum(per_image, axis=1, keepdims=True) - per_image) / (k - 1)
            return ops.stop_gradient(ops.reshape(others, (-1,)))
        # Adam-style bias correction: an average started at 0 would otherwise
        # under-estimate the reward for the first ~1 / (1 - momentum) steps.
        correction = 1.0 - ops.power(self.momentum, self.updates)
        baseline = ops.where(
            self.updates > 0,
            self.moving_reward / ops.maximum(correction, 1e-12),
            batch_mean,
        )
        if training:
            self.moving_reward.assign(
                self.momentum * self.moving_reward
                + (1.0 - self.momentum) * ops.stop_gradient(batch_mean)
            )
            self.updates.assign(self.updates + 1.0)
        return ops.stop_gradient(baseline)

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "momentum": self.momentum})
        return config
