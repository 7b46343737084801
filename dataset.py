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
from layouts import LAYOUTS, get_layout

AUTOTUNE = tf.data.AUTOTUNE
LAYOUT_NAMES = set(LAYOUTS)
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
# With wild augmentation the calm phase keeps it at half strength ("wild" is
# a factor), and a wider calm rotation may be asked for (train_dataset).
CALM = {"rotation_deg": 20.0, "scale_jitter": 0.12, "shift_fraction": 0.07, "occlusion": 0.0,
        "wild": 0.5}

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
    except (tf.errors.InvalidArgumentError, UnicodeDecodeError):
        raise ValueError(f"{path} is a TFRecord file but not of faces written by "
                         f"generate_mesh_dataset.py (no readable 'layout' field)") from None
    if any(name not in LAYOUT_NAMES for name in layouts):
        raise ValueError(f"{path}: unknown mark layout {sorted(layouts - LAYOUT_NAMES)}")
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


def source_photos(path):
    """Each face of a record file's source photo: yields (source path, BGR
    photo or None, why it could not be read, marks (N, 2) in its pixels)."""
    import geometry
    from images import read_image

    for face in _load(path, get_layout(record_info(path)[0]).num_marks):
        source = face["source"].numpy().decode()
        photo, reason = read_image(source)
        yield source, photo, reason, geometry.to_image(face["marks"].numpy(),
                                                       face["transform"].numpy())


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


def yaw_warp(squash, perspective):
    """3x3 crop -> crop homography about the crop centre that looks like a
    head turning: the face narrows by `squash` (<= 1) and one side recedes
    (`perspective`, 1/pixel; its sign picks the side)."""
    c = CROP_CENTER
    shift_in = tf.constant([[1.0, 0.0, -c], [0.0, 1.0, -c], [0.0, 0.0, 1.0]])
    shift_out = tf.constant([[1.0, 0.0, c], [0.0, 1.0, c], [0.0, 0.0, 1.0]])
    one, zero = tf.constant(1.0), tf.constant(0.0)
    core = tf.stack([tf.stack([1.0 / squash, zero, zero]), tf.stack([zero, one, zero]),
                     tf.stack([perspective, zero, one])])
    return shift_out @ core @ shift_in


def warp(image, marks, a, b, mirror, homography=None):
    """Resample `image` to the model crop given by (a, b) (and an optional
    crop -> crop `homography` before it); move marks with it, relabelled by
    `mirror` when the map is a reflection."""
    h = tf.concat([tf.concat([a, b[:, None]], 1), [[0.0, 0.0, 1.0]]], 0)
    if homography is not None:
        h = h @ homography
    h = h / h[2, 2]
    transform = tf.concat([h[0], h[1], h[2, :2]], 0)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=transform[None],
        output_shape=[MODEL_SIZE, MODEL_SIZE], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    points = tf.concat([marks, tf.ones_like(marks[:, :1])], 1)
    moved = tf.linalg.matvec(tf.linalg.inv(h), points)
    moved = moved[:, :2] / moved[:, 2:]
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


# "In the wild" augmentation (off unless asked for: train_dataset(wild=P)):
# each condition is drawn with its probability here times P. Ranges follow
# what faces in the wild show: faces 25-60 px wide, JPEG quality 15-60,
# motion and defocus blur, strong light, textured or hand-like occluders
# over 15-45% of the face, and a yaw-like perspective squash.
WILD = {"pose": 0.3, "light": 0.3, "occluder": 0.3, "low_res": 0.2, "blur": 0.25,
        "noise": 0.2, "jpeg": 0.25}
WILD_FACE_WIDTH = (25.0, 60.0)       # px, after downscaling (face ~98 px in the crop)
WILD_JPEG_QUALITY = (15, 60)
WILD_SQUASH = (0.65, 1.0)
WILD_PERSPECTIVE = 0.004             # 1/px, either side
WILD_OCCLUDER_AREA = (0.15, 0.45)    # share of the face's area (~(128/1.3)^2 px)
FACE_SIDE = MODEL_SIZE / 1.3
SKIN_RGB = ((224.0, 172.0, 140.0), (90.0, 56.0, 40.0))   # light and dark skin ends


def _maybe(probability, apply, image):
    return tf.cond(tf.random.uniform([]) < probability, lambda: apply(image), lambda: image)


def random_pose_warp():
    """A yaw_warp homography with random squash and receding side."""
    squash = tf.random.uniform([], *WILD_SQUASH)
    perspective = tf.random.uniform([], -WILD_PERSPECTIVE, WILD_PERSPECTIVE)
    return yaw_warp(squash, perspective)


def _grid():
    rows = tf.range(MODEL_SIZE, dtype=tf.float32)[:, None]
    cols = tf.range(MODEL_SIZE, dtype=tf.float32)[None, :]
    return tf.broadcast_to(cols, [MODEL_SIZE] * 2), tf.broadcast_to(rows, [MODEL_SIZE] * 2)


def random_light(image):
    """Gamma, a colour cast and a shadow falling across part of the face."""
    gamma = tf.exp(tf.random.uniform([], -0.9, 0.9))            # 0.4 .. 2.5
    image = 255.0 * tf.pow(image / 255.0, gamma)
    image = image * tf.random.uniform([3], 0.7, 1.3)
    x, y = _grid()
    angle = tf.random.uniform([], 0.0, 2 * math.pi)
    along = (x - CROP_CENTER) * tf.cos(angle) + (y - CROP_CENTER) * tf.sin(angle)
    edge = tf.random.uniform([], -0.2, 0.2) * MODEL_SIZE
    softness = tf.random.uniform([], 2.0, 15.0)
    depth = tf.random.uniform([], 0.4, 0.85)
    shade = 1.0 - depth * tf.sigmoid((along - edge) / softness)
    return tf.clip_by_value(image * shade[:, :, None], 0.0, 255.0)


def _occluder_mask(area):
    """A rectangle, an ellipse or a hand (palm and four fingers) of about
    `area` pixels somewhere over the crop's central face."""
    x, y = _grid()
    centre = tf.random.uniform([2], 0.2, 0.8) * MODEL_SIZE
    angle = tf.random.uniform([], 0.0, math.pi)
    u = (x - centre[0]) * tf.cos(angle) + (y - centre[1]) * tf.sin(angle)
    v = -(x - centre[0]) * tf.sin(angle) + (y - centre[1]) * tf.cos(angle)
    aspect = tf.random.uniform([], 0.5, 2.0)
    half_w, half_h = 0.5 * tf.sqrt(area * aspect), 0.5 * tf.sqrt(area / aspect)
    rectangle = (tf.abs(u) < half_w) & (tf.abs(v) < half_h)
    ellipse_r = tf.sqrt(area / math.pi)
    ellipse = (tf.square(u / (ellipse_r * tf.sqrt(aspect)))
               + tf.square(v * tf.sqrt(aspect) / ellipse_r)) < 1
    # Hand: a palm ellipse of ~60% of the area and four fingers above it.
    palm = tf.sqrt(0.6 * area / math.pi)
    hand = tf.square(u / palm) + tf.square(v / (1.2 * palm)) < 1
    finger_width, finger_length = 0.32 * palm, tf.random.uniform([], 1.2, 2.0) * palm
    for k in range(4):
        offset = (k - 1.5) * finger_width * 1.1
        tilt = (k - 1.5) * 0.12
        fu = u - offset - tf.sin(tilt) * (-v - palm)
        along = -v - 0.8 * palm
        hand |= (tf.abs(fu) < finger_width / 2) & (along > 0) & (along < finger_length)
    kind = tf.random.uniform([], 0, 3, tf.int32)
    return tf.switch_case(kind, [lambda: rectangle, lambda: ellipse, lambda: hand])


def random_occluder(image):
    """Cover 15-45% of the face with a textured shape: skin-toned (a hand),
    low-frequency coloured noise, or another part of the same crop."""
    area = tf.random.uniform([], *WILD_OCCLUDER_AREA) * FACE_SIDE ** 2
    mask = _occluder_mask(area)[:, :, None]
    cells = tf.random.uniform([], 2, 12, tf.int32)
    noise = tf.image.resize(tf.random.uniform([cells, cells, 3], 0.0, 255.0),
                            [MODEL_SIZE, MODEL_SIZE])
    t = tf.random.uniform([])
    skin = tf.constant(SKIN_RGB[0]) * (1 - t) + tf.constant(SKIN_RGB[1]) * t
    shading = tf.image.resize(tf.random.uniform([4, 4, 1], 0.75, 1.2), [MODEL_SIZE, MODEL_SIZE])
    skin = skin * shading
    shifted = tf.roll(image, tf.random.uniform([2], 32, 96, tf.int32), axis=[0, 1])
    kind = tf.random.uniform([], 0, 3, tf.int32)
    texture = tf.switch_case(kind, [lambda: skin, lambda: noise, lambda: shifted[:, ::-1]])
    return tf.where(mask, tf.clip_by_value(texture, 0.0, 255.0), image)


def random_low_res(image):
    """Downscale so the face is 25-60 px wide, then back up to the crop."""
    width = tf.random.uniform([], *WILD_FACE_WIDTH)
    side = tf.cast(tf.round(MODEL_SIZE * width / FACE_SIDE), tf.int32)
    small = tf.image.resize(image, [side, side], antialias=True)
    method = tf.where(tf.random.uniform([]) < 0.5, 0, 1)
    large = tf.switch_case(method, [
        lambda: tf.image.resize(small, [MODEL_SIZE, MODEL_SIZE], "bilinear"),
        lambda: tf.image.resize(small, [MODEL_SIZE, MODEL_SIZE], "bicubic")])
    return tf.clip_by_value(large, 0.0, 255.0)       # bicubic overshoots


def blur_kernel(kind, size, angle):
    """(15, 15) kernel: 'motion' a line of `size` px at `angle`, else a
    defocus disc of diameter `size`."""
    x, y = tf.meshgrid(tf.range(-7.0, 8.0), tf.range(-7.0, 8.0))
    along = x * tf.cos(angle) + y * tf.sin(angle)
    across = -x * tf.sin(angle) + y * tf.cos(angle)
    line = tf.nn.relu(1.0 - tf.abs(across)) * tf.cast(tf.abs(along) <= size / 2, tf.float32)
    disc = tf.clip_by_value(size / 2 + 0.5 - tf.sqrt(x * x + y * y), 0.0, 1.0)
    kernel = tf.where(kind == 0, line, disc)
    return kernel / tf.reduce_sum(kernel)


def random_blur(image):
    kind = tf.random.uniform([], 0, 2, tf.int32)
    kernel = blur_kernel(kind, tf.random.uniform([], 3.0, 13.0),
                         tf.random.uniform([], 0.0, math.pi))
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    return tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "SAME")[0]


def random_noise(image):
    sigma = tf.random.uniform([], 2.0, 12.0)
    return tf.clip_by_value(image + tf.random.normal(tf.shape(image), 0.0, sigma), 0.0, 255.0)


def random_jpeg(image):
    quality = tf.random.uniform([], *WILD_JPEG_QUALITY, tf.int32)
    encoded = tf.image.adjust_jpeg_quality(tf.cast(tf.round(image), tf.uint8), quality)
    return tf.cast(tf.ensure_shape(encoded, image.shape), tf.float32)


def random_wild(image, strength):
    """The WILD conditions after the geometric warp, each with its
    probability times `strength` (0: the image unchanged)."""
    image = _maybe(WILD["light"] * strength, random_light, image)
    image = _maybe(WILD["occluder"] * strength, random_occluder, image)
    image = _maybe(WILD["low_res"] * strength, random_low_res, image)
    image = _maybe(WILD["blur"] * strength, random_blur, image)
    image = _maybe(WILD["noise"] * strength, random_noise, image)
    image = _maybe(WILD["jpeg"] * strength, random_jpeg, image)
    return tf.clip_by_value(image, 0.0, 255.0)


def center_crop(face):
    """The deterministic model crop: the centre of the stored crop."""
    offset = int(MODEL_OFFSET)
    image = tf.cast(face["image"][offset:offset + MODEL_SIZE, offset:offset + MODEL_SIZE],
                    tf.float32)
    return image, face["marks"] - MODEL_OFFSET


def train_dataset(path, batch_size, layout_name=None, shuffle=2048, rotation_deg=ROTATION_DEG,
                  scale_range=SCALE_RANGE, shift_fraction=SHIFT_FRACTION, occlusion=OCCLUSION,
                  calm=None, wild=0.0, calm_rotation_deg=None, profiled=None, profiled_share=0.0):
    """Augmented, shuffled, batched (images, targets) for one epoch. `profiled`:
    an optional record of profile_faces.py's turned faces, drawn for
    `profiled_share` of each epoch's faces (the epoch keeps the length of
    `path`'s record, so a share changes what is seen, not how long). `calm`:
    an optional boolean tf.Variable; faces augmented while it is True get
    the CALM ranges instead (it is read per face, so flip it between epochs),
    with `calm_rotation_deg` in place of CALM's rotation if given. `wild`:
    the strength of the WILD conditions (0: off)."""
    layout_name = layout_name or record_info(path)[0]
    layout = get_layout(layout_name)
    mirror = tf.constant(layout.mirror, tf.int32)
    calm_rotation = CALM["rotation_deg"] if calm_rotation_deg is None else calm_rotation_deg

    def augment(face):
        rotation, scales, shift, hide = rotation_deg, scale_range, shift_fraction, occlusion
        strength = float(wild)
        if calm is not None:
            pick = lambda calm_value, value: tf.where(calm, calm_value, value)  # noqa: E731
            rotation = pick(float(calm_rotation), float(rotation_deg))
            scales = (pick(1.0 - CALM["scale_jitter"], float(scale_range[0])),
                      pick(1.0 + CALM["scale_jitter"], float(scale_range[1])))
            shift = pick(CALM["shift_fraction"], float(shift_fraction))
            hide = pick(CALM["occlusion"], float(occlusion))
            strength = pick(CALM["wild"] * float(wild), float(wild))
        a, b = random_geometry(rotation, scales, shift)
        homography = None
        if wild:
            homography = tf.cond(tf.random.uniform([]) < WILD["pose"] * strength,
                                 random_pose_warp, lambda: tf.eye(3))
        image, marks = warp(face["image"], face["marks"], a, b, mirror, homography)
        image = random_occlusion(random_photometric(image), hide)
        if wild:
            image = random_wild(image, strength)
        return image, to_targets(marks)

    faces = _load(path, layout.num_marks).cache().shuffle(shuffle)
    if profiled and profiled_share > 0:
        extra_layout, _ = record_info(profiled)
        if extra_layout != layout_name:
            raise ValueError(f"{profiled} holds {extra_layout} marks but {path} holds {layout_name}")
        turned = _load(profiled, layout.num_marks).cache().shuffle(shuffle).repeat()
        faces = tf.data.Dataset.sample_from_datasets(
            [faces.repeat(), turned], [1 - profiled_share, profiled_share]
        ).take(record_info(path)[1])
    return (faces.map(augment, num_parallel_calls=AUTOTUNE)
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
