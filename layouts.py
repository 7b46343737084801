"""Mark layouts: the one place that knows each dataset's point order.

A layout names how many marks a face has, which mark each one becomes when
the face is mirrored left-right, which two marks are the outer eye
corners that normalise the error (NME), and which marks make each region
of the face (jaw, brows, nose, eyes, mouth), so errors can be told apart.
"""
import functools
from dataclasses import dataclass

import numpy as np


def _mirror_permutation(num_marks, pairs):
    """Permutation p so that marks_of_mirrored_face = flipped_marks[p]."""
    perm = np.arange(num_marks)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


# WFLW's six attribute flags, in the order its annotation lines give them.
WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")


@dataclass(frozen=True)
class Layout:
    name: str
    num_marks: int
    mirror: tuple            # mirror[i]: the mark that i becomes after a flip
    eye_corners: tuple       # outer corners of the two eyes (NME normaliser)
    regions: tuple = ()      # (name, mark indices) per region of the face


# WFLW, 98 points (Wu et al. 2018). Pairs as in the dataset's own index chart.
_WFLW_PAIRS = (
    [(i, 32 - i) for i in range(16)]                       # jaw 0-32
    + [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42),   # brows, upper
       (38, 50), (39, 49), (40, 48), (41, 47)]             # brows, lower
    + [(55, 59), (56, 58)]                                 # nose bottom
    + [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68),   # eyes
       (65, 75), (66, 74), (67, 73)]
    + [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86),   # outer lips
       (88, 92), (89, 91), (93, 95)]                       # inner lips
    + [(96, 97)]                                           # pupils
)

# 300-W / Multi-PIE / iBUG, 68 points.
_W300_PAIRS = (
    [(i, 16 - i) for i in range(8)]                        # jaw 0-16
    + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]   # brows
    + [(31, 35), (32, 34)]                                 # nose bottom
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]   # outer lips
    + [(60, 64), (61, 63), (65, 67)]                       # inner lips
)

# WFLW's 98 marks -> the 300-W 68 they stand for, in 300-W order: every
# other jaw mark, the brows' upper edges, the eyes without their mid-lid
# marks, nose and mouth whole. How 68-point models are scored on WFLW.
WFLW_TO_300W = (tuple(range(0, 33, 2)) + tuple(range(33, 38)) + tuple(range(42, 47))
                + tuple(range(51, 60)) + (60, 61, 63, 64, 65, 67) + (68, 69, 71, 72, 73, 75)
                + tuple(range(76, 96)))


def _regions(**spans):
    """region=(first, last) or a list of them -> ((region, marks), ...)."""
    out = []
    for name, span in spans.items():
        span = span if isinstance(span, list) else [span]
        out.append((name, tuple(i for first, last in span for i in range(first, last + 1))))
    return tuple(out)


LAYOUTS = {
    "wflw98": Layout("wflw98", 98,
                     tuple(_mirror_permutation(98, _WFLW_PAIRS)), (60, 72),
                     _regions(jaw=(0, 32), brows=(33, 50), nose=(51, 59),
                              eyes=[(60, 75), (96, 97)], mouth=(76, 95))),
    "300w68": Layout("300w68", 68,
                     tuple(_mirror_permutation(68, _W300_PAIRS)), (36, 45),
                     _regions(jaw=(0, 16), brows=(17, 26), nose=(27, 35), eyes=(36, 47),
                              mouth=(48, 67))),
}


def get_layout(name):
    """The Layout called `name`; a clear error for anything else."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown mark layout {name!r}; known: {sorted(LAYOUTS)}") from None


def flip_averaged(predict_fn, input_size):
    """Test-time flip: predict_fn's marks averaged with those it finds on
    the mirrored crop, mapped back (x -> S-1-x) and relabelled by the
    layout's mirror. predict_fn maps (B, S, S, 3) to (B, 2N) marks divided
    by S; so does the returned function, at twice the cost. A predict_fn
    that returns (marks, per-mark values (B, N)) gets both averaged."""

    def predict(images):
        images = np.asarray(images)
        return with_mirrored(predict_fn(images), predict_fn(mirrored_crops(images)), input_size)
    return predict


def mirrored_crops(images):
    return np.ascontiguousarray(np.asarray(images)[:, :, ::-1])


def with_mirrored(direct, mirrored, input_size):
    """flip_averaged's average of a model's outputs on crops (`direct`) and
    on their mirror images (`mirrored`): marks, or (marks, values)."""
    extra = isinstance(direct, tuple)
    marks = np.asarray(direct[0] if extra else direct, np.float64)
    back, back_values = _mapped_back(mirrored[0] if extra else mirrored,
                                     mirrored[1] if extra else None, input_size)
    averaged = (marks + back) / 2
    if not extra:
        return averaged
    return averaged, None if direct[1] is None else (np.asarray(direct[1]) + back_values) / 2


# A second model's name (predict's second_model_path, confidence curves'
# file names, result files) for the main model's mirrored look.
FLIP_SECOND = "flip"


def mirrored_model(spread_fn, input_size):
    """A spread_fn that runs `spread_fn` on the mirrored crops and maps its
    marks and spreads back to the crops as given: the model's second look,
    as a second model would give one."""

    def predict(images):
        return _mapped_back(*spread_fn(mirrored_crops(np.asarray(images))), input_size)
    return predict


def _mapped_back(marks, values, input_size):
    """A model's (B, 2N) marks and (B, N) values (or None) on mirrored
    crops, as on the crops given: x -> (S-1)/S - x, marks relabelled by the
    layout's mirror."""
    # A copy: the caller's array is not to be flipped in place.
    marks = np.array(marks, np.float64).reshape(len(marks), -1, 2)
    mirror = _mirror(marks.shape[1])
    marks[..., 0] = (input_size - 1) / input_size - marks[..., 0]
    return (marks[:, mirror].reshape(len(marks), -1),
            None if values is None else np.asarray(values)[:, mirror])


@functools.lru_cache(maxsize=None)
def _mirror(count):
    """The mirror permutation of the layout with `count` marks."""
    return np.asarray(layout_for_count(count).mirror)


def layout_for_count(num_marks):
    """The layout with `num_marks` points (98 -> WFLW, 68 -> 300-W)."""
    for layout in LAYOUTS.values():
        if layout.num_marks == num_marks:
            return layout
    raise ValueError(f"no mark layout has {num_marks} points; known: "
                     + ", ".join(f"{l.name} ({l.num_marks})" for l in LAYOUTS.values()))


# A face's marks are the large-pose model's alone when its score maps are
# this much sharper (mean log spread) than the main model's; chosen on the
# even-numbered validation faces (docs/RESEARCH.md, "Two models").
PICK_MARGIN = 0.1


def paired(spread_a, spread_b, margin=PICK_MARGIN):
    """Two landmark models as one: spread_a and spread_b map (B, S, S, 3) to
    ((B, 2N) marks / S, (B, N) spread). Each mark is the two models' marks
    weighted by the inverse square of their spreads (the sharper map counts
    more), except on faces where b's maps are sharper overall by more than
    `margin` in mean log spread (None: never): there b's marks are taken whole, since
    averaging a turned face's marks with a model that cannot see it drags
    them back. The fused spread is 1 / sqrt(1 / sa² + 1 / sb²)."""

    def predict(images):
        return fuse(*spread_a(images), *spread_b(images), margin)
    return predict


def fuse(marks_a, sa, marks_b, sb, margin=PICK_MARGIN):
    """paired()'s rule on two models' outputs: (B, 2N) marks and (B, N) spreads each."""
    if sa is None or sb is None:
        raise ValueError("paired landmark models need score maps (an integral head) in both")
    marks_a = np.asarray(marks_a, np.float64).reshape(len(sa), -1, 2)
    marks_b = np.asarray(marks_b, np.float64).reshape(len(sb), -1, 2)
    sa, sb = np.maximum(sa, 1e-3), np.maximum(sb, 1e-3)
    wa, wb = sa ** -2.0, sb ** -2.0
    marks = (marks_a * wa[..., None] + marks_b * wb[..., None]) / (wa + wb)[..., None]
    spread = (wa + wb) ** -0.5
    if margin is not None:
        take_b = sharper_by(sa, sb) > margin
        marks[take_b], spread[take_b] = marks_b[take_b], sb[take_b]
    return marks.reshape(len(sa), -1), spread


# The gate of the cascade (cascaded) and the ensemble (ensembled): a face the
# main model's first marks show turned beyond CASCADE_YAW degrees of yaw
# (head_pose.py), or whose score maps spread beyond CASCADE_SPREAD (mean log
# spread, in cells), goes to the pair; in the ensemble an unsure face only
# where the large-pose model claims it (ensembled). The yaw was chosen on
# half the validation faces by gate_study.py (results/gate_study.json; 20
# until 2026-12-07, when every unsure face went on, occluded frontal ones too).
CASCADE_YAW = 15.0
CASCADE_SPREAD = 0.65


def turned_faces(marks, spread, input_size, gate=None):
    """(B,) whether cascaded() sends each face to the pair: (B, N, 2) marks in
    crop pixels and (B, N) spreads of the main model. `gate` is (yaw degrees,
    mean log spread), default (CASCADE_YAW, CASCADE_SPREAD)."""
    turned, unsure = _gate(marks, spread, input_size, gate)
    return turned | unsure


def _gate(marks, spread, input_size, gate=None):
    """turned_faces()'s two tests apart: (B,) turned beyond the yaw, (B,) unsure."""
    yaw, spread_limit = gate or (CASCADE_YAW, CASCADE_SPREAD)
    unsure = np.log(np.maximum(spread, 1e-3)).mean(axis=-1) > spread_limit
    return _yaws(marks, input_size) > yaw, unsure


def cascaded(spread_a, spread_b, input_size, margin=PICK_MARGIN):
    """Model a on every crop; then, where turned_faces() says so, the pair
    (fuse with model b), elsewhere a's flip test (a on the mirrored crop).
    Two invokes a face, as paired() costs, but b runs only on the faces it
    is for, so it may be the slower model. Same in and out as paired()."""

    def predict(images):
        images = np.asarray(images)
        marks_a, sa = spread_a(images)
        if sa is None:
            raise ValueError("a cascade needs score maps (an integral head) in the main model")
        marks_a, sa = np.asarray(marks_a, np.float64).reshape(len(images), -1), np.asarray(sa)
        take = turned_faces(marks_a.reshape(len(images), -1, 2) * input_size, sa, input_size)
        marks, spread = marks_a.copy(), np.asarray(sa, np.float64).copy()
        if take.any():
            marks[take], spread[take] = fuse(marks_a[take], sa[take], *spread_b(images[take]), margin)
        rest = ~take
        if rest.any():
            marks[rest], spread[rest] = with_mirrored((marks_a[rest], sa[rest]),
                                                      spread_a(mirrored_crops(images[rest])),
                                                      input_size)
        return marks, spread
    return predict


# paired_flip(): a face the pair took whole from the large-pose model, or
# whose fused marks are turned beyond this (degrees of yaw), gets that
# model's flip test in place of the pair's fusion.
TURNED_YAW = 30.0


def paired_flip(spread_a, spread_b, input_size, margin=PICK_MARGIN, yaw=TURNED_YAW):
    """The pair (paired()), except on turned faces: those the pair took whole
    from model b, or whose fused marks are turned beyond `yaw` degrees
    (None: only the former) take b's flip test (b on the mirrored crop,
    averaged). A turned face is where a model's errors are largest and a
    mirror's least alike, so averaging the two pays most; the main model has
    little to add there. Two invokes a face, three a turned one."""

    def predict(images):
        images = np.asarray(images)
        return _pair_turned_flip(spread_a(images), spread_b(images), images, spread_b,
                                 input_size, margin, yaw)
    return predict


def _pair_turned_flip(outputs_a, outputs_b, images, spread_b, input_size, margin, yaw):
    """paired_flip's rule on the two models' outputs for `images`."""
    marks_b, sb = outputs_b
    marks, spread = fuse(*outputs_a, marks_b, sb, margin)
    turned = sharper_by(np.asarray(outputs_a[1]), np.asarray(sb)) > margin
    if yaw is not None:
        turned |= _yaws(np.asarray(marks).reshape(len(images), -1, 2) * input_size,
                        input_size) > yaw
    if turned.any():
        marks_b = np.asarray(marks_b, np.float64).reshape(len(images), -1)
        marks[turned], spread[turned] = with_mirrored(
            (marks_b[turned], np.asarray(sb)[turned]),
            spread_b(mirrored_crops(images[turned])), input_size)
    return marks, spread


def ensembled(spread_a, spread_c, spread_b, input_size, margin=PICK_MARGIN, yaw=TURNED_YAW,
              turned_flip=True, gate=None, claim=True):
    """Two main models, a and c, and the large-pose model b, as a cascade:
    a on every crop; a face that turned_faces() flags on a's marks (turned
    beyond CASCADE_YAW, or a's maps unsure) goes the pair's way with b
    (paired_flip, or paired() if not `turned_flip`), and every other face
    fuses a with c, weighted by their spreads and never one taken whole:
    two models trained alike average out each other's errors on the faces
    they both see. With `claim`, a face flagged only as unsure goes the
    pair's way only if b's maps are sharper than a's by more than `margin`
    (b claims a turned face a misread); otherwise it is fused with c too, as
    an occluded or blurred frontal face marks better that way. `spread_c`
    None puts a's look at the mirrored crop in c's place (mirrored_model),
    fused the same way, so every face's spread is on one scale. `gate`
    overrides turned_faces()'s thresholds. Two invokes a face, three a
    flagged one, as paired_flip."""
    if spread_c is None:
        spread_c = mirrored_model(spread_a, input_size)

    def predict(images):
        images = np.asarray(images)
        marks_a, sa = spread_a(images)
        if sa is None:
            raise ValueError("an ensemble needs score maps (an integral head) in its main models")
        marks_a = np.asarray(marks_a, np.float64).reshape(len(images), -1)
        sa = np.asarray(sa, np.float64)
        turned, unsure = _gate(marks_a.reshape(len(images), -1, 2) * input_size, sa, input_size,
                               gate)
        asked = turned | unsure
        paired_way = asked.copy()
        marks, spread = marks_a.copy(), sa.copy()
        if asked.any():
            marks_b, sb = spread_b(images[asked])
            marks_b, sb = np.asarray(marks_b, np.float64).reshape(len(sb), -1), np.asarray(sb)
            taken = (turned[asked] | (sharper_by(sa[asked], sb) > margin) if claim
                     else np.ones(len(sb), bool))
            paired_way[asked] = taken
            if taken.any():
                outputs_b = (marks_b[taken], sb[taken])
                marks[paired_way], spread[paired_way] = (
                    _pair_turned_flip((marks_a[paired_way], sa[paired_way]), outputs_b,
                                      images[paired_way], spread_b, input_size, margin, yaw)
                    if turned_flip else fuse(marks_a[paired_way], sa[paired_way], *outputs_b, margin))
        rest = ~paired_way
        if rest.any():
            marks[rest], spread[rest] = fuse(marks_a[rest], sa[rest], *spread_c(images[rest]), None)
        return marks, spread
    return predict


def _yaws(marks, input_size):
    """(B,) |yaw| in degrees of (B, N, 2) marks in crop pixels (0 where no pose)."""
    from head_pose import head_pose

    yaws = []
    for face in marks:
        pose = head_pose(face, (input_size, input_size))
        yaws.append(0.0 if pose is None else abs(pose["yaw"]))
    return np.array(yaws)


def sharper_by(sa, sb):
    """How much sharper model b's score maps are than a's on each face:
    (B,) mean log spread of a minus b's, from (B, N) spreads."""
    return (np.log(np.maximum(sa, 1e-3)).mean(axis=-1)
            - np.log(np.maximum(sb, 1e-3)).mean(axis=-1))
