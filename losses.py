"""Training losses for landmark marks, and the integral head's heatmap
regulariser. All take flat (B, 2N) targets: marks as fractions of the crop."""
import keras_env  # noqa: F401  (must precede TensorFlow)
import numpy as np
import tensorflow as tf

import geometry
import network

keras = tf.keras



def wing_loss(width=10.0, curvature=2.0, crop_size=geometry.MODEL_SIZE):
    """Wing loss (Feng et al. 2018) on errors in model-crop pixels."""
    c = width - width * np.log(1.0 + width / curvature)

    def loss(y_true, y_pred):
        error = tf.abs(y_true - y_pred) * crop_size
        wing = tf.where(error < width, width * tf.math.log1p(error / curvature), error - c)
        return tf.reduce_mean(wing, axis=-1)
    return loss


def l1_loss(y_true, y_pred):
    return tf.reduce_mean(tf.abs(y_true - y_pred), axis=-1) * geometry.MODEL_SIZE


def mse_loss(y_true, y_pred):
    return tf.reduce_mean(tf.square(y_true - y_pred), axis=-1) * geometry.MODEL_SIZE ** 2


LOSSES = {"wing": wing_loss(), "l1": l1_loss, "mse": mse_loss}
# 'wing_nme': Wing loss with each face weighted as NME weighs it (nme_weighted).
LOSS_NAMES = sorted(LOSSES) + ["wing_nme"]
# Eye-corner distances below this fraction of the crop (near-profile faces)
# are counted as this, so no single face can swamp a batch.
MIN_EYE_DISTANCE = 0.1


def _eye_distance(targets, layout):
    """(B,) outer-eye-corner distances of flat (B, 2N) targets, in their units."""
    marks = tf.reshape(targets, [-1, layout.num_marks, 2])
    left, right = layout.eye_corners
    return tf.norm(marks[:, left] - marks[:, right], axis=-1)


def nme_weighted(loss_fn, layout):
    """`loss_fn` with each face's loss divided by its outer-eye-corner
    distance, as NME divides its error, and rescaled so a batch's weights
    average 1. Plain losses count a pixel of error the same on every face;
    NME counts it more on faces whose eye corners are close (turned heads)."""
    def loss(y_true, y_pred):
        inverse = 1.0 / tf.maximum(_eye_distance(y_true, layout), MIN_EYE_DISTANCE)
        return loss_fn(y_true, y_pred) * inverse / tf.reduce_mean(inverse)
    return loss


def make_loss(name, layout):
    """The training loss called `name` (LOSS_NAMES) for marks in `layout`."""
    if name == "wing_nme":
        return nme_weighted(LOSSES["wing"], layout)
    return LOSSES[name]


def cell_targets(targets, side, sigma):
    """(B, N, side²) target distributions over the integral head's cells: a
    Gaussian of `sigma` cells around each mark of the flat (B, 2N) targets
    (fractions of the crop), normalised over the cells (in
    geometry.cell_centres' row-major order). The Gaussian is separable, so
    it is built as the outer product of its normalised x and y profiles."""
    centres = tf.constant(geometry.cell_centres(side)[:side, 0])         # x of one row
    marks = tf.reshape(tf.cast(targets, tf.float32), [tf.shape(targets)[0], -1, 2])

    def profile(coordinate):                                             # (B, N, side)
        offsets = centres[None, None, :] - coordinate[:, :, None]
        return tf.nn.softmax(-tf.square(offsets) * side ** 2 / (2.0 * sigma ** 2), axis=-1)
    grid = profile(marks[..., 1])[..., :, None] * profile(marks[..., 0])[..., None, :]
    return tf.reshape(grid, [tf.shape(targets)[0], -1, side * side])


def js_divergence(p, q, axis=-1, log_p=None):
    """Jensen-Shannon divergence (nats, 0..ln 2) between distributions along
    `axis`; `log_p`, if given, is log(p) (a log-softmax is exact where p
    underflows)."""
    log_p = tf.math.log(p + 1e-12) if log_p is None else log_p
    log_m = tf.math.log(0.5 * (p + q) + 1e-12)
    return 0.5 * tf.reduce_sum(p * (log_p - log_m) + q * (tf.math.log(q + 1e-12) - log_m),
                               axis=axis)


class HeatmapRegularised(keras.Model):
    """Training view of an integral-head model with DSNT's regulariser
    (Nibali et al. 2018): the loss is the marks loss plus `weight` × the
    Jensen-Shannon divergence between each mark's softmax over the cells and
    a Gaussian of `sigma` cells around its target, averaged over the marks.
    The marks loss alone only places each map's mean and leaves the maps
    diffuse (run v10's spread over about 3 cells); this pulls them towards
    one compact peak at the mark.

    It shares the model's layers and variables, so its checkpoints are the
    model's. Compile it with the optimizer only: `marks_loss` and
    `marks_metric` (per-face functions, as make_loss and nme_metric give)
    are reported as `loss` (regulariser included) and `nme`, as a plain
    model compiled with them would be."""

    def __init__(self, model, weight, sigma, marks_loss, marks_metric):
        scores = network.scores_model(model)
        if scores is model:
            raise ValueError("--heatmap_loss needs an integral-head model (--head integral)")
        # The second output is this model's score maps, marks first:
        # (B, N, cells). (A QAT model shares the float model's tail layers,
        # whose .output is the float graph's.) The loss takes their softmax
        # along the last axis, where reductions are cheapest.
        _, side, _, num_marks = scores.output.shape
        per_mark = keras.layers.Permute((2, 1), dtype="float32")(
            keras.layers.Reshape((side * side, num_marks), dtype="float32")(scores.output))
        super().__init__(model.input, [model.output, per_mark], name=model.name)
        self.heatmap_weight, self.heatmap_sigma = float(weight), float(sigma)
        self.cells_per_side = side
        self.marks_loss, self.marks_metric = marks_loss, marks_metric
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.nme_tracker = keras.metrics.Mean(name="nme")

    @property
    def metrics(self):
        return [self.loss_tracker, self.nme_tracker]

    def heatmap_loss(self, y, scores):
        """Mean JS divergence of the (B, N, cells) scores' softmax from the targets."""
        log_p = tf.nn.log_softmax(scores, axis=-1)
        target = cell_targets(y, self.cells_per_side, self.heatmap_sigma)
        return tf.reduce_mean(js_divergence(tf.exp(log_p), target, log_p=log_p))

    def total_loss(self, y, outputs):
        marks, scores = outputs
        return (tf.reduce_mean(self.marks_loss(y, marks)) + sum(self.losses)
                + self.heatmap_weight * self.heatmap_loss(y, scores))

    def _report(self, y, marks, loss):
        self.loss_tracker.update_state(loss, sample_weight=tf.shape(marks)[0])
        self.nme_tracker.update_state(self.marks_metric(y, marks))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            outputs = self(x, training=True)
            loss = self.total_loss(y, outputs)
            # Gradients are summed over replicas (MirroredStrategy).
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.minimize(scaled, self.trainable_variables, tape=tape)
        return self._report(y, outputs[0], loss)

    def test_step(self, data):
        x, y = data
        outputs = self(x, training=False)
        return self._report(y, outputs[0], self.total_loss(y, outputs))


def nme_metric(layout):
    """Keras metric: NME of each face (scale-free, so crop units do)."""
    def nme(y_true, y_pred):
        error = tf.norm(tf.reshape(y_pred - y_true, [-1, layout.num_marks, 2]), axis=-1)
        return tf.reduce_mean(error, axis=-1) / _eye_distance(y_true, layout)
    return nme
