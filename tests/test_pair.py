"""The two-model pair (layouts.paired) and the predictor's use of it."""
import numpy as np
import pytest

from layouts import paired


def fixed(marks, spread):
    """A stand-in spread_fn: the same marks and spread for every image."""
    marks, spread = np.asarray(marks, np.float64), np.asarray(spread, np.float64)
    return lambda images: (np.repeat(marks[None], len(images), 0).reshape(len(images), -1),
                           np.repeat(spread[None], len(images), 0))


def test_marks_are_weighted_by_the_inverse_square_of_their_spread():
    a = fixed([[0.2, 0.2], [0.6, 0.6]], [1.0, 2.0])
    b = fixed([[0.4, 0.4], [0.4, 0.4]], [1.0, 1.0])
    # Mean log spread: a's is higher by log(2) / 2 = 0.35, over the margin:
    # b is taken whole. A margin above it fuses.
    marks, spread = paired(a, b)(np.zeros((3, 8, 8, 3)))
    np.testing.assert_allclose(marks, [[0.4, 0.4, 0.4, 0.4]] * 3)
    np.testing.assert_allclose(spread, [[1.0, 1.0]] * 3)
    marks, spread = paired(a, b, margin=1.0)(np.zeros((1, 8, 8, 3)))
    # mark 0: equal spreads, the midpoint; mark 1: b counts 4x as much as a.
    np.testing.assert_allclose(marks, [[0.3, 0.3, 0.44, 0.44]])
    np.testing.assert_allclose(spread, [[0.5 ** 0.5, (1 + 0.25) ** -0.5]])


def test_a_sharper_main_model_keeps_its_marks_mostly():
    a = fixed([[0.2, 0.2]], [0.5])
    b = fixed([[0.8, 0.8]], [5.0])
    marks, _ = paired(a, b)(np.zeros((1, 8, 8, 3)))
    assert np.all(np.abs(marks - 0.2) < 0.01)


def test_models_without_score_maps_are_refused():
    a = fixed([[0.2, 0.2]], [0.5])
    with pytest.raises(ValueError, match="score maps"):
        paired(a, lambda images: (np.zeros((len(images), 2)), None))(np.zeros((1, 8, 8, 3)))


def test_the_bundled_predictor_pairs_and_can_run_one_model():
    from predict import DEFAULT_POSE_MODEL, predictor
    if not DEFAULT_POSE_MODEL.is_file():
        pytest.skip("no bundled large-pose model")
    pair, single = predictor(), predictor(pose_model_path=False)
    assert pair.pose_model == DEFAULT_POSE_MODEL and pair.flip is False
    assert single.pose_model is None and single.flip is True
    faces = pair.predict("test_images/grace_hopper.jpg")
    alone = single.predict("test_images/grace_hopper.jpg")
    assert len(faces) == len(alone) == 1
    eyes = np.linalg.norm(faces[0]["marks"][36] - faces[0]["marks"][45])
    # A frontal face: the pair and the main model alone agree closely.
    assert np.mean(np.linalg.norm(faces[0]["marks"] - alone[0]["marks"], axis=1)) < 0.05 * eyes
    assert 0 <= faces[0]["landmark_score"] <= 1

