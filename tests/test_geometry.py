import numpy as np

import geometry


def test_crop_round_trip_on_batches_and_single_faces():
    rng = np.random.default_rng(0)
    marks = rng.uniform(0, 500, (4, 68, 2))
    transforms = np.stack([[rng.uniform(0.5, 4), *rng.uniform(-50, 50, 2)] for _ in range(4)])
    np.testing.assert_allclose(geometry.to_crop(geometry.to_image(marks, transforms), transforms),
                               marks)
    np.testing.assert_allclose(geometry.to_image(geometry.to_crop(marks[0], transforms[0]),
                                                 transforms[0]), marks[0])


def test_crop_samples_the_pixel_its_transform_names():
    image = np.zeros((300, 400, 3), np.uint8)
    image[120, 250] = 255                       # one bright pixel at (x=250, y=120)
    for side, size in ((64, 64), (256, 128), (80, 160)):
        patch, transform = geometry.crop(image, (240, 130), side, size)
        y, x = np.unravel_index(patch[..., 0].argmax(), patch.shape[:2])
        back = geometry.to_image(np.array([[x, y]], float), transform)[0]
        assert np.abs(back - [250, 120]).max() <= transform[0] / 2 + 1e-6


def test_crop_pads_with_zeros_outside_the_image():
    image = np.full((50, 50, 3), 200, np.uint8)
    patch, _ = geometry.crop(image, (0, 0), 50, 50)
    assert patch[:20, :20].max() == 0 and patch[-10:, -10:].min() == 200


def test_crop_square_is_scaled_landmark_box():
    center, side = geometry.crop_square(geometry.landmark_box([[10, 20], [50, 40]]))
    np.testing.assert_allclose(center, [30, 30])
    assert side == 40 * geometry.CROP_SCALE


def _crop_blurring_the_whole_image(image, center, side, out_size):
    """geometry.crop as it was: the anti-alias blur over the whole image."""
    import cv2
    scale = side / out_size
    offset = np.asarray(center, np.float64) - side / 2 + scale / 2 - 0.5
    sigma = 0.5 * np.sqrt(scale ** 2 - 1)
    matrix = np.array([[scale, 0, offset[0]], [0, scale, offset[1]]])
    return cv2.warpAffine(cv2.GaussianBlur(image, (0, 0), sigma), matrix, (out_size, out_size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def test_shrinking_crop_blurs_only_what_it_reads_with_the_same_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    # Inside, across each edge, over a corner, larger than the image, and off it.
    for center, side in (((320, 240), 300), ((20, 240), 260), ((630, 470), 400),
                         ((320, 240), 1500), ((300, 10), 200.5), ((2000, 2000), 300)):
        patch, _ = geometry.crop(image, center, side, 128)
        np.testing.assert_array_equal(patch, _crop_blurring_the_whole_image(image, center, side, 128))


def test_score_spread_of_a_peak_and_of_a_flat_map():
    side = 16
    peaked = np.full((1, side, side, 2), -1e4)
    peaked[0, 3, 5, 0] = 0.0                       # all weight on one cell
    peaked[0, 3, 5:7, 1] = 0.0                     # half on each of two neighbours
    spread = geometry.score_spread(peaked)
    np.testing.assert_allclose(spread, [[0.0, 0.5]], atol=1e-6)   # x s.d. of {5, 6}: 0.5
    flat = geometry.score_spread(np.zeros((1, side, side, 1)))
    # Uniform over 0..h-1 on each axis: variance (h² - 1) / 12, summed over x and y.
    np.testing.assert_allclose(flat, [[np.sqrt(2 * (side ** 2 - 1) / 12)]], rtol=1e-6)
