"""video_benchmark.py: clips whose labels move with the pixels, and the
figures it reports, on synthetic inputs (no photos needed)."""
import numpy as np
import pytest

import video_benchmark as vb


def test_frame_labels_move_with_the_pixels():
    photo = np.zeros((300, 400, 3), np.uint8)
    marks = np.random.default_rng(0).uniform(120, 220, (68, 2))
    for x, y in marks.astype(int):
        photo[y, x] = 255
    rng = np.random.default_rng(1)
    for motion in [(0, 0, 0, 1), (40, -20, 12, 1.2), (-60, 10, -8, 0.8)]:
        frame, truth = vb.make_frame(photo, marks, motion, rng)
        assert frame.shape == (vb.FRAME[1], vb.FRAME[0], 3)
        inside = ((truth >= 1) & (truth < np.array(vb.FRAME) - 2)).all(axis=1)
        for x, y in truth[inside]:
            patch = frame[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3]
            assert patch.max() > 100           # the dot is there, through noise and resampling


def test_plan_has_its_segments_and_a_cut():
    plan = vb.clip_plan()
    assert len(plan) == sum(n for _, n in vb.SEGMENTS)
    assert [p[2] for p in plan].index(1) == sum(n for _, n in vb.SEGMENTS[:-1])
    # The face leaves the frame in the middle of out_and_back.
    middle = [p for p in plan if p[1] == "out_and_back"][20]
    assert middle[3][0] > vb.FRAME[0] / 2 + vb.FACE_WIDTH


def test_scores_by_hand():
    def frames(errors, visible=True):
        return [(None if e is None else np.full((68, 2), e), 5.0, visible) for e in errors]
    segments = ["still"] * 20 + ["cut_still"] * 20
    # Errors alternating by 0.01 on x and y: each frame's change is 0.01*sqrt(2).
    # After the cut the marks take two frames to come within 0.1 (the lag).
    errors = ([0.01 * (i % 2) for i in range(20)] + [0.2, 0.15]
              + [0.05 + 0.01 * (i % 2) for i in range(18)])
    result = vb.score([frames(errors)], [segments])
    assert np.isclose(result["still_jitter"], 0.01 * np.sqrt(2))
    assert result["lag_frames"] == 2 and result["unmarked_frames"] == 0
    missing = vb.score([frames(errors[:5] + [None] + errors[6:])], [segments])
    assert missing["unmarked_frames"] == 1


def test_bad_models_and_records_are_named(tmp_path):
    from video_benchmark import main
    with pytest.raises(SystemExit, match="missing.tflite"):
        main(["--model", str(tmp_path / "missing.tflite"), "--out", str(tmp_path / "v.json")])
    with pytest.raises(SystemExit, match="--record .*none.record: no such file"):
        main(["--record", str(tmp_path / "none.record"), "--out", str(tmp_path / "v.json")])
    assert not (tmp_path / "v.json").exists()
