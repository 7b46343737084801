"""Keras callbacks of landmark.py's training: throughput, a weight
average, the calm phase's switch, and the state a resumed run needs."""
import os
import threading
import time
from pathlib import Path

import numpy as np

import keras_env  # noqa: F401  (must precede TensorFlow)
import tensorflow as tf

keras = tf.keras


class StoppedClock:
    """Time the process spent stopped (SIGSTOP, a suspended machine), seen
    as a gap between the ticks of a thread that sleeps `tick` seconds: the
    trainings here are paused while CI runs, and an epoch's time should not
    count the pause. Gaps up to `threshold` are a busy machine, not a stop."""

    def __init__(self, tick=1.0, threshold=10.0):
        self.tick, self.threshold = tick, threshold
        self.stopped = 0.0
        self.last = None
        self._done = threading.Event()
        self._lock = threading.Lock()  # the thread and the epoch's end both observe

    def observe(self, now):
        """Account for a tick at monotonic time `now`."""
        with self._lock:
            if self.last is not None and now - self.last > self.threshold:
                self.stopped += now - self.last - self.tick
            self.last = now

    def _run(self):
        while not self._done.wait(self.tick):
            self.observe(time.monotonic())

    def start(self):
        self.observe(time.monotonic())
        threading.Thread(target=self._run, daemon=True, name="stopped-clock").start()

    def stop(self):
        self._done.set()


class EpochTimer(keras.callbacks.Callback):
    """Logs training throughput (images/s) and the learning rate into the
    epoch's logs. An epoch's seconds leave out the time the process was
    stopped (StoppedClock), and the log says when there was any."""

    def __init__(self, images_per_epoch):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.clock = StoppedClock()

    def on_train_begin(self, logs=None):
        self.clock.start()

    def on_train_end(self, logs=None):
        self.clock.stop()

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.monotonic()
        self.stopped_at_start = self.clock.stopped

    def on_epoch_end(self, epoch, logs=None):
        # A tick the thread has not taken yet would hide a stop that just ended.
        now = time.monotonic()
        self.clock.observe(now)
        stopped = self.clock.stopped - self.stopped_at_start
        logs["epoch_seconds"] = now - self.start - stopped
        logs["images_per_s"] = self.images_per_epoch / logs["epoch_seconds"]
        logs["lr"] = float(self.model.optimizer.learning_rate)  # at the epoch's last step
        if stopped > 0:
            print(f"\nepoch {epoch + 1}: {stopped:.0f} s with the process stopped, "
                  f"left out of its epoch_seconds", flush=True)


class WeightAverage(keras.callbacks.Callback):
    """An exponential moving average of the weights (Polyak averaging), BN
    statistics included, updated after every training step. Validation, so
    the choice of the best checkpoint, and both checkpoints see the average;
    the optimizer keeps stepping the raw weights, swapped back in when the
    next epoch begins. After fit the model holds the average. The decay
    ramps up as min(decay, (1 + t) / (10 + t)) so that early averages do not
    drag the random initialisation along. Place it before the checkpoints."""

    def __init__(self, decay, resume=None):
        """`resume`: ResumeState.load's "average" and "step", to go on with
        an interrupted run's average rather than start one afresh."""
        super().__init__()
        self.decay = decay
        self.resume = resume

    def on_train_begin(self, logs=None):
        self.tracked = state_variables(self.model)
        self.average = [tf.Variable(w.read_value(), trainable=False) for w in self.tracked]
        self.raw = [tf.Variable(w.read_value(), trainable=False) for w in self.tracked]
        self.step = tf.Variable(0.0, trainable=False)
        self.swapped = False
        if self.resume and self.resume["average"] is not None:
            self._copy(self.resume["average"], self.average)
            self.step.assign(self.resume["step"])

    def raw_weights(self):
        """The weights the optimizer steps, whichever set the model holds now."""
        return self.raw if self.swapped else self.tracked

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


def state_variables(model):
    """The model's floating-point weights (BN statistics included), without
    the variables of metric trackers it holds as attributes
    (HeatmapRegularised's): Keras resets those every epoch, and restoring
    them made the logged training loss and nme running means."""
    trackers = {v.ref() for metric in model.metrics for v in metric.variables}
    return [w for w in model.weights if w.dtype.is_floating and w.ref() not in trackers]


class ResumeState(keras.callbacks.Callback):
    """Saves to `path` after every epoch what `--initial_epoch` needs to go
    on as if the run had not stopped: the raw weights (last.weights.h5
    holds the weight average's), the optimizer's moments and step count,
    and the weight average's state. Without the moments a resumed Adam
    started afresh, and run v30_all's validation NME jumped from 5.39% to
    6.97% and took 15 epochs to come back. The file is replaced atomically,
    so a run killed while saving leaves the previous epoch's."""

    def __init__(self, path, weight_average=None):
        super().__init__()
        self.path = Path(path)
        self.weight_average = weight_average

    def on_epoch_end(self, epoch, logs=None):
        average = self.weight_average
        raw = average.raw_weights() if average else state_variables(self.model)
        arrays = {"epochs_done": np.array(epoch + 1)}
        arrays.update({f"raw_{i}": w.numpy() for i, w in enumerate(raw)})
        arrays.update({f"optimizer_{i}": v.numpy()
                       for i, v in enumerate(self.model.optimizer.variables)})
        if average:
            arrays["step"] = average.step.numpy()
            arrays.update({f"average_{i}": w.numpy() for i, w in enumerate(average.average)})
        partial = self.path.with_name(self.path.name + ".partial")
        with open(partial, "wb") as f:
            np.savez(f, **arrays)
        os.replace(partial, self.path)

    @staticmethod
    def load(path):
        """{"epochs_done", "raw", "optimizer", "average", "step"} from `path`
        ("average" and "step" None when the run had no weight average)."""
        with np.load(path) as f:
            def listed(prefix):
                return [f[f"{prefix}_{i}"] for i in range(sum(k.startswith(prefix + "_")
                                                             for k in f.files))]
            has_average = "step" in f.files
            return {"epochs_done": int(f["epochs_done"]), "raw": listed("raw"),
                    "optimizer": listed("optimizer"),
                    "average": listed("average") if has_average else None,
                    "step": float(f["step"]) if has_average else None}

    @staticmethod
    def restore(state, model, path):
        """Put `state`'s raw weights and optimizer variables into the
        compiled `model`; ValueError naming `path` if they do not fit it."""
        targets = state_variables(model)
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)
        for name, values, variables in (("weights", state["raw"], targets),
                                        ("optimizer variables", state["optimizer"],
                                         optimizer.variables)):
            shapes = [tuple(v.shape) for v in variables]
            if [tuple(np.shape(x)) for x in values] != shapes:
                raise ValueError(f"{path}: its {len(values)} {name} do not fit this model's "
                                 f"{len(shapes)}; was it saved by another recipe?")
            for variable, value in zip(variables, values):
                variable.assign(value)
