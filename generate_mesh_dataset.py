"""Raw landmark dataset (WFLW or 300-W folders) -> train/test TFRecords.

Each face is cropped from its own landmarks (a square CROP_SCALE times the
landmark box, widened by STORE_FACTOR for augmentation), resampled to
STORE_SIZE pixels and written with its marks in crop pixels and the
transform back to the original photo, so scores can be given in original
pixels. Record fields are listed in `face_example`.

    python generate_mesh_dataset.py                       # WFLW in wflw_data/
    python generate_mesh_dataset.py --dataset 300w \
        --train_dirs data/helen_trainset data/afw --val_fraction 0.1 --seed 0
    python generate_mesh_dataset.py --dataset 300w --val_fraction 0.1 \
        --train_dirs data/helen_trainset data/afw --train_dirs data/lfpw_trainset

Each `--train_dirs` group is split on its own (same fraction and seed), so
adding a group leaves the faces held out of the earlier groups unchanged.
"""
import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

import geometry
from images import read_image
from layouts import WFLW_ATTRIBUTES

WFLW_LIST_DIR = Path("WFLW_annotations") / "list_98pt_rect_attr_train_test"
WFLW_IMAGE_DIR = Path("WFLW_images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
# A face is skipped when more than this share of its marks lies outside its
# photo: its crop would be mostly the zero border, and its labels guesses.
MAX_MARKS_OUTSIDE = 0.25
NO_ATTRIBUTES = (-1,) * len(WFLW_ATTRIBUTES)


class DatasetError(Exception):
    """Input that cannot be converted; the message names the file (and line)."""


@dataclass
class Face:
    image_path: Path
    marks: np.ndarray                 # (N, 2) in original image pixels
    layout: str
    attributes: tuple = NO_ATTRIBUTES
    source: str = ""                  # path as the annotation names it


@dataclass
class Summary:
    written: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)   # [{"source", "reason"}]
    sources: dict = field(default_factory=dict)   # {split: [source of each face written]}


# ---------------------------------------------------------------- parsing --

def parse_wflw_line(line, where):
    """One WFLW annotation line -> (marks (98, 2), attributes, image path).

    Accepts the main lists' 207 fields (196 coordinates, 4 box numbers,
    6 attribute flags, path) and the attribute subsets' 197 (no box, no
    flags). `where` ("file:line") is put in every error.
    """
    fields = line.split()
    if len(fields) not in (207, 197):
        raise DatasetError(f"{where}: expected 207 fields (196 coordinates, 4 box, "
                           f"6 attributes, image path) or 197, found {len(fields)}")
    try:
        numbers = [float(v) for v in fields[:-1]]
    except ValueError as err:
        raise DatasetError(f"{where}: {err}") from None
    marks = np.array(numbers[:196]).reshape(98, 2)
    if not np.all(np.isfinite(marks)):
        raise DatasetError(f"{where}: coordinates are not finite")
    attributes = NO_ATTRIBUTES
    if len(fields) == 207:
        flags = numbers[200:206]
        if any(f not in (0.0, 1.0) for f in flags):
            raise DatasetError(f"{where}: attribute flags must be 0 or 1, found {flags}")
        attributes = tuple(int(f) for f in flags)
    return marks, attributes, fields[-1]


def read_wflw(data_dir, split):
    """Faces of WFLW's `split` ('train' or 'test') under `data_dir`."""
    data_dir = Path(data_dir)
    list_path = data_dir / WFLW_LIST_DIR / f"list_98pt_rect_attr_{split}.txt"
    if not list_path.is_file():
        raise DatasetError(f"WFLW annotation file not found: {list_path} "
                           f"(expected the WFLW_annotations archive unpacked in {data_dir})")
    if not (data_dir / WFLW_IMAGE_DIR).is_dir():
        raise DatasetError(f"WFLW image folder not found: {data_dir / WFLW_IMAGE_DIR} "
                           f"(expected the WFLW_images archive unpacked in {data_dir})")
    return [face for _, face in wflw_list_faces(list_path, data_dir / WFLW_IMAGE_DIR)]


def wflw_list_faces(list_path, image_dir):
    """("file:line", Face) for each line of a WFLW annotation list, its photo
    under `image_dir` (not opened here)."""
    with open(list_path) as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                where = f"{list_path}:{number}"
                marks, attributes, name = parse_wflw_line(line, where)
                yield where, Face(Path(image_dir) / name, marks, "wflw98", attributes, name)


def read_pts(path):
    """A 300-W `.pts` file -> (N, 2) marks. Errors name the file and line."""
    with open(path) as handle:
        lines = [line.strip() for line in handle]
    lines = [(i, line) for i, line in enumerate(lines, 1) if line]

    def fail(number, why):
        raise DatasetError(f"{path}:{number}: {why}")

    if len(lines) < 3 or not lines[0][1].startswith("version:"):
        fail(lines[0][0] if lines else 1, "expected 'version: 1' header")
    key, _, value = lines[1][1].partition(":")
    if key.strip() != "n_points" or not value.strip().isdigit():
        fail(lines[1][0], f"expected 'n_points: N', found {lines[1][1]!r}")
    count = int(value)
    if lines[2][1] != "{":
        fail(lines[2][0], f"expected '{{', found {lines[2][1]!r}")
    body = lines[3:3 + count]
    if len(body) < count or len(lines) < 4 + count or lines[3 + count][1] != "}":
        fail(lines[-1][0], f"expected {count} points followed by '}}'")
    marks = []
    for number, line in body:
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError(f"expected 'x y', found {line!r}")
            marks.append([float(parts[0]), float(parts[1])])
        except ValueError as err:
            fail(number, str(err))
    marks = np.array(marks)
    if not np.all(np.isfinite(marks)):
        fail(body[0][0], "coordinates are not finite")
    return marks


def read_300w_dir(folder):
    """Faces of a 300-W style folder: NAME.pts beside NAME.jpg or NAME.png."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"300-W folder not found: {folder}")
    faces = []
    for pts in sorted(folder.glob("*.pts")):
        marks = read_pts(pts)
        if len(marks) != 68:
            raise DatasetError(f"{pts}: expected 68 points, found {len(marks)}")
        images = [pts.with_suffix(s) for s in IMAGE_SUFFIXES if pts.with_suffix(s).is_file()]
        image = images[0] if images else pts.with_suffix(".jpg")
        faces.append(Face(image, marks, "300w68", source=str(image)))
    if not faces:
        raise DatasetError(f"no .pts annotations in {folder}")
    return faces


def split_off(faces, fraction, seed):
    """Split faces into (kept, held_out) with a seeded fraction held out."""
    if not 0 < fraction < 1:
        raise DatasetError(f"--val_fraction must be between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(len(faces))
    held = set(order[:int(round(fraction * len(faces)))].tolist())
    return ([f for i, f in enumerate(faces) if i not in held],
            [f for i, f in enumerate(faces) if i in held])


# ---------------------------------------------------------------- writing --

def crop_face(image, marks):
    """Stored crop of a face -> (crop image, marks in crop pixels, transform)."""
    center, side = geometry.crop_square(geometry.landmark_box(marks))
    patch, transform = geometry.crop(image, center, side * geometry.STORE_FACTOR,
                                     geometry.STORE_SIZE)
    return patch, geometry.to_crop(marks, transform), transform


def face_example(patch, marks, transform, face, synthetic_yaw=None):
    """A tf.train.Example holding one stored face crop.

    image: JPEG of the STORE_SIZE² crop; marks: N*2 floats, crop pixels;
    num_marks; layout ('wflw98' / '300w68'); attributes: 6 ints (-1 when the
    dataset has none); source: image path; transform: crop -> image pixels
    as (scale, x_offset, y_offset); synthetic_yaw (profile_faces.py's faces
    only): the yaw in degrees the face was rendered at.
    """
    import tensorflow as tf

    def floats(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(v)))

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))

    def data(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    ok, jpeg = cv2.imencode(".jpg", patch, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok, "OpenCV failed to encode a crop"
    extra = {} if synthetic_yaw is None else {"synthetic_yaw": floats([synthetic_yaw])}
    return tf.train.Example(features=tf.train.Features(feature={
        **extra,
        "image": data(jpeg.tobytes()),
        "marks": floats(marks),
        "num_marks": ints([len(marks)]),
        "layout": data(face.layout.encode()),
        "attributes": ints(face.attributes),
        "source": data(face.source.encode()),
        "transform": floats(transform),
    }))


def marks_outside(marks, image):
    """Share of `marks` that lie outside `image`'s pixels."""
    height, width = image.shape[:2]
    x, y = marks[:, 0], marks[:, 1]
    return float(np.mean((x < -0.5) | (y < -0.5) | (x > width - 0.5) | (y > height - 0.5)))


def read_face_image(face):
    """The face's photo, or (None, reason) when it must be skipped."""
    image, reason = read_image(face.image_path)
    if image is None:
        return None, reason
    outside = marks_outside(face.marks, image)
    if outside > MAX_MARKS_OUTSIDE:
        return None, (f"{100 * outside:.0f}% of the marks lie outside the "
                      f"{image.shape[1]}x{image.shape[0]} photo (limit "
                      f"{100 * MAX_MARKS_OUTSIDE:.0f}%)")
    return image, None


def write_records(faces, path, summary, split):
    """Write faces to `path`; unreadable images are skipped and listed."""
    import tensorflow as tf

    written = []
    with tf.io.TFRecordWriter(str(path)) as writer:
        for face in tqdm(faces, desc=f"writing {split}", unit="face"):
            image, reason = read_face_image(face)
            if image is None:
                summary.skipped.append({"source": str(face.image_path), "reason": reason})
                continue
            patch, marks, transform = crop_face(image, face.marks)
            writer.write(face_example(patch, marks, transform, face).SerializeToString())
            written.append(face.source)
    summary.written[split] = len(written)
    summary.sources[split] = written


def convert(splits, out_dir):
    """Write {split: faces} to out_dir/{split}.record, all or nothing."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    temporary = {s: out_dir / f".{s}.record.partial" for s in splits}
    try:
        for split, faces in splits.items():
            write_records(faces, temporary[split], summary, split)
        for split in splits:
            if summary.written[split] == 0:
                raise DatasetError(f"no readable face for {split}.record; "
                                   f"first skipped: {summary.skipped[:1]}")
    except BaseException:
        for path in temporary.values():
            path.unlink(missing_ok=True)
        raise
    for split, path in temporary.items():
        os.replace(path, out_dir / f"{split}.record")
    # A split this run did not write must not survive from an earlier run.
    for stale in {"train", "test"} - set(splits):
        (out_dir / f"{stale}.record").unlink(missing_ok=True)
    report = {"written": summary.written, "skipped": summary.skipped,
              "test_sources": summary.sources.get("test", [])}
    (out_dir / "summary.json").write_text(json.dumps(report, indent=1))
    return summary


def read_test_sources(summary_path):
    """The photos of the test split listed in a summary.json written here."""
    path = Path(summary_path)
    if not path.is_file():
        raise DatasetError(f"records summary not found: {path}")
    try:
        sources = json.loads(path.read_text())["test_sources"]
    except (ValueError, KeyError, TypeError):
        raise DatasetError(f"{path} is not a records summary.json (no test_sources list); "
                           f"generate_mesh_dataset.py writes one beside the records") from None
    return [Path(source) for source in sources]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=("wflw", "300w"), default="wflw")
    parser.add_argument("--data_dir", default="wflw_data",
                        help="WFLW root holding WFLW_annotations/ and WFLW_images/")
    parser.add_argument("--train_dirs", nargs="+", action="append", default=[],
                        help="300-W: folders of NAME.jpg|png + NAME.pts for training; "
                             "repeat the flag for groups split separately by --val_fraction")
    parser.add_argument("--test_dirs", nargs="+", default=[],
                        help="300-W: folders written to test.record")
    parser.add_argument("--val_fraction", type=float, default=0.0,
                        help="300-W: hold out this seeded share of --train_dirs "
                             "faces into test.record")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out_dir", default="tfrecords")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.dataset == "wflw":
            splits = {"train": read_wflw(args.data_dir, "train"),
                      "test": read_wflw(args.data_dir, "test")}
        else:
            if not args.train_dirs:
                raise DatasetError("--dataset 300w needs --train_dirs")
            test = [f for d in args.test_dirs for f in read_300w_dir(d)]
            train = []
            for group in args.train_dirs:
                faces = [f for d in group for f in read_300w_dir(d)]
                if args.val_fraction:
                    faces, held_out = split_off(faces, args.val_fraction, args.seed)
                    if not held_out:
                        print(f"warning: --val_fraction {args.val_fraction} of the {len(faces)} "
                              f"faces in {' '.join(group)} holds out none")
                    test += held_out
                train += faces
            splits = {"train": train}
            if test:
                splits["test"] = test
            else:
                print(f"warning: no test faces: {args.out_dir}/test.record is not written "
                      f"(and an old one there is removed)")
        print(f"{args.dataset}: " + ", ".join(f"{len(v)} {k} faces" for k, v in splits.items()),
              f"-> {args.out_dir}/")
        summary = convert(splits, args.out_dir)
    except DatasetError as err:
        sys.exit(f"error: {err}")
    print("written: " + ", ".join(f"{n} faces in {s}.record" for s, n in summary.written.items())
          + f" (total {sum(summary.written.values())})")
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} faces:")
        for item in summary.skipped:
            print(f"  {item['reason']}: {item['source']}")
    else:
        print("skipped: none")


if __name__ == "__main__":
    main()
