import numpy as np
import pytest

import metrics


def test_nme_by_hand():
    # Two marks used as eye corners 10 px apart; errors 0 and 3-4-5 = 5 px.
    true = np.array([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]]])
    pred = np.array([[[0.0, 0.0], [13.0, 4.0], [5.0, 5.0]]])
    np.testing.assert_allclose(metrics.nme_per_face(pred, true, (0, 1)), [5 / 3 / 10])


def test_region_errors_by_hand():
    true = np.array([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]]])
    pred = np.array([[[0.0, 0.0], [13.0, 4.0], [5.0, 5.0]]])
    regions = (("eyes", (0, 1)), ("nose", (2,)))
    got = metrics.region_errors(pred, true, (0, 1), regions)
    assert got["eyes"] == {"nme": pytest.approx(0.25), "share": pytest.approx(1.0)}
    assert got["nose"] == {"nme": 0.0, "share": 0.0}


def test_failure_rate_and_auc_by_hand():
    nmes = np.array([0.0, 0.05, 0.2, 0.1])
    # 0.1 is not a failure (the rate counts NME strictly above the threshold).
    assert metrics.failure_rate(nmes) == 0.25
    # CED: 1/4 from 0, 2/4 from 0.05, 3/4 at 0.1 -> area (0.25*0.05 + 0.5*0.05)/0.1
    assert metrics.auc(nmes, steps=100001) == pytest.approx(0.375, abs=1e-4)
    xs, ys = metrics.ced(nmes)
    assert ys[0] == 0.25 and ys[-1] == 0.75 and np.all(np.diff(ys) >= 0)


def test_perfect_predictions():
    summary = metrics.summarize(np.zeros(5))
    assert summary == {"nme": 0.0, "fr": 0.0, "auc": 1.0}
