"""How concentrated an integral-head model's score maps are.

Each mark is the expected cell centre under a softmax over its score map
(network._integral_head); this measures how widely that softmax spreads
(geometry.score_spread: the root of the summed x and y variances, in cells)
over the faces of a record, for exported SavedModels, and writes the
percentiles as JSON. It is how `--heatmap_loss` is seen to act.

    python map_spread.py exported_v10 exported_v11 --record tfrecords/test.record \\
        --out results/map_spread.json
"""
import argparse
import json
import sys
from pathlib import Path

import keras_env  # noqa: F401  (must precede TensorFlow)
import numpy as np

import dataset
import geometry
from landmark import MODEL_CARD, load_saved_model

PERCENTILES = (10, 50, 90)


def score_maps(export_dir):
    """images -> raw (B, h, h, N) outputs of an exported score-map model."""
    maps, card = load_saved_model(export_dir, raw=True)
    if "score maps" not in card.get("output", ""):
        raise ValueError(f"{export_dir} outputs marks, not score maps: "
                         f"no spread to measure (its {MODEL_CARD} says {card.get('output')!r})")
    return maps


def spread_summary(maps_fn, record):
    spreads = np.concatenate([geometry.score_spread(maps_fn(images.numpy()))
                              for images, _ in dataset.eval_dataset(record, 64)])
    return {"faces": len(spreads),
            **{f"p{q}_cells": float(np.percentile(spreads, q)) for q in PERCENTILES}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("export_dirs", nargs="+", type=Path)
    p.add_argument("--record", default="tfrecords/test.record")
    p.add_argument("--out", type=Path, default=None, help="write the summaries here (JSON)")
    args = p.parse_args(argv)
    if not Path(args.record).is_file():
        sys.exit(f"error: --record {args.record}: no such file")
    try:
        summary = {str(path): spread_summary(score_maps(path), args.record)
                   for path in args.export_dirs}
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    for path, row in summary.items():
        print(f"{path}: spread of each mark's softmax over {row['faces']} faces, cells: "
              + ", ".join(f"p{q} {row[f'p{q}_cells']:.2f}" for q in PERCENTILES))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"record": args.record, "models": summary}, indent=1))


if __name__ == "__main__":
    main()
