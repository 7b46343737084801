"""Find faces in photos and mark their landmarks.

    from predict import predictor
    predict = predictor()                      # bundled detector + int8 model
    faces = predict.predict("test_images/grace_hopper.jpg")
    # [{"box": (x0, y0, x1, y1), "score": 0.93, "marks": (68, 2) array}, ...]

    python predict.py test_images/ --out results/predictions
    python predict.py --video clip.mp4 --out results/video

`cnn_model_path` may be an exported SavedModel directory or a .tflite file
(float or integer-only). A box given to `landmarks` is the tight box around
the face's landmarks, the convention of the annotations and the evaluation.
`refine` re-crops around the marks that many more times (each a landmark
pass). The default, None, gives one such pass to a face whose marks are
under REFINE_BELOW px wide or turned beyond REFINE_YAW degrees, and none to
the rest (docs/PREDICTOR.md, "Flip test and re-crops").
`flip` averages each pass with its mirror image, a second landmark invoke;
on by default for one model (DEFAULT_FLIP says why). `small_faces` (on by
default) also searches a photo larger than 800 px in overlapping squares
for faces too small for the detector at the whole photo's scale
(face_detector.TILE_ABOVE), and one over 384 px where no face was found
at all; video frames are not searched so.

With the bundled models the predictor runs two landmark models on each
crop: the main one and a large-pose one (trained with turned faces,
`profile_faces.py`), fused mark by mark by how sharp their score maps are
(`layouts.paired`). That is two invokes a face, as the flip test was, and
replaces it; a face the fused marks show turned beyond layouts.TURNED_YAW
takes the large-pose model's flip test instead, a third invoke
(`layouts.paired_flip`). `pose_model_path=False` runs the main model alone.

By default the predictor runs them as an ensemble (`layouts.ensembled`):
the main model on every crop; a face it shows turned, or is unsure of and
the large-pose model is sure of, goes the pair's way above, and every other
face is fused with the main model's own look at the mirrored crop
(`second_model_path="flip"`). A second main model's path there
(bundled: run v31, `DEFAULT_SECOND_MODEL`) fuses the two main models on
those faces instead, the default until 2026-12-07. Still two invokes a
face, three a turned one. `second_model_path=False` runs the pair.
"""
import argparse
import json
import numbers
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

import geometry
from geometry import RECROP_SHIFT
from face_detector import DEFAULT_MODELS, FaceDetector, detect_faces
from images import read_image
from confidence import load_calibration, spread_confidence
from head_pose import draw_axes, head_pose
from layouts import FLIP_SECOND, ensembled, flip_averaged, mirrored_model, paired, paired_flip

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"
DEFAULT_LANDMARK_MODEL = ASSETS / "landmarks_300w_int8.tflite"
# The flip test's default for one model: on since run v20's bundle (-0.073
# points end to end, s.e. 0.020); for run v31's main model alone 4.043%
# with it and 4.068% without (results/predictor_eval_v31{_flip,}.json;
# -0.025, s.e. 0.014: short of 2 s.e., but the same sign as every bundle's
# since run v20). It was off for run v15's bundle, which it did not help.
DEFAULT_FLIP = True
# The large-pose model paired with the bundled one (run v38: the main
# recipe, half of each epoch turned faces). A pair runs without
# the flip test by default: the pair is already two invokes a face, and
# the flip test added nothing to it on the validation faces (docs/RESEARCH.md).
DEFAULT_POSE_MODEL = ASSETS / "landmarks_300w_pose_int8.tflite"
PAIRED_FLIP = False
# The bundled second main model (run v31, the main recipe with the narrower
# stem), for `second_model_path`: fused with run v32 or v36 as the main model
# it beat the pair; with run v37 the main model's mirrored look beats it.
DEFAULT_SECOND_MODEL = ASSETS / "landmarks_300w_second_int8.tflite"
# `second_model_path` FLIP_SECOND ("flip"), the default with the bundled
# models: the main model's look at the mirrored crop in a second model's
# place (layouts.mirrored_model). With run v37 on the validation photos end
# to end, 0.029 points (s.e. 0.013) better than fusing run v31 (docs/RESEARCH.md).
# refine=None: one more landmark pass, from a crop on the first marks, for a
# face whose marks are narrower than REFINE_BELOW px or whose head pose turns
# beyond REFINE_YAW degrees of yaw. The detector's box is least sure there:
# on small faces (30-80 px) a pass for every face gained 0.33 points (s.e.
# 0.07), on turned ones 0.84 (0.36), on the validation photos 0.015 (0.017,
# noise); the frontal, larger faces are spared its two invokes.
REFINE_BELOW = 80.0
REFINE_YAW = 30.0
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def load_landmark_model(path):
    """predict_fn (B, S, S, 3 RGB 0-255 -> B, 2N) and input size S of a
    SavedModel directory or a .tflite file."""
    predict_fn, _, size = load_landmark_functions(path)
    return predict_fn, size


def load_landmark_functions(path, threads=1):
    """(predict_fn, spread_fn, input size S) of one loaded landmark model:
    spread_fn gives (B, 2N) marks and the (B, N) spread of each mark's
    score map (None for a model that outputs marks). `threads`: a .tflite
    interpreter's threads."""
    from tflite_model import marks_and_spread
    path = Path(path)
    if path.is_dir():
        from landmark import load_saved_model
        raw_fn, card = load_saved_model(path, raw=True)
        predict_fn = lambda images: geometry.decode_scores(raw_fn(images))  # noqa: E731
        return predict_fn, lambda images: marks_and_spread(raw_fn(images)), card["input_size"]
    if path.suffix == ".tflite":
        from tflite_model import TFLiteModel
        model = TFLiteModel(path, threads)
        check_landmark_tflite(model, path)
        return model.predict, model.predict_with_spread, model.input_size
    raise FileNotFoundError(f"{path} is neither an exported SavedModel directory "
                            f"nor a .tflite file")


def settle_pairing(model_path, pose_model_path, flip, second_model_path=None):
    """(large-pose model Path or None, flip, second main model: Path,
    FLIP_SECOND or None) as predictor() settles them: the bundled large-pose
    model joins the bundled main model (`model_path` None), and the ensemble
    with the main model's mirrored look (FLIP_SECOND) is its default, unless
    given as False or "none"; `flip` None is PAIRED_FLIP for a pair,
    DEFAULT_FLIP for one model. The ensemble needs a large-pose model and
    runs without the flip test: the default drops out where those are not
    so, a second model given is refused."""
    default_second = model_path is None and second_model_path is None
    if model_path is None:
        if pose_model_path is None and DEFAULT_POSE_MODEL.is_file():
            pose_model_path = DEFAULT_POSE_MODEL
        if second_model_path is None:
            second_model_path = FLIP_SECOND
    pose = Path(pose_model_path) if pose_model_path not in (None, False, "none") else None
    second = (FLIP_SECOND if second_model_path == FLIP_SECOND
              else Path(second_model_path) if second_model_path not in (None, False, "none") else None)
    if flip is None:
        flip = PAIRED_FLIP if pose else DEFAULT_FLIP
    if second is not None and (pose is None or flip):
        if not default_second:
            raise ValueError(f"second model {second}: the ensemble needs a large-pose model "
                             f"(pose_model_path) and runs without the flip test")
        second = None
    return pose, flip, second


def landmark_spread_functions(model_path, pose_model_path=None, flip=False,
                              second_model_path=None):
    """(spread_fn without the flip test, spread_fn with it if `flip`, input
    size) of a landmark model, or of the pair of it and `pose_model_path`
    (layouts.paired, and paired_flip the predictor's way), or of the
    ensemble with `second_model_path` too (layouts.ensembled); each maps
    (B, S, S, 3) to ((B, 2N) marks / S, spread)."""
    once, pose_once, size, second_once = load_pair(model_path, pose_model_path, second_model_path)
    return (*combine_spread_functions(once, size, pose_once, flip, second_once), size)


def load_pair(model_path, pose_model_path=None, second_model_path=None, threads=1):
    """(spread_fn of `model_path`, of `pose_model_path` or None, input size,
    spread_fn of `second_model_path` (FLIP_SECOND: the main model's mirrored
    look) or None)."""
    _, once, size = load_landmark_functions(model_path, threads)
    others = []
    for path in (pose_model_path, second_model_path):
        if path is None or path == FLIP_SECOND:
            others.append(None if path is None else mirrored_model(once, size))
            continue
        _, other_once, other_size = load_landmark_functions(path, threads)
        if other_size != size:
            raise ValueError(f"{path} takes {other_size}-px crops, {model_path} "
                             f"{size}-px: paired models must share the crop")
        others.append(other_once)
    return once, others[0], size, others[1]


def combine_spread_functions(once, size, pose_once=None, flip=False, second_once=None):
    """(one invoke a model, the predictor's way) spread_fns of one model's
    `once` (the second with the flip test if `flip`), or of its pair with
    `pose_once`: the pair, whose turned faces take the large-pose model's
    flip test (layouts.paired_flip), or with `flip` both models' flip tests;
    or with `second_once` too, the ensemble (layouts.ensembled), without and
    with the turned faces' flip test."""
    if pose_once is None:
        return once, (flip_averaged(once, size) if flip else once)
    if second_once is not None:
        return (ensembled(once, second_once, pose_once, size, turned_flip=False),
                ensembled(once, second_once, pose_once, size))
    pair = paired(once, pose_once)
    if not flip:
        return pair, paired_flip(once, pose_once, size)
    return pair, paired(flip_averaged(once, size), flip_averaged(pose_once, size))


def check_landmark_tflite(model, path):
    """Refuse, naming the file, a .tflite that is not a landmark model: one
    (1, S, S, 3) input and one output of (1, 2N) marks or (1, h, h, N) score maps."""
    details = model.interpreter.get_output_details()
    shapes = [tuple(int(n) for n in d["shape"]) for d in details]
    image_in = tuple(int(n) for n in model.input["shape"])
    marks_out = len(shapes) == 1 and (
        (len(shapes[0]) == 2 and shapes[0][1] % 2 == 0)
        or (len(shapes[0]) == 4 and shapes[0][1] == shapes[0][2]))
    if not (marks_out and len(image_in) == 4 and image_in[1] == image_in[2] and image_in[3] == 3):
        raise ValueError(f"{path} is not a landmark model: input {image_in}, outputs {shapes}; "
                         f"expected (1, S, S, 3) in and (1, 2N) marks or (1, h, h, N) score maps out")


def to_bgr(image):
    """Path or array (BGR, grayscale or BGRA, uint8) -> BGR uint8 array."""
    if isinstance(image, (str, Path)):
        array, why = read_image(image)
        if array is None:
            raise ValueError(f"cannot read image {image}: {why}")
        return array
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1):
        return cv2.cvtColor(array.reshape(array.shape[:2]), cv2.COLOR_GRAY2BGR)
    if array.ndim == 3 and array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    if array.ndim == 3 and array.shape[2] == 3:
        return array
    raise ValueError(f"expected an H×W, H×W×3 or H×W×4 image, got shape {array.shape}")


# A landmark box may reach past the image (a face cut by its edge) but not be
# more than this many times the image's longer side.
MAX_BOX_FACTOR = 4


def check_box(box, image_shape):
    """Raise ValueError, naming `box`, unless it is a usable landmark box
    (x0, y0, x1, y1) for an image of `image_shape`."""
    try:
        values = np.asarray(box, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"box {box!r} is not four numbers (x0, y0, x1, y1)") from None
    if values.size != 4:
        raise ValueError(f"box {box!r} is not four numbers (x0, y0, x1, y1)")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"box {box!r} has a coordinate that is not finite")
    x0, y0, x1, y1 = values
    height, width = image_shape[:2]
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"box {box!r} is empty, inverted or under 2 px a side "
                         f"(expected x0 < x1 and y0 < y1)")
    if max(x1 - x0, y1 - y0) > MAX_BOX_FACTOR * max(height, width):
        raise ValueError(f"box {box!r} is more than {MAX_BOX_FACTOR} times the "
                         f"{width}x{height} image")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"box {box!r} lies wholly outside the {width}x{height} image")


class predictor:  # noqa: N801  (the original's name, which users call)
    """Face detector + landmark model. See the module docstring."""

    def __init__(self, detector_face_model_path=None, cnn_model_path=None,
                 threshold=None, refine=None, flip=None, pose_model_path=None, recrop=RECROP_SHIFT,
                 small_faces=True, second_model_path=None, threads=1):
        if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
            raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
        self.threads = threads = int(threads)    # each TFLite interpreter's; calls from threads still take turns
        if refine is not None and (int(refine) != refine or refine < 0):
            raise ValueError(f"refine must be a whole number >= 0, or None, got {refine}")
        if recrop is not None and not recrop > 0:
            raise ValueError(f"recrop must be a share > 0 of the crop's side, or None, got {recrop}")
        self.recrop, self.recrops, self.small_faces = recrop, 0, small_faces
        self.refines = 0          # refine passes run, for evaluations
        # One detector path, or several tried in order (face_detector.detect_faces);
        # None: the bundled ones (DEFAULT_MODELS).
        paths = detector_face_model_path or DEFAULT_MODELS
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self.detectors = [FaceDetector(path, threshold, threads) for path in paths]
        self.landmark_model = Path(cnn_model_path or DEFAULT_LANDMARK_MODEL)
        self.pose_model, flip, self.second_model = settle_pairing(
            cnn_model_path, pose_model_path, flip, second_model_path)
        self.refine, self.flip = refine, flip
        once, pose_once, self.input_size, second_once = load_pair(
            self.landmark_model, self.pose_model, self.second_model, threads)
        # Each model of a pair on its own, without the flip test, with its
        # own confidence curve: a tracked face runs the one it was found with.
        self._single = {}
        if pose_once is not None:
            self._single = {"main": (once, load_calibration(self.landmark_model)),
                            "pose": (pose_once, load_calibration(self.pose_model))}
        # `_spread_once`: no flip test, whatever `flip` says (tracked frames).
        self._spread_once, self.spread_fn = combine_spread_functions(
            once, self.input_size, pose_once, flip, second_once)
        self.predict_fn = lambda images: self.spread_fn(images)[0]  # noqa: E731
        self.calibration = load_calibration(self.landmark_model, self.pose_model,
                                            self.second_model)

    def landmarks(self, image, box):
        """Marks (N, 2) in image pixels for the face whose landmarks' tight
        box is `box` (x0, y0, x1, y1). A box that is not finite, not at
        least 2 px a side, larger than MAX_BOX_FACTOR times the image, or
        wholly outside it is refused with a ValueError that names it."""
        bgr = to_bgr(image)
        check_box(box, bgr.shape)
        return self._marks(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), box)

    def _marks(self, rgb, box):
        return self._face_marks(rgb, box)[0]

    def _face_marks(self, rgb, box, flip=None, model=None, bgr=False):
        """(marks (N, 2) in image pixels, confidence (N,) or None) of the
        face whose landmark box is `box`; `flip` False skips the flip test;
        `model` "main" or "pose" runs that model of a pair alone, unflipped;
        `bgr`: the image is BGR (only the crop is turned to RGB)."""
        if model is not None:
            return self._single_marks(rgb, box, model, bgr)[:2]
        spread_fn = self._spread_once if flip is False else self.spread_fn
        return self._run(rgb, box, spread_fn, self.calibration, bgr)[:2]

    def _single_marks(self, rgb, box, model, bgr=False):
        """(marks, confidence, (N,) spread) of one model of the pair alone."""
        if model not in self._single:
            raise ValueError(f"model {model!r}: this predictor's models are "
                             f"{sorted(self._single) or 'one, unpaired'}")
        return self._run(rgb, box, *self._single[model], bgr)

    def _run(self, rgb, box, spread_fn, calibration, bgr=False):
        """(marks in image pixels, confidence or None, spread or None) of
        `spread_fn` on the crop of the landmark box `box`."""
        center, side = geometry.crop_square(box)
        patch, transform = geometry.crop(rgb, center, side, self.input_size)
        if bgr:
            patch = cv2.cvtColor(patch, cv2.COLOR_BGR2RGB)
        outputs, spread = spread_fn(patch[None])   # uint8 patch: see TFLiteModel
        marks = np.asarray(outputs).reshape(-1, 2) * self.input_size
        if spread is None:
            return geometry.to_image(marks, transform), None, None
        return (geometry.to_image(marks, transform), spread_confidence(spread[0], calibration),
                spread[0])

    def _pair_candidates(self, rgb, box):
        """{"main", "pose"}: each model's (marks, confidence, spread) on the
        crop of `box`, for a tracker that picks one (empty when unpaired)."""
        return {name: self._single_marks(rgb, box, name) for name in self._single}

    @staticmethod
    def needs_refine(marks, image_shape):
        """Whether refine=None gives a face these first marks another pass:
        narrower than REFINE_BELOW px, or turned beyond REFINE_YAW degrees."""
        return predictor._refine_check(marks, image_shape)[0]

    @staticmethod
    def _refine_check(marks, image_shape):
        """(needs_refine, the marks' head pose if it was worked out, else None)."""
        box = geometry.landmark_box(marks)
        if box[2] - box[0] < REFINE_BELOW:
            return True, None
        pose = head_pose(marks, (image_shape[1], image_shape[0]))
        return pose is not None and abs(pose["yaw"]) > REFINE_YAW, pose

    def describe(self, marks, confidence, image_shape, pose=None, pose_guess=None):
        """The per-face fields besides box and score: marks, confidence
        (N,) in [0, 1] (None for a model without score maps), landmark_score
        (their mean) and head pose (head_pose.py; None unless 68 marks).
        `pose`: these marks' head pose, if the caller has it already;
        `pose_guess`: one of marks close to these, to start its fit from."""
        return {"marks": marks, "confidence": confidence,
                "landmark_score": None if confidence is None else float(np.mean(confidence)),
                "pose": pose or head_pose(marks, (image_shape[1], image_shape[0]),
                                          guess=pose_guess)}

    def predict(self, image, small_faces=None):
        """Every face found: [{"box", "score", "marks", "confidence",
        "landmark_score", "pose"}], marks in image pixels. `small_faces`
        None: the predictor's setting."""
        bgr = to_bgr(image)
        if min(bgr.shape[:2]) < 2:
            return []
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = []
        small_faces = self.small_faces if small_faces is None else small_faces
        found, detector = detect_faces(self.detectors, rgb, small_faces)
        self.last_detector = detector.path.name   # which model's faces these are
        for box, score, landmark_box in found:
            marks, confidence = self._face_marks(rgb, landmark_box)
            recropped = (self.recrop is not None
                         and geometry.off_centre(marks, landmark_box) > self.recrop)
            if recropped:
                # The detector's box missed the face's centre (most often a
                # turned face): mark it again from a crop placed on its marks.
                self.recrops += 1
                marks, confidence = self._face_marks(rgb, geometry.landmark_box(marks))
            passes, pose = self.refine, None
            if passes is None:   # a re-crop was that one pass already
                needed, pose = (False, None) if recropped else self._refine_check(marks, rgb.shape)
                passes = int(needed)
            self.refines += passes
            for _ in range(passes):
                # Re-crop around the predicted marks: the crop training used.
                marks, confidence = self._face_marks(rgb, geometry.landmark_box(marks))
                pose = None          # of the marks before
            faces.append({"box": tuple(float(v) for v in box), "score": score,
                          **self.describe(marks, confidence, rgb.shape, pose)})
        return faces

    def track(self, frames, fps=None, times=None, **options):
        """Yield the faces of each BGR frame of `frames` (any iterable: a
        list, a video reader, a camera), tracked: see tracking.FaceTracker,
        which takes `options` (detect_every, smooth, min_cutoff, beta, shape_min_cutoff, ...)."""
        from tracking import FaceTracker
        return FaceTracker(self, fps=fps, **options).track(frames, times)

    @staticmethod
    def draw(image, faces, pose=False):
        """An annotated BGR copy: boxes, scores and marks (dimmer where a
        mark's confidence is low), and with `pose` the head's axes."""
        canvas = to_bgr(image).copy()
        scale = max(1, round(max(canvas.shape[:2]) / 400))
        for face in faces:
            x0, y0, x1, y1 = (int(round(v)) for v in face["box"])
            cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 160, 0), scale)
            cv2.putText(canvas, f"{face['score']:.2f}", (x0, max(y0 - 4, 10)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale, (255, 160, 0), scale)
            confidence = face.get("confidence")
            for k, (x, y) in enumerate(face["marks"]):
                sure = 1.0 if confidence is None else float(confidence[k])
                colour = (0, int(80 + 175 * sure), int(255 * (1 - sure)))  # green sure, red unsure
                cv2.circle(canvas, (int(round(x)), int(round(y))), scale + 1, colour, -1)
            if pose and face.get("pose"):
                side = max(face["box"][2] - face["box"][0], face["box"][3] - face["box"][1])
                draw_axes(canvas, face["pose"], canvas.shape[1::-1], length=0.6 * side
                          * face["pose"]["tvec"][2] / canvas.shape[1])
        return canvas


def face_crops(paths, copies=1, jitter=0.0, seed=0, size=128):
    """Model-input crops of every face the detector finds in `paths`, made
    as `predictor` makes them. With copies > 1, each face also gives crops
    whose centre and size are jittered by up to ±jitter of the crop side."""
    detectors = [FaceDetector(path) for path in DEFAULT_MODELS]
    rng = np.random.default_rng(seed)
    crops = []
    for path in paths:
        rgb = cv2.cvtColor(to_bgr(path), cv2.COLOR_BGR2RGB)
        for _, _, landmark_box in detect_faces(detectors, rgb)[0]:
            center, side = geometry.crop_square(landmark_box)
            for k in range(copies):
                move = rng.uniform(-jitter, jitter, 3) if k else np.zeros(3)
                crops.append(geometry.crop(rgb, center + move[:2] * side, side * (1 + move[2]),
                                           size)[0])
    return np.array(crops, np.float32).reshape(-1, size, size, 3)


def _jsonable(faces):
    def pose(p):
        return None if p is None else {k: round(p[k], 2) for k in ("yaw", "pitch", "roll")}

    def confidence(c):
        return None if c is None else np.round(c, 3).tolist()
    return [{**({"id": f["id"]} if "id" in f else {}), "box": tuple(float(v) for v in f["box"]),
             "score": f["score"], "marks": np.round(f["marks"], 2).tolist(),
             "confidence": confidence(f.get("confidence")),
             "landmark_score": None if f.get("landmark_score") is None
             else round(f["landmark_score"], 3),
             "pose": pose(f.get("pose"))} for f in faces]


def image_paths(inputs):
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                            and not p.stem.startswith("result"))
        elif item.is_file():
            paths.append(item)
        else:
            raise FileNotFoundError(f"no such image or folder: {item}")
    return paths


def montage(images, height=400):
    """Images side by side, each scaled to `height`."""
    return np.hstack([cv2.resize(i, (round(i.shape[1] * height / i.shape[0]), height),
                                 interpolation=cv2.INTER_AREA) for i in images])


def run_images(model, inputs, out_dir, montage_path=None, pose=False):
    """Annotated copies and marks.json in out_dir. Every image is read and
    marked before anything is written, so an unreadable one leaves no output."""
    marks, drawn = {}, {}
    for path in tqdm(image_paths(inputs), desc="images", unit="image"):
        bgr = to_bgr(path)
        faces = model.predict(bgr)
        drawn[path] = model.draw(bgr, faces, pose)
        marks[str(path)] = _jsonable(faces)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, image in drawn.items():
        cv2.imwrite(str(out_dir / f"{path.stem}_marks.jpg"), image)
    (out_dir / "marks.json").write_text(json.dumps(marks, indent=1))
    if montage_path and drawn:
        Path(montage_path).parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(montage_path), montage(list(drawn.values()))):
            raise ValueError(f"--montage {montage_path}: could not write it")
        print(f"wrote {montage_path}")
    counts = ", ".join(f"{Path(k).name}: {len(v)}" for k, v in marks.items())
    print(f"faces per image: {counts}\nwrote {out_dir}/*_marks.jpg and marks.json")


def speed(model, image_paths, out_path, runs=200, size=(640, 480), repeats=5):
    """Median / p90 ms of predict() on each photo fitted into a 640×480
    frame (detector + landmarks, at the predictor's threads), written as
    JSON with the faces found, the widest one's share of the frame width and
    the detector that answered (the full-range one runs too when faces are
    small). OpenCV is held to as many threads (it would split resizes over
    the cores), so at 1 thread the whole frame runs on one core."""
    from tflite_model import cpu_info
    threads = cv2.getNumThreads()
    cv2.setNumThreads(model.threads)
    try:
        frames = _time_frames(model, image_paths, runs, size, repeats)
    finally:
        cv2.setNumThreads(threads)
    model_path = model.landmark_model.resolve()
    result = {"frame": list(size), "runs": runs, "rounds": repeats, "threads": model.threads,
              "landmark_model": str(model_path.relative_to(ROOT) if model_path.is_relative_to(ROOT)
                                    else model_path),
              "pose_model": None if model.pose_model is None else model.pose_model.name,
              "refine": model.refine,
              "flip": model.flip, "cpu": cpu_info(), "frames": frames}
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(result, indent=1))
    print(f"wrote {out_path}")


def fitted_frame(image, size=(640, 480)):
    """The photo (path or array) scaled to fit a black `size` frame, top-left."""
    photo = to_bgr(image)
    scale = min(size[0] / photo.shape[1], size[1] / photo.shape[0])
    fitted = cv2.resize(photo, (int(photo.shape[1] * scale), int(photo.shape[0] * scale)))
    frame = np.zeros((size[1], size[0], 3), np.uint8)
    frame[:fitted.shape[0], :fitted.shape[1]] = fitted
    return frame


def _time_frames(model, image_paths, runs, size, repeats):
    """Per photo: `repeats` rounds of `runs` timed predict() calls, the
    photos taking turns each round, so that a slow spell of the machine
    shows up as a spread between rounds rather than as one photo's number."""
    import time
    frames = []
    for image_path in image_paths:
        frame = fitted_frame(image_path, size)
        faces = model.predict(frame)
        frames.append({"image": str(image_path), "frame": frame, "faces": len(faces),
                       "face_share": max((f["box"][2] - f["box"][0] for f in faces), default=0)
                       / size[0], "detector": model.last_detector, "times": []})
    with tqdm(total=repeats * len(frames) * runs, desc="timing", unit="frame") as bar:
        for _ in range(repeats):
            for entry in frames:
                for _ in range(10):                      # warm the caches for this photo
                    model.predict(entry["frame"])
                times = []
                for _ in range(runs):
                    start = time.perf_counter()
                    model.predict(entry["frame"])
                    times.append(time.perf_counter() - start)
                entry["times"].append(1000 * np.array(times))
                bar.update(runs)
    for entry in frames:
        del entry["frame"]
        times = entry.pop("times")
        entry.update(median_ms=float(np.median(np.concatenate(times))),
                     p90_ms=float(np.percentile(np.concatenate(times), 90)),
                     round_medians_ms=[float(np.median(t)) for t in times])
        print(f"{Path(entry['image']).name}: {entry['faces']} face(s) by {entry['detector']}, "
              f"{entry['median_ms']:.2f} ms median per 640x480 frame (rounds: "
              + ", ".join(f"{m:.2f}" for m in entry["round_medians_ms"]) + ")")
    return frames


def open_video(video):
    """(cv2.VideoCapture, first frame) of `video`; ValueError naming it if it
    does not open or yields no frame."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {video}")
    ok, frame = capture.read()
    if not ok:
        capture.release()
        raise ValueError(f"video {video} opens but yields no frame")
    return capture, frame


def run_video(model, video, out_dir, tracker=None, pose=False):
    """Annotate every frame of `video` into out_dir/NAME_marks.mp4 and write
    each frame's faces to NAME_marks.json. With a tracking.FaceTracker the
    faces are tracked (and carry an `id`); otherwise each frame is marked
    alone. Nothing is written for a video that yields no frame; a video that
    ends before the frame count its header declares is written as far as it
    goes, and says so."""
    capture, frame = open_video(video)
    ok = True
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"{Path(video).stem}_marks.mp4"
    partial = out_dir / f".{out_path.name}.partial.mp4"
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    marks = []
    try:
        with tqdm(total=total, desc="frames", unit="frame") as bar:
            while ok:
                if tracker is None:   # a frame is not searched in squares (small_faces)
                    faces = model.predict(frame, small_faces=False)
                else:
                    faces = tracker.update(frame, capture.get(cv2.CAP_PROP_POS_MSEC) / 1000)
                writer.write(model.draw(frame, faces, pose))
                marks.append(_jsonable(faces))
                bar.update()
                ok, frame = capture.read()
    except BaseException:
        writer.release()
        partial.unlink(missing_ok=True)
        raise
    finally:
        capture.release()
    writer.release()
    partial.replace(out_path)
    (out_dir / f"{Path(video).stem}_marks.json").write_text(json.dumps(marks))
    print(f"{len(marks)} frames -> {out_path}")
    if total and len(marks) < total:
        print(f"warning: {video} declares {total} frames but only {len(marks)} could be read "
              f"({total - len(marks)} lost: the file is truncated or damaged)")


def unwritable(path, folder):
    """Why `path` (a folder if `folder`, else a file) cannot be written, or
    None. Nothing is created: an output is made only once the work is done."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing == path and path.is_dir() != folder:
        return "is a file, not a folder" if folder else "is a folder, not a file"
    if existing != path and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    return None if os.access(existing, os.W_OK) else f"{existing} cannot be written (permission denied)"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="*", help="images or folders of images")
    p.add_argument("--video", help="a video file to annotate frame by frame")
    p.add_argument("--out", default="results/predictions")
    p.add_argument("--model", default=None, help="SavedModel dir or .tflite (default: bundled int8)")
    p.add_argument("--detector", nargs="+", default=None,
                   help="face detector .tflite, or several tried in order (default: bundled)")
    p.add_argument("--threshold", type=float, default=None,
                   help="face detector score threshold (default: each model's, see face_detector.py)")
    p.add_argument("--refine", type=int, default=None,
                   help="landmark passes re-cropped around the previous pass's marks (default: "
                        "one for faces under 80 px or turned beyond 30 degrees, none for others)")
    p.add_argument("--pose_model", default=None, metavar="PATH",
                   help="large-pose landmark model paired with --model (default: the bundled "
                        "one when --model is not given; 'none': the main model alone)")
    p.add_argument("--second_model", default=None, metavar="PATH",
                   help="second main model, fused with --model on faces that are not turned "
                        "(layouts.ensembled), or 'flip': --model's look at the mirrored crop "
                        "there (the default when --model is not given); 'none': the pair")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average each pass with its mirror image (a second landmark invoke; "
                        "default: on for one model, off for the pair)")
    p.add_argument("--small_faces", action=argparse.BooleanOptionalAction, default=True,
                   help="images over 800 px: also search overlapping squares for faces too "
                        "small to find at the whole image's scale (on by default; video "
                        "frames never are)")
    p.add_argument("--track", action=argparse.BooleanOptionalAction, default=True,
                   help="video: follow faces from frame to frame, the detector every "
                        "--detect_every frames (tracking.py; on by default, --no-track "
                        "runs the detector on every frame)")
    p.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=True,
                   help="video with tracking: One Euro filter on the marks (on by default)")
    p.add_argument("--detect_every", type=int, default=None,
                   help="video with --track: frames between detector runs (default "
                        "tracking.DETECT_EVERY)")
    p.add_argument("--one_model", action=argparse.BooleanOptionalAction, default=None,
                   help="video with --track and the pair: each tracked face runs the one "
                        "model of the pair its maps chose (default tracking.ONE_MODEL: on); "
                        "--no-one_model runs both, for less jitter at more time")
    p.add_argument("--pose", action="store_true",
                   help="draw each face's head-pose axes (head_pose.py; always in the JSON)")
    p.add_argument("--montage", default=None, help="also write all annotated images side by side here")
    p.add_argument("--speed", default=None, metavar="JSON",
                   help="time detector + landmarks on each image fitted into a 640x480 frame")
    p.add_argument("--threads", type=int, default=1,
                   help="threads of each model's interpreter (default 1; more cut one "
                        "stream's latency where cores are free)")
    args = p.parse_args(argv)
    if not args.inputs and not args.video:
        p.error("give images/folders or --video")
    if args.montage and Path(args.montage).suffix.lower() not in IMAGE_SUFFIXES:
        p.error(f"--montage {args.montage}: give an image file name ("
                + ", ".join(sorted(IMAGE_SUFFIXES)) + ")")
    for flag, path, folder in (("--out", args.out, True), ("--montage", args.montage, False),
                               ("--speed", args.speed, False)):
        problem = path and unwritable(Path(path), folder)
        if problem:
            p.error(f"{flag} {path}: {problem}")
    try:
        if args.video:
            # Before anything is written: the images' outputs would otherwise
            # be left beside a video that fails.
            open_video(args.video)[0].release()
        model = predictor(args.detector, args.model, args.threshold, args.refine, args.flip,
                          args.pose_model, small_faces=args.small_faces,
                          second_model_path=args.second_model, threads=args.threads)
        if args.inputs:
            run_images(model, args.inputs, Path(args.out), args.montage, args.pose)
            if args.speed:
                speed(model, image_paths(args.inputs), args.speed)
        if args.video:
            tracker = None
            if args.track:
                from tracking import DETECT_EVERY, ONE_MODEL, FaceTracker
                every = DETECT_EVERY if args.detect_every is None else args.detect_every
                tracker = FaceTracker(model, every, args.smooth,
                                      one_model=ONE_MODEL if args.one_model is None
                                      else args.one_model)
            run_video(model, args.video, Path(args.out), tracker, args.pose)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
