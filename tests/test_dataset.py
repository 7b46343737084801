import math

import numpy as np
import pytest
import tensorflow as tf

import dataset
from geometry import MODEL_SIZE, STORE_SIZE
from layouts import get_layout


def _dots(marks, size=STORE_SIZE):
    """A black image with a bright 3×3 dot at each mark."""
    image = np.zeros((size, size, 3), np.uint8)
    for x, y in np.round(marks).astype(int):
        image[y - 1:y + 2, x - 1:x + 2] = 255
    return image


@pytest.mark.parametrize("angle, scale, shift, flip", [
    (0.0, 1.0, (0.0, 0.0), False),
    (math.radians(25), 1.1, (5.0, -7.0), False),
    (math.radians(-30), 0.85, (-9.0, 4.0), True),
    (0.0, 1.15, (0.0, 0.0), True),
])
def test_augmentation_keeps_each_mark_on_its_pixel(angle, scale, shift, flip):
    layout = get_layout("300w68")
    rng = np.random.default_rng(0)
    marks = rng.uniform(60, STORE_SIZE - 60, (layout.num_marks, 2)).astype(np.float32)
    image = _dots(marks)
    a, b = dataset.affine_params(tf.constant(angle), tf.constant(scale),
                                 tf.constant(shift), tf.constant(flip))
    warped, moved = dataset.warp(tf.constant(image), tf.constant(marks), a, b,
                                 tf.constant(layout.mirror))
    warped, moved = warped.numpy(), moved.numpy()
    assert warped.shape == (MODEL_SIZE, MODEL_SIZE, 3)
    values = [warped[int(round(y)), int(round(x)), 0] for x, y in moved]
    assert min(values) > 100, "a mark left its dot"
    # With a flip the mark labelled i is where the mirror partner was drawn.
    if flip:
        unflipped = dataset.warp(tf.constant(image), tf.constant(marks), a, b,
                                 tf.range(layout.num_marks))[1].numpy()
        np.testing.assert_allclose(moved, unflipped[np.array(layout.mirror)], atol=1e-3)


def test_occlusion_hides_one_grey_rectangle_or_nothing():
    tf.random.set_seed(3)
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (MODEL_SIZE, MODEL_SIZE, 3)),
                        tf.float32)
    np.testing.assert_array_equal(dataset.random_occlusion(image, 0.0).numpy(), image.numpy())
    low, high = dataset.OCCLUSION_SIDES
    for _ in range(5):
        changed = np.any(dataset.random_occlusion(image, 1.0).numpy() != image.numpy(), axis=-1)
        rows, cols = np.nonzero(changed)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        # One filled rectangle (a pixel whose value equals the grey is left as is).
        assert changed.sum() >= 0.99 * height * width
        assert low * MODEL_SIZE - 1 <= min(height, width) <= max(height, width) <= high * MODEL_SIZE


def _record(tmp_path, make_300w_folder, count=6):
    import generate_mesh_dataset as gen
    folder = make_300w_folder("faces", count)
    gen.main(["--dataset", "300w", "--train_dirs", str(folder), "--out_dir", str(tmp_path / "r")])
    return tmp_path / "r" / "train.record"


def test_eval_pipeline_is_the_centre_crop_and_deterministic(tmp_path, make_300w_folder):
    path = _record(tmp_path, make_300w_folder)
    assert dataset.record_info(path) == ("300w68", 6)
    first = [b for b in dataset.eval_dataset(path, 4, with_info=True)]
    second = [b for b in dataset.eval_dataset(path, 4)]
    np.testing.assert_array_equal(first[0][0].numpy(), second[0][0].numpy())
    images, targets, info = first[0]
    assert images.shape == (4, MODEL_SIZE, MODEL_SIZE, 3) and targets.shape == (4, 136)
    # Targets are the marks on the drawn dots, in [0, 1] of the crop.
    for image, target in zip(images.numpy(), targets.numpy()):
        for x, y in target.reshape(-1, 2) * MODEL_SIZE:
            assert image[int(round(y)), int(round(x))].mean() > 120


def test_train_pipeline_batches(tmp_path, make_300w_folder):
    path = _record(tmp_path, make_300w_folder)
    batches = list(dataset.train_dataset(path, 4, occlusion=0.5))
    assert len(batches) == 1                  # drop_remainder: 6 faces -> one batch of 4
    images, targets = batches[0]
    assert images.dtype == tf.float32 and 0 <= images.numpy().min() <= images.numpy().max() <= 255


def test_not_a_record_is_a_clear_error(tmp_path):
    bogus = tmp_path / "x.record"
    bogus.write_bytes(b"hello world, not a record")
    with pytest.raises(ValueError, match="x.record is not a TFRecord"):
        dataset.record_info(bogus)
    with pytest.raises(FileNotFoundError, match="record file not found"):
        dataset.record_info(tmp_path / "missing.record")


def test_calm_variable_switches_to_the_calm_ranges(tmp_path, make_300w_folder):
    """Zoomed out 2× by the base ranges, faces come back to their size when
    `calm` is set (dataset.CALM: scale within ±12%), without a new pipeline."""
    path = _record(tmp_path, make_300w_folder)
    left, right = get_layout("300w68").eye_corners

    def eye_distances(targets):
        marks = targets.numpy().reshape(len(targets), -1, 2)
        return np.linalg.norm(marks[:, left] - marks[:, right], axis=-1)

    stored = eye_distances(next(iter(dataset.eval_dataset(path, 6)))[1])
    calm = tf.Variable(False)
    pipeline = dataset.train_dataset(path, 4, rotation_deg=0.0, scale_range=(0.5, 0.5),
                                     shift_fraction=0.0, occlusion=1.0, calm=calm)
    zoomed_out = eye_distances(next(iter(pipeline))[1])
    np.testing.assert_allclose(zoomed_out, 0.5 * stored.mean(), rtol=0.25)
    calm.assign(True)
    calmed = eye_distances(next(iter(pipeline))[1])
    jitter = dataset.CALM["scale_jitter"]
    assert (calmed >= (1 - jitter) * stored.min() - 1e-4).all()
    assert (calmed <= (1 + jitter) * stored.max() + 1e-4).all()


@pytest.mark.parametrize("squash, perspective, flip", [
    (0.7, 0.004, False), (0.65, -0.004, True), (1.0, 0.0, False)])
def test_yaw_warp_keeps_each_mark_on_its_pixel_and_mirrors(squash, perspective, flip):
    layout = get_layout("300w68")
    rng = np.random.default_rng(1)
    marks = rng.uniform(70, STORE_SIZE - 70, (layout.num_marks, 2)).astype(np.float32)
    image = _dots(marks)
    a, b = dataset.affine_params(tf.constant(0.3), tf.constant(1.0), tf.constant((3.0, -2.0)),
                                 tf.constant(flip))
    homography = dataset.yaw_warp(tf.constant(squash), tf.constant(perspective))
    warped, moved = dataset.warp(tf.constant(image), tf.constant(marks), a, b,
                                 tf.constant(layout.mirror), homography)
    warped, moved = warped.numpy(), moved.numpy()
    values = [warped[int(round(y)), int(round(x)), 0] for x, y in moved]
    assert min(values) > 100, "a mark left its dot"
    if flip:
        unflipped = dataset.warp(tf.constant(image), tf.constant(marks), a, b,
                                 tf.range(layout.num_marks), homography)[1].numpy()
        np.testing.assert_allclose(moved, unflipped[np.array(layout.mirror)], atol=1e-3)
    # The squash narrows the face.
    if squash < 1:
        plain = dataset.warp(tf.constant(image), tf.constant(marks), a, b,
                             tf.constant(layout.mirror))[1].numpy()
        assert np.ptp(moved[:, 0]) < 0.9 * np.ptp(plain[:, 0])


@pytest.mark.parametrize("condition", ["random_light", "random_occluder", "random_low_res",
                                       "random_blur", "random_noise", "random_jpeg"])
def test_wild_conditions_change_pixels_only(condition):
    """Each wild condition keeps the crop's shape and pixel range and
    changes it (marks are not touched by these: they move only in warp)."""
    tf.random.set_seed(5)
    rng = np.random.default_rng(2)
    image = tf.constant(cv_smooth(rng), tf.float32)
    out = getattr(dataset, condition)(image).numpy()
    assert out.shape == (MODEL_SIZE, MODEL_SIZE, 3)
    assert 0 <= out.min() and out.max() <= 255
    assert np.abs(out - image.numpy()).mean() > 0.5


def cv_smooth(rng):
    """A smooth random picture (so blur and JPEG change it measurably, but
    not to nothing)."""
    import cv2
    small = rng.uniform(0, 255, (16, 16, 3)).astype(np.float32)
    picture = cv2.resize(small, (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_CUBIC)
    picture[::8] = 255                                     # edges for blur to soften
    return np.clip(picture, 0, 255)


def test_wild_pipeline_keeps_marks_on_their_dots(tmp_path, make_300w_folder):
    """Full wild strength, no photometric change that hides the dots: every
    target still sits on a drawn dot after the pose warp, rotation and flip."""
    path = _record(tmp_path, make_300w_folder)
    saved = dict(dataset.WILD)
    try:
        for key in dataset.WILD:
            dataset.WILD[key] = 1.0 if key == "pose" else 0.0
        tf.random.set_seed(0)
        images, targets = next(iter(dataset.train_dataset(path, 4, wild=1.0, rotation_deg=45,
                                                          occlusion=0.0)))
    finally:
        dataset.WILD.update(saved)
    images = images.numpy()
    # Photometric jitter and a 20% chance of blur stay on: compare with the
    # crop's own background level rather than a fixed grey.
    for image, target in zip(images, targets.numpy()):
        values = [image[int(round(y)), int(round(x))].mean()
                  for x, y in target.reshape(-1, 2) * MODEL_SIZE
                  if 0 <= x < MODEL_SIZE - 0.5 and 0 <= y < MODEL_SIZE - 0.5]
        assert np.median(values) > np.median(image) + 10


def test_profiled_faces_are_mixed_in_at_their_share(tmp_path, make_300w_folder):
    import generate_mesh_dataset as gen
    from conftest import write_pts
    import cv2

    path = _record(tmp_path, make_300w_folder, count=40)
    # Stand-in "profiled" faces: white photos, told apart from the dark ones.
    bright = tmp_path / "bright"
    bright.mkdir()
    for i in range(8):
        cv2.imwrite(str(bright / f"b{i}.png"), np.full((160, 200, 3), 250, np.uint8))
        write_pts(bright / f"b{i}.pts", np.random.default_rng(i).uniform(60, 120, (68, 2)))
    gen.main(["--dataset", "300w", "--train_dirs", str(bright), "--out_dir", str(tmp_path / "b")])
    mixed = dataset.train_dataset(path, 8, rotation_deg=0, occlusion=0,
                                  profiled=tmp_path / "b" / "train.record", profiled_share=0.5)
    shares = []
    for _ in range(10):
        batches = [b[0].numpy() for b in mixed]
        assert len(batches) == 5               # the epoch keeps the 40 faces' length
        means = np.concatenate([b.mean(axis=(1, 2, 3)) for b in batches])
        shares.append(np.mean(means > 200))
    assert 0.35 < np.mean(shares) < 0.65
