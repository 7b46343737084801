"""speed_ratio.py: the two set-ups take turns, and bad arguments are named."""
import pytest

import speed_ratio


class Recorder:
    """A stand-in predictor that notes who ran when."""
    def __init__(self, name, log):
        self.name, self.log = name, log

    def predict(self, frame):
        self.log.append(self.name)


def test_setups_take_turns_and_each_photo_gets_every_timed_run():
    log = []
    models = {"before": Recorder("before", log), "after": Recorder("after", log)}
    times = speed_ratio.timed_turns(models, {"a": None, "b": None}, rounds=2, runs=3)
    assert all(len(ms) == 2 * 3 for per_photo in times.values() for ms in per_photo.values())
    # Each round runs one set-up over both photos (a warm-up + 3 timed calls each),
    # and the first to run changes from round to round.
    per_block = 2 * (1 + 3)
    assert log[0] == "before" and log[2 * per_block] == "after"
    assert len(log) == 2 * 2 * per_block


def test_a_missing_model_is_named(capsys):
    with pytest.raises(SystemExit):
        speed_ratio.main(["test_images", "--before", "no_such_model.tflite"])
    assert "no_such_model.tflite: no such file" in capsys.readouterr().err


def test_pair_study_names_a_missing_earlier_pair(capsys, tmp_path):
    import pair_study
    model = tmp_path / "model.tflite"
    model.write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        pair_study.main(["--model", str(model), "--pose_model", str(model), "--record", str(model),
                         "--against", str(model), str(tmp_path / "gone.tflite")])
    assert "--against" in str(stop.value) and "gone.tflite" in str(stop.value)


def test_pair_study_names_a_bad_second_main_model_and_a_bad_earlier_ensemble(capsys, tmp_path):
    import pair_study
    model = tmp_path / "model.tflite"
    model.write_bytes(b"")
    base = ["--model", str(model), "--pose_model", str(model), "--record", str(model)]
    with pytest.raises(SystemExit) as stop:
        pair_study.main(base + ["--second_main", str(tmp_path / "gone.tflite")])
    assert "--second_main" in str(stop.value) and "gone.tflite" in str(stop.value)
    with pytest.raises(SystemExit):
        pair_study.main(base + ["--against", str(model)])
    assert "MAIN POSE, or MAIN POSE SECOND" in capsys.readouterr().err


def test_speed_ratio_refuses_a_fourth_model(capsys):
    with pytest.raises(SystemExit):
        speed_ratio.main(["test_images", "--before", "a.tflite", "b.tflite", "c.tflite",
                          "d.tflite"])
    assert "at most one large-pose model and one second main model" in capsys.readouterr().err


def test_the_bundled_setup_at_two_threads_against_one(tmp_path, capsys):
    """`--before default --threads 1 2`: the bundled predictor against itself
    at two interpreter threads; both set-ups and their threads are recorded."""
    import json
    out = tmp_path / "ratio.json"
    speed_ratio.main(["test_images/grace_hopper.jpg", "--before", "default", "--threads", "1", "2",
                      "--rounds", "1", "--runs", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert [result["setups"][k]["threads"] for k in ("before", "after")] == [1, 2]
    assert result["setups"]["before"]["second_model"] == "flip"
    assert result["ratio"] > 0
    with pytest.raises(SystemExit):
        speed_ratio.main(["test_images", "--before", "default", "--threads", "0", "1"])
    assert "--threads must be >= 1, got 0 1" in capsys.readouterr().err
