"""Keras callbacks of landmark.py's training: throughput, a weight
average, and the calm phase's switch."""
import time

import keras_env  # noqa: F401  (must precede TensorFlow)
import tensorflow as tf

keras = tf.keras


class EpochTimer(keras.callbacks.Callback):
    """Logs training throughput (images/s) and the learning rate into the
    epoch's logs."""

    def __init__(self, images_per_epoch):
        super().__init__()
        self.images_per_epoch = images_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["epoch_seconds"] = time.perf_counter() - self.start
        logs["images_per_s"] = self.images_per_epoch / logs["epoch_seconds"]
        logs["lr"] = float(self.model.optimizer.learning_rate)  # at the epoch's last step


class WeightAverage(keras.callbacks.Callback):
    """An exponential moving average of the weights (Polyak averaging), BN
    statistics included, updated after every training step. Validation, so
    the choice of the best checkpoint, and both checkpoints see the average;
    the optimizer keeps stepping the raw weights, swapped back in when the
    next epoch begins. After fit the model holds the average. The decay
    ramps up as min(decay, (1 + t) / (10 + t)) so that early averages do not
    drag the random initialisation along. Place it before the checkpoints."""

    def __init__(self, decay):
        super().__init__()
        self.decay = decay

    def on_train_begin(self, logs=None):
        # Not the variables of metric trackers a model holds as attributes
        # (HeatmapRegularised's): Keras resets those every epoch, and restoring
        # them made the logged training loss and nme running means.
        trackers = {v.ref() for metric in self.model.metrics for v in metric.variables}
        self.tracked = [w for w in self.model.weights
                        if w.dtype.is_floating and w.ref() not in trackers]
        self.average = [tf.Variable(w.read_value(), trainable=False) for w in self.tracked]
        self.raw = [tf.Variable(w.read_value(), trainable=False) for w in self.tracked]
        self.step = tf.Variable(0.0, trainable=False)
        self.swapped = False

    @tf.function
    def _update(self):
        self.step.assign_add(1.0)
        decay = tf.minimum(self.decay, (1.0 + self.step) / (10.0 + self.step))
        for average, weight in zip(self.average, self.tracked):
            average.assign(decay * average + (1.0 - decay) * weight)

    @staticmethod
    def _copy(sources, targets):
        for source, target in zip(sources, targets):
            target.assign(source)

    def _swap_in_average(self):
        if not self.swapped:
            self._copy(self.tracked, self.raw)
            self._copy(self.average, self.tracked)
            self.swapped = True

    def on_train_batch_end(self, batch, logs=None):
        self._update()

    def on_test_begin(self, logs=None):
        self._swap_in_average()

    def on_epoch_begin(self, epoch, logs=None):
        if self.swapped:
            self._copy(self.raw, self.tracked)
            self.swapped = False

    def on_train_end(self, logs=None):
        self._swap_in_average()


class CalmAugmentation(keras.callbacks.Callback):
    """Sets `calm` (the variable dataset.train_dataset reads) from epoch
    `first` on: the last epochs train on dataset.CALM's milder augmentation,
    closer to the centred, upright crops the model is scored on. The first
    batches of an epoch may have been prepared before the switch."""

    def __init__(self, calm, first):
        super().__init__()
        self.calm, self.first = calm, first

    def on_epoch_begin(self, epoch, logs=None):
        self.calm.assign(epoch >= self.first)
