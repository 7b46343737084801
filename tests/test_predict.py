"""Face detector decoding and the predictor, on synthetic and bundled images."""
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

import face_detector as fd
import geometry
import landmark
import ptq_benchmark as pb
from predict import DEFAULT_FLIP, predictor, to_bgr

ROOT = Path(__file__).resolve().parents[1]
PORTRAITS = [ROOT / "test_images" / "astronaut.png", ROOT / "test_images" / "grace_hopper.jpg"]


def test_anchor_grid():
    centres = fd.anchors(192)                  # full range: 48×48, one per cell
    assert centres.shape == (48 * 48, 2)
    np.testing.assert_allclose(centres[0], [0.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(centres[1], [1.5 / 48, 0.5 / 48])   # row-major: x first
    np.testing.assert_allclose(centres[48], [0.5 / 48, 1.5 / 48])
    short = fd.anchors(128)                    # short range: 16×16 ×2, then 8×8 ×6
    assert short.shape == (896, 2)
    np.testing.assert_allclose(short[:3], [[0.5 / 16, 0.5 / 16]] * 2 + [[1.5 / 16, 0.5 / 16]])
    np.testing.assert_allclose(short[512:519], [[0.5 / 8, 0.5 / 8]] * 6 + [[1.5 / 8, 0.5 / 8]])
    np.testing.assert_allclose(short[-1], [7.5 / 8, 7.5 / 8])
    # The bundled models' outputs have exactly one row per anchor.
    for path in fd.DEFAULT_MODELS:
        detector = fd.FaceDetector(path)
        rows = {tuple(d["shape"])[1] for d in detector.model.interpreter.get_output_details()}
        assert rows == {len(detector.anchor_centres)}


def small_face_photo():
    """A 1280×960 photo with one face 80 px wide."""
    canvas = np.full((960, 1280, 3), 90, np.uint8)
    canvas[400:480, 600:680] = cv2.resize(cv2.imread(str(PORTRAITS[0])), (80, 80),
                                          interpolation=cv2.INTER_AREA)
    return canvas


def test_small_faces_fall_back_to_the_full_range_detector(tiny_models):
    """A face 80 px wide in a 1280×960 photo: too small for the short-range
    model, found by the full-range one the predictor falls back to."""
    canvas = small_face_photo()
    assert predictor(fd.SHORT_RANGE, tiny_models / "saved").predict(canvas) == []
    faces = predictor(cnn_model_path=tiny_models / "saved").predict(canvas)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0]["box"]
    assert 590 < (x0 + x1) / 2 < 690 and 390 < (y0 + y1) / 2 < 490


def tiny_face_photo(width=40):
    """grace_hopper.jpg shrunk so its face is about `width` px wide, in a
    1600x1200 photo whose margin repeats the photo's edge; the face's centre."""
    photo = cv2.imread(str(PORTRAITS[1]))
    factor = width / 195.0                     # the bundled detector's face box is ~195 px wide
    small = cv2.resize(photo, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    frame = cv2.copyMakeBorder(small, 300, 1200 - 300 - small.shape[0], 500,
                               1600 - 500 - small.shape[1], cv2.BORDER_REPLICATE)
    return frame, np.array([500 + 266 * factor, 300 + 243 * factor])


def test_a_small_face_in_a_large_photo_is_found_in_squares(tiny_models):
    """A 40-px face in a 1600x1200 photo is beneath the full-range model at
    the photo's scale; the squares (face_detector.detect_tiles) find it once."""
    frame, centre = tiny_face_photo()
    model = predictor(cnn_model_path=tiny_models / "saved")
    assert model.predict(frame, small_faces=False) == []
    faces = model.predict(frame)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0]["box"]
    assert np.linalg.norm([(x0 + x1) / 2 - centre[0], (y0 + y1) / 2 - centre[1]]) < 15
    assert 25 < x1 - x0 < 60
    # A photo at or under TILE_ABOVE is searched in squares only when no
    # face was found in it whole: here the face, now 20 px, is found so.
    small_photo = cv2.resize(frame, (fd.TILE_ABOVE, fd.TILE_ABOVE * 3 // 4))
    assert model.predict(small_photo, small_faces=False) == []
    assert len(model.predict(small_photo)) == 1


@pytest.mark.parametrize("shape", [(1200, 1600), (801, 900), (3000, 4000), (500, 384)])
def test_the_squares_cover_the_photo_and_overlap(shape):
    tile = fd.tile_side(shape)
    corners = fd.tile_corners(shape, tile)
    seen = np.zeros(shape, np.int32)
    for x, y in corners:
        assert 0 <= x and 0 <= y and x + tile <= max(shape[1], tile) and y + tile <= max(shape[0], tile)
        seen[y:y + tile, x:x + tile] += 1
    assert seen.min() >= 1
    xs, ys = sorted({x for x, _ in corners}), sorted({y for _, y in corners})
    for starts in (xs, ys):
        assert all(b - a <= tile * (1 - fd.TILE_OVERLAP) + 1 for a, b in zip(starts, starts[1:]))
    assert len(corners) <= 16


def test_a_face_found_twice_or_in_part_is_covered():
    found = [np.array([100.0, 100, 200, 200])]
    assert fd.covered(np.array([120.0, 110, 190, 180]), found)        # a part of it
    assert fd.covered(np.array([90.0, 90, 210, 215]), found)          # it, a little larger
    assert not fd.covered(np.array([190.0, 190, 260, 260]), found)    # a neighbour, touching
    assert not fd.covered(np.array([10.0, 10, 40, 40]), [])


def projected_face(yaw, distance):
    """68 marks of the generic 3D face turned `yaw` degrees, `distance` mm
    from a 640x480 camera (the jaw marks, which the pose fit skips, at the
    face's middle)."""
    import head_pose
    indices, points = head_pose.face_shape()
    rotation = head_pose.rotation_from(yaw, 0, 0)
    projected, _ = cv2.projectPoints(points, cv2.Rodrigues(rotation)[0], np.array([0., 0., distance]),
                                     head_pose.camera_matrix((640, 480)), None)
    marks = np.empty((68, 2))
    marks[indices] = projected.reshape(-1, 2)
    rest = np.setdiff1d(np.arange(68), indices)
    marks[rest] = marks[indices].mean(0)
    return marks


def test_refine_none_gives_small_and_turned_faces_one_more_pass():
    import predict
    shape = (480, 640, 3)
    near, far = projected_face(0, 500), projected_face(0, 2000)
    assert np.ptp(near[:, 0]) > predict.REFINE_BELOW > np.ptp(far[:, 0])
    assert not predictor.needs_refine(near, shape)
    assert predictor.needs_refine(far, shape)
    turned = projected_face(predict.REFINE_YAW + 15, 500)
    assert np.ptp(turned[:, 0]) > predict.REFINE_BELOW
    assert predictor.needs_refine(turned, shape)
    assert not predictor.needs_refine(projected_face(predict.REFINE_YAW - 15, 500), shape)


def test_refine_none_runs_the_pass_on_a_small_face_only():
    """The bundled predictor counts its refine passes: the 40-px face gets
    one (or its re-crop, which is that pass), the portrait at full size
    none, and refine=0 none."""
    frame, _ = tiny_face_photo()
    auto, never = predictor(), predictor(refine=0)
    auto.predict(frame)
    never.predict(frame)
    assert auto.refines + auto.recrops == 1 and never.refines == 0
    auto.refines = auto.recrops = 0
    auto.predict(str(PORTRAITS[1]))
    assert auto.refines == 0


def test_detectors_are_tried_in_the_order_given(tiny_models):
    """Several detector paths are tried in order: the first whose faces are
    all wide enough for it answers (face_detector.detect_faces)."""
    for order in ([fd.SHORT_RANGE, fd.FULL_RANGE], [fd.FULL_RANGE, fd.SHORT_RANGE]):
        model = predictor([str(p) for p in order], tiny_models / "saved")
        assert len(model.predict(PORTRAITS[1])) == 1
        assert model.last_detector == order[0].name
    # The second is asked when the first finds only a face too small for it.
    model = predictor([str(fd.SHORT_RANGE), str(fd.FULL_RANGE)], tiny_models / "saved")
    assert len(model.predict(small_face_photo())) == 1
    assert model.last_detector == fd.FULL_RANGE.name


class _StubDetector:
    def __init__(self, input_size, boxes):
        self.input_size, self.boxes, self.asked = input_size, boxes, 0

    def faces(self, rgb, tiled=False):
        self.asked += 1
        boxes = self.tiled_boxes if tiled else self.boxes
        return [(np.array(box, float), 0.9, np.array(box, float)) for box in boxes]

    tiled_boxes = ()


def test_a_face_only_the_first_detector_found_is_kept():
    rgb = np.zeros((480, 640, 3), np.uint8)
    # The short-range stand-in finds a face too small to trust (under 0.2 of
    # 640 px) and a false one; the full-range one finds the second only.
    short = _StubDetector(128, [[100, 100, 200, 200], [400, 100, 480, 180]])
    full = _StubDetector(192, [[402, 98, 478, 182]])
    found, last = fd.detect_faces([short, full], rgb)
    assert last is full and short.asked == full.asked == 1
    # the full-range face where both found one, and the face it missed
    assert [box.tolist() for box, _, _ in found] == [[402, 98, 478, 182], [100, 100, 200, 200]]
    # A first detector whose faces are all wide enough answers alone.
    wide = _StubDetector(128, [[100, 100, 300, 300]])
    found, last = fd.detect_faces([wide, full], rgb)
    assert last is wide and full.asked == 1 and len(found) == 1


def test_a_photo_with_no_face_found_is_searched_in_squares():
    blind = _StubDetector(192, [])
    blind.tiled_boxes = [[10, 10, 40, 40]]
    for shape, searched in (((480, 640, 3), True), ((300, 380, 3), False)):
        found, _ = fd.detect_faces([blind], np.zeros(shape, np.uint8), small_faces=True)
        assert len(found) == int(searched), shape
    # not when asked not to (video frames), nor when a face was found
    assert fd.detect_faces([blind], np.zeros((480, 640, 3), np.uint8))[0] == []
    seen = _StubDetector(192, [[100, 100, 300, 300]])
    seen.tiled_boxes = [[10, 10, 40, 40]]
    assert len(fd.detect_faces([seen], np.zeros((480, 640, 3), np.uint8), small_faces=True)[0]) == 1


def test_decode_synthetic_outputs():
    centres = np.array([[0.25, 0.5], [0.75, 0.5]])
    raw = np.zeros((2, 16))
    raw[0, :4] = [19.2, -9.6, 48, 96]          # +0.1, -0.05 of the input; 0.25 × 0.5 in size
    raw[0, 4:6] = [-9.6, 19.2]                 # first keypoint: -0.05, +0.1 from the anchor
    boxes, scores, keypoints = fd.decode(raw, np.array([0.0, 200.0]), centres, input_size=192)
    np.testing.assert_allclose(boxes[0], [0.35 - 0.125, 0.45 - 0.25, 0.35 + 0.125, 0.45 + 0.25])
    np.testing.assert_allclose(scores, [0.5, 1 / (1 + np.exp(-100))])   # logits are clipped
    assert keypoints.shape == (2, 6, 2)
    np.testing.assert_allclose(keypoints[0, 0], [0.2, 0.6])
    np.testing.assert_allclose(keypoints[0, 1:], [[0.25, 0.5]] * 5)    # offsets 0: the anchor
    np.testing.assert_allclose(keypoints[1], [[0.75, 0.5]] * 6)


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    scores = np.array([0.6, 0.9, 0.8])
    kept, kept_scores = fd.weighted_nms(boxes, scores)
    np.testing.assert_allclose(kept_scores, [0.9, 0.8])
    np.testing.assert_allclose(kept[0], (boxes[0] * 0.6 + boxes[1] * 0.9) / 1.5)
    np.testing.assert_allclose(kept[1], boxes[2])
    empty, _ = fd.weighted_nms(np.zeros((0, 4)), np.zeros(0))
    assert empty.shape == (0, 4)
    # Extra columns (keypoints) are averaged with the same weights; the
    # overlap is still that of the boxes alone.
    points = np.array([[5, 5], [7, 9], [100, 100]], float)
    kept, _ = fd.weighted_nms(np.concatenate([boxes, points], 1), scores)
    assert kept.shape == (2, 6)
    np.testing.assert_allclose(kept[0, 4:], (points[0] * 0.6 + points[1] * 0.9) / 1.5)
    np.testing.assert_allclose(kept[1, 4:], points[2])


def test_weighted_nms_ends_on_degenerate_boxes():
    # NaN and zero-area boxes have no IoU with themselves; they must still
    # leave the queue (this looped forever once), so fail after 10 s.
    def give_up(*_):
        raise TimeoutError("weighted_nms did not finish")
    boxes = np.array([[np.nan] * 4, [0, 0, 0, 0], [0, 0, 10, 10]], float)
    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(10)
    try:
        kept, kept_scores = fd.weighted_nms(boxes, np.array([0.9, 0.8, 0.7]))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert kept.shape == (3, 4)
    np.testing.assert_allclose(kept_scores, [0.9, 0.8, 0.7])


@pytest.mark.parametrize("height, width", [(700, 1000), (480, 640), (100, 150), (900, 301)])
def test_letterbox_keeps_geometry_and_maps_back(height, width):
    image = np.zeros((height, width, 3), np.uint8)
    x0, y0, x1, y1 = width // 4, height // 3, width // 2, 2 * height // 3
    image[y0:y1, x0:x1] = 255
    patch, factor = fd.letterbox(image)
    assert patch.shape == (192, 192, 3)
    ys, xs = np.nonzero(patch[..., 0] > 127)
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) * factor
    # Within about one patch pixel of where the rectangle is in the image.
    np.testing.assert_allclose(found, [x0, y0, x1, y1], atol=1.5 * factor)
    assert patch[-1, -1].max() == 0 or height == width   # padding bottom/right


def test_detector_threshold_must_be_a_probability():
    with pytest.raises(ValueError, match="threshold must be between 0 and 1, got 1.5"):
        fd.FaceDetector(threshold=1.5)


def test_detector_box_maps_to_a_square_landmark_box():
    mapping = {"center_offset": [0.0, 0.1], "side_over_width": 0.9}
    box = geometry.detector_to_landmark_box([100, 100, 200, 220], mapping)
    np.testing.assert_allclose(box, [105, 127, 195, 217])
    # With keypoint weights and keypoints: a linear map of keypoint_features
    # (12 keypoint coordinates, height / width, 1) to (dx, dy, log side).
    keypoints = np.full((6, 2), 150.0)
    keypoints[0] = [170, 130]                  # +0.2, -0.2 box widths from the centre (150, 160)
    weights = np.zeros((14, 3))
    weights[0, 0] = 0.5                        # dx = 0.5 × 0.2 = 0.1 box widths
    weights[12, 1] = 0.1                       # dy = 0.1 × height / width = 0.12
    weights[13, 2] = np.log(0.8)               # side = 0.8 widths
    mapped = geometry.detector_to_landmark_box([100, 100, 200, 220], {**mapping, "keypoint_weights":
                                                                     weights.tolist()}, keypoints)
    np.testing.assert_allclose(mapped, [160 - 40, 160 + 0.12 * 120 - 40, 160 + 40, 160 + 0.12 * 120 + 40])
    # Without keypoints the medians still apply.
    np.testing.assert_allclose(geometry.detector_to_landmark_box(
        [100, 100, 200, 220], {**mapping, "keypoint_weights": weights.tolist()}), box)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """An untrained landmark model as SavedModel and as float .tflite."""
    root = tmp_path_factory.mktemp("predict_models")
    from test_ptq_benchmark import tiny_model
    tf.random.set_seed(1)
    landmark.export(tiny_model(), {"model": "tiny", "num_marks": 68, "layout": "300w68",
                                   "input_size": 128}, root / "saved")
    (root / "model.tflite").write_bytes(pb.convert(root / "saved", "float32", None))
    return root


def test_finds_each_portrait_and_both_in_one_picture(tiny_models):
    model = predictor(cnn_model_path=tiny_models / "saved")
    images = [cv2.imread(str(p)) for p in PORTRAITS]
    for image in images:
        faces = model.predict(image)
        assert len(faces) == 1 and faces[0]["marks"].shape == (68, 2)
    height = 300
    row = np.hstack([cv2.resize(i, (int(i.shape[1] * height / i.shape[0]), height)) for i in images])
    assert len(model.predict(row)) == 2


def test_savedmodel_and_tflite_give_matching_marks(tiny_models):
    # refine=0: an untrained model's marks can fall either side of the
    # refine pass's size and yaw limits, and the formats are the question here.
    from_saved = predictor(cnn_model_path=tiny_models / "saved", refine=0).predict(PORTRAITS[0])
    from_tflite = predictor(cnn_model_path=tiny_models / "model.tflite", refine=0).predict(PORTRAITS[0])
    np.testing.assert_allclose(from_saved[0]["marks"], from_tflite[0]["marks"], rtol=1e-5, atol=1e-2)
    # The flip test works on both kinds of model, and agrees between them.
    flipped = [predictor(cnn_model_path=tiny_models / name, flip=True).predict(PORTRAITS[0])
               for name in ("saved", "model.tflite")]
    np.testing.assert_allclose(flipped[0][0]["marks"], flipped[1][0]["marks"], rtol=1e-5, atol=1e-2)


def test_odd_images(tiny_models):
    model = predictor(cnn_model_path=tiny_models / "saved")
    portrait = cv2.imread(str(PORTRAITS[1]))
    gray = cv2.cvtColor(portrait, cv2.COLOR_BGR2GRAY)
    assert len(model.predict(gray)) == 1
    assert len(model.predict(gray[..., None])) == 1
    assert len(model.predict(cv2.cvtColor(portrait, cv2.COLOR_BGR2BGRA))) == 1
    assert model.predict(np.full((480, 640, 3), 128, np.uint8)) == []     # no face
    assert model.predict(np.zeros((1, 1, 3), np.uint8)) == []             # tiny
    assert model.predict(np.zeros((0, 0, 3), np.uint8)) == []             # empty
    assert model.predict(np.zeros((7, 3000, 3), np.uint8)) == []          # extreme aspect
    marks = model.landmarks(portrait, (200, 150, 400, 380))
    assert marks.shape == (68, 2) and np.isfinite(marks).all()
    assert model.draw(portrait, model.predict(portrait)).shape == portrait.shape


def test_bad_inputs_name_the_problem(tmp_path, tiny_models):
    with pytest.raises(ValueError, match="cannot read image .*nope.jpg"):
        to_bgr(tmp_path / "nope.jpg")
    with pytest.raises(ValueError, match="uint8"):
        to_bgr(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        to_bgr(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(FileNotFoundError, match="neither an exported SavedModel"):
        predictor(cnn_model_path=tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="model.tflite is not a BlazeFace detector"):
        predictor(tiny_models / "model.tflite")     # a 128×128 input, but landmarks out
    from face_detector import SHORT_RANGE
    with pytest.raises(ValueError, match=f"{SHORT_RANGE.name} is not a landmark model"):
        predictor(cnn_model_path=SHORT_RANGE)   # a 128×128 input, but boxes out


def test_an_unreadable_image_leaves_no_output(tmp_path, tiny_models):
    from predict import main
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a_portrait.jpg").write_bytes(PORTRAITS[1].read_bytes())   # marked first
    (folder / "b_broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="cannot read image .*b_broken.jpg"):
        main([str(folder), "--out", str(out), "--model", str(tiny_models / "saved")])
    assert not out.exists()
    with pytest.raises(ValueError, match="refine must be a whole number >= 0, or None, got -1"):
        predictor(cnn_model_path=tiny_models / "saved", refine=-1)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a model exported"):
        predictor(cnn_model_path=tmp_path / "empty_dir")


@pytest.mark.parametrize("flags, message", [
    (["--out", "{f}"], "--out {f}: is a file, not a folder"),
    (["--out", "{f}/sub"], "--out {f}/sub: {f} is a file, not a folder"),
    (["--montage", "{f}/m.png"], "--montage {f}/m.png: {f} is a file, not a folder"),
    (["--speed", "{d}"], "--speed {d}: is a folder, not a file"),
])
def test_outputs_that_cannot_be_written_are_named_before_any_work(tmp_path, capsys, flags,
                                                                  message):
    from predict import main
    (tmp_path / "afile").write_text("")
    names = {"f": tmp_path / "afile", "d": tmp_path}
    flags = [f.format(**names) for f in flags]
    out = [] if "--out" in flags else ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_:
        main([str(PORTRAITS[0]), *out, *flags])
    assert exit_.value.code == 2
    assert message.format(**names) in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_cli_writes_annotated_images_marks_and_video(tiny_models, tmp_path):
    import json

    from predict import main
    out = tmp_path / "out"
    # The montage's folder need not exist yet (it was written nowhere, silently).
    main([str(ROOT / "test_images"), "--model", str(tiny_models / "saved"), "--out", str(out),
          "--montage", str(tmp_path / "new" / "montage.png")])
    marks = json.loads((out / "marks.json").read_text())
    assert {Path(k).name for k in marks} == {p.name for p in PORTRAITS}
    assert all(len(faces) == 1 and len(faces[0]["marks"]) == 68 for faces in marks.values())
    assert (out / "astronaut_marks.jpg").is_file() and (tmp_path / "new" / "montage.png").is_file()
    with pytest.raises(SystemExit):      # not an image name: refused before anything is written
        main([str(ROOT / "test_images"), "--model", str(tiny_models / "saved"),
              "--out", str(tmp_path / "none"), "--montage", str(tmp_path / "montage")])
    assert not (tmp_path / "none").exists()

    from predict import predictor as make, speed
    speed(make(cnn_model_path=tiny_models / "model.tflite"), PORTRAITS, tmp_path / "speed.json",
          runs=5, repeats=2)
    timing = json.loads((tmp_path / "speed.json").read_text())
    assert [Path(f["image"]).name for f in timing["frames"]] == [p.name for p in PORTRAITS]
    assert timing["landmark_model"] == str(tiny_models / "model.tflite")
    assert set(timing["cpu"]) == {"model", "int8_dot_product"}
    assert timing["flip"] is DEFAULT_FLIP  # the predictor's default
    for frame in timing["frames"]:
        assert frame["faces"] == 1 and 0 < frame["median_ms"] <= frame["p90_ms"]
        assert len(frame["round_medians_ms"]) == 2
        # A face under MIN_FACE_SHARE of the width sends the frame to the full-range model.
        small = frame["face_share"] < fd.MIN_FACE_SHARE[128]
        assert frame["detector"] == (fd.FULL_RANGE if small else fd.SHORT_RANGE).name

    video = tmp_path / "clip.mp4"
    frame = cv2.resize(cv2.imread(str(PORTRAITS[1])), (320, 400))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (320, 400))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    main(["--video", str(video), "--model", str(tiny_models / "saved"), "--out", str(out)])
    assert cv2.VideoCapture(str(out / "clip_marks.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 3
    assert len(json.loads((out / "clip_marks.json").read_text())) == 3
    with pytest.raises(SystemExit, match="cannot open video"):
        main(["--video", str(tmp_path / "none.mp4"), "--model", str(tiny_models / "saved")])
    # Images with a video that fails: refused before the images' outputs are written.
    with pytest.raises(SystemExit, match="cannot open video .*none.mp4"):
        main([str(PORTRAITS[1]), "--video", str(tmp_path / "none.mp4"), "--model",
              str(tiny_models / "saved"), "--out", str(tmp_path / "both")])
    assert not (tmp_path / "both").exists()
    # 0 is refused, by name, before anything is written (it used to mean the default).
    with pytest.raises(SystemExit, match="detect_every must be a whole number >= 1, got 0"):
        main(["--video", str(video), "--model", str(tiny_models / "saved"), "--detect_every", "0",
              "--out", str(tmp_path / "zero")])
    assert not (tmp_path / "zero").exists()


def test_bundled_models_mark_both_portraits_and_agree():
    """The defaults a user meets first: bundled detector + int8 model, and
    the bundled float SavedModel they were converted from."""
    from layouts import get_layout
    from metrics import nme_per_face
    from predict import ASSETS
    int8, float_model = predictor(), predictor(None, ASSETS / "landmarks_300w_float")
    left, right = get_layout("300w68").eye_corners
    for path in PORTRAITS:
        faces = int8.predict(path)
        assert len(faces) == 1
        marks, box = faces[0]["marks"], np.array(faces[0]["box"])
        # Plausible: the marks fill the detector's box and the subject's right
        # eye corner (36) is on the image's left in these frontal portraits.
        assert fd.iou(box, geometry.landmark_box(marks)[None])[0] > 0.4
        assert marks[left, 0] < marks[right, 0]
        reference = float_model.predict(path)[0]["marks"]
        assert nme_per_face(marks[None], reference[None], (left, right))[0] < 0.03


def test_int8_model_takes_uint8_crops_as_it_takes_float_ones():
    """A uint8 crop is quantized by table lookup (TFLiteModel.pixel_table):
    the int8 input, and so the marks, are exactly those of the float path."""
    from predict import DEFAULT_LANDMARK_MODEL
    from tflite_model import TFLiteModel
    model = TFLiteModel(DEFAULT_LANDMARK_MODEL)
    assert model.input["dtype"] == np.int8
    crops = np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    crops[0] = cv2.resize(cv2.imread(str(PORTRAITS[1])), (128, 128))
    np.testing.assert_array_equal(model.predict(crops), model.predict(crops.astype(np.float32)))


def test_keypoint_mapping_fit_recovers_a_linear_map():
    """Landmark boxes made from random detections by known keypoint weights:
    the least-squares fit finds the weights, and maps each box back."""
    import fit_box_mapping
    rng = np.random.default_rng(0)
    truth_weights = rng.normal(0, 0.1, (14, 3))
    boxes, keypoints, truths = [], [], []
    for _ in range(50):
        x0, y0 = rng.uniform(0, 400, 2)
        width, height = rng.uniform(50, 200), rng.uniform(50, 200)
        box = np.array([x0, y0, x0 + width, y0 + height])
        points = box[:2] + rng.uniform(0, 1, (6, 2)) * [width, height]
        boxes.append(box), keypoints.append(points)
        truths.append(geometry.detector_to_landmark_box(box, {"keypoint_weights": truth_weights}, points))
    truths = np.array(truths)
    boxes = np.array(boxes)
    sizes = boxes[:, 2:] - boxes[:, :2]
    offsets = (truths[:, :2] + truths[:, 2:] - boxes[:, :2] - boxes[:, 2:]) / 2 / sizes
    sides = (truths[:, 2] - truths[:, 0]) / sizes[:, 0]
    weights = fit_box_mapping.keypoint_weights(boxes, keypoints, offsets, sides)
    np.testing.assert_allclose(weights, truth_weights, atol=1e-8)
    errors = fit_box_mapping.crop_error(boxes, keypoints, truths, {"keypoint_weights": weights})
    assert errors["centre_p90"] < 1e-8 and errors["side_p90"] < 1e-8


def test_box_mapping_fit_on_annotated_photos(tmp_path):
    """fit_box_mapping on two photos annotated with the bundled model's marks:
    both matched, a no-face photo counted as missed, and the threshold sweep."""
    import json
    import shutil

    import fit_box_mapping
    from conftest import write_pts
    model = predictor()
    for path in PORTRAITS:
        shutil.copy(path, tmp_path / path.name)
        write_pts(tmp_path / f"{path.stem}.pts", model.predict(path)[0]["marks"])
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((200, 300, 3), 128, np.uint8))
    write_pts(tmp_path / "blank.pts", np.random.default_rng(0).uniform(50, 150, (68, 2)))
    out = tmp_path / "out"
    out.mkdir()
    fit_box_mapping.main([str(tmp_path), "--out_dir", str(out)])
    for detector in fd.DEFAULT_MODELS:     # one mapping per bundled detector
        result = json.loads((out / fd.box_mapping_path(detector).name).read_text())
        assert result["detector"] == detector.name
        assert result["faces"] == 3 and result["fitted"] == 2 and result["missed"] == 1
        assert 0.6 < result["side_over_width"] < 1.4
        assert [row["threshold"] for row in result["threshold_sweep"]] == list(fit_box_mapping.SWEEP)
        assert all(row["missed"] >= 1 for row in result["threshold_sweep"])
        sweep = {row["share"]: row["missed"] for row in result["size_sweep"]}
        assert list(sweep) == list(fit_box_mapping.SHARES)
        assert all(row["faces"] == 3 for row in result["size_sweep"])
        assert sweep[0.25] == 1                  # the portraits at 25% of the width: found
        # Two faces are too few for the keypoint mapping: the medians only.
        assert "keypoint_weights" not in result and list(result["crop_error"]) == ["medians"]
    # --exclude: a split's test photos are detected and counted, not fitted on.
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"test_sources": [str(tmp_path / PORTRAITS[0].name)]}))
    fit_box_mapping.main([str(tmp_path), "--out_dir", str(out), "--detector", str(fd.SHORT_RANGE),
                          "--exclude", str(summary)])
    result = json.loads((out / fd.box_mapping_path(fd.SHORT_RANGE).name).read_text())
    assert (result["faces"], result["fitted"], result["held_out"], result["missed"]) == (3, 1, 1, 1)
    # A detector without a mapping is named, with the command that makes one.
    copy = tmp_path / "my_detector.tflite"
    shutil.copy(fd.SHORT_RANGE, copy)
    with pytest.raises(FileNotFoundError, match="no box mapping for .*my_detector.tflite.*"
                                                "fit_box_mapping.py --detector"):
        predictor(copy).predict(PORTRAITS[0])


def test_interpreter_threads_give_the_same_marks_and_are_checked():
    """predictor(threads=2) runs each interpreter on two threads: the marks
    are one thread's; a count that is not a whole number >= 1 is refused."""
    from predict import predictor
    one, two = predictor(), predictor(threads=2)
    for photo in PORTRAITS:
        a, b = one.predict(str(photo)), two.predict(str(photo))
        assert len(a) == len(b) >= 1
        assert all(np.allclose(x["marks"], y["marks"], atol=1e-4) for x, y in zip(a, b))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a whole number >= 1"):
            predictor(threads=bad)


def test_one_predictor_shared_by_four_threads_answers_as_one_thread():
    """The bundled int8 predictor from 4 threads, 25 calls each on two
    photos: no exception, and every answer identical to one thread's."""
    from concurrent.futures import ThreadPoolExecutor
    model = predictor()
    images = [cv2.imread(str(p)) for p in PORTRAITS]
    expected = [model.predict(image) for image in images]

    def calls(worker):
        return [(k % 2, model.predict(images[k % 2])) for k in range(worker, worker + 25)]

    with ThreadPoolExecutor(4) as pool:
        results = [r for batch in pool.map(calls, range(4)) for r in batch]
    assert len(results) == 100
    for which, faces in results:
        assert len(faces) == len(expected[which])
        for face, reference in zip(faces, expected[which]):
            np.testing.assert_array_equal(face["marks"], reference["marks"])
            assert face["box"] == reference["box"] and face["score"] == reference["score"]


@pytest.mark.parametrize("box, why", [
    ((float("nan"), 10, 100, 100), "not finite"),
    ((10, 10, float("inf"), 100), "not finite"),
    ((50, 50, 50, 120), "empty, inverted"),
    ((120, 50, 40, 120), "empty, inverted"),
    ((5000, 5000, 5100, 5100), "wholly outside"),
    ((-300, -300, -100, -100), "wholly outside"),
    ((0, 0, 1e9, 1e9), "more than 4 times"),
    ((1, 2, 3), "not four numbers"),
    ("box", "not four numbers"),
])
def test_bad_boxes_are_refused_by_name(tiny_models, box, why):
    model = predictor(cnn_model_path=tiny_models / "saved")
    portrait = cv2.imread(str(PORTRAITS[1]))
    with pytest.raises(ValueError, match=f"box .*{why}"):
        model.landmarks(portrait, box)
    # A box cut by the image's edge is a face at the edge: it is answered.
    assert np.isfinite(model.landmarks(portrait, (-40, -40, 150, 150))).all()


def test_a_truncated_jpeg_is_named_not_marked(tmp_path, tiny_models):
    from predict import main
    data = PORTRAITS[1].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="cut.jpg: truncated JPEG"):
        to_bgr(tmp_path / "cut.jpg")
    with pytest.raises(SystemExit, match="cut.jpg: truncated JPEG"):
        main([str(tmp_path / "cut.jpg"), "--out", str(tmp_path / "out"),
              "--model", str(tiny_models / "saved")])
    assert not (tmp_path / "out").exists()


def _avi(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (320, 400))
    frame = cv2.resize(cv2.imread(str(PORTRAITS[1])), (320, 400))
    for _ in range(frames):
        writer.write(frame)
    writer.release()
    return path


def test_videos_without_frames_or_cut_short_are_reported(tmp_path, tiny_models, capsys):
    from predict import main
    empty = _avi(tmp_path / "empty.avi", 0)
    with pytest.raises(SystemExit, match="empty.avi opens but yields no frame"):
        main(["--video", str(empty), "--model", str(tiny_models / "saved"),
              "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    whole = _avi(tmp_path / "whole.avi", 10).read_bytes()
    (tmp_path / "cut.avi").write_bytes(whole[:int(len(whole) * 0.6)])
    main(["--video", str(tmp_path / "cut.avi"), "--model", str(tiny_models / "saved"),
          "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "cut.avi declares 10 frames but only" in printed and "lost" in printed
    import json
    assert 0 < len(json.loads((tmp_path / "out" / "cut_marks.json").read_text())) < 10
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_predictor_evaluation_of_all_missed_faces_is_strict_json(tmp_path, monkeypatch,
                                                                  make_300w_folder):
    import json

    import evaluate_predictor
    folder = make_300w_folder("faces", 2)
    monkeypatch.setattr(evaluate_predictor, "score",
                        lambda model, faces, errors=None: (np.full(len(faces), np.nan), 0, [1.0] * len(faces)))
    out = tmp_path / "eval.json"
    evaluate_predictor.main(["--dirs", str(folder), "--out", str(out)])
    text = out.read_text()
    assert "NaN" not in text
    result = json.loads(text)
    assert result["nme"] is None and result["missed"] == 2 and result["nmes"] == [None, None]


def test_faces_of_one_photo_are_matched_one_to_one_on_one_pass(tmp_path):
    import evaluate_predictor
    import generate_mesh_dataset as gen
    import geometry

    left = np.random.default_rng(0).uniform(10, 30, (68, 2))
    right = left + [100, 0]
    calls = []

    class Model:
        def predict(self, image):
            calls.append(image)
            # Both detections lie over the left face; the right face is missed.
            box = geometry.landmark_box(left)
            return [{"box": box, "marks": left + 1}, {"box": box + 1, "marks": left + 2}]

    photo = tmp_path / "photo.jpg"
    faces = [gen.Face(photo, left, "300w68"), gen.Face(photo, right, "300w68")]
    nmes, unmatched, times = evaluate_predictor.score(Model(), faces)
    assert calls == [photo] and len(times) == 1
    assert np.isfinite(nmes[0]) and np.isnan(nmes[1]) and unmatched == 1


def test_wflw_lists_give_clear_errors(tmp_path, capsys):
    import evaluate_predictor
    for argv, message in (
            (["--wflw", str(tmp_path / "none.txt")], "none.txt: no such file"),
            (["--wflw_images", str(tmp_path)], "--wflw_images needs --wflw"),
            (["--wflw", str(tmp_path / "list.txt"), "--small", "x"], "one of --profile")):
        (tmp_path / "list.txt").write_text("1 2 3\n")
        with pytest.raises(SystemExit, match=message):
            evaluate_predictor.main(argv + ["--out", str(tmp_path / "out.json")])
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit):
        evaluate_predictor.main(["--wflw", str(tmp_path / "list.txt"),
                                 "--out", str(tmp_path / "afile" / "out.json")])
    assert f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "WFLW_images").mkdir()
    line = " ".join(["1.5"] * 196) + " 1--a/b.jpg\n"
    (tmp_path / "list.txt").write_text("\n" + line)
    with pytest.raises(SystemExit, match=r"list.txt:2: photo not found: .*1--a/b.jpg"):
        evaluate_predictor.main(["--wflw", str(tmp_path / "list.txt"),
                                 "--out", str(tmp_path / "out.json")])
    (tmp_path / "list.txt").write_text("1 2 3 a.jpg\n")
    with pytest.raises(SystemExit, match=r"list.txt:1: expected 207 fields"):
        evaluate_predictor.main(["--wflw", str(tmp_path / "list.txt"),
                                 "--out", str(tmp_path / "out.json")])
    assert not (tmp_path / "out.json").exists()


def test_video_with_tracking_writes_face_ids(tmp_path):
    """The bundled models (an untrained one's marks may leave the frame)."""
    import json

    from predict import main
    video = _avi(tmp_path / "clip.avi", 5)
    main(["--video", str(video), "--out", str(tmp_path / "out"), "--detect_every", "2",
          "--pose"])          # tracking is the default
    frames = json.loads((tmp_path / "out" / "clip_marks.json").read_text())
    assert len(frames) == 5 and all(len(faces) == 1 for faces in frames)
    assert len({faces[0]["id"] for faces in frames}) == 1
    face = frames[0][0]
    assert len(face["marks"]) == 68 and len(face["confidence"]) == 68
    assert 0 <= face["landmark_score"] <= 1 and set(face["pose"]) == {"yaw", "pitch", "roll"}
    main(["--video", str(video), "--out", str(tmp_path / "alone"), "--no-track"])
    alone = json.loads((tmp_path / "alone" / "clip_marks.json").read_text())
    assert len(alone) == 5 and "id" not in alone[0][0]
