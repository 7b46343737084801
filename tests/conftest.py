"""Shared fixtures: small generated datasets in the real WFLW and 300-W
layouts (no real images are needed, so the tests run on a fresh clone)."""
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
SHARED = ROOT.parent / "shared" / "data"


def synthetic_face(rng, num_marks, size=160):
    """A photo-sized image with `num_marks` marks drawn on a face-like blob.

    Returns (BGR image, marks (N, 2) in its pixels). The marks lie on an
    ellipse inside the blob, so crops from them contain the drawing.
    """
    image = rng.integers(0, 60, (size, size + 40, 3), dtype=np.uint8)
    center = np.array([size / 2 + 20 + rng.uniform(-10, 10), size / 2 + rng.uniform(-10, 10)])
    radius = size * rng.uniform(0.25, 0.3)
    cv2.circle(image, tuple(int(v) for v in center), int(radius * 1.2), (150, 170, 200), -1)
    angles = np.linspace(0, 2 * np.pi, num_marks, endpoint=False)
    marks = center + radius * np.stack([np.cos(angles), 0.9 * np.sin(angles)], -1)
    marks += rng.normal(0, 1.0, marks.shape)
    for x, y in marks:
        cv2.circle(image, (int(round(x)), int(round(y))), 1, (255, 255, 255), -1)
    return image, marks


def write_pts(path, marks):
    lines = ["version: 1", f"n_points:  {len(marks)}", "{"]
    lines += [f"{x:.3f} {y:.3f}" for x, y in marks] + ["}"]
    Path(path).write_text("\n".join(lines) + "\n")


@pytest.fixture
def make_300w_folder(tmp_path):
    def make(name, count, seed=0):
        folder = tmp_path / name
        folder.mkdir()
        rng = np.random.default_rng(seed)
        for i in range(count):
            image, marks = synthetic_face(rng, 68)
            cv2.imwrite(str(folder / f"face_{i}.jpg"), image)
            write_pts(folder / f"face_{i}.pts", marks)
        return folder
    return make


def wflw_line(marks, attributes, name, box=None):
    box = box if box is not None else [*marks.min(0), *marks.max(0)]
    numbers = [f"{v:.6f}" for v in marks.ravel()] + [str(int(v)) for v in box]
    return " ".join(numbers + [str(a) for a in attributes] + [name])


@pytest.fixture
def make_wflw_tree(tmp_path):
    """A WFLW root laid out as the real archives unpack."""
    def make(train=12, test=6, seed=0):
        root = tmp_path / "wflw_data"
        lists = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
        lists.mkdir(parents=True)
        rng = np.random.default_rng(seed)
        for split, count in (("train", train), ("test", test)):
            lines = []
            for i in range(count):
                image, marks = synthetic_face(rng, 98)
                name = f"{i % 3}--Event/{split}_{i}.jpg"
                (root / "WFLW_images" / name).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "WFLW_images" / name), image)
                attributes = [(i + k) % 2 for k in range(6)]
                lines.append(wflw_line(marks, attributes, name))
            (lists / f"list_98pt_rect_attr_{split}.txt").write_text("\n".join(lines) + "\n")
        return root
    return make
