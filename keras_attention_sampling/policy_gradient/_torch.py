"""Per-backend gradient plumbing: differentiate `policy_step`, apply the gradients."""

import keras
import torch


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    model.zero_grad()
    loss = model.policy_step(x, y, sample_weight, training=True)
    model.optimizer.scale_loss(loss).backward()
    variables = model.trainable_variables
    gradients = [variable.value.grad for variable in variables]
    with torch.no_grad():
        model.optimizer.apply(gradients, variables)
    return model.get_metrics_result()


def test_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with torch.no_grad():
        model.policy_step(x, y, sample_weight, training=False)
    return model.get_metrics_result()
