import numpy as np
import pytest

import hard_view
from geometry import MODEL_SIZE, STORE_SIZE


def _dots(marks):
    image = np.zeros((STORE_SIZE, STORE_SIZE, 3), np.uint8)
    for x, y in np.round(marks).astype(int):
        image[y - 1:y + 2, x - 1:x + 2] = 255
    return image


@pytest.mark.parametrize("kind", ["rotation", "yaw"])
def test_geometric_kinds_move_marks_with_pixels(kind):
    rng = np.random.default_rng(0)
    marks = rng.uniform(60, STORE_SIZE - 60, (68, 2))
    crop, moved = hard_view.make_view(_dots(marks), marks, kind, hard_view.face_rng(0, kind, 0))
    assert crop.shape == (MODEL_SIZE, MODEL_SIZE, 3) and crop.dtype == np.uint8
    inside = [(x, y) for x, y in moved if 1 <= x < MODEL_SIZE - 2 and 1 <= y < MODEL_SIZE - 2]
    assert len(inside) > 50
    assert min(crop[int(round(y)), int(round(x)), 0] for x, y in inside) > 60
    assert not np.allclose(moved, marks - (STORE_SIZE - MODEL_SIZE) / 2)


@pytest.mark.parametrize("kind", ["low_res", "jpeg", "blur", "occlusion", "light"])
def test_pixel_kinds_keep_marks_and_change_pixels(kind):
    rng = np.random.default_rng(1)
    marks = rng.uniform(60, STORE_SIZE - 60, (68, 2))
    image = rng.integers(0, 255, (STORE_SIZE, STORE_SIZE, 3)).astype(np.uint8)
    crop, moved = hard_view.make_view(image, marks, kind, hard_view.face_rng(0, kind, 0))
    offset = (STORE_SIZE - MODEL_SIZE) / 2
    np.testing.assert_allclose(moved, marks - offset, atol=1e-6)
    centre = image[int(offset):int(offset) + MODEL_SIZE, int(offset):int(offset) + MODEL_SIZE]
    assert np.abs(crop.astype(float) - centre).mean() > 1


def test_views_are_seeded_and_fixed():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 255, (3, STORE_SIZE, STORE_SIZE, 3)).astype(np.uint8)
    marks = rng.uniform(60, STORE_SIZE - 60, (3, 68, 2))
    for kind in hard_view.KINDS:
        first = hard_view.views(images, marks, kind)
        again = hard_view.views(images, marks, kind)
        np.testing.assert_array_equal(first[0], again[0])
        np.testing.assert_array_equal(first[1], again[1])
    other = hard_view.views(images, marks, "occlusion", seed=7)[0]
    assert not np.array_equal(other, hard_view.views(images, marks, "occlusion")[0])


def test_occluder_covers_a_fifth_to_two_fifths_of_the_face():
    for index in range(20):
        rng = hard_view.face_rng(0, "occlusion", index)
        rng.uniform(size=0)
        area = rng.uniform(0.2, 0.4) * hard_view.FACE_SIDE ** 2
        mask, _ = hard_view._occluder_mask(rng, area)
        assert 0.5 * area < mask.sum() < 1.6 * area
