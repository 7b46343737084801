import numpy as np
import pytest
from conftest import SHARED, synthetic_face, write_pts

import generate_mesh_dataset as gen
import geometry

WFLW_SAMPLE = SHARED / "wflw_annotation_sample"


@pytest.mark.skipif(not WFLW_SAMPLE.is_dir(), reason="../shared WFLW sample lines absent")
def test_parses_every_real_wflw_line():
    files = sorted(WFLW_SAMPLE.glob("list_98pt_test_*.txt"))
    assert len(files) == 6
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            marks, attributes, name = gen.parse_wflw_line(line, f"{path}:{number}")
            assert marks.shape == (98, 2)
            assert name.endswith(".jpg") and "--" in name
            # The real lines are image pixels of faces: the eyes sit apart.
            assert np.linalg.norm(marks[60] - marks[72]) > 1.0
            assert attributes == gen.NO_ATTRIBUTES


def test_wflw_main_line_keeps_box_and_attributes():
    marks = np.arange(196, dtype=float).reshape(98, 2)
    line = " ".join([f"{v:.6f}" for v in marks.ravel()] + ["1", "2", "300", "400"]
                    + ["1", "0", "0", "1", "0", "1"] + ["51--Dresses/51_Dresses_wearingdress_51_377.jpg"])
    parsed, attributes, name = gen.parse_wflw_line(line, "x:1")
    np.testing.assert_allclose(parsed, marks)
    assert attributes == (1, 0, 0, 1, 0, 1)
    assert name == "51--Dresses/51_Dresses_wearingdress_51_377.jpg"


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f[:-2] + f[-1:], "found 206"),
    (lambda f: f[:5] + ["abc"] + f[6:], "could not convert"),
    (lambda f: f[:200] + ["2"] + f[201:], "attribute flags"),
    (lambda f: f[:3] + ["nan"] + f[4:], "not finite"),
])
def test_malformed_wflw_line_names_file_and_line(make_wflw_tree, mutate, message):
    root = make_wflw_tree(train=4, test=2)
    path = root / gen.WFLW_LIST_DIR / "list_98pt_rect_attr_train.txt"
    lines = path.read_text().splitlines()
    lines[2] = " ".join(mutate(lines[2].split()))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(gen.DatasetError, match=f"{path}:3: .*{message}"):
        gen.read_wflw(root, "train")


def test_missing_wflw_annotation_or_images_is_a_clear_error(tmp_path, make_wflw_tree):
    with pytest.raises(gen.DatasetError, match="WFLW annotation file not found"):
        gen.read_wflw(tmp_path / "nowhere", "train")
    root = make_wflw_tree(train=2, test=1)
    import shutil
    shutil.rmtree(root / "WFLW_images")
    with pytest.raises(SystemExit, match="WFLW image folder not found"):
        gen.main(["--data_dir", str(root), "--out_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_reads_pts(tmp_path):
    marks = np.random.default_rng(0).uniform(0, 100, (68, 2))
    write_pts(tmp_path / "a.pts", marks)
    np.testing.assert_allclose(gen.read_pts(tmp_path / "a.pts"), marks, atol=1e-3)


@pytest.mark.parametrize("edit, line", [
    (lambda l: l[:10] + ["12.5"] + l[11:], 11),          # one number on a point line
    (lambda l: l[:-1], 71),                               # closing brace missing
    (lambda l: ["n_points: 68"] + l[1:], 1),             # no version header
    (lambda l: l[:20] + ["3.0 x"] + l[21:], 21),
])
def test_malformed_pts_names_file_and_line(tmp_path, edit, line):
    write_pts(tmp_path / "a.pts", np.zeros((68, 2)))
    lines = edit((tmp_path / "a.pts").read_text().splitlines())
    (tmp_path / "a.pts").write_text("\n".join(lines) + "\n")
    with pytest.raises(gen.DatasetError, match=rf"a\.pts:{line}:"):
        gen.read_pts(tmp_path / "a.pts")


def test_stored_crop_maps_back_to_the_photo():
    rng = np.random.default_rng(1)
    image, marks = synthetic_face(rng, 68)
    patch, crop_marks, transform = gen.crop_face(image, marks)
    assert patch.shape == (geometry.STORE_SIZE, geometry.STORE_SIZE, 3)
    np.testing.assert_allclose(geometry.to_image(crop_marks, transform), marks, atol=1e-9)
    # The drawn marks are white dots: the crop shows them where the marks say.
    for x, y in crop_marks:
        assert patch[int(round(y)), int(round(x))].mean() > 120


def test_convert_300w_counts_and_val_split(make_300w_folder, tmp_path):
    train = make_300w_folder("train", 10)
    test = make_300w_folder("test", 3, seed=1)
    gen.main(["--dataset", "300w", "--train_dirs", str(train), "--test_dirs", str(test),
              "--val_fraction", "0.2", "--seed", "0", "--out_dir", str(tmp_path / "out")])
    import json
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["written"] == {"train": 8, "test": 5}
    assert sorted((tmp_path / "out").glob("*.record")) == [
        tmp_path / "out" / "test.record", tmp_path / "out" / "train.record"]
    # The test photos it lists, as the predictor's evaluation and the box
    # mapping's --exclude read them.
    sources = gen.read_test_sources(tmp_path / "out" / "summary.json")
    assert len(sources) == 5 and all(s.is_file() for s in sources)
    assert {s.parent for s in sources} >= {test}
    import evaluate_predictor
    faces = evaluate_predictor.annotated_faces(split=tmp_path / "out" / "summary.json")
    assert [f.image_path for f in faces] == sources and all(f.marks.shape == (68, 2) for f in faces)


def test_a_file_that_is_not_a_summary_is_named(tmp_path):
    with pytest.raises(gen.DatasetError, match="records summary not found: .*none.json"):
        gen.read_test_sources(tmp_path / "none.json")
    for text in ("not json", '{"written": {}}', "[1, 2]"):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(gen.DatasetError, match="bad.json is not a records summary.json"):
            gen.read_test_sources(tmp_path / "bad.json")


def test_malformed_pts_leaves_no_record(make_300w_folder, tmp_path, capsys):
    train = make_300w_folder("train", 4)
    (train / "face_2.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"face_2\.pts"):
        gen.main(["--dataset", "300w", "--train_dirs", str(train), "--out_dir", str(out)])
    assert not out.exists() or not list(out.glob("*record*"))


def test_unreadable_image_is_skipped_and_listed(make_300w_folder, tmp_path, capsys):
    train = make_300w_folder("train", 4)
    (train / "face_1.jpg").write_bytes(b"not a jpeg")
    (train / "face_3.jpg").unlink()
    gen.main(["--dataset", "300w", "--train_dirs", str(train), "--out_dir", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert "written: 2 faces in train.record" in out
    assert "unreadable: " + str(train / "face_1.jpg") in out
    assert "missing: " + str(train / "face_3.jpg") in out


def test_missing_300w_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="300-W folder not found: .*nope"):
        gen.main(["--dataset", "300w", "--train_dirs", str(tmp_path / "nope"),
                  "--out_dir", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_each_train_dirs_group_is_split_on_its_own(make_300w_folder, tmp_path):
    """Adding a group keeps the faces held out of the first group exactly."""
    import json
    first, second = make_300w_folder("first", 20), make_300w_folder("second", 10, seed=3)
    common = ["--dataset", "300w", "--val_fraction", "0.2", "--seed", "0"]
    gen.main(common + ["--train_dirs", str(first), "--out_dir", str(tmp_path / "one")])
    gen.main(common + ["--train_dirs", str(first), "--train_dirs", str(second),
                       "--out_dir", str(tmp_path / "two")])
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["test_sources"][:4] == one["test_sources"] and len(two["test_sources"]) == 6
    assert all("second" in s for s in two["test_sources"][4:])
    assert two["written"] == {"train": 24, "test": 6}


def test_a_rerun_without_a_test_split_removes_the_old_one(make_300w_folder, tmp_path):
    import json
    faces = make_300w_folder("faces", 10)
    out = tmp_path / "out"
    gen.main(["--dataset", "300w", "--train_dirs", str(faces), "--val_fraction", "0.2",
              "--out_dir", str(out)])
    assert (out / "test.record").is_file()
    gen.main(["--dataset", "300w", "--train_dirs", str(faces), "--out_dir", str(out)])
    assert not (out / "test.record").exists()
    assert json.loads((out / "summary.json").read_text())["test_sources"] == []


def test_truncated_jpeg_and_faces_outside_their_photo_are_skipped(make_300w_folder, tmp_path,
                                                                   capsys):
    import json
    faces = make_300w_folder("faces", 5)
    data = (faces / "face_1.jpg").read_bytes()
    (faces / "face_1.jpg").write_bytes(data[:len(data) // 2])
    marks = gen.read_pts(faces / "face_3.pts")
    write_pts = __import__("conftest").write_pts
    write_pts(faces / "face_3.pts", marks + 1000)          # every mark off the photo
    out = tmp_path / "out"
    gen.main(["--dataset", "300w", "--train_dirs", str(faces), "--val_fraction", "0.4",
              "--out_dir", str(out)])
    printed = capsys.readouterr().out
    assert "truncated JPEG: " + str(faces / "face_1.jpg") in printed
    assert "100% of the marks lie outside" in printed and str(faces / "face_3.jpg") in printed
    summary = json.loads((out / "summary.json").read_text())
    skipped = {s["source"] for s in summary["skipped"]}
    assert skipped == {str(faces / "face_1.jpg"), str(faces / "face_3.jpg")}
    # The summary lists only the test faces that were written.
    assert not skipped & set(summary["test_sources"])
    assert sum(summary["written"].values()) == 3


def test_a_val_fraction_too_small_to_hold_out_a_face_warns(make_300w_folder, tmp_path, capsys):
    faces = make_300w_folder("faces", 5)
    gen.main(["--dataset", "300w", "--train_dirs", str(faces), "--val_fraction", "0.05",
              "--out_dir", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "--val_fraction 0.05 of the 5 faces" in printed and "holds out none" in printed
    assert "test.record is not written" in printed
    assert not (tmp_path / "out" / "test.record").exists()
