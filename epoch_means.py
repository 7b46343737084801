"""Undo the running means in the training columns of `--heatmap_loss` runs' history.csv.

Until the fix to landmark.WeightAverage, a run with both `--heatmap_loss` and
`--weight_average` logged `loss` and `nme` (the training columns) as running
means since its first epoch, not as each epoch's mean: the weight average
also saved and restored the variables of HeatmapRegularised's metric
trackers, so each epoch began from the previous epochs' totals instead of
zero. Validation columns, checkpoints and exports were not affected.

Every epoch sees the same number of faces, so epoch k's own mean is
k·C_k − (k−1)·C_(k−1), where C_k is the running mean logged after epoch k.
This rewrites those two columns in place (the other columns are kept as
they are) and marks the file so that it is never converted twice:

    python epoch_means.py results/history_resnet_v11.csv
"""
import argparse
import csv
import sys
from pathlib import Path

COLUMNS = ("loss", "nme")
# The column added to a converted file; its presence refuses a second pass.
MARK = "training_columns"


def epoch_means(running):
    """Each epoch's own mean from running means after epochs 1, 2, ..."""
    return [running[0]] + [k * running[k - 1] - (k - 1) * running[k - 2]
                           for k in range(2, len(running) + 1)]


def convert(path):
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows, fields = list(reader), list(reader.fieldnames or [])
    if MARK in fields:
        raise ValueError(f"{path}: already converted (it has a '{MARK}' column)")
    missing = [c for c in ("epoch",) + COLUMNS if c not in fields]
    if missing or not rows:
        raise ValueError(f"{path}: not a history.csv with columns epoch, {', '.join(COLUMNS)}")
    if [int(r["epoch"]) for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: epochs are not 0, 1, 2, ... (a resumed run?); "
                         "running means cannot be undone across a restart")
    for column in COLUMNS:
        values = epoch_means([float(r[column]) for r in rows])
        for row, value in zip(rows, values):
            row[column] = repr(value)
    for row in rows:
        row[MARK] = "epoch means (epoch_means.py)"
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields + [MARK])
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(path)
    print(f"{path}: {', '.join(COLUMNS)} are now each epoch's mean ({len(rows)} epochs)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("history", nargs="+", help="history.csv files of --heatmap_loss runs")
    args = p.parse_args(argv)
    try:
        for path in args.history:
            convert(path)
    except (OSError, ValueError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
