"""Head pose (yaw, pitch, roll in degrees) from a face's 68 marks.

`cv2.solvePnP` fits a generic 3D face, assets/face_shape_68.json, to the
marks through a pinhole camera whose focal length is the image's width.
The shape is the mean of the Surrey Face Model (Huber et al., VISAPP 2016;
eos, Apache-2.0, assets/face_shape_LICENSE.txt) at the 52 marks its
ibug_to_sfm.txt maps to a vertex: the jaw contour (marks 1-8, 10-17) has
no fixed vertex, as the outline it follows moves with the pose.

Angles: yaw is positive when the face turns to the image's left, pitch
when the chin tilts down, roll when the face turns clockwise in the image;
all zero for a face looking into the camera.

    python head_pose.py --model_dir ../shared/data/3dmm   # rewrite the asset
"""
import argparse
import functools
import json
from pathlib import Path

import cv2
import numpy as np

SHAPE_PATH = Path(__file__).resolve().parent / "assets" / "face_shape_68.json"
MIN_MARKS = 6


@functools.lru_cache(maxsize=None)
def face_shape(path=SHAPE_PATH):
    """(mark indices (K,), points (K, 3)) of the generic face, in OpenCV's
    camera axes (x right, y down, z away from the camera), millimetres."""
    data = json.loads(Path(path).read_text())
    marks = np.array(data["marks"], np.int64)
    points = np.array(data["points"], np.float64) * np.array([1.0, -1.0, -1.0])
    marks.setflags(write=False)
    points.setflags(write=False)
    return marks, points


def euler_degrees(rotation):
    """A 3x3 rotation (face -> camera, OpenCV axes) -> (yaw, pitch, roll):
    rotation = Rz(roll) @ Ry(yaw) @ Rx(pitch) about the camera's axes."""
    yaw = np.degrees(np.arcsin(np.clip(-rotation[2, 0], -1, 1)))
    pitch = np.degrees(np.arctan2(rotation[2, 1], rotation[2, 2]))
    roll = np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0]))
    return float(yaw), float(pitch), float(roll)


def rotation_from(yaw, pitch, roll):
    """euler_degrees' inverse."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def camera_matrix(image_size):
    width, height = image_size
    return np.array([[width, 0, (width - 1) / 2], [0, width, (height - 1) / 2], [0, 0, 1]],
                    np.float64)


def head_pose(marks, image_size, shape_path=SHAPE_PATH, guess=None):
    """{"yaw", "pitch", "roll"} in degrees for (68, 2) marks in an image of
    `image_size` (width, height); None when marks are not 68 or the fit fails.
    `guess`: a pose of nearly the same marks (the last video frame's), which
    starts the fit in place of EPnP."""
    marks = np.asarray(marks, np.float64)
    if marks.shape != (68, 2) or not np.all(np.isfinite(marks)):
        return None
    indices, points = face_shape(shape_path)
    if guess is not None:
        ok = True
        rvec, tvec = (np.array(guess[k], np.float64).reshape(3, 1) for k in ("rvec", "tvec"))
    else:
        ok, rvec, tvec = cv2.solvePnP(points, marks[indices], camera_matrix(image_size), None,
                                      flags=cv2.SOLVEPNP_EPNP)
    if ok:   # EPnP (or the guess) starts it; Levenberg-Marquardt refines
        ok, rvec, tvec = cv2.solvePnP(points, marks[indices], camera_matrix(image_size), None,
                                      rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or tvec[2, 0] <= 0:
        return None
    yaw, pitch, roll = euler_degrees(cv2.Rodrigues(rvec)[0])
    return {"yaw": yaw, "pitch": pitch, "roll": roll,
            "rvec": rvec.ravel().tolist(), "tvec": tvec.ravel().tolist()}


def draw_axes(canvas, pose, image_size, length=None):
    """Draw the head's x (red), y (green) and z (blue) axes on a BGR canvas."""
    if pose is None:
        return canvas
    rvec, tvec = np.array(pose["rvec"]), np.array(pose["tvec"])
    length = length or 60.0
    axes = np.array([[0, 0, 0], [length, 0, 0], [0, length, 0], [0, 0, -length]], np.float64)
    points, _ = cv2.projectPoints(axes, rvec, tvec, camera_matrix(image_size), None)
    origin, *ends = [tuple(int(round(v)) for v in p.ravel()) for p in points]
    for end, colour in zip(ends, [(0, 0, 255), (0, 255, 0), (255, 0, 0)]):
        cv2.line(canvas, origin, end, colour, 2)
    return canvas


def write_shape(model_dir, out=SHAPE_PATH):
    """Write the mean face at the mapped marks from the Surrey Face Model files."""
    import eos

    model_dir = Path(model_dir)
    shape = eos.morphablemodel.load_model(str(model_dir / "sfm_shape_3448.bin"))
    mean = np.asarray(shape.get_shape_model().get_mean(), np.float64).reshape(-1, 3)
    mapper = eos.core.LandmarkMapper(str(model_dir / "ibug_to_sfm.txt"))
    marks = [k for k in range(68) if mapper.convert(str(k + 1)) is not None]
    points = [mean[int(mapper.convert(str(k + 1)))].round(3).tolist() for k in marks]
    out = Path(out)
    out.write_text(json.dumps({
        "source": "mean shape of the Surrey Face Model (sfm_shape_3448.bin, eos commit ce98420; "
                  "Huber et al., VISAPP 2016), Apache-2.0: see face_shape_LICENSE.txt",
        "axes": "x to the face's left, y up, z out of the face; millimetres",
        "marks": marks, "points": points}) + "\n")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description="rewrite assets/face_shape_68.json from the "
                                            "Surrey Face Model files")
    p.add_argument("--model_dir", default="../shared/data/3dmm")
    p.add_argument("--out", default=str(SHAPE_PATH))
    args = p.parse_args(argv)
    print(f"wrote {write_shape(args.model_dir, args.out)}")


if __name__ == "__main__":
    main()
