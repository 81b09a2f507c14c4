from keras_attention_sampling.models.attention_sampling_model import (
    AttentionSamplingModel,
)
from keras_attention_sampling.models.policy_gradient_model import PolicyGradientModel
