import json

import pytest

import readme_results


def test_sections_are_rebuilt_from_result_files(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    (results / "val_metrics.json").write_text(json.dumps({
        "nme": 0.04123, "fr": 0.0083, "auc": 0.6, "mse": 3.25, "num_faces": 121,
        "record": "tfrecords/test.record", "model": "checkpoints/best.weights.h5",
        "architecture": "resnet", "quantized": False,
        "training": {"epochs": 200, "train_minutes": 41.2, "images_per_s_median": 95.0}}))
    # The predictor's other settings are compared face by face with its defaults.
    common = {"faces": 3, "missed": 0, "missed_share": 0.0, "fr": 0.0, "auc": 0.6,
              "model": "m.tflite", "split": "tfrecords/summary.json", "refine": 0}
    (results / "predictor_eval.json").write_text(json.dumps(
        {**common, "nme": 0.04, "flip": False, "nmes": [0.03, 0.04, 0.05]}))
    (results / "predictor_eval_flip.json").write_text(json.dumps(
        {**common, "nme": 0.039, "flip": True, "nmes": [0.029, 0.039, 0.049]}))
    (results / "predictor_eval_order.json").write_text(json.dumps(
        {**common, "nme": 0.041, "flip": False, "nmes": [0.03, 0.04, 0.053],
         "detector": ["full.tflite", "short.tflite"]}))
    readme = tmp_path / "README.md"
    blocks = "".join(f"<!-- BEGIN {n} -->\nold\n<!-- END {n} -->\n" for n in readme_results.SECTIONS)
    readme.write_text("# title\n" + blocks)
    monkeypatch.setattr(readme_results, "ROOT", tmp_path)
    monkeypatch.setattr(readme_results, "RESULTS", results)
    readme_results.main()
    text = readme.read_text()
    assert "old" not in text and text.startswith("# title\n")
    assert "| `val_metrics` | 4.123 | 0.83 | 0.6000 | 3.250 | 200 | 41 | 95 |" in text
    assert "| resnet | no | 95 | results/val_metrics.json |" in text
    assert "| results/predictor_eval.json | `m.tflite` | default | 0 | no | 3 |" in text
    assert ("| results/predictor_eval_order.json | `m.tflite` | `full.tflite` → `short.tflite` "
            "| 0 | no | 3 |") in text
    assert "| **4.100** | 0.00 | 0.6000 | +0.100 (0.100) |" in text
    assert "| **4.000** | 0.00 | 0.6000 |  |" in text
    assert "| **3.900** | 0.00 | 0.6000 | -0.100 (0.000) |" in text
    readme_results.main()                       # idempotent
    assert readme.read_text() == text


def test_missing_marker_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "README.md").write_text("# nothing to fill\n")
    monkeypatch.setattr(readme_results, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="BEGIN targets"):
        readme_results.main()


def test_runs_are_listed_in_numeric_order():
    from pathlib import Path
    names = ["val_resnet_v10.json", "val_resnet_v9_flip.json", "val_resnet_v9.json",
             "val_resnet_v1.json", "val_resnet_v10_last.json"]
    assert [p.name for p in readme_results._in_order(map(Path, names))] == [
        "val_resnet_v1.json", "val_resnet_v9.json", "val_resnet_v9_flip.json",
        "val_resnet_v10.json", "val_resnet_v10_last.json"]


def test_targets_table_reads_each_target_from_its_file(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()

    def write(name, **fields):
        (results / name).write_text(json.dumps(fields))

    run = {"fr": 0.0, "auc": 0.6, "mse": 3.0, "num_faces": 121, "architecture": "resnet"}
    write("val_resnet_v10.json", **run, nme=0.0428, model="checkpoints_v10/best.weights.h5",
          training={"train_minutes": 47})
    # Not one network, or trained too long: the best one-network figure skips them.
    write("val_resnet_v10_flip.json", **run, nme=0.035, model="x", flip_test=True,
          training={"train_minutes": 47})
    write("val_resnet_v11.json", **run, nme=0.036, model="y", training={"train_minutes": 75})
    write("val_resnet_v12.json", **run, nme=0.0421, model="checkpoints_v12/best.weights.h5",
          training={"train_minutes": 55})
    rows = [{"model": "float", "mode": "float32", "nme": 0.0420, "latency_ms_1thread_median": 3.0},
            {"model": "qat", "mode": "int8_only", "nme": 0.0431, "latency_ms_1thread_median": 1.2},
            {"model": "qat", "mode": "16x8", "nme": None, "latency_ms_1thread_median": None}]
    write("ptq_benchmark.json", rows=rows, models={"float": "f", "qat": "q"},
          cpu={"model": "Xeon", "int8_dot_product": True})
    write("predict_speed.json", frame=[640, 480], landmark_model="m.tflite",
          frames=[{"image": "test_images/a.jpg", "median_ms": 6.5, "face_share": 0.3,
                   "detector": "short.tflite"},
                  {"image": "test_images/b.png", "median_ms": 12.0, "face_share": 0.1,
                   "detector": "full.tflite"}])
    write("predictor_eval_v10.json", nme=0.0395, missed_share=0.02)
    monkeypatch.setattr(readme_results, "ROOT", tmp_path)
    monkeypatch.setattr(readme_results, "RESULTS", results)
    monkeypatch.setattr(readme_results, "BUNDLED_VALIDATION", "val_resnet_v10.json")
    monkeypatch.setattr(readme_results, "BUNDLED_PREDICTOR_EVAL", "predictor_eval_v10.json")
    table = readme_results.targets_section()
    assert ("| validation NME ≤ 4.0%, one network trained ≤ 60 min | best 4.210% "
            "(`checkpoints_v12/best.weights.h5`); bundled recipe 4.280% "
            "(results/val_resnet_v10.json); over the budget, 3.600% in 75 min "
            "(results/val_resnet_v11.json) | **no** | results/val_resnet_v12.json |") in table
    assert "| +0.110 points (`q` vs `f`) | **no** |" in table
    assert "| 0.40× on Xeon (int8 dot product: yes) | yes |" in table
    assert "6.50 ms median, `a.jpg`" in table and "short.tflite`; `m.tflite`) | yes |" in table
    # A timing file from before the CPU was recorded names none.
    assert "12.00 ms median, `b.png`" in table and "full.tflite`; `m.tflite`) | **no** |" in table
    assert "| 3.950%, 2.0% missed | **no** |" in table   # NME met, misses not
    assert "under 1 MB" not in table                      # no bundled file in tmp_path


def test_speed_table_names_each_files_cpu(tmp_path, monkeypatch):
    frame = {"image": "test_images/a.jpg", "faces": 1, "face_share": 0.3, "detector": "short.tflite",
             "median_ms": 6.5, "p90_ms": 7.0, "round_medians_ms": [6.5]}
    timing = {"frame": [640, 480], "threads": 1, "runs": 200, "refine": 0, "flip": False,
              "frames": [frame]}
    (tmp_path / "predict_speed.json").write_text(json.dumps(timing))
    (tmp_path / "predict_speed_vnni.json").write_text(
        json.dumps({**timing, "cpu": {"model": "Xeon", "int8_dot_product": True}}))
    monkeypatch.setattr(readme_results, "RESULTS", tmp_path)
    rows = readme_results.speed_section().splitlines()[4:]
    assert rows[0].endswith("| 6.5 | not recorded |")
    assert rows[1].endswith("| 6.5 | Xeon (int8 dot product: yes) |")
