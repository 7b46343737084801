"""Faces followed through video: a tracker and the One Euro filter.

Once a face is found, each next frame's landmark crop is placed from the
previous frame's marks (`geometry.landmark_box`, the crop training uses),
so the detector runs only every `detect_every` frames, when no face is
tracked, or when a tracked face's marks leave the frame. Each face keeps an
`id` while it is tracked. Marks are smoothed by a One Euro filter (Casiez
et al., CHI 2012), which uses the frames' timestamps, so irregular frame
times are handled.

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

# How often the detector looks for new faces, in frames.
DETECT_EVERY = 10
# A detection continues a track when its landmark box overlaps the track's
# (from its last marks) by at least this much.
MATCH_IOU = 0.3
# A track is dropped when more than this share of its marks leave the frame,
# or when its landmark_score (mean mark confidence, confidence.py) falls
# below LOST_SCORE: then fewer than about half its marks are likely right.
MAX_MARKS_OUTSIDE = 0.5
LOST_SCORE = 0.5
# One Euro parameters on marks divided by the face's landmark-box side:
# min_cutoff (Hz) sets the smoothing of a still face, beta how fast the
# cutoff rises with speed (less lag when the face moves). Chosen with
# DETECT_EVERY by video_benchmark.py --sweep (results/video_benchmark.json):
# the least jitter whose NME is within 0.1 points of detect-every-frame's.
MIN_CUTOFF = 1.0
BETA = 80.0
D_CUTOFF = 1.0
# The crop of a tracked face follows its box (centre and size) through a
# One Euro filter of its own, still when the face is: a crop that moved
# with every frame's noise fed that noise back into the next frame's marks.
CROP_MIN_CUTOFF = 0.5
CROP_BETA = 20.0
DEFAULT_FPS = 30.0
# Tracked faces skip the flip test: the One Euro filter already averages
# over frames, and one landmark invoke a frame is half the cost.
TRACK_FLIP = False


def _alpha(cutoff, dt):
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The One Euro filter on an array of values: a low-pass filter whose
    cutoff rises with the values' speed, so still values are smoothed hard
    and moving ones follow with little lag. Call it with each new array and
    its time in seconds; a time that does not advance returns the last
    output unchanged."""

    def __init__(self, min_cutoff=MIN_CUTOFF, beta=BETA, d_cutoff=D_CUTOFF):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"One Euro filter needs min_cutoff > 0, d_cutoff > 0 and beta >= 0, "
                             f"got {min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.value = self.speed = self.time = None

    def __call__(self, value, time):
        value = np.asarray(value, np.float64)
        if self.value is None:
            self.value, self.speed, self.time = value.copy(), np.zeros_like(value), time
            return self.value.copy()
        dt = time - self.time
        if dt <= 0:
            return self.value.copy()
        speed = (value - self.value) / dt
        self.speed += _alpha(self.d_cutoff, dt) * (speed - self.speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self.speed)
        self.value += _alpha(cutoff, dt) * (value - self.value)
        self.time = time
        return self.value.copy()


class _Track:
    def __init__(self, track_id, marks, score, smooth, filter_options, confidence=None):
        self.id, self.marks, self.score, self.confidence = track_id, marks, score, confidence
        self.crop_filter = OneEuroFilter(CROP_MIN_CUTOFF, CROP_BETA)
        self.crop_box = self.crop = None
        self.side = float(max(np.ptp(marks, axis=0)))       # the filter's unit
        self.filter = OneEuroFilter(**filter_options) if smooth else None

    def next_crop(self, time):
        """The landmark box to crop the next frame with, from this frame's
        marks at `time`: the marks' box
        smoothed, moved on by its last step (constant velocity), so a
        fast-moving face stays inside the crop training used."""
        box = geometry.landmark_box(self.marks)
        centre, size = (box[:2] + box[2:]) / 2, max(box[2] - box[0], box[3] - box[1])
        state = self.crop_filter(np.r_[centre, size] / self.side, time) * self.side
        previous = self.crop_box if self.crop_box is not None else state
        self.crop_box = state
        ahead = state + np.r_[state[:2] - previous[:2], 0.0]
        return np.r_[ahead[:2] - ahead[2] / 2, ahead[:2] + ahead[2] / 2]

    def smoothed(self, time):
        if self.filter is None:
            return self.marks
        return self.filter(self.marks / self.side, time) * self.side


class FaceTracker:
    """Follows faces through frames with one `predict.predictor`.

    update(frame, time) -> the frame's faces: [{"id", "box", "score",
    "marks", "confidence", "landmark_score", "pose"}], "marks" smoothed when
    `smooth` (pose from the smoothed marks); "box" is the landmark box
    of the (unsmoothed) marks and "score" the detection score of the frame
    the face was last found in. Times are seconds; without them frames are
    1 / fps apart."""

    def __init__(self, model, detect_every=DETECT_EVERY, smooth=True, fps=None,
                 min_cutoff=MIN_CUTOFF, beta=BETA, flip=TRACK_FLIP):
        if int(detect_every) != detect_every or detect_every < 1:
            raise ValueError(f"detect_every must be a whole number >= 1, got {detect_every}")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.model, self.detect_every, self.smooth = model, int(detect_every), smooth
        self.flip = flip
        self.frame_time = 1.0 / (fps or DEFAULT_FPS)
        self.filter_options = {"min_cutoff": min_cutoff, "beta": beta}
        self.tracks, self.frames, self.ids = [], 0, itertools.count()
        self.detections = 0                       # detector runs, for benchmarks

    def _new_track(self, marks, confidence, score):
        return _Track(next(self.ids), marks, score, self.smooth, self.filter_options, confidence)

    def _lost(self, track):
        return track.confidence is not None and float(np.mean(track.confidence)) < LOST_SCORE

    def _detect(self, rgb):
        """Continue tracks a detection overlaps; start one per other
        detection; drop tracks no detection overlaps (a cut, or a face gone)."""
        self.detections += 1
        found, _ = detect_faces(self.model.detectors, rgb)
        kept = []
        for box, score, landmark_box in found:
            boxes = np.array([geometry.landmark_box(t.marks) for t in self.tracks]).reshape(-1, 4)
            overlaps = iou(np.asarray(landmark_box), boxes) if len(boxes) else np.zeros(0)
            best = int(np.argmax(overlaps)) if len(overlaps) else -1
            if best >= 0 and overlaps[best] >= MATCH_IOU:
                track = self.tracks.pop(best)
                # A sure track keeps its own crop: switching to the detector's
                # box every few frames would make the marks jump there.
                crop = landmark_box if self._lost(track) or track.crop is None else track.crop
                track.marks, track.confidence = self.model._face_marks(rgb, crop, self.flip)
                track.score = score
            else:
                track = self._new_track(*self.model._face_marks(rgb, landmark_box, self.flip),
                                        score)
            kept.append(track)
        self.tracks = kept

    def _keep_inside(self, shape):
        """Drop the tracks with more than MAX_MARKS_OUTSIDE of their marks
        outside a frame of `shape`."""
        height, width = shape[:2]

        def inside(marks):
            outside = ((marks[:, 0] < 0) | (marks[:, 1] < 0)
                       | (marks[:, 0] > width - 1) | (marks[:, 1] > height - 1))
            return outside.mean() <= MAX_MARKS_OUTSIDE
        self.tracks = [t for t in self.tracks if inside(t.marks)]

    def update(self, frame, time=None):
        from predict import to_bgr
        rgb = cv2.cvtColor(to_bgr(frame), cv2.COLOR_BGR2RGB)
        time = self.frames * self.frame_time if time is None else float(time)
        if self.tracks and self.frames % self.detect_every:
            for track in self.tracks:
                track.marks, track.confidence = self.model._face_marks(rgb, track.crop, self.flip)
            tracked = len(self.tracks)
            self._keep_inside(rgb.shape)
            if len(self.tracks) < tracked or any(self._lost(t) for t in self.tracks):
                self._detect(rgb)           # a face left or is lost: look again at once
                self._keep_inside(rgb.shape)
        else:
            self._detect(rgb)
            self._keep_inside(rgb.shape)
        self.frames += 1
        faces = []
        for track in self.tracks:
            track.crop = track.next_crop(time)
            faces.append({"id": track.id, "box": tuple(geometry.landmark_box(track.marks)),
                          "score": track.score,
                          **self.model.describe(track.smoothed(time), track.confidence, rgb.shape)})
        return faces

    def track(self, frames, times=None):
        """Yield each frame's faces; `times` (seconds), if given, pairs with `frames`."""
        times = itertools.repeat(None) if times is None else iter(times)
        for frame, time in zip(frames, times):
            yield self.update(frame, time)
