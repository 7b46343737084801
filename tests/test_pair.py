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



def generic_face(yaw):
    """68 marks of the generic 3D face turned `yaw` degrees, in a 128-px crop."""
    import cv2

    import head_pose
    indices, points = head_pose.face_shape()
    projected, _ = cv2.projectPoints(points, cv2.Rodrigues(head_pose.rotation_from(yaw, 0, 0))[0],
                                     np.array([0., 0., 400.]), head_pose.camera_matrix((128, 128)),
                                     None)
    marks = np.empty((68, 2))
    marks[indices] = projected.reshape(-1, 2)
    marks[np.setdiff1d(np.arange(68), indices)] = marks[indices].mean(0)
    return marks


def test_the_cascade_sends_turned_and_unsure_faces_to_the_pair():
    import layouts
    frontal, turned = generic_face(0), generic_face(layouts.CASCADE_YAW + 15)
    sure, unsure = np.full(68, 1.0), np.full(68, np.exp(layouts.CASCADE_SPREAD + 0.5))
    flags = layouts.turned_faces(np.stack([frontal, turned, frontal]),
                                 np.stack([sure, sure, unsure]), 128)
    assert flags.tolist() == [False, True, True]
    # A gate of its own moves both thresholds: past the turned face's yaw and
    # the unsure face's spread, nothing is sent on.
    flags = layouts.turned_faces(np.stack([frontal, turned, frontal]),
                                 np.stack([sure, sure, unsure]), 128,
                                 gate=(layouts.CASCADE_YAW + 30, layouts.CASCADE_SPREAD + 1))
    assert flags.tolist() == [False, False, False]


def test_the_cascade_runs_two_invokes_a_face_and_the_second_model_only_where_sent():
    """Crops whose pixel value says 'turned' get the main model's generic
    face turned 35 degrees; the others a frontal one. Each face costs two
    invokes: the main model, then the large-pose model or the mirror."""
    import layouts
    calls = {"a": 0, "b": 0}
    frontal, turned = generic_face(0) / 128, generic_face(35) / 128

    def main_model(images):
        calls["a"] += len(images)
        marks = np.stack([turned if image[0, 0, 0] else frontal for image in images])
        return marks.reshape(len(images), -1), np.ones((len(images), 68))

    def pose_model(images):
        calls["b"] += len(images)
        return np.full((len(images), 136), 0.5), np.full((len(images), 68), 0.1)

    images = np.zeros((4, 128, 128, 3), np.uint8)
    images[1:3] = 1                             # faces 1 and 2 are turned
    marks, spread = layouts.cascaded(main_model, pose_model, 128)(images)
    assert calls == {"a": 4 + 2, "b": 2}
    # The large-pose model's maps are far sharper: it is taken whole there.
    np.testing.assert_allclose(marks[1:3], 0.5)
    np.testing.assert_allclose(spread[1:3], 0.1)
    # The frontal faces take the flip test: the generic face is symmetric,
    # so its mirror average is close to itself.
    assert np.abs(marks[[0, 3]] - frontal.reshape(-1)).max() < 0.02


def test_turned_faces_take_the_large_pose_models_flip_test():
    """paired_flip: both models on every crop, fused; a face whose fused
    marks turn beyond TURNED_YAW also gets the large-pose model on its
    mirror image, and takes that model's flip test instead of the fusion."""
    import layouts
    calls = {"a": 0, "b": 0}
    frontal = generic_face(0) / 128
    turned = generic_face(layouts.TURNED_YAW + 10) / 128

    def model(name):
        def run(images):
            calls[name] += len(images)
            marks = np.stack([turned if image[0, 0, 0] else frontal for image in images])
            return marks.reshape(len(images), -1), np.ones((len(images), 68))
        return run

    images = np.zeros((3, 128, 128, 3), np.uint8)
    images[1, :, :64] = 1           # face 1 is turned; its mirror image is not
    marks, spread = layouts.paired_flip(model("a"), model("b"), 128)(images)
    assert calls == {"a": 3, "b": 3 + 1}
    fused = layouts.fuse(*model("a")(images), *model("b")(images))[0]
    np.testing.assert_allclose(marks[[0, 2]], fused[[0, 2]])
    # Face 1: b's marks averaged with b's marks of the mirrored (frontal-looking) crop.
    mirrored = layouts.with_mirrored((turned.reshape(1, -1), np.ones((1, 68))),
                                     (frontal.reshape(1, -1), np.ones((1, 68))), 128)[0]
    np.testing.assert_allclose(marks[1], mirrored[0])


def test_the_ensemble_fuses_two_main_models_and_sends_only_turned_faces_on():
    """ensembled: main model a on every crop; a face a's marks show turned
    takes paired_flip's way with the large-pose model b (here b's maps are
    far sharper: b's flip test), every other face a fused with the second
    main model c by their spreads, never one taken whole."""
    import layouts
    calls = {"a": 0, "b": 0, "c": 0}
    frontal = generic_face(0) / 128
    turned = generic_face(layouts.CASCADE_YAW + 15) / 128

    def main_model(name, spread):
        def run(images):
            calls[name] += len(images)
            marks = np.stack([turned if image[0, 0, 0] else frontal for image in images])
            return marks.reshape(len(images), -1), np.full((len(images), 68), spread)
        return run

    def pose_model(images):
        calls["b"] += len(images)
        return np.full((len(images), 136), 0.5), np.full((len(images), 68), 0.1)

    images = np.zeros((3, 128, 128, 3), np.uint8)
    images[1, :, :64] = 1                     # face 1 is turned; its mirror image is not
    a, c = main_model("a", 1.0), main_model("c", 2.0)
    marks, spread = layouts.ensembled(a, c, pose_model, 128)(images)
    assert calls == {"a": 3, "c": 2, "b": 1 + 1}
    fused = layouts.fuse(*a(images), *c(images), None)
    np.testing.assert_allclose(marks[[0, 2]], fused[0][[0, 2]])
    np.testing.assert_allclose(spread[[0, 2]], fused[1][[0, 2]])
    b = pose_model(images[:1])
    np.testing.assert_allclose(marks[1], layouts.with_mirrored(b, b, 128)[0][0])
    # Without the turned faces' flip test, face 1 takes b whole (one invoke of b).
    calls.update(a=0, b=0, c=0)
    marks, _ = layouts.ensembled(a, c, pose_model, 128, turned_flip=False)(images)
    assert calls == {"a": 3, "c": 2, "b": 1}
    np.testing.assert_allclose(marks[1], 0.5)
    # With no second model, a's look at the mirrored crop stands in for c's,
    # mapped back and fused the same way: a twice on the faces not turned.
    calls.update(a=0, b=0, c=0)
    marks, spread = layouts.ensembled(a, None, pose_model, 128)(images)
    assert calls == {"a": 3 + 2, "c": 0, "b": 1 + 1}
    rest = images[[0, 2]]
    looked = layouts.mirrored_model(a, 128)(rest)
    # The same look the flip test averages in (with_mirrored), marks and spreads.
    flip_test = layouts.with_mirrored(a(rest), a(layouts.mirrored_crops(rest)), 128)
    np.testing.assert_allclose((a(rest)[0] + looked[0]) / 2, flip_test[0])
    np.testing.assert_allclose((a(rest)[1] + looked[1]) / 2, flip_test[1])
    fused = layouts.fuse(*a(rest), *looked, None)
    np.testing.assert_allclose(marks[[0, 2]], fused[0])
    np.testing.assert_allclose(spread[[0, 2]], fused[1])
    np.testing.assert_allclose(marks[1], layouts.with_mirrored(b, b, 128)[0][0])
    with pytest.raises(ValueError, match="score maps"):
        layouts.ensembled(lambda images: (np.zeros((len(images), 136)), None), c, pose_model,
                          128)(images)


def test_the_second_main_model_joins_only_the_bundled_ensemble():
    """settle_pairing: the bundled pair runs as the ensemble with the main
    model's flip test by default, or with a second main model given; the
    default drops out when the pair does (one model, or the flip test), and
    a second model given where no ensemble can run is refused by name."""
    from predict import DEFAULT_POSE_MODEL, DEFAULT_SECOND_MODEL, FLIP_SECOND, settle_pairing
    if not (DEFAULT_POSE_MODEL.is_file() and DEFAULT_SECOND_MODEL.is_file()):
        pytest.skip("no bundled ensemble")
    assert settle_pairing(None, None, None) == (DEFAULT_POSE_MODEL, False, FLIP_SECOND)
    assert (settle_pairing(None, None, None, DEFAULT_SECOND_MODEL)
            == (DEFAULT_POSE_MODEL, False, DEFAULT_SECOND_MODEL))
    assert settle_pairing(None, None, None, "none") == (DEFAULT_POSE_MODEL, False, None)
    assert settle_pairing(None, False, None) == (None, True, None)
    assert settle_pairing(None, None, True) == (DEFAULT_POSE_MODEL, True, None)
    assert settle_pairing("mine.tflite", None, None) == (None, True, None)
    with pytest.raises(ValueError, match="second model other.tflite.*large-pose"):
        settle_pairing("mine.tflite", None, None, "other.tflite")
    with pytest.raises(ValueError, match="flip test"):
        settle_pairing(None, None, True, "other.tflite")


@pytest.mark.parametrize("second", ["flip", "bundled"])
def test_the_bundled_ensemble_marks_a_face_as_the_pair_does_nearly(second):
    """The default ensemble (the main model's flip test) and the one with the
    bundled second main model each mark a frontal face close to the pair."""
    from predict import DEFAULT_SECOND_MODEL, FLIP_SECOND, predictor
    if not DEFAULT_SECOND_MODEL.is_file():
        pytest.skip("no bundled second main model")
    ensemble = predictor() if second == "flip" else predictor(second_model_path=DEFAULT_SECOND_MODEL)
    pair = predictor(second_model_path=False)
    expected = FLIP_SECOND if second == "flip" else DEFAULT_SECOND_MODEL
    assert ensemble.second_model == expected and pair.second_model is None
    faces = ensemble.predict("test_images/grace_hopper.jpg")
    paired_faces = pair.predict("test_images/grace_hopper.jpg")
    assert len(faces) == len(paired_faces) == 1
    eyes = np.linalg.norm(faces[0]["marks"][36] - faces[0]["marks"][45])
    gap = np.mean(np.linalg.norm(faces[0]["marks"] - paired_faces[0]["marks"], axis=1))
    assert 0 < gap < 0.05 * eyes          # another say, on a face both mark well
    assert 0 <= faces[0]["landmark_score"] <= 1


def test_the_gate_study_picks_the_best_pooled_gate_that_keeps_the_profile_faces():
    """gate_study.choose: the lowest mean NME over the views other than
    profile, among gates whose profile NME is within 2 paired s.e. of the
    gate before."""
    import gate_study
    better, worse_on_profile = (30.0, 1.0), (50.0, 1.0)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.001, 40)
    nmes = {("plain", gate_study.BEFORE): 0.040 + noise,
            ("plain", gate_study.gate_name(better)): 0.039 + noise,
            ("plain", gate_study.gate_name(worse_on_profile)): 0.038 + noise,
            ("profile", gate_study.BEFORE): 0.10 + noise,
            ("profile", gate_study.gate_name(better)): 0.10 + noise,
            ("profile", gate_study.gate_name(worse_on_profile)): 0.12 + noise}
    gates = [better, worse_on_profile]
    assert gate_study.choose(nmes, ["plain", "profile"], gates) == better
    # Without a profile view every gate is allowed.
    assert gate_study.choose(nmes, ["plain"], gates) == worse_on_profile


def test_an_unsure_face_goes_the_pairs_way_only_where_the_large_pose_model_claims_it():
    """ensembled(claim=True): frontal faces with unsure main-model maps; the
    large-pose model is run on both, and only the one where its maps are
    the sharper takes the pair's way (here its marks whole); the other is
    fused with the second main model as an unflagged face is."""
    import layouts
    frontal = generic_face(0) / 128
    unsure = np.exp(layouts.CASCADE_SPREAD + 0.5)

    def main_model(spread):
        return lambda images: (np.repeat(frontal.reshape(1, -1), len(images), 0),
                               np.full((len(images), 68), spread))

    def pose_model(images):
        # Face 1's crop is marked 1: there the large-pose model is sure.
        sure = np.array([image[0, 0, 0] == 1 for image in images])
        return (np.full((len(images), 136), 0.5),
                np.where(sure[:, None], 0.1, unsure * 4) * np.ones((len(images), 68)))

    images = np.zeros((2, 128, 128, 3), np.uint8)
    images[1] = 1
    a, c = main_model(unsure), main_model(unsure)
    marks, _ = layouts.ensembled(a, c, pose_model, 128, turned_flip=False)(images)
    np.testing.assert_allclose(marks[0], frontal.reshape(-1))
    np.testing.assert_allclose(marks[1], 0.5)
    # Without the claim every unsure face goes the pair's way; face 0 is
    # then fused with the blurrier large-pose model, no longer the main's marks.
    marks, _ = layouts.ensembled(a, c, pose_model, 128, turned_flip=False, claim=False)(images)
    assert not np.allclose(marks[0], frontal.reshape(-1))


@pytest.mark.parametrize("script", ["pair_study", "gate_study"])
def test_the_studies_name_a_record_that_is_not_one(script, tmp_path):
    """A file given as --record that is not a records file: one line naming
    it, and no output file (it was a traceback)."""
    main = __import__(script).main
    record = tmp_path / "notes.txt"
    record.write_text("not a record\n")
    out = tmp_path / "study.json"
    with pytest.raises(SystemExit, match="notes.txt is not a TFRecord file"):
        main(["--record", str(record), "--out", str(out)])
    assert not out.exists()
