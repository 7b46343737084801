"""confidence.py: the spread-to-confidence curve, its fit and its scores;
the bundled predictor's confidence on a face and an occluded copy."""
import numpy as np
import pytest

import confidence
from predict import ROOT, predictor


def test_auroc_by_hand():
    assert confidence.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert confidence.auroc([1, 1, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)   # ties halve
    assert confidence.auroc([0.2, 0.9], [1, 0]) == 0.0


def test_fitted_curve_falls_with_spread_and_matches_the_data():
    rng = np.random.default_rng(0)
    spread = np.exp(rng.uniform(-1, 2, 20000))
    truth = {"slope": 4.0, "centre": 0.5}
    good = rng.random(spread.shape) < confidence.spread_confidence(spread, truth)
    fitted = confidence.fit_calibration(spread, good)
    assert fitted["slope"] == pytest.approx(4.0, rel=0.1)
    assert fitted["centre"] == pytest.approx(0.5, abs=0.05)
    values = confidence.spread_confidence(np.array([0.2, 1.0, 5.0]), fitted)
    assert np.all(np.diff(values) < 0) and 0 <= values.min() and values.max() <= 1
    rows = confidence.reliability(confidence.spread_confidence(spread, fitted), good)
    assert all(abs(r["mean_confidence"] - r["good_share"]) < 0.05 for r in rows if r["marks"] > 500)


def test_calibration_beside_the_bundled_model_is_read(tmp_path):
    found = confidence.load_calibration(ROOT / "assets" / "landmarks_300w_int8.tflite")
    assert set(found) == {"slope", "centre"} and found["slope"] > 0
    assert confidence.load_calibration(tmp_path / "none.tflite") == confidence.DEFAULT_CALIBRATION
    (tmp_path / "bad.confidence.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.confidence.json"):
        confidence.load_calibration(tmp_path / "bad.tflite")


def test_split_models_and_the_bundle_share_fitted_curves():
    """Every setting of the split models has its fitted curve, and the
    bundle carries the same ones (make bundle-all copies them)."""
    split, bundle = ROOT / "assets" / "split", ROOT / "assets"
    main, pose, second = (f"landmarks_300w_{n}int8.tflite" for n in ("", "pose_", "second_"))
    for m, p, s in ((main, None, None), (pose, None, None), (main, pose, None), (main, pose, second),
                    (main, pose, "flip")):
        path = confidence.calibration_path(split / m, p and split / p, s and split / s)
        assert path.is_file(), path
        assert (bundle / path.name).read_text() == path.read_text()
    for name in (main, pose, second):
        assert (split / name).is_file()


def test_confidence_is_lower_where_the_face_is_occluded():
    import cv2
    model = predictor()
    image = cv2.imread(str(ROOT / "test_images" / "grace_hopper.jpg"))
    face = model.predict(image)[0]
    assert face["confidence"].shape == (68,)
    assert 0 <= face["confidence"].min() and face["confidence"].max() <= 1
    covered = image.copy()
    eyes = face["marks"][36:48]
    x0, y0 = eyes.min(0) - 10
    x1, y1 = eyes.max(0) + 10
    rng = np.random.default_rng(0)
    patch = covered[int(y0):int(y1), int(x0):int(x1)]
    patch[:] = rng.integers(0, 255, patch.shape)          # a textured occluder over the eyes
    hidden = model.landmarks(covered, tuple(np.r_[face["marks"].min(0), face["marks"].max(0)]))
    center = model._face_marks(cv2.cvtColor(covered, cv2.COLOR_BGR2RGB),
                               np.r_[face["marks"].min(0), face["marks"].max(0)])
    assert hidden.shape == (68, 2)
    # The covered marks lose confidence, far more than the others, and end
    # below them. Fused maps of models trained on every face are sharp, so
    # the fall is small in absolute terms: eyes 0.976 -> 0.927, the rest
    # 0.958 -> 0.946 (the curve was fitted with the split models).
    eyes, rest = slice(36, 48), np.r_[0:36, 48:68]
    eyes_drop = face["confidence"][eyes].mean() - center[1][eyes].mean()
    rest_drop = face["confidence"][rest].mean() - center[1][rest].mean()
    assert eyes_drop > 0.03 and eyes_drop > 2 * rest_drop
    assert center[1][eyes].mean() < center[1][rest].mean()
    assert np.mean(center[1]) < face["landmark_score"]
