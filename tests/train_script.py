"""A training process for the crash and concurrent-read tests: fits with a StiffnessCallback and
prints "measured K" (flushed) after each measurement, then optionally sleeps between epochs."""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_stiffness import ProbeSet, StiffnessCallback  # noqa: E402


class Announce(keras.callbacks.Callback):
    def __init__(self, cb, pause):
        super().__init__()
        self.cb, self.pause = cb, pause

    def _say(self):
        print(f"measured {len(self.cb.measurements)}", flush=True)
        time.sleep(self.pause)

    def on_train_begin(self, logs=None):
        self._say()

    def on_epoch_end(self, epoch, logs=None):
        self._say()


def main(path: str, epochs: int, pause: float) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(200) % 4
    x = (rng.normal(size=(4, 10))[y] + rng.normal(size=(200, 10))).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4, activation="softmax")]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    cb = StiffnessCallback(ProbeSet(x, y, per_class=5), path, bins=5, min_count=1)
    model.fit(x, y, epochs=epochs, batch_size=50, verbose=0, callbacks=[cb, Announce(cb, pause)])
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
