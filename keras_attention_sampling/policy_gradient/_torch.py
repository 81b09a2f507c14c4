"""Per-backend gradient plumbing: differentiate `policy_step`, apply the gradients."""

import keras
import torch


def _refuse_data_parallel():
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    if torch.distributed.get_world_size() > 1:
        raise RuntimeError(
            "keras_attention_sampling: data-parallel training is not available on "
            "the PyTorch backend. Keras 3.15 has no keras.distribution for torch, "
            "and a Keras model wrapped in torch's DistributedDataParallel cannot "
            "`fit`. Train on several devices or hosts with the JAX backend "
            "(keras.distribution.DataParallel) or the TensorFlow backend "
            "(tf.distribute.MirroredStrategy or MultiWorkerMirroredStrategy); a "
            "model saved there loads and predicts here."
        )


def train_step(model, data):
    _refuse_data_parallel()
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


def predict_step(model, data):
    return keras.Model.predict_step(model, data)
