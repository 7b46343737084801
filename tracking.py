"""Faces followed through video: a tracker and the One Euro filter.

Once a face is found, each next frame's landmark crop is placed from the
previous frame's marks (`geometry.landmark_box`, the crop training uses),
so the detector runs only every `detect_every` frames, when no face is
tracked, when a tracked face's marks leave the frame, or at a cut (a frame
whose colours differ from the last one's: a new shot, whose faces are new).
Each face keeps an `id` while it is tracked. Marks are smoothed by One Euro filters (Casiez
et al., CHI 2012), which use the frames' timestamps, so irregular frame
times are handled: one on the face's motion as a whole (a similarity fitted
to all 68 marks, so its noise is averaged over them) and a slower one on the
face's shape in its own frame, which changes only with expression.

    from predict import predictor
    for faces in predictor().track(frames, fps=30):   # any iterable of BGR frames
        ...                                           # [{"id", "box", "score", "marks"}]
"""
import itertools
import math

import cv2
import numpy as np

import geometry
from face_detector import detect_faces, iou
from geometry import RECROP_SHIFT
from layouts import PICK_MARGIN, sharper_by

# How often a full detection runs, in frames: it re-marks each tracked face
# from its crop with both models of a pair to choose its model again. With
# image motion, jitter was the same at 10, 20 and 30 (results/video_benchmark.json).
DETECT_EVERY = 30
# Between them, the detector alone looks for new faces (a scan: faces it
# finds that no track overlaps start tracks) every SCAN_EVERY frames, and
# sooner when the tracked faces have moved SCAN_MOTION of the frame's
# shorter side since the last look: a camera that pans brings new faces in
# at the edge as fast as it moves.
SCAN_EVERY = 10
SCAN_MOTION = 0.1
# A detection continues a track when its landmark box overlaps the track's
# (from its last marks) by at least this much.
MATCH_IOU = 0.3
# A track is dropped when more than this share of its marks leave the frame,
# or when its landmark_score (mean mark confidence, confidence.py) falls
# below LOST_SCORE: then fewer than about half its marks are likely right.
MAX_MARKS_OUTSIDE = 0.5
LOST_SCORE = 0.5
# One Euro parameters of the face's motion where image motion is not
# measured (flow=False, or a frame where it fails; MarkSmoother: shift, log
# scale and angle, lengths in units of the face's RMS radius): min_cutoff
# (Hz) sets the smoothing of a still face, beta how fast the cutoff rises
# with speed (less lag when the face moves). Chosen by video_benchmark.py
# --sweep before image motion came: the least jitter whose NME is within
# 0.1 points of detect-every-frame's.
MIN_CUTOFF = 2.0
BETA = 30.0
D_CUTOFF = 1.0
# The shape filter (marks in the face's own frame, unit RMS size): a
# still face's shape moves only by the landmark model's noise.
SHAPE_MIN_CUTOFF = 0.1
SHAPE_BETA = 20.0
# The motion filter predicts each frame from its speed (see OneEuroFilter),
# whose own cutoff is higher than the marks' (8 Hz against 1): a face that
# starts to move is caught within a few frames. From the sweep
# (results/video_benchmark.json): 8 Hz took jitter from 0.49x (5 Hz) to
# 0.47x; 12 Hz scored 0.468x against 8 Hz's 0.470x, within noise, for more
# still-face jitter, so 8 stays.
MOTION_D_CUTOFF = 8.0
# The crop of a tracked face follows its box (centre and size) through a
# One Euro filter of its own, still when the face is: a crop that moved
# with every frame's noise fed that noise back into the next frame's marks.
# A cutoff of 1 Hz instead of 0.5 lags less where faces slide fast:
# jitter 0.49x against 0.55x with runs v31 + v30 (results/video_benchmark.json,
# row "crop cutoff 0.5"; chosen on the benchmark's clips).
CROP_MIN_CUTOFF = 1.0
CROP_BETA = 20.0
DEFAULT_FPS = 30.0
# Tracked faces skip the flip test: the One Euro filter already averages
# over frames, and one landmark invoke a frame is half the cost.
TRACK_FLIP = False
# With a pair of landmark models (predict.py), `one_model` makes a tracked
# face run one of them: the one chosen where it was last detected, from
# both models' score maps (layouts.sharper_by against layouts.PICK_MARGIN),
# changed only when the other's maps are sharper by SWITCH_BAND more than
# the margin asks. Half the cost of a tracked frame; with image motion its
# jitter is below what the pair's fused marks had without it, for about
# 0.1 points of NME (results/video_benchmark.json, "both models").
ONE_MODEL = True
SWITCH_BAND = 0.1
# A cut (a new shot) is a frame whose colour histogram is this far
# (Bhattacharyya distance, 0 to 1) from the last frame's: its tracks are
# dropped and the detector run, so a new face found where the old one was
# gets a new id and fresh filters instead of the old face's smoothed shape.
# On video_benchmark.py's 20 clips, cuts measured 0.29 or more and every other
# frame (drift, zoom, a face leaving at 36 px a frame, camera noise) at
# most 0.11 (`video_benchmark.py` writes both as "cut_distances").
CUT_DISTANCE = 0.2
# Image motion (`flow`): each tracked face's motion from the last frame to
# this one is measured on the pixels (Lucas-Kanade at every third mark, a
# similarity fitted to them), and both the crop and the motion filter are
# moved by it before the landmark model is heard. The crop then stays where
# the face is, so the model sees it as it did last frame, and the filter
# low-passes only what the pixels did not explain (FLOW_MIN_CUTOFF, FLOW_BETA).
# The face region is shrunk until its marks span at most FLOW_SIDE px.
FLOW = True
FLOW_SIDE = 96
FLOW_STRIDE = 3                # every third mark is followed
FLOW_WINDOW = 9
FLOW_LEVELS = 3
# Chosen by video_benchmark.py --sweep with DETECT_EVERY and SHAPE_MIN_CUTOFF.
FLOW_MIN_CUTOFF = 0.3
FLOW_BETA = 10.0


def _alpha(cutoff, dt):
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The One Euro filter on an array of values: a low-pass filter whose
    cutoff rises with the values' speed, so still values are smoothed hard
    and moving ones follow with little lag. Call it with each new array and
    its time in seconds; a time that does not advance returns the last
    output unchanged.

    With `predict`, each step starts from the last value moved on by the
    filtered speed and low-passes only what that prediction missed (an
    alpha-beta filter with One Euro's gain): a value moving at a steady
    speed is followed with little lag, where the plain filter trails it."""

    def __init__(self, min_cutoff=MIN_CUTOFF, beta=BETA, d_cutoff=D_CUTOFF, predict=False):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"One Euro filter needs min_cutoff > 0, d_cutoff > 0 and beta >= 0, "
                             f"got {min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff, self.predict = min_cutoff, beta, d_cutoff, predict
        self.value = self.speed = self.time = None

    def __call__(self, value, time, ahead=None):
        """`ahead`, when given, is where the value is known to have moved
        (measured elsewhere, as image motion): the filter starts from it and
        its speed is the speed of what `ahead` missed."""
        value = np.asarray(value, np.float64)
        if self.value is None:
            self.value, self.speed, self.time = value.copy(), np.zeros_like(value), time
            return self.value.copy()
        dt = time - self.time
        if dt <= 0:
            return self.value.copy()
        start = self.value if ahead is None else np.asarray(ahead, np.float64)
        speed = (value - start) / dt
        self.speed += _alpha(self.d_cutoff, dt) * (speed - self.speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self.speed)
        if ahead is not None:
            self.value = start + _alpha(cutoff, dt) * (value - start)
        elif self.predict:
            # Predict only as far as the speed stands out from noise, as
            # One Euro opens its cutoff: a still value is not pushed by it.
            ahead = self.value + (1 - self.min_cutoff / cutoff) * self.speed * dt
            self.value = ahead + _alpha(cutoff, dt) * (value - ahead)
        else:
            self.value += _alpha(cutoff, dt) * (value - self.value)
        self.time = time
        return self.value.copy()


def colour_histogram(image):
    """An 8x8x8 colour histogram of every 8th pixel of a frame (RGB or BGR,
    as long as the frames compared agree): what FaceTracker compares to
    find cuts (0.03 ms for 640x480)."""
    small = np.ascontiguousarray(image[::8, ::8])
    return cv2.calcHist([small], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3)


def histogram_distance(histogram_a, histogram_b):
    """Bhattacharyya distance of two colour histograms: 0 alike, 1 disjoint."""
    return float(cv2.compareHist(histogram_a, histogram_b, cv2.HISTCMP_BHATTACHARYYA))


class GreyPyramid:
    """A BGR frame in grey at full, half, quarter... size, the smaller ones
    made when first asked for (what image_motion reads: halving by an
    integer factor costs little, unlike a resize of each face's region).
    The full-size grey is made at once, so a caller that reuses its frame
    buffer for the next frame does not change this one."""

    LEVELS = 3

    def __init__(self, bgr):
        self.levels = {0: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)}

    def __len__(self):
        return self.LEVELS

    def __getitem__(self, level):
        if level not in self.levels:
            finer = self[level - 1]
            self.levels[level] = cv2.resize(finer, (finer.shape[1] // 2, finer.shape[0] // 2),
                                            interpolation=cv2.INTER_AREA)
        return self.levels[level]


def image_motion(previous, current, points, side=FLOW_SIDE):
    """The similarity (a, t), complex: p -> a * p + t in pixels, that moves
    the frame `previous` onto `current` (GreyPyramids) around `points`
    (N, 2): pyramidal Lucas-Kanade at every FLOW_STRIDE-th point, on the level
    where they span at most about `side` px, and a least-squares fit that
    drops the points that disagree (a mouth that opens, an occluded mark).
    None when too few points were followed."""
    points = np.asarray(points, np.float64)[::FLOW_STRIDE]
    low, high = points.min(axis=0), points.max(axis=0)
    span = float(max(high - low))
    level = min(max(int(np.floor(np.log2(max(span, 1.0) / side))) + 1, 0), len(previous) - 1,
                len(current) - 1)
    scale = 2.0 ** level
    before, after = previous[level], current[level]
    if before.shape != after.shape:
        return None
    height, width = before.shape
    margin = (0.5 * span + 8) / scale        # room for the face to have moved
    x0, y0 = np.maximum(np.floor(low / scale - margin), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(high / scale + margin), [width, height]).astype(int)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    # At level k, pixel centres sit at (p + 0.5) / 2^k - 0.5.
    start = ((points + 0.5) / scale - 0.5 - [x0, y0]).astype(np.float32).reshape(-1, 1, 2)
    moved, status, _ = cv2.calcOpticalFlowPyrLK(
        before[y0:y1, x0:x1], after[y0:y1, x0:x1], start, None,
        winSize=(FLOW_WINDOW, FLOW_WINDOW), maxLevel=FLOW_LEVELS,
        criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03))
    followed = status.ravel() == 1
    if followed.sum() < 6:
        return None
    moved = (moved.reshape(-1, 2)[followed] + [x0, y0] + 0.5) * scale - 0.5
    source = points[followed, 0] + 1j * points[followed, 1]
    target = moved[:, 0] + 1j * moved[:, 1]
    a, t = fit_similarity(source, target)
    residual = np.abs(a * source + t - target)
    keep = residual <= max(3 * np.median(residual), 0.05 * scale)
    if keep.sum() < 6:
        return None
    return fit_similarity(source[keep], target[keep])


def fit_similarity(source, target):
    """Least-squares similarity target ~ a * source + t, with points as
    complex numbers: a = scale * e^(i angle), t the translation (Umeyama)."""
    source_mean, target_mean = source.mean(), target.mean()
    centred = source - source_mean
    a = np.vdot(centred, target - target_mean) / np.vdot(centred, centred).real
    return a, target_mean - a * source_mean


# A tracked mark counts as seen (MarkSmoother's `inside`) when it lies
# inside the frame by EDGE_MARGIN of the face's size.
EDGE_MARGIN = 0.05


def seen_marks(marks, shape, margin=EDGE_MARGIN):
    """(N,) bool: marks inside a frame of `shape` by `margin` of their box's longer side."""
    inset = margin * float(max(np.ptp(marks, axis=0)))
    height, width = shape[:2]
    return ((marks[:, 0] >= inset) & (marks[:, 1] >= inset)
            & (marks[:, 0] <= width - 1 - inset) & (marks[:, 1] <= height - 1 - inset))


class MarkSmoother:
    """Marks (N, 2) smoothed as motion and shape: each frame's marks are
    fitted by a similarity (translation, log scale, angle) from a reference
    shape; those four numbers go through one One Euro filter (in units of
    the face's size) and the marks mapped back into the reference frame
    through a slower one. A face that moves but does not change expression
    is followed without its 68 marks' noise adding up."""

    def __init__(self, min_cutoff=MIN_CUTOFF, beta=BETA, shape_min_cutoff=SHAPE_MIN_CUTOFF,
                 shape_beta=SHAPE_BETA, motion_d_cutoff=MOTION_D_CUTOFF,
                 flow_min_cutoff=FLOW_MIN_CUTOFF, flow_beta=FLOW_BETA):
        self.motion = OneEuroFilter(min_cutoff, beta, motion_d_cutoff, predict=True)
        # With image motion the filter follows the pixels, so it can be slower.
        self.flow_motion = OneEuroFilter(flow_min_cutoff, flow_beta, motion_d_cutoff)
        self.shape = OneEuroFilter(shape_min_cutoff, shape_beta)
        self.reference = self.angle = self.unit = None
        self.seen_whole = False     # whether all marks were once inside the frame

    def _moved(self, image_motion):
        """The motion filter's last value carried by the image's similarity."""
        tx, ty, log_scale, angle = self.flow_motion.value
        a_image, t_image = image_motion
        t = a_image * (tx + 1j * ty) + t_image / self.unit
        return np.array([t.real, t.imag, log_scale + np.log(np.abs(a_image)),
                         angle + np.angle(a_image)])

    def __call__(self, marks, time, image_motion=None, inside=None):
        """Smoothed marks at `time`; `image_motion` (a, t), the similarity
        the pixels moved by since the last call (image_motion()), if known;
        `inside` (N,) bool, the marks the landmark model saw inside the
        frame: a face seen whole before with some marks outside now is
        carried by `image_motion` alone, in the shape it had."""
        points = marks[:, 0] + 1j * marks[:, 1]
        if self.reference is None:   # the first marks, centred at unit RMS size
            centred = points - points.mean()
            # All is in units of this first RMS radius, so the cutoffs mean
            # the same for any face size.
            self.unit = np.sqrt(np.mean(np.abs(centred) ** 2))
            self.reference = centred / self.unit
        points = points / self.unit
        whole = inside is None or bool(np.all(inside))
        if (not whole and self.seen_whole and image_motion is not None
                and self.flow_motion.value is not None):
            # A face seen whole before, now cut by the frame's edge: the
            # model marks it worst where the crop ran off the frame, while
            # the pixels still show how it moves. It moves as they do, as it was.
            motion = self._moved(image_motion)
            self.motion.value, self.flow_motion.value = motion.copy(), motion.copy()
            self.motion.time = self.flow_motion.time = self.shape.time = time
            return self._marks_of(motion, self.shape.value)
        self.seen_whole = self.seen_whole or whole
        a, t = fit_similarity(self.reference, points)
        angle = np.angle(a)
        if self.angle is not None:    # no jump of 2 pi between frames
            angle = self.angle + (angle - self.angle + np.pi) % (2 * np.pi) - np.pi
        self.angle = angle
        measured = np.array([t.real, t.imag, np.log(np.abs(a)), angle])
        if image_motion is not None and self.flow_motion.value is not None:
            motion = self.flow_motion(measured, time, ahead=self._moved(image_motion))
            self.motion.value, self.motion.time = motion.copy(), time
        else:   # the plain filter; the other starts from its value next time
            motion = self.motion(measured, time)
            if self.flow_motion.value is None:
                self.flow_motion(motion, time)
            self.flow_motion.value, self.flow_motion.time = motion.copy(), time
        shape = (points - t) / a
        shape = self.shape(np.stack([shape.real, shape.imag], 1), time)
        return self._marks_of(motion, shape)

    def _marks_of(self, motion, shape):
        a, t = np.exp(motion[2] + 1j * motion[3]), motion[0] + 1j * motion[1]
        out = (a * (shape[:, 0] + 1j * shape[:, 1]) + t) * self.unit
        return np.stack([out.real, out.imag], 1)


class _Track:
    def __init__(self, track_id, marks, score, smooth, filter_options, confidence=None,
                 model=None, crop_min_cutoff=CROP_MIN_CUTOFF):
        self.id, self.marks, self.score, self.confidence = track_id, marks, score, confidence
        self.model = model          # which model of a pair marks it (None: the predictor's way)
        self.crop_filter = OneEuroFilter(crop_min_cutoff, CROP_BETA)
        self.crop_box = self.crop = None
        self.motion = None          # the pixels' similarity since the last frame, if measured
        self.pose = None            # the last frame's head pose
        self.side = float(max(np.ptp(marks, axis=0)))       # the filter's unit
        self.filter = MarkSmoother(**filter_options) if smooth else None

    def follow(self, image_motion):
        """Carry the crop with the pixels' motion since the last frame
        (image_motion(); None: not measured, the crop stays as foreseen)."""
        self.motion = image_motion
        if image_motion is None or self.crop_box is None:
            return
        a, t = image_motion
        centre = a * complex(*self.crop_box[:2]) + t
        self.crop_box = np.array([centre.real, centre.imag, abs(a) * self.crop_box[2]])
        self.crop = _square(self.crop_box)

    def next_crop(self, time):
        """The landmark box to crop the next frame with, from this frame's
        marks at `time`: the marks' box smoothed (from where the pixels
        carried the last one, when measured), else moved on by its last
        step (constant velocity), so a fast-moving face stays inside the
        crop training used."""
        box = geometry.landmark_box(self.marks)
        centre, size = (box[:2] + box[2:]) / 2, max(box[2] - box[0], box[3] - box[1])
        followed = self.motion is not None and self.crop_box is not None
        ahead = self.crop_box / self.side if followed else None
        state = self.crop_filter(np.array([*centre, size]) / self.side, time, ahead) * self.side
        previous = self.crop_box if self.crop_box is not None and not followed else state
        self.crop_box = state
        return _square(np.array([*(2 * state[:2] - previous[:2]), state[2]]))

    def smoothed(self, time, shape):
        if self.filter is None:
            return self.marks
        return self.filter(self.marks, time, self.motion, seen_marks(self.marks, shape))


def _square(state):
    """(x0, y0, x1, y1) of a (centre x, centre y, side) square."""
    return np.concatenate([state[:2] - state[2] / 2, state[:2] + state[2] / 2])


class FaceTracker:
    """Follows faces through frames with one `predict.predictor`.

    update(frame, time) -> the frame's faces: [{"id", "box", "score",
    "marks", "confidence", "landmark_score", "pose"}], "marks" smoothed when
    `smooth` (pose from the smoothed marks); "box" is the landmark box
    of the (unsmoothed) marks and "score" the detection score of the frame
    the face was last found in. Times are seconds; without them frames are
    1 / fps apart."""

    def __init__(self, model, detect_every=DETECT_EVERY, smooth=True, fps=None,
                 min_cutoff=MIN_CUTOFF, beta=BETA, shape_min_cutoff=SHAPE_MIN_CUTOFF,
                 shape_beta=SHAPE_BETA, flip=TRACK_FLIP, recrop_shift=RECROP_SHIFT,
                 one_model=ONE_MODEL, cut_distance=CUT_DISTANCE, motion_d_cutoff=MOTION_D_CUTOFF,
                 flow=FLOW, flow_min_cutoff=FLOW_MIN_CUTOFF, flow_beta=FLOW_BETA,
                 scan_every=SCAN_EVERY, scan_motion=SCAN_MOTION, crop_min_cutoff=CROP_MIN_CUTOFF):
        if int(detect_every) != detect_every or detect_every < 1:
            raise ValueError(f"detect_every must be a whole number >= 1, got {detect_every}")
        if int(scan_every) != scan_every or scan_every < 1 or not scan_motion > 0:
            raise ValueError(f"scan_every must be a whole number >= 1 and scan_motion > 0, "
                             f"got {scan_every}, {scan_motion}")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if cut_distance is not None and not 0 < cut_distance <= 1:
            raise ValueError(f"cut_distance must be in (0, 1], or None for no cut test, "
                             f"got {cut_distance}")
        self.model, self.detect_every, self.smooth = model, int(detect_every), smooth
        self.flip, self.recrop_shift = flip, recrop_shift
        # One model a tracked face, when the predictor pairs two (see ONE_MODEL).
        self.one_model = one_model and bool(getattr(model, "_single", None))
        self.frame_time = 1.0 / (fps or DEFAULT_FPS)
        self.filter_options = {"min_cutoff": min_cutoff, "beta": beta,
                               "shape_min_cutoff": shape_min_cutoff, "shape_beta": shape_beta,
                               "motion_d_cutoff": motion_d_cutoff,
                               "flow_min_cutoff": flow_min_cutoff, "flow_beta": flow_beta}
        self.flow, self.grey = flow, None
        self.crop_min_cutoff = crop_min_cutoff
        self.scan_every, self.scan_motion = int(scan_every), scan_motion
        self.since_look, self.moved = 0, 0.0     # frames and px since the detector last ran
        self.tracks, self.frames, self.ids = [], 0, itertools.count()
        self.cut_distance, self.histogram = cut_distance, None
        # Detector runs (full, and scans for new faces), re-crops and cuts found, for benchmarks.
        self.detections = self.scans = self.recrops = self.cuts = 0

    def _new_track(self, marks, confidence, score, model=None):
        return _Track(next(self.ids), marks, score, self.smooth, self.filter_options,
                      confidence, model, self.crop_min_cutoff)

    def _found_marks(self, rgb, crop, current=None):
        """(marks, confidence, model) of a face at a detection: with one
        model a face, both models mark the crop and the face keeps
        `current` (None: a new face) unless the other is sharper beyond
        SWITCH_BAND; else the predictor's marks."""
        if not self.one_model:
            return (*self.model._face_marks(rgb, crop, self.flip), None)
        found = self.model._pair_candidates(rgb, crop)
        advantage = float(sharper_by(found["main"][2], found["pose"][2]))
        band = {None: 0.0, "main": SWITCH_BAND, "pose": -SWITCH_BAND}[current]
        model = "pose" if advantage > PICK_MARGIN + band else "main"
        return (*found[model][:2], model)

    def _lost(self, track):
        return track.confidence is not None and float(np.mean(track.confidence)) < LOST_SCORE

    def _overlapped(self, landmark_box):
        """(index of the track whose landmark box overlaps `landmark_box`
        most, if by MATCH_IOU or more, else -1)."""
        boxes = np.array([geometry.landmark_box(t.marks) for t in self.tracks]).reshape(-1, 4)
        overlaps = iou(np.asarray(landmark_box), boxes) if len(boxes) else np.zeros(0)
        best = int(np.argmax(overlaps)) if len(overlaps) else -1
        return best if best >= 0 and overlaps[best] >= MATCH_IOU else -1

    def _scan(self, rgb):
        """Start a track for each detection no track overlaps; tracks stay as they are."""
        self.scans += 1
        self.since_look, self.moved = 0, 0.0
        # The first detector alone (the bundle's short-range one, a third of
        # the full-range one's time): the full detection every detect_every
        # frames still tries them all, for small faces.
        found, _ = detect_faces(self.model.detectors[:1], rgb)
        for box, score, landmark_box in found:
            if self._overlapped(landmark_box) < 0:
                marks, confidence, model = self._found_marks(rgb, landmark_box)
                self.tracks.append(self._new_track(marks, confidence, score, model))

    def _detect(self, rgb):
        """Continue tracks a detection overlaps; start one per other
        detection; drop tracks no detection overlaps (a cut, or a face gone)."""
        self.detections += 1
        self.since_look, self.moved = 0, 0.0
        found, _ = detect_faces(self.model.detectors, rgb)
        kept = []
        for box, score, landmark_box in found:
            best = self._overlapped(landmark_box)
            if best >= 0:
                track = self.tracks.pop(best)
                # A sure track keeps its own crop: switching to the detector's
                # box every few frames would make the marks jump there.
                crop = landmark_box if self._lost(track) or track.crop is None else track.crop
                track.marks, track.confidence, track.model = self._found_marks(
                    rgb, crop, track.model)
                track.score = score
            else:
                marks, confidence, model = self._found_marks(rgb, landmark_box)
                track = self._new_track(marks, confidence, score, model)
            kept.append(track)
        self.tracks = kept

    def _marks_in(self, bgr, crop, model=None):
        """Marks and confidence of a tracked face from its predicted crop,
        by `model` of a pair (None: the predictor's way), marked again from
        a re-centred crop when the face was far off centre."""
        marks, confidence = self.model._face_marks(bgr, crop, self.flip, model, bgr=True)
        if self.recrop_shift is not None and geometry.off_centre(marks, crop) > self.recrop_shift:
            self.recrops += 1
            marks, confidence = self.model._face_marks(bgr, geometry.landmark_box(marks),
                                                       self.flip, model, bgr=True)
        return marks, confidence

    def _keep_inside(self, shape):
        """Drop the tracks with more than MAX_MARKS_OUTSIDE of their marks
        outside a frame of `shape`."""
        self.tracks = [t for t in self.tracks
                       if 1 - seen_marks(t.marks, shape, margin=0).mean() <= MAX_MARKS_OUTSIDE]

    def update(self, frame, time=None):
        from predict import to_bgr
        # Tracked frames crop the BGR frame (the crops' channels are turned
        # instead): only the detector needs the whole frame in RGB.
        bgr = to_bgr(frame)
        time = self.frames * self.frame_time if time is None else float(time)
        if self.cut_distance is not None:
            histogram, last = colour_histogram(bgr), self.histogram
            self.histogram = histogram
            if last is not None and self.tracks and histogram_distance(last, histogram) > self.cut_distance:
                self.cuts += 1
                self.tracks = []            # a new shot: its faces are new faces
        if self.flow:
            grey, last = GreyPyramid(bgr), self.grey
            self.grey = grey
            for track in self.tracks:
                track.follow(None if last is None else image_motion(last, grey, track.marks))
        if self.tracks and self.frames % self.detect_every:
            moved = 0.0
            for track in self.tracks:
                before = track.marks.mean(axis=0)
                track.marks, track.confidence = self._marks_in(bgr, track.crop, track.model)
                moved = max(moved, float(np.linalg.norm(track.marks.mean(axis=0) - before)))
            tracked = len(self.tracks)
            self._keep_inside(bgr.shape)
            self.since_look, self.moved = self.since_look + 1, self.moved + moved
            if len(self.tracks) < tracked or any(self._lost(t) for t in self.tracks):
                # a face left or is lost: look again at once
                self._detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                self._keep_inside(bgr.shape)
            elif (self.since_look >= self.scan_every
                  or self.moved >= self.scan_motion * min(bgr.shape[:2])):
                self._scan(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                self._keep_inside(bgr.shape)
        else:
            self._detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            self._keep_inside(bgr.shape)
        self.frames += 1
        faces = []
        for track in self.tracks:
            track.crop = track.next_crop(time)
            # The last frame's pose starts this one's fit (one solve instead of two).
            face = {"id": track.id, "box": tuple(geometry.landmark_box(track.marks)),
                    "score": track.score,
                    **self.model.describe(track.smoothed(time, bgr.shape), track.confidence, bgr.shape,
                                          pose_guess=track.pose)}
            track.pose = face["pose"]
            faces.append(face)
        return faces

    def track(self, frames, times=None):
        """Yield each frame's faces; `times` (seconds), if given, pairs with `frames`."""
        times = itertools.repeat(None) if times is None else iter(times)
        for frame, time in zip(frames, times):
            yield self.update(frame, time)
