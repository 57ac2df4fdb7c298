"""``model.fit`` under a MirroredStrategy (one machine, several GPUs): the callback spreads the Gram
block pairs over the strategy's devices by itself (it uses ``model.distribute_strategy``).

    python examples/mirrored_fit.py run.h5

With no GPU, two logical CPU devices stand in for them (set before TensorFlow starts).
"""

import sys

import tensorflow as tf

gpus = tf.config.list_physical_devices("GPU")
if not gpus:  # no GPU here: two logical CPUs show the same placement
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(None if gpus else ["/cpu:0", "/cpu:1"])

import keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from keras_stiffness import ProbeSet, StiffnessCallback  # noqa: E402

digits = load_digits()
x, y = (digits.data / 16.0).astype("float32"), digits.target
probes = ProbeSet(x[:1200], y[:1200], per_class=20, x_val=x[1200:], y_val=y[1200:], val_per_class=10, seed=0)
with strategy.scope():
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
cb = StiffnessCallback(probes, sys.argv[1] if len(sys.argv) > 1 else "run.h5", overwrite=True, memory_budget="1GiB")
model.fit(x[:1200], y[:1200], batch_size=64, epochs=3, callbacks=[cb], verbose=2)
print(f"{len(cb.measurements)} measurements over {strategy.num_replicas_in_sync} devices")
