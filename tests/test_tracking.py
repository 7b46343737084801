"""The One Euro filter and the tracker, on a stub predictor that finds
bright squares (no models needed)."""
import numpy as np
import pytest

import geometry
import tracking
from tracking import FaceTracker, MarkSmoother, OneEuroFilter

# 68 marks spread over a unit square, as a face's marks over its box.
PATTERN = np.random.default_rng(0).uniform(0.05, 0.95, (68, 2))


class StubDetector:
    input_size = 128

    def faces(self, rgb):
        import cv2
        mask = (rgb[:, :, 0] > 200).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        found = []
        for x, y, w, h, area in stats[1:count]:
            if area > 100:
                box = np.array([x, y, x + w, y + h], np.float64)
                found.append((box, 0.9, box))
        return found


class StubPredictor:
    """Marks: the pattern over the bright pixels inside the crop of `box`."""
    detectors = [StubDetector()]

    def __init__(self):
        self.calls, self.boxes = 0, []     # the landmark boxes it was asked to mark

    from predict import predictor
    describe = predictor.describe

    def _face_marks(self, rgb, box, flip=None, model=None, bgr=False):
        """Marks, and a confidence that is high only where the crop shows a square."""
        self.boxes.append(np.asarray(box, np.float64))
        marks, found = self._marks(rgb[:, :, ::-1] if bgr else rgb, box, with_found=True)
        return marks, np.full(len(marks), 0.9 if found else 0.1)

    def _marks(self, rgb, box, with_found=False):
        self.calls += 1
        centre, side = geometry.crop_square(box)
        x0, y0 = np.maximum(np.floor(centre - side / 2).astype(int), 0)
        x1, y1 = np.ceil(centre + side / 2).astype(int)
        ys, xs = np.nonzero(rgb[y0:y1, x0:x1, 0] > 200)
        if not len(xs):                   # nothing there: marks stay on the box
            lo, hi = np.asarray(box[:2]), np.asarray(box[2:])
        else:
            # A square's height is its side: one cut by the frame's left
            # edge is marked where it would be, partly outside, as a face is.
            hi = np.array([xs.max() + x0, ys.max() + y0], np.float64)
            side = ys.max() - ys.min()
            lo = hi - side
        marks = lo + PATTERN * (hi - lo)
        return (marks, bool(len(xs))) if with_found else marks


def frame_with(*squares, size=(240, 320)):
    frame = np.zeros(size + (3,), np.uint8)
    for x, y, side in squares:
        frame[max(0, y):y + side, max(0, x):x + side] = 255
    return frame


def test_one_euro_smooths_a_still_value_and_follows_a_step():
    rng = np.random.default_rng(1)
    still = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    noisy = 5 + rng.normal(0, 0.1, 300)
    out = np.array([still(v, t / 30) for t, v in enumerate(noisy)])
    assert np.std(out[60:]) < 0.3 * np.std(noisy[60:])
    step = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    values = np.r_[np.zeros(30), np.ones(60)]
    out = np.array([step(v, t / 30) for t, v in enumerate(values)])
    assert np.all(np.diff(out) >= -1e-12)                 # no overshoot back
    assert out[30] < 1 and out[-1] > 0.99                 # lags, then arrives


def test_one_euro_with_prediction_follows_a_ramp_without_lag():
    times = np.arange(90) / 30
    ramp = np.where(times < 1, 0.0, times - 1)             # still, then a steady speed
    plain = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    ahead = OneEuroFilter(min_cutoff=1.0, beta=5.0, d_cutoff=5.0, predict=True)
    lag_plain = ramp[-1] - [plain(v, t) for t, v in zip(times, ramp)][-1]
    lag_ahead = ramp[-1] - [ahead(v, t) for t, v in zip(times, ramp)][-1]
    assert lag_plain > 0.1 and abs(lag_ahead) < 0.1 * lag_plain


def test_mark_smoother_follows_a_turning_face_and_calms_its_noise():
    rng = np.random.default_rng(4)
    shape = (PATTERN - 0.5) * 120
    truths, raws, outs = [], [], []
    smoother = MarkSmoother()
    for k in range(120):
        angle, shift = np.radians(10 * np.sin(k / 20)), np.array([300 + 2 * k, 200 - k])
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        truth = shape @ turn.T + shift
        raw = truth + rng.normal(0, 1.0, truth.shape)
        truths.append(truth), raws.append(raw), outs.append(smoother(raw, k / 30))
    truths, raws, outs = np.array(truths), np.array(raws), np.array(outs)

    def jitter(marks):       # frame-to-frame change of the error, as video_benchmark scores it
        return np.sqrt(np.mean(np.diff(marks[30:] - truths[30:], axis=0) ** 2))
    assert jitter(outs) < 0.5 * jitter(raws)
    assert np.mean(np.linalg.norm(outs[30:] - truths[30:], axis=2)) < 1.0   # px: it keeps up


def test_a_face_that_jumps_is_marked_again_from_a_centred_crop():
    def after_a_jump(recrop_shift):
        tracker = FaceTracker(StubPredictor(), detect_every=100, smooth=False,
                              recrop_shift=recrop_shift)
        for _ in range(3):
            tracker.update(frame_with((100, 80, 60)))
        assert tracker.recrops == 0
        faces = tracker.update(frame_with((112, 80, 60)))   # the stub's crop cuts the square
        return tracker.recrops, faces[0]["box"][0]
    truth = 112 + PATTERN[:, 0].min() * 59
    recrops, left = after_a_jump(0.08)
    _, left_without = after_a_jump(None)
    assert recrops == 1 and abs(left - truth) < abs(left_without - truth) - 2


def test_one_euro_takes_irregular_and_repeated_times():
    rng = np.random.default_rng(2)
    times = np.cumsum(rng.uniform(0.005, 0.08, 200))
    filt = OneEuroFilter()
    out = [filt(np.array([1.0, 2.0]) + rng.normal(0, 0.01, 2), t) for t in times]
    assert np.allclose(out[-1], [1, 2], atol=0.02)
    np.testing.assert_array_equal(filt(np.array([9.0, 9.0]), times[-1]), out[-1])
    with pytest.raises(ValueError, match="min_cutoff > 0"):
        OneEuroFilter(min_cutoff=0)


def test_tracked_faces_skip_the_detector_and_keep_their_ids():
    model = StubPredictor()
    tracker = FaceTracker(model, detect_every=10, smooth=False)
    ids = []
    for k in range(20):                  # two faces drifting right
        faces = tracker.update(frame_with((20 + 2 * k, 40, 50), (180 + k, 120, 60)))
        assert len(faces) == 2
        ids.append(sorted(f["id"] for f in faces))
    assert all(i == ids[0] for i in ids)
    assert tracker.detections == 2       # frames 0 and 10
    # The tracked marks follow the drift exactly (the stub finds its squares).
    left = min(faces, key=lambda f: f["box"][0])
    assert left["box"][0] == pytest.approx(20 + 2 * 19 + PATTERN[:, 0].min() * 49, abs=1)


def test_a_cut_to_another_face_is_found_at_the_next_detection():
    tracker = FaceTracker(StubPredictor(), detect_every=5, smooth=False)
    first = [tracker.update(frame_with((30, 40, 60))) for _ in range(7)]
    old_id = first[0][0]["id"]
    after = [tracker.update(frame_with((200, 100, 60))) for _ in range(5)]
    # By the next detection frame (frame 10) the old face is gone and the new one tracked.
    assert [f["id"] for f in after[-1]] != [old_id] and len(after[-1]) == 1
    assert after[-1][0]["box"][0] == pytest.approx(200 + PATTERN[:, 0].min() * 59, abs=1)


def test_a_cut_to_another_face_in_the_same_place_is_a_new_face_at_once():
    """A new shot whose face sits where the last one did: the detection
    overlaps the old track, but the colours changed, so it is a new face
    (new id) on the cut's own frame, not the old one's continuation."""
    def shot(background):
        frame = frame_with((100, 80, 60))
        frame[frame[:, :, 0] < 200] = background
        return frame

    for cut_distance, new_id in ((tracking.CUT_DISTANCE, True), (None, False)):
        tracker = FaceTracker(StubPredictor(), detect_every=100, smooth=True,
                              cut_distance=cut_distance)
        before = [tracker.update(shot((0, 0, 0)))[0]["id"] for _ in range(5)]
        after = [tracker.update(shot((40, 160, 90)))[0]["id"] for _ in range(3)]
        assert len(set(before)) == 1 and len(set(after)) == 1
        assert (after[0] != before[0]) == new_id
        assert tracker.cuts == int(new_id)


def test_the_colour_histogram_tells_a_cut_from_motion():
    still = frame_with((100, 80, 60))
    moved = frame_with((130, 90, 60))
    other = still.copy()
    other[other[:, :, 0] < 200] = (40, 160, 90)
    histogram = tracking.colour_histogram
    assert tracking.histogram_distance(histogram(still), histogram(moved)) < 0.05
    assert tracking.histogram_distance(histogram(still), histogram(other)) > tracking.CUT_DISTANCE


def test_a_face_that_leaves_the_frame_is_dropped():
    tracker = FaceTracker(StubPredictor(), detect_every=100, smooth=False)
    counts = [len(tracker.update(frame_with((x, 60, 60)))) for x in range(100, -80, -20)]
    assert counts[0] == 1 and counts[-1] == 0


def test_smoothing_uses_the_times_and_calms_a_jittering_face():
    rng = np.random.default_rng(3)
    frames = [frame_with((100 + int(rng.integers(-2, 3)), 80, 60)) for _ in range(60)]
    times = np.cumsum(rng.uniform(0.02, 0.05, 60))

    def jitter(smooth):
        # A 2-px shake of a 60-px face is 3% of its size a frame: filter
        # settings that treat it as noise (the defaults follow real motion).
        tracker = FaceTracker(StubPredictor(), detect_every=1000, smooth=smooth,
                              min_cutoff=0.5, beta=0.0)
        marks = [faces[0]["marks"] for faces in tracker.track(frames, times)]
        return np.sqrt(np.mean(np.diff(np.array(marks), axis=0) ** 2))
    assert jitter(True) < 0.5 * jitter(False)


def test_bad_tracker_settings_are_named():
    with pytest.raises(ValueError, match="detect_every"):
        FaceTracker(StubPredictor(), detect_every=0)
    with pytest.raises(ValueError, match="fps"):
        FaceTracker(StubPredictor(), fps=0)
    with pytest.raises(ValueError, match="cut_distance"):
        FaceTracker(StubPredictor(), cut_distance=1.5)
    assert tracking.DETECT_EVERY >= 1


def test_a_face_whose_confidence_falls_is_looked_for_at_once():
    """A square that vanishes mid-way between detector runs: its marks'
    confidence falls, the detector runs on that very frame, and the track
    ends there instead of lingering until the next scheduled detection."""
    model = StubPredictor()
    tracker = FaceTracker(model, detect_every=50, smooth=False)
    tracker.update(frame_with((100, 80, 40)))
    tracker.update(frame_with((102, 80, 40)))
    assert tracker.detections == 1
    faces = tracker.update(frame_with())
    assert tracker.detections == 2 and faces == []
    faces = tracker.update(frame_with((104, 80, 40)))
    assert len(faces) == 1 and faces[0]["landmark_score"] == pytest.approx(0.9)
    assert faces[0]["confidence"].shape == (68,)


class PairedStubPredictor(StubPredictor):
    """Two stub models: "pose" has the sharper maps where `pose_sharper` says."""

    def __init__(self, pose_sharper):
        super().__init__()
        self.pose_sharper, self.runs = pose_sharper, {"main": 0, "pose": 0}
        self._single = {"main": None, "pose": None}

    def _single_marks(self, rgb, box, model, sharper=0.0):
        self.runs[model] += 1
        marks, confidence = StubPredictor._face_marks(self, rgb, box)
        return marks, confidence, np.full(len(marks), np.exp(-sharper))

    def _pair_candidates(self, rgb, box):
        return {"main": self._single_marks(rgb, box, "main"),
                "pose": self._single_marks(rgb, box, "pose", self.pose_sharper.pop(0))}

    def _face_marks(self, rgb, box, flip=None, model=None, bgr=False):
        assert model is not None, "a tracked face of a pair runs one model"
        return self._single_marks(rgb, box, model)[:2]


def test_a_tracked_face_of_a_pair_runs_one_model_and_keeps_it_within_the_band():
    # Pose's maps: 0.3 sharper at the first detection, then 0.15 (inside the
    # band around PICK_MARGIN 0.1: it stays), then 0.05 less (it switches back).
    model = PairedStubPredictor([0.3, 0.15, -0.05])
    tracker = FaceTracker(model, detect_every=5, smooth=False, one_model=True)
    chosen = []
    for _ in range(15):
        tracker.update(frame_with((100, 80, 60)))
        chosen.append(tracker.tracks[0].model)
    assert chosen[:10] == ["pose"] * 10 and chosen[10:] == ["main"] * 5
    # Three detections run both models; the 12 tracked frames run one each.
    assert model.runs == {"main": 3 + 4, "pose": 3 + 8}


def _textured(size=(240, 320), seed=0):
    """A grey frame of smooth random texture, something Lucas-Kanade can follow."""
    import cv2
    noise = np.random.default_rng(seed).uniform(0, 255, (size[0] // 8, size[1] // 8))
    grey = cv2.resize(noise, size[::-1], interpolation=cv2.INTER_CUBIC)
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def test_image_motion_recovers_a_known_similarity():
    import cv2
    frame = _textured()
    angle, scale, shift = 2.0, 1.03, np.array([4.5, -2.25])
    matrix = cv2.getRotationMatrix2D((160, 120), angle, scale)
    matrix[:, 2] += shift
    moved = cv2.warpAffine(frame, matrix, (320, 240), flags=cv2.INTER_CUBIC)
    points = 160 + (PATTERN - 0.5) * 100 + [0, -40]
    a, t = tracking.image_motion(tracking.GreyPyramid(frame), tracking.GreyPyramid(moved), points)
    expected = points @ matrix[:, :2].T + matrix[:, 2]
    found = a * (points[:, 0] + 1j * points[:, 1]) + t
    assert np.max(np.abs(found - (expected[:, 0] + 1j * expected[:, 1]))) < 0.1   # px
    # A flat frame has nothing to follow: no motion rather than a made-up one.
    flat = np.full_like(frame, 128)
    assert tracking.image_motion(tracking.GreyPyramid(flat), tracking.GreyPyramid(flat), points) is None


def test_mark_smoother_with_image_motion_calms_noise_without_lag():
    """Given the face's true motion from the pixels, the smoothed marks
    keep up with a fast turning, zooming face and lose more of the landmark
    model's noise than the filter that must guess the motion."""
    rng = np.random.default_rng(5)
    shape = (PATTERN - 0.5) * 120
    guessed, followed = MarkSmoother(), MarkSmoother()
    truths, outs, outs_followed, last = [], [], [], None
    for k in range(120):
        angle, zoom = np.radians(15 * np.sin(k / 10)), 1 + 0.2 * np.sin(k / 15)
        a = zoom * np.exp(1j * angle)
        t = complex(300 + 4 * k, 200 - 3 * k)
        truth = a * (shape[:, 0] + 1j * shape[:, 1]) + t
        # The model's noise, mostly the whole face shifting (as a crop placed
        # a pixel off shifts it), which the shape filter cannot take out.
        raw = (np.stack([truth.real, truth.imag], 1) + rng.normal(0, 1.0, 2)
               + rng.normal(0, 0.2, shape.shape))
        motion = None if last is None else (a / last[0], t - a / last[0] * last[1])
        last = (a, t)
        truths.append(np.stack([truth.real, truth.imag], 1))
        outs.append(guessed(raw, k / 30))
        outs_followed.append(followed(raw, k / 30, motion))
    truths, outs, outs_followed = np.array(truths), np.array(outs), np.array(outs_followed)

    def jitter(marks):
        return np.sqrt(np.mean(np.diff(marks[30:] - truths[30:], axis=0) ** 2))

    def error(marks):
        return np.mean(np.linalg.norm(marks[30:] - truths[30:], axis=2))
    assert jitter(outs_followed) < 0.7 * jitter(outs)
    assert error(outs_followed) < 0.8 * error(outs)


def test_the_crop_follows_the_pixels_before_the_model_is_heard():
    """With image motion, a tracked face's crop for a frame is the last
    one moved as the pixels moved, not a guess from its last marks."""
    frame = _textured(seed=3)
    frame[..., 2] = np.minimum(frame[..., 2], 150)
    frame[50:110, 100:160, 2] = 255       # the stub's face: red above 200 (BGR)
    model = StubPredictor()
    tracker = FaceTracker(model, detect_every=100, smooth=False)
    tracker.update(frame, 0.0)
    tracker.update(frame, 1 / 30)
    track, before = tracker.tracks[0], model.boxes[-1]
    tracker.update(np.roll(frame, (2, 3), axis=(0, 1)), 2 / 30)
    a, t = track.motion
    assert abs(a - 1) < 0.01 and abs(t - complex(3, 2)) < 0.2
    # The box this frame was marked from: the last one, moved 3 right and 2 down.
    assert np.allclose(model.boxes[-1] - before, [3, 2, 3, 2], atol=0.3)


def test_a_face_that_appears_beside_a_tracked_one_is_found_by_a_scan():
    """Between full detections the detector alone looks for new faces every
    scan_every frames: a second face is not left unmarked until the next
    full detection."""
    tracker = FaceTracker(StubPredictor(), detect_every=100, smooth=False, scan_every=5)
    counts = [len(tracker.update(frame_with((20, 40, 50), *([(200, 100, 60)] if k >= 2 else []))))
              for k in range(8)]
    assert counts == [1, 1, 1, 1, 1, 2, 2, 2]         # found at frame 5's scan
    assert tracker.detections == 1 and tracker.scans == 1


def test_a_moving_face_makes_the_tracker_look_for_new_ones_sooner():
    """The tracked faces' motion since the last look, as a share of the
    frame, also triggers a scan: a panning camera brings faces in."""
    still = FaceTracker(StubPredictor(), detect_every=100, smooth=False, scan_every=50)
    moving = FaceTracker(StubPredictor(), detect_every=100, smooth=False, scan_every=50,
                         scan_motion=0.1)           # 24 px of a 240-px-high frame
    for k in range(10):
        still.update(frame_with((20, 40, 50)))
        moving.update(frame_with((20 + 10 * k, 40, 50)))     # 10 px a frame
    assert still.scans == 0 and moving.scans == 3
    with pytest.raises(ValueError, match="scan_every"):
        FaceTracker(StubPredictor(), scan_every=0)


def test_a_face_cut_by_the_frame_edge_moves_as_its_pixels_do():
    """Once seen whole, a face partly out of the frame is carried by the
    image motion alone: the model's marks there (worst where its crop ran
    off the frame) do not pull it out of shape."""
    smoother = MarkSmoother()
    shape = (PATTERN - 0.5) * 100 + [300, 200]
    for k in range(5):
        last = smoother(shape, k / 30, (1 + 0j, 0j), inside=np.ones(68, bool))
    inside = np.ones(68, bool)
    inside[:10] = False
    wrong = shape + np.random.default_rng(0).normal(0, 8, shape.shape)
    out = smoother(wrong, 5 / 30, (1 + 0j, 12 + 3j), inside=inside)
    np.testing.assert_allclose(out, last + [12, 3], atol=1e-6)


def test_a_reused_frame_buffer_does_not_change_the_last_frames_grey():
    """Cameras may hand out one buffer, rewritten for each frame: the grey
    image the next frame's motion is measured against is the last frame's."""
    frame = _textured(seed=4)
    pyramid = tracking.GreyPyramid(frame)
    expected = frame[:, :, 0].copy()
    frame[:] = 0
    np.testing.assert_array_equal(pyramid[0], expected)
    assert pyramid[1].shape == (120, 160) and pyramid[1].mean() > 50


def test_a_faster_crop_filter_follows_a_sliding_face_more_steadily():
    """tracking.CROP_MIN_CUTOFF: a face that slides out and slows down is
    followed by the crop's filter; at a higher cutoff the crop's offset from
    the face changes less from frame to frame (what the marks' jitter feels)."""
    steps = {}
    for cutoff in (0.5, 2.0):
        tracker = FaceTracker(StubPredictor(), detect_every=1000, smooth=True, flow=False,
                              crop_min_cutoff=cutoff)
        offsets = []
        for k in range(40):
            x = int(round(40 + 100 * np.sin(np.pi * k / 40)))
            tracker.update(frame_with((x, 80, 60)), k / 30)
            crop = np.asarray(tracker.tracks[0].crop, np.float64)
            offsets.append((crop[0] + crop[2]) / 2 - (x + 30))
        steps[cutoff] = np.sqrt(np.mean(np.square(np.diff(offsets[5:]))))
    assert steps[2.0] < 0.95 * steps[0.5]
