"""TFRecords (from generate_mesh_dataset.py) -> tf.data batches.

Batches are (images, targets): images float32 (B, 128, 128, 3), RGB pixel
values 0-255 (the network takes raw pixels: an int8 input with scale 1 is
then exact); targets float32 (B, 2N), the marks' (x, y) in the 128-pixel
model crop divided by 128.

The model crop is the centre of the stored crop; training draws a random
rotation, scale, shift and mirror around it, and photometric changes.
"""
import math

import keras_env  # noqa: F401  (must precede TensorFlow)
import numpy as np
import tensorflow as tf

from geometry import MODEL_SIZE, STORE_SIZE
from layouts import get_layout

AUTOTUNE = tf.data.AUTOTUNE
# Pixel offset of the model crop inside the stored crop (eval: exact centre).
MODEL_OFFSET = (STORE_SIZE - MODEL_SIZE) / 2
CROP_CENTER = (MODEL_SIZE - 1) / 2
STORE_CENTER = (STORE_SIZE - 1) / 2

# Augmentation ranges, chosen to cover what a face detector's box does to
# the crop (shifted, larger or smaller, tilted faces) and mirrored faces.
ROTATION_DEG = 30.0
SCALE_RANGE = (0.85, 1.15)
SHIFT_FRACTION = 0.08
# Occlusion (off unless asked for): with this probability a rectangle of
# random grey level, each side 15-45% of the crop, hides part of the face.
OCCLUSION = 0.0
OCCLUSION_SIDES = (0.15, 0.45)
# The calm phase's augmentation (landmark.py --calm_epochs): run v5's milder
# ranges, which still cover the face detector's box jitter, and no occlusion.
CALM = {"rotation_deg": 20.0, "scale_jitter": 0.12, "shift_fraction": 0.07, "occlusion": 0.0}

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "marks": tf.io.VarLenFeature(tf.float32),
    "num_marks": tf.io.FixedLenFeature([1], tf.int64),
    "layout": tf.io.FixedLenFeature([], tf.string),
    "attributes": tf.io.FixedLenFeature([6], tf.int64),
    "source": tf.io.FixedLenFeature([], tf.string),
    "transform": tf.io.FixedLenFeature([3], tf.float32),
}


def record_info(path):
    """(layout name, face count) of a record file, checking it is one."""
    if not tf.io.gfile.exists(str(path)):
        raise FileNotFoundError(f"record file not found: {path}")
    layouts, count = set(), 0
    try:
        for serialized in tf.data.TFRecordDataset(str(path)):
            example = tf.io.parse_single_example(serialized, {"layout": FEATURES["layout"]})
            layouts.add(example["layout"].numpy().decode())
            count += 1
    except tf.errors.DataLossError as err:
        raise ValueError(f"{path} is not a TFRecord file written by "
                         f"generate_mesh_dataset.py ({err.message})") from None
    if count == 0:
        raise ValueError(f"{path} holds no faces")
    if len(layouts) != 1:
        raise ValueError(f"{path} mixes mark layouts {sorted(layouts)}")
    return layouts.pop(), count


def parse(serialized, num_marks):
    """One serialized face -> dict of image (uint8 STORE_SIZE²×3), marks
    (N, 2) stored-crop pixels, transform, attributes, source."""
    example = tf.io.parse_single_example(serialized, FEATURES)
    image = tf.io.decode_jpeg(example["image"], channels=3)
    image = tf.ensure_shape(image, [STORE_SIZE, STORE_SIZE, 3])
    marks = tf.reshape(tf.sparse.to_dense(example["marks"]), [num_marks, 2])
    return {"image": image, "marks": marks, "transform": example["transform"],
            "attributes": example["attributes"], "source": example["source"]}


def _load(path, num_marks):
    return (tf.data.TFRecordDataset(str(path))
            .map(lambda s: parse(s, num_marks), num_parallel_calls=AUTOTUNE))


def to_targets(marks_in_crop):
    """(..., N, 2) model-crop pixels -> flat normalised targets (..., 2N)."""
    flat = tf.reshape(marks_in_crop, tf.concat([tf.shape(marks_in_crop)[:-2], [-1]], 0))
    return flat / MODEL_SIZE


def targets_to_store(targets):
    """Network output (F, 2N) -> (F, N, 2) marks in stored-crop pixels."""
    targets = np.asarray(targets, np.float64)
    return targets.reshape(len(targets), -1, 2) * MODEL_SIZE + MODEL_OFFSET


def affine_params(angle, scale, shift, flip):
    """Matrix A and vector b so that store_xy = A @ crop_xy + b.

    angle (radians), scale (>1 zooms in), shift (crop pixels), flip (bool).
    """
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    sign = tf.where(flip, -1.0, 1.0)
    a = tf.stack([[cos * sign, -sin], [sin * sign, cos]])
    center = tf.constant([CROP_CENTER, CROP_CENTER])
    b = tf.constant([STORE_CENTER, STORE_CENTER]) + shift - tf.linalg.matvec(a, center)
    return a, b


def warp(image, marks, a, b, mirror):
    """Resample `image` to the model crop given by (a, b); move marks with
    it, relabelled by `mirror` when the map is a reflection."""
    transform = tf.concat([a[0], b[:1], a[1], b[1:], [0.0, 0.0]], 0)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=transform[None],
        output_shape=[MODEL_SIZE, MODEL_SIZE], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    moved = tf.linalg.matvec(tf.linalg.inv(a), marks - b)
    reflected = tf.linalg.det(a) < 0
    moved = tf.cond(reflected, lambda: tf.gather(moved, mirror), lambda: moved)
    return warped, moved


def random_geometry(rotation_deg=ROTATION_DEG, scale_range=SCALE_RANGE,
                    shift_fraction=SHIFT_FRACTION):
    angle = tf.random.uniform([], -1.0, 1.0) * (rotation_deg * math.pi / 180)
    scale = tf.random.uniform([], *scale_range)
    shift = tf.random.uniform([2], -1.0, 1.0) * shift_fraction * MODEL_SIZE
    flip = tf.random.uniform([]) < 0.5
    return affine_params(angle, scale, shift, flip)


def _blur(image):
    kernel = tf.constant([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    kernel = tf.tile((kernel[:, None] * kernel[None, :])[:, :, None, None], [1, 1, 3, 1])
    return tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "SAME")[0]


def random_photometric(image):
    """Brightness, contrast, grayscale and blur on a float 0-255 image."""
    image = image + tf.random.uniform([], -32.0, 32.0)
    mean = tf.reduce_mean(image)
    image = (image - mean) * tf.random.uniform([], 0.6, 1.4) + mean
    gray = tf.repeat(tf.image.rgb_to_grayscale(image), 3, axis=-1)
    image = tf.where(tf.random.uniform([]) < 0.1, gray, image)
    image = tf.cond(tf.random.uniform([]) < 0.2, lambda: _blur(image), lambda: image)
    return tf.clip_by_value(image, 0.0, 255.0)


def random_occlusion(image, probability):
    """Hide a random rectangle of a (MODEL_SIZE, MODEL_SIZE, 3) image under a
    flat grey with `probability`; the marks keep their labels, so the network
    learns to place hidden marks from the rest of the face."""
    if isinstance(probability, (int, float)) and probability <= 0:
        return image
    size = tf.cast(tf.random.uniform([2], *OCCLUSION_SIDES) * MODEL_SIZE, tf.int32)
    top_left = tf.cast(tf.random.uniform([2]) * tf.cast(MODEL_SIZE - size + 1, tf.float32),
                       tf.int32)
    rows = tf.range(MODEL_SIZE)[:, None]
    cols = tf.range(MODEL_SIZE)[None, :]
    inside = ((rows >= top_left[0]) & (rows < top_left[0] + size[0])
              & (cols >= top_left[1]) & (cols < top_left[1] + size[1]))
    inside &= tf.random.uniform([]) < probability
    return tf.where(inside[:, :, None], tf.random.uniform([], 0.0, 255.0), image)


def center_crop(face):
    """The deterministic model crop: the centre of the stored crop."""
    offset = int(MODEL_OFFSET)
    image = tf.cast(face["image"][offset:offset + MODEL_SIZE, offset:offset + MODEL_SIZE],
                    tf.float32)
    return image, face["marks"] - MODEL_OFFSET


def train_dataset(path, batch_size, layout_name=None, shuffle=2048, rotation_deg=ROTATION_DEG,
                  scale_range=SCALE_RANGE, shift_fraction=SHIFT_FRACTION, occlusion=OCCLUSION,
                  calm=None):
    """Augmented, shuffled, batched (images, targets) for one epoch. `calm`:
    an optional boolean tf.Variable; faces augmented while it is True get
    the CALM ranges instead (it is read per face, so flip it between epochs)."""
    layout_name = layout_name or record_info(path)[0]
    layout = get_layout(layout_name)
    mirror = tf.constant(layout.mirror, tf.int32)

    def augment(face):
        rotation, scales, shift, hide = rotation_deg, scale_range, shift_fraction, occlusion
        if calm is not None:
            pick = lambda calm_value, value: tf.where(calm, calm_value, value)  # noqa: E731
            rotation = pick(CALM["rotation_deg"], float(rotation_deg))
            scales = (pick(1.0 - CALM["scale_jitter"], float(scale_range[0])),
                      pick(1.0 + CALM["scale_jitter"], float(scale_range[1])))
            shift = pick(CALM["shift_fraction"], float(shift_fraction))
            hide = pick(CALM["occlusion"], float(occlusion))
        a, b = random_geometry(rotation, scales, shift)
        image, marks = warp(face["image"], face["marks"], a, b, mirror)
        image = random_occlusion(random_photometric(image), hide)
        return image, to_targets(marks)

    return (_load(path, layout.num_marks).cache().shuffle(shuffle)
            .map(augment, num_parallel_calls=AUTOTUNE)
            .batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE))


def eval_dataset(path, batch_size, layout_name=None, with_info=False):
    """Deterministic batches of (images, targets[, info]); info holds each
    face's transform (stored crop -> image), attributes and source."""
    layout_name = layout_name or record_info(path)[0]
    layout = get_layout(layout_name)

    def prepare(face):
        image, marks = center_crop(face)
        if not with_info:
            return image, to_targets(marks)
        info = {k: face[k] for k in ("transform", "attributes", "source")}
        return image, to_targets(marks), info

    return (_load(path, layout.num_marks).map(prepare, num_parallel_calls=AUTOTUNE)
            .batch(batch_size).prefetch(AUTOTUNE))
