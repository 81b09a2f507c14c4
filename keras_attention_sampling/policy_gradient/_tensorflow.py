"""Per-backend gradient plumbing: differentiate `policy_step`, apply the gradients."""

import keras
import tensorflow as tf


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape() as tape:
        loss = model.policy_step(x, y, sample_weight, training=True)
        scaled_loss = model.optimizer.scale_loss(loss)
    variables = model.trainable_variables
    gradients = tape.gradient(scaled_loss, variables)
    model.optimizer.apply(gradients, variables)
    return model.get_metrics_result()


def test_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    model.policy_step(x, y, sample_weight, training=False)
    return model.get_metrics_result()
