"""A hard view of validation faces: each face made hard in fixed, seeded ways.

Every kind below turns a face's stored crop (records' STORE_SIZE² square)
into the 128-px model crop with its marks moved to match. The same seed
gives the same views on every machine, so two models are scored on the
same hard faces. The code is separate from training's augmentation (cv2
here, TensorFlow there, other shapes and ranges), so a model is not only
scored on what it was trained on.

Kinds (KINDS): low_res (face 30-60 px wide, scaled back up), jpeg (quality
20-50), blur (motion or defocus), rotation (30-45 degrees either way),
occlusion (20-40% of the face under a hand, a textured patch or a striped
object), light (gamma, colour cast and a half-face shadow) and yaw (a
horizontal perspective squash, as a head turning away). The yaw kind's
NME is over its squashed eye distance, about 0.68 of the face's own, so
evaluations also give it over the unturned face's (landmark.evaluate_hard).

One more kind, profile, needs the 3D face model of ../shared/data/3dmm and
is scored where it is present: the face fitted in 3D and turned to a yaw of
50-75 degrees by profile_faces.py's renderer (the way training's profiled
faces are made, but from validation faces, with its own seed and a stronger
turn). It is kept out of the pooled "all", so that stays comparable across
machines and with earlier runs.
"""
import cv2
import numpy as np

from geometry import MODEL_SIZE, STORE_SIZE

KINDS = ("low_res", "jpeg", "blur", "rotation", "occlusion", "light", "yaw")
PROFILE = "profile"
PROFILE_YAW = (50.0, 75.0)
SEED = 2026
FACE_SIDE = MODEL_SIZE / 1.3          # the face's landmark box in the model crop
STORE_CENTER = (STORE_SIZE - 1) / 2
CROP_CENTER = (MODEL_SIZE - 1) / 2


def _homography_crop(store_image, store_marks, matrix):
    """Model crop through `matrix` (3x3, model-crop px -> stored-crop px)."""
    crop = cv2.warpPerspective(store_image, matrix, (MODEL_SIZE, MODEL_SIZE),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    points = np.concatenate([store_marks, np.ones((len(store_marks), 1))], 1)
    moved = points @ np.linalg.inv(matrix).T
    return crop, moved[:, :2] / moved[:, 2:]


def _centred(about_crop):
    """Stored-crop <- model-crop homography: `about_crop` (3x3, applied
    about the model crop's centre), then the centre of the stored crop."""
    offset = STORE_CENTER - CROP_CENTER
    to_store = np.array([[1, 0, offset], [0, 1, offset], [0, 0, 1]], np.float64)
    to_origin = np.array([[1, 0, -CROP_CENTER], [0, 1, -CROP_CENTER], [0, 0, 1]], np.float64)
    back = np.array([[1, 0, CROP_CENTER], [0, 1, CROP_CENTER], [0, 0, 1]], np.float64)
    return to_store @ back @ about_crop @ to_origin


def _rotation(rng):
    angle = np.deg2rad(rng.uniform(30, 45) * rng.choice([-1, 1]))
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])


def _yaw(rng):
    # Crop x -> stored x: 1/squash widens the sampled span (the face looks
    # narrower); the perspective term shrinks one side (it turns away).
    squash = rng.uniform(0.6, 0.75)
    perspective = rng.uniform(0.003, 0.005) * rng.choice([-1, 1])
    return np.array([[1 / squash, 0, 0], [0, 1, 0], [perspective, 0, 1]])


def _low_res(crop, rng):
    side = int(round(MODEL_SIZE * rng.uniform(30, 60) / FACE_SIDE))
    small = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_LINEAR)


def _jpeg(crop, rng):
    quality = int(rng.integers(20, 51))
    ok, data = cv2.imencode(".jpg", crop[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]


def _blur(crop, rng):
    if rng.random() < 0.5:                            # motion: a line kernel
        length = int(rng.integers(7, 16))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1
        rotate = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2),
                                         rng.uniform(0, 180), 1)
        kernel = cv2.warpAffine(kernel, rotate, (length, length))
    else:                                             # defocus: a disc
        radius = rng.uniform(2, 5)
        size = 2 * int(np.ceil(radius)) + 1
        yy, xx = np.mgrid[:size, :size] - size // 2
        kernel = np.clip(radius + 0.5 - np.hypot(xx, yy), 0, 1).astype(np.float32)
    return cv2.filter2D(crop, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def _light(crop, rng):
    image = crop.astype(np.float32) / 255
    gamma = rng.uniform(0.3, 0.5) if rng.random() < 0.5 else rng.uniform(2.0, 3.0)
    image = image ** gamma * rng.uniform(0.6, 1.4, 3)
    xx = np.arange(MODEL_SIZE, dtype=np.float32) - CROP_CENTER
    side = rng.choice([-1, 1])
    shadow = 1 - rng.uniform(0.55, 0.75) / (1 + np.exp(-side * xx / rng.uniform(3, 8)))
    image = image * shadow[None, :, None]
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def _occluder_mask(rng, area):
    mask = np.zeros((MODEL_SIZE, MODEL_SIZE), np.uint8)
    centre = rng.uniform(0.3, 0.7, 2) * MODEL_SIZE
    shape = rng.integers(0, 3)
    if shape == 0:                                    # a hand: palm and fingers
        palm = np.sqrt(0.6 * area / np.pi)
        angle = rng.uniform(0, 360)
        cv2.ellipse(mask, tuple(int(v) for v in centre), (int(palm), int(palm * 1.15)),
                    angle, 0, 360, 1, -1)
        direction = np.array([np.sin(np.deg2rad(angle)), -np.cos(np.deg2rad(angle))])
        across = np.array([direction[1], -direction[0]])
        width = max(2, int(palm * 0.35))
        for k in range(4):
            base = centre + direction * palm * 0.8 + across * (k - 1.5) * width * 1.15
            tip = base + direction * palm * rng.uniform(1.0, 1.8)
            cv2.line(mask, tuple(int(v) for v in base), tuple(int(v) for v in tip), 1, width)
        thumb_base = centre + across * palm * 0.9
        cv2.line(mask, tuple(int(v) for v in thumb_base),
                 tuple(int(v) for v in thumb_base + (across + direction) * palm * 0.8), 1, width)
    else:                                             # a rotated rectangle
        aspect = rng.uniform(0.4, 2.5)
        w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
        box = cv2.boxPoints(((float(centre[0]), float(centre[1])), (float(w), float(h)),
                             float(rng.uniform(0, 180))))
        cv2.fillConvexPoly(mask, box.astype(np.int32), 1)
    return mask.astype(bool), shape


def _occlusion(crop, rng):
    area = rng.uniform(0.2, 0.4) * FACE_SIDE ** 2
    mask, shape = _occluder_mask(rng, area)
    noise = cv2.resize(rng.uniform(0.7, 1.3, (8, 8)).astype(np.float32),
                       (MODEL_SIZE, MODEL_SIZE))[:, :, None]
    if shape == 0:                                    # skin, RGB
        skin = np.array([rng.uniform(90, 230), rng.uniform(60, 180), rng.uniform(40, 150)])
        texture = skin * noise
    elif shape == 1:                                  # stripes (a scarf, a cup, a bar)
        yy, xx = np.mgrid[:MODEL_SIZE, :MODEL_SIZE]
        period = rng.uniform(4, 14)
        stripes = (np.sin((xx * 0.7 + yy * 0.7) * 2 * np.pi / period) > 0)[:, :, None]
        texture = np.where(stripes, rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)) * noise
    else:                                             # coloured noise (foliage, a print)
        texture = cv2.resize(rng.uniform(0, 255, (16, 16, 3)).astype(np.float32),
                             (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_NEAREST)
    out = crop.copy()
    out[mask] = np.clip(texture, 0, 255).astype(np.uint8)[mask]
    return out


PIXEL_KINDS = {"low_res": _low_res, "jpeg": _jpeg, "blur": _blur, "light": _light,
               "occlusion": _occlusion}
GEOMETRIC_KINDS = {"rotation": _rotation, "yaw": _yaw}


def make_view(store_image, store_marks, kind, rng):
    """One hard view: (model crop uint8 (128, 128, 3), marks (N, 2) in its
    pixels) of a stored crop (uint8 RGB, as records hold) and its marks."""
    about = GEOMETRIC_KINDS[kind](rng) if kind in GEOMETRIC_KINDS else np.eye(3)
    crop, marks = _homography_crop(store_image, store_marks, _centred(about))
    if kind in PIXEL_KINDS:
        crop = PIXEL_KINDS[kind](np.ascontiguousarray(crop), rng)
    return crop, marks


def face_rng(seed, kind, index):
    """The generator of face `index`'s `kind` view: fixed by the three."""
    return np.random.default_rng([seed, KINDS.index(kind), index])


def views(store_images, store_marks, kind, seed=SEED):
    """Hard views of every face: (images (F, 128, 128, 3) uint8, marks
    (F, N, 2) in model-crop pixels)."""
    pairs = [make_view(image, marks, kind, face_rng(seed, kind, i))
             for i, (image, marks) in enumerate(zip(store_images, store_marks))]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def profile_views(store_images, store_marks, seed=SEED, model_dir=None, yaw_range=PROFILE_YAW):
    """The profile kind: each face turned in 3D to |yaw| in `yaw_range`
    (its own way if it is already turned), cropped around its moved marks
    -> (images (F, 128, 128, 3) uint8, marks (F, N, 2)), or None when the
    3D face model is not there."""
    import profile_faces

    canvases = profile_canvases(store_images, store_marks, seed, model_dir, yaw_range)
    if canvases is None:
        return None
    offset = int(round(STORE_CENTER - CROP_CENTER))
    images, marks = [], []
    for canvas, canvas_marks in canvases:
        patch, patch_marks, _ = profile_faces.stored_face(canvas, canvas_marks, np.array([1, 0, 0]))
        images.append(patch[offset:offset + MODEL_SIZE, offset:offset + MODEL_SIZE])
        marks.append(patch_marks - offset)
    return np.stack(images), np.stack(marks)


def profile_canvases(store_images, store_marks, seed=SEED, model_dir=None, yaw_range=PROFILE_YAW):
    """The profile kind's rendered faces before cropping: [(canvas (H, W, 3)
    uint8, marks (N, 2) in its pixels)], the stored crop turned with its
    margin; None when the 3D face model is not there."""
    import profile_faces

    try:
        model = profile_faces.FaceModel(model_dir or profile_faces.MODEL_DIR)
    except profile_faces.ProfileError:
        return None
    out = []
    for index, (image, face_marks) in enumerate(zip(store_images, store_marks)):
        fit = model.fit(face_marks, image.shape[1], image.shape[0])
        rng = np.random.default_rng([seed, len(KINDS), index])
        side = np.sign(fit.yaw) if abs(fit.yaw) > profile_faces.FACING else rng.choice([-1, 1])
        yaw = side * rng.uniform(*yaw_range)
        out.append(profile_faces.profile(image, face_marks, fit, yaw - fit.yaw,
                                         rng.uniform(-5, 5)))
    return out
