"""Per-backend gradient plumbing: differentiate `policy_step`, apply the gradients.

Under a `tf.distribute` strategy (`MirroredStrategy`,
`MultiWorkerMirroredStrategy`) every replica runs the step on its shard of
the global batch, and Keras sums the replicas' gradients. So each replica's
loss counts 1 / replicas, its draws are salted with its replica id (the
replicas share one seed state), and the baseline's batch mean is taken over
all replicas: one step then moves the weights as one device would on the
whole batch.
"""

import contextlib

import keras
import tensorflow as tf

from keras_attention_sampling import sampling
from keras_attention_sampling.policy_gradient import trainer


@contextlib.contextmanager
def _replica_scope():
    """Yields the number of replicas the step runs on, set up as above."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        yield 1
        return

    def mean(values):
        values = tf.cast(values, "float32")
        total = context.all_reduce("sum", tf.reduce_sum(values))
        count = context.all_reduce("sum", tf.cast(tf.size(values), "float32"))
        return total / count

    replica = context.replica_id_in_sync_group
    with sampling.seed_salt(replica), trainer.global_mean(mean):
        yield context.num_replicas_in_sync


def maybe_symbolic_build(model, iterator=None, data_batch=None):
    """Keras' build before `fit` under a strategy, from one replica's shard.

    Keras 3.15 reduces the first distributed batch across replicas only to
    learn its shapes, and that reduction fails under
    `MultiWorkerMirroredStrategy` (keras-team/keras#20585). One replica's
    shard has the same shapes but the batch axis, which the build ignores.
    """
    strategy = model._distribute_strategy
    if strategy is None:
        return  # Keras then builds when it traces the step.
    if iterator is not None:
        for _, _, it in iterator:
            data_batch = keras.tree.map_structure(
                lambda v: (
                    v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
                ),
                next(it),
            )
            break
    with strategy.scope():
        model._symbolic_build(data_batch=data_batch)


def _logs(model):
    """The metrics, averaged over the replicas (each holds its shard's)."""
    logs = model.get_metrics_result()
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return logs
    logs = {name: context.all_reduce("mean", value) for name, value in logs.items()}
    extended = tf.distribute.get_strategy().extended
    if getattr(extended, "_in_multi_worker_mode", lambda: False)():
        # Keras then reduces the logs with a mean over axis 0, which a scalar
        # lacks (keras-team/keras#20585); every replica's copy is the same.
        logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape() as tape, _replica_scope() as replicas:
        loss = model.policy_step(x, y, sample_weight, training=True)
        scaled_loss = model.optimizer.scale_loss(loss / replicas)
    variables = model.trainable_variables
    gradients = tape.gradient(scaled_loss, variables)
    model.optimizer.apply(gradients, variables)
    return _logs(model)


def test_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with _replica_scope():
        model.policy_step(x, y, sample_weight, training=False)
    return _logs(model)


def predict_step(model, data):
    with _replica_scope():
        return keras.Model.predict_step(model, data)
