"""A custom training loop on a MultiWorkerMirroredStrategy cluster, measuring stiffness through
``keras.callbacks.CallbackList`` (Keras 3's ``model.fit`` does not run under this strategy yet:
keras-team/keras#20585).

Every worker runs this same file with its own ``TF_CONFIG``; each forms its share of the Gram blocks,
the sums are all-reduced, every worker logs the same scalars, and only the chief writes the run file.
On one machine, two workers on loopback ports::

    PORTS='["127.0.0.1:23456", "127.0.0.1:23457"]'
    TF_CONFIG="{\\"cluster\\": {\\"worker\\": $PORTS}, \\"task\\": {\\"type\\": \\"worker\\", \\"index\\": 0}}" \\
        python examples/custom_loop_multiworker.py run.h5 &
    TF_CONFIG="{\\"cluster\\": {\\"worker\\": $PORTS}, \\"task\\": {\\"type\\": \\"worker\\", \\"index\\": 1}}" \\
        python examples/custom_loop_multiworker.py run.h5
    wait

Without ``TF_CONFIG`` it runs as one worker.
"""

import sys

import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()  # first of all: TensorFlow sets up collectives at startup

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from keras_stiffness import ProbeSet, StiffnessCallback  # noqa: E402

path = sys.argv[1] if len(sys.argv) > 1 else "run.h5"
digits = load_digits()
x = (digits.data / 16.0).astype("float32")
y = digits.target
probes = ProbeSet(x[:1200], y[:1200], per_class=20, x_val=x[1200:], y_val=y[1200:], val_per_class=10, seed=0)

keras.utils.set_random_seed(0)  # the same initial weights on every worker
with strategy.scope():
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")

batch = 64
loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction="sum")


@tf.function
def train_step(xb, yb):
    def step(xb, yb):
        with tf.GradientTape() as tape:  # each replica's loss is its share of the global mean
            loss = loss_fn(yb, model(xb, training=True)) / (batch * strategy.num_replicas_in_sync)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return strategy.reduce("SUM", strategy.run(step, args=(xb, yb)), axis=None)


cb = StiffnessCallback(probes, path, strategy=strategy, overwrite=True, verbose=1)
callbacks = keras.callbacks.CallbackList([cb], model=model)
callbacks.on_train_begin()
rng = np.random.default_rng(0)  # the same batches on every worker
for epoch in range(3):
    callbacks.on_epoch_begin(epoch)
    order = rng.permutation(1200)
    for lo in range(0, 1200 - batch + 1, batch):
        idx = order[lo : lo + batch]
        loss = float(train_step(tf.constant(x[idx]), tf.constant(y[idx])))
    callbacks.on_epoch_end(epoch, {"loss": loss})
    scalars = cb.last_scalars  # what it put in the logs: the same on every worker
    print(f"epoch {epoch + 1}: loss {loss:.3f}, within-class cos {scalars['stiffness_within_cos']:.3f}")
callbacks.on_train_end()
