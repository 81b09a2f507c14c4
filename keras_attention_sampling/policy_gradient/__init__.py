"""How the attention network learns: the policy gradient, in one place.

Sampling a patch is not differentiable, so the attention network is trained
by the score-function (REINFORCE) estimator, while the feature network is
trained by the classification loss. The pieces, in the order a training step
uses them:

* `PatchSampler.draw_log_prob` (in `kas.layers`): the log-probability of the
  cells a sampler drew, under its own sampling scheme;
* `reinforce`: `reward_from_loss`, `attention_entropy` and
  `policy_surrogate`, pure `keras.ops` functions;
* `RewardBaseline`: the baseline subtracted from the rewards;
* `PolicyGradientMixin` (`trainer.py`): the settings, the one training step
  (`policy_step`), the routing of each variable to its optimiser and the
  choice of backend; `_tensorflow.py`, `_jax.py` and `_torch.py` hold only
  each backend's gradient plumbing.
"""

from keras_attention_sampling.policy_gradient.reinforce import (
    BASELINES,
    REWARDS,
    attention_entropy,
    policy_surrogate,
    reward_from_loss,
)
from keras_attention_sampling.policy_gradient.reward_baseline import RewardBaseline
from keras_attention_sampling.policy_gradient.trainer import (
    POLICY_ARGUMENTS,
    PolicyGradientMixin,
    default_attention_optimizer,
    reference_settings,
)

__all__ = [
    "BASELINES",
    "POLICY_ARGUMENTS",
    "REWARDS",
    "PolicyGradientMixin",
    "RewardBaseline",
    "attention_entropy",
    "default_attention_optimizer",
    "policy_surrogate",
    "reference_settings",
    "reward_from_loss",
]
