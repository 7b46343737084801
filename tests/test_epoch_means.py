import csv

import numpy as np
import pytest

import epoch_means


def write_history(path, epochs, loss, nme):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "loss", "nme", "val_nme"])
        writer.writerows(zip(epochs, loss, nme, [0.04] * len(epochs)))


def test_running_means_become_each_epochs_mean(tmp_path):
    per_epoch = np.array([0.5, 0.2, 0.1, 0.06, 0.04])
    running = np.cumsum(per_epoch) / np.arange(1, 6)
    path = tmp_path / "history.csv"
    write_history(path, range(5), 100 * running, running)
    epoch_means.main([str(path)])
    rows = list(csv.DictReader(path.open()))
    np.testing.assert_allclose([float(r["nme"]) for r in rows], per_epoch, atol=1e-12)
    np.testing.assert_allclose([float(r["loss"]) for r in rows], 100 * per_epoch, atol=1e-9)
    assert [r["val_nme"] for r in rows] == ["0.04"] * 5      # other columns untouched
    with pytest.raises(SystemExit, match="already converted"):
        epoch_means.main([str(path)])


def test_a_resumed_or_foreign_file_is_refused_by_name(tmp_path):
    resumed = tmp_path / "resumed.csv"
    write_history(resumed, [0, 1, 2, 2, 3], [1.0] * 5, [0.1] * 5)
    with pytest.raises(SystemExit, match="resumed.csv: epochs are not"):
        epoch_means.main([str(resumed)])
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit, match="other.csv: not a history.csv"):
        epoch_means.main([str(other)])
    assert resumed.read_text().count("\n") == 6 and not list(tmp_path.glob("*.partial"))
