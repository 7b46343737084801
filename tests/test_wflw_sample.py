"""The WFLW reader end to end on real WFLW photos and lines (../shared)."""
import json
import shutil

import pytest

from conftest import SHARED
from layouts import WFLW_ATTRIBUTES

SAMPLE = SHARED / "wflw_sample"
pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(),
                                reason=f"{SAMPLE} (real WFLW faces) is not on this machine")


def test_real_wflw_faces_convert_train_and_score_per_attribute(tmp_path, monkeypatch):
    import generate_mesh_dataset as gen
    import landmark
    root = tmp_path / "wflw_data"
    lists = root / gen.WFLW_LIST_DIR
    lists.mkdir(parents=True)
    (root / "WFLW_images").symlink_to(SAMPLE / "WFLW_images")
    # Training: the 197-field lines (no box, no flags); test: the one face
    # whose official 207-field line, with its attribute flags, is known.
    shutil.copy(SAMPLE / "list_98pt_train_sample.txt", lists / "list_98pt_rect_attr_train.txt")
    shutil.copy(SAMPLE / "list_98pt_rect_attr_train_sample.txt",
                lists / "list_98pt_rect_attr_test.txt")
    gen.main(["--data_dir", str(root), "--out_dir", str(tmp_path / "records")])
    summary = json.loads((tmp_path / "records" / "summary.json").read_text())
    assert summary["written"] == {"train": 5, "test": 1} and summary["skipped"] == []
    monkeypatch.chdir(tmp_path)
    records = ["--train_record", "records/train.record", "--val_record", "records/test.record"]
    tiny = ["--head", "integral", "--head_channels", "8", "--stages", "8x1,8x1,8x1,8x1"]
    landmark.main(records + ["--epochs", "2", "--batch_size", "2", "--metrics_out", "m.json",
                             *tiny])
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["layout"] == "wflw98" and result["num_faces"] == 1
    line = (lists / "list_98pt_rect_attr_test.txt").read_text().split()
    expected = {name for name, flag in zip(WFLW_ATTRIBUTES, line[200:206]) if flag == "1"}
    assert expected, "the sample face carries at least one attribute flag"
    assert set(result["per_attribute_nme"]) == expected


def test_the_bundled_predictor_scores_real_wflw_photos_on_68_marks(tmp_path):
    """End to end as 68-point models are scored on WFLW: 5 faces on 3 photos."""
    import evaluate_predictor
    out = tmp_path / "wflw.json"
    evaluate_predictor.main(["--wflw", str(SAMPLE / "list_98pt_train_sample.txt"),
                             "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["faces"] == 5 and result["missed"] == 0
    # A wrong 98 -> 68 map puts marks a whole feature away (NME far over 0.1).
    assert max(result["nmes"]) < 0.1
    regions = result["regions"]
    assert set(regions) == {"jaw", "brows", "nose", "eyes", "mouth", "without_jaw"}
    assert regions["without_jaw"]["nme"] < result["nme"] < regions["jaw"]["nme"]
    evaluate_predictor.main(["--wflw", str(SAMPLE / "list_98pt_rect_attr_train_sample.txt"),
                             "--out", str(out)])
    result = json.loads(out.read_text())
    line = (SAMPLE / "list_98pt_rect_attr_train_sample.txt").read_text().split()
    flagged = {name for name, flag in zip(WFLW_ATTRIBUTES, line[200:206]) if flag == "1"}
    assert {n for n, part in result["attributes"].items() if part["faces"]} == flagged
