"""The REINFORCE estimator: rewards, the attention's entropy and the surrogate.

Sampling a patch is not differentiable, so the attention network is trained
with the score-function (REINFORCE) estimator. For an image with classification
loss `L` whose patches were drawn at cells `s_1..s_N` from the attention `a`,

    grad E[L] = E[(L - b) grad log p(s_1..s_N)]

for any baseline `b` that does not depend on the draw. Minimising the
surrogate below with autodiff yields exactly that estimate (with the reward
`r` in place of `-L`), plus the gradient of the entropy regulariser.

These are pure `keras.ops` functions: every backend's `train_step` calls the
same ones (through `PolicyGradientMixin.policy_step`), so the maths is written
once. The log-probability of a draw comes from the sampler that drew it
(`PatchSampler.draw_log_prob`), so it always matches how the cells were
sampled.
"""

from keras import ops

REWARDS = ("bounded", "negative_loss")
BASELINES = ("mean", "leave_one_out", "moving_average", "none")


def reward_from_loss(per_image_loss, reward="bounded"):
    """Reward of each image from its classification loss.

    Args:
        per_image_loss: float `(B,)` loss of each image.
        reward: `"bounded"` gives `exp(-L)` (the probability of the true
            class for cross-entropy, in `(0, 1]`), `"negative_loss"` gives
            `-L`.

    Returns:
        float32 `(B,)` rewards.

    Examples:
        >>> from keras import ops
        >>> r = reward_from_loss(ops.convert_to_tensor([0.0, 1.0]), "negative_loss")
        >>> [float(v) for v in ops.convert_to_numpy(r)]
        [-0.0, -1.0]
    """
    per_image_loss = ops.cast(per_image_loss, "float32")
    if reward == "bounded":
        return ops.exp(-per_image_loss)
    if reward == "negative_loss":
        return -per_image_loss
    raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}.")


def attention_entropy(log_probs):
    """Shannon entropy `-sum a log a` of each attention map, in nats.

    Args:
        log_probs: float32 `(B, ...)` log-probabilities of each map.

    Returns:
        float32 `(B,)` entropies.
    """
    batch = ops.shape(log_probs)[0]
    log_probs = ops.reshape(ops.cast(log_probs, "float32"), (batch, -1))
    return -ops.sum(ops.exp(log_probs) * log_probs, axis=-1)


def policy_surrogate(
    draw_log_probs, rewards, baseline, log_probs=None, entropy_weight=0.0, entropy=None
):
    """Per-image surrogate loss whose gradient is the REINFORCE estimate.

    `-(r - b) * sum_n log p(s_n | s_<n) - entropy_weight * H`. The advantage
    `r - b` is a constant to autodiff. `H` is the attention's entropy, so
    minimising the surrogate with a positive weight keeps the attention
    spread out (exploration); it is the reference notebook's regulariser.

    Args:
        draw_log_probs: float32 `(B, N)` log-probability of each draw given
            the earlier ones (see `PatchSampler.draw_log_prob`).
        rewards: float32 `(B,)`.
        baseline: float32 scalar or `(B,)`.
        log_probs: float32 `(B, h, w)` or `(B, K)` full attention log-probs,
            whose entropy is `H`.
        entropy_weight: the regulariser's weight `lambda`.
        entropy: `(B,)` entropies to use instead of `log_probs`' (an
            `AutoregressiveSampler` gives the mean entropy of its maps).

    Returns:
        float32 `(B,)` surrogate losses; average them over the batch.
    """
    if entropy is None:
        entropy = attention_entropy(log_probs)
    advantage = ops.stop_gradient(ops.cast(rewards, "float32") - baseline)
    score = ops.sum(draw_log_probs, axis=-1)
    return -advantage * score - entropy_weight * entropy
