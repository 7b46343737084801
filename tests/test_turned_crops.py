"""Crops of turned faces: the frames they are scored and fitted in, the
box-mapping fit on in-memory frames, and the predictor's re-crop."""
from pathlib import Path

import cv2
import numpy as np
import pytest

import fit_box_mapping
import geometry
import profile_faces
from geometry import RECROP_SHIFT
from predict import predictor

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT = ROOT / "test_images" / "grace_hopper.jpg"


def test_framed_moves_the_marks_with_the_pixels():
    crop = np.zeros((192, 192, 3), np.uint8)
    marks = np.array([[60.0, 70.0], [130.0, 70.0], [95.0, 140.0]])
    for x, y in marks:
        cv2.circle(crop, (int(x), int(y)), 3, (255, 255, 255), -1)
    frame, moved = profile_faces.framed(crop, marks, np.random.default_rng(0), (40, 60))
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    width = np.ptp(moved[:, 0])
    assert 40 <= width <= 60                          # the landmark box's width is drawn
    for x, y in moved:                                # each mark lands on its dot
        assert frame[int(round(y)), int(round(x))].min() > 150


def test_off_centre_is_a_share_of_the_box_side():
    box = np.array([0.0, 0.0, 100.0, 100.0])
    square = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], np.float64)
    assert geometry.off_centre(square, box) == 0
    assert geometry.off_centre(square + [6, 8], box) == pytest.approx(0.10)


def test_box_mapping_fits_on_frames_held_in_memory():
    """(frame, marks) pairs, as --profiled gives, are fitted like photos."""
    model = predictor()
    image = cv2.imread(str(PORTRAIT))
    marks = model.predict(image)[0]["marks"]
    faces = []
    for scale in np.linspace(0.5, 1.0, 110):          # enough for the keypoint mapping
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        faces.append((small, marks * scale))
    detector = model.detectors[0]
    mapping, stats = fit_box_mapping.fit(faces, detector)
    assert stats["fitted"] + stats["missed"] == len(faces) and stats["fitted"] >= 100
    assert "keypoint_weights" in mapping
    # The same face at every scale: the fitted crop is right on it.
    assert stats["crop_error"]["keypoints"]["centre_median"] < 0.02


def test_the_predictor_re_crops_a_face_its_box_missed():
    image = cv2.imread(str(PORTRAIT))
    with pytest.raises(ValueError, match="recrop must be a share > 0"):
        predictor(recrop=0)
    always, never = predictor(recrop=1e-6), predictor(recrop=None)
    once = always.predict(image)[0]
    assert always.recrops == 1 and never.recrops == 0
    # The re-crop is the crop on the first marks, as a refine pass is.
    refined = predictor(recrop=None, refine=1).predict(image)[0]
    np.testing.assert_allclose(once["marks"], refined["marks"], atol=1e-6)
    assert predictor().recrop == RECROP_SHIFT
