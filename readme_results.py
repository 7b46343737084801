"""Write the generated tables of README.md, docs/ and the model card from
the files the scripts wrote in results/.

Each table sits between `<!-- BEGIN name -->` and `<!-- END name -->` and is
rebuilt from results/; nothing in them is typed by hand.

    python readme_results.py            # after landmark.py / ptq_benchmark.py runs
"""
import json
import re
import sys
from pathlib import Path

import numpy as np

import hard_view
from metrics import FAILURE_THRESHOLD
from layouts import FLIP_SECOND
from pair_study import BEFORE, PAIR_WAY, SECOND_ENSEMBLE, TWO_MAINS

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

# The bundled recipes' files. Every validation figure is the split runs'
# (trained on the split's training faces, their int8 files in assets/split/);
# the bundle is the same recipes retrained on all faces (runs RUN_all).
BUNDLE_RUN = "resnet_v37"
BUNDLE_PREDICTOR_EVAL = "predictor_eval_v37_flip_ensemble.json"
POSE_RUN = "resnet_v38"
BUNDLED_POSE_INT8 = "assets/landmarks_300w_pose_int8.tflite"
# Until run v38's retraining on all faces (resnet_v38_all) is done, the
# bundle's large-pose file is the split run's, and `make reproduce`'s time
# for that retraining is the previous recipe's on the same network.
POSE_ALL_STAND_IN = "resnet_v30_all"
SECOND_RUN = "resnet_v31"
BUNDLED_SECOND_INT8 = "assets/landmarks_300w_second_int8.tflite"
BUNDLE_BENCHMARK = "ptq_benchmark.json"
BUNDLED_INT8 = "assets/landmarks_300w_int8.tflite"
# Photo folders of the validation split, reported apart so that the 121
# HELEN + AFW faces stay comparable with the runs before LFPW came.
GROUPS = {"HELEN + AFW": ("helen_trainset", "afw"), "LFPW": ("lfpw_trainset",)}


def _load(name):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _in_order(paths, name=lambda p: p.name):
    """Paths sorted by `name` with its numbers read as numbers: run v10 after v9."""
    return sorted(paths, key=lambda p: [int(part) if part.isdigit() else part
                                        for part in re.split(r"(\d+)", name(p))])


def paired_difference(nmes, reference):
    """Mean per-face NME difference and its standard error, in NME points,
    over the faces both files scored (a face a detector missed is None)."""
    pairs = np.array([(a, b) for a, b in zip(nmes, reference) if a is not None and b is not None])
    diff = 100 * (pairs[:, 0] - pairs[:, 1])
    return diff.mean(), diff.std(ddof=1) / np.sqrt(len(diff))


def _paired_cells(scores, reference, columns, relative=True):
    """Table cells "difference (paired s.e.); relative" (without the relative
    part if not `relative`) of two runs' per-face NMEs ({column: nmes}), "—"
    where a column is missing or unpaired."""
    cells = []
    for c in columns:
        a, b = scores.get(c), reference.get(c)
        if a and b and len(a) == len(b) > 1:
            d, se = paired_difference(a, b)
            cells.append(f"{d:+.3f} ({se:.3f})" + (f"; {100 * (np.mean(a) / np.mean(b) - 1):+.0f}%"
                                                   if relative else ""))
        else:
            cells.append("—")
    return cells


def _nme_cells(columns, names):
    """NME % cells of a run's {column: per-face NMEs}, "—" where missing."""
    return [f"{100 * np.mean(columns[c]):.3f}" if columns.get(c) else "—" for c in names]


# What the float-model tables score, after their files are named.
CROPS_NOTE = ("on the 201 validation crops; the hard view pools its seven kinds; `profile` is the "
              "validation faces turned in 3D to 50-75 degrees of yaw (hard_view.py).")


def _group_nmes(nmes, groups, folders):
    return [n for n, g in zip(nmes, groups) if g in folders and n is not None]


def _pct(value):
    return f"{100 * value:.3f}" if value is not None else "—"


def _cpu(report):
    """'CPU X (int8 dot product: yes/no)' of a timing file, '' if it recorded none."""
    cpu = report.get("cpu")
    if not cpu:
        return ""
    if isinstance(cpu, str):
        return cpu
    dot = {True: "yes", False: "no"}.get(cpu["int8_dot_product"], "unknown")
    return f"{cpu['model']} (int8 dot product: {dot})"


# ----------------------------------------------------------------- README --

def headline_section():
    """The front page's figures, in three short tables: the whole predictor
    on the validation photos and harder versions of them, the main model
    alone on crops, then speed, size and the rest. Comparisons with other
    ways of running the models are in docs/PREDICTOR.md and docs/RESEARCH.md."""
    out = []
    whole = ["| faces | NME | FR@0.10 | missed | from |", "| --- | --- | --- | --- | --- |"]
    for name, what in ((BUNDLE_PREDICTOR_EVAL, "{faces} validation photos"),
                       ("predictor_eval_small.json", "the {faces} shrunk to a 30-80 px face in a "
                                                     "1024×768 frame"),
                       ("predictor_eval_profile.json", "the {faces} turned 50-75° in 3D (rendered), "
                                                       "the face 40-160 px in a 640×480 frame")):
        r = _load(name)
        if r and r["nme"] is not None:
            nme = f"**{_pct(r['nme'])}%**" if name == BUNDLE_PREDICTOR_EVAL else f"{_pct(r['nme'])}%"
            whole.append(f"| {what.format(faces=r['faces'])} | {nme} | {100 * r['fr']:.1f}% "
                         f"| {r['missed']} | results/{name} |")
        if r and name == BUNDLE_PREDICTOR_EVAL:
            whole += _real_turned_row(r)
    wflw, wflw_split = _load("wflw_sample.json"), _load("wflw_sample_split.json")
    if wflw and wflw_split and wflw["nme"] is not None and wflw_split["nme"] is not None:
        whole.append(f"| {wflw['faces']} real WFLW crowd faces, the only ones here no model "
                     f"trained on (68 of their 98 marks; the jaw's convention differs) "
                     f"| {_pct(wflw['nme'])}% bundled, {_pct(wflw_split['nme'])}% split "
                     f"| {100 * wflw['fr']:.1f}% | {wflw['missed']} "
                     f"| results/wflw_sample.json, results/wflw_sample_split.json |")
    if len(whole) > 2:
        out += ["**The whole predictor** (its face detectors and int8 landmark models, as "
                "`predictor()` runs them) on faces the models never trained on:", ""] + whole

    crops = ["| crops | NME | FR@0.10 | from |", "| --- | --- | --- | --- |"]
    bench = _load(BUNDLE_BENCHMARK)
    rows = {(r["model"], r["mode"]): r for r in (bench or {}).get("rows", [])}
    int8 = rows.get(("qat", "int8_only"))
    if int8 and int8.get("nme") is not None:
        groups = int8.get("groups")
        parts = [f"{label}: {100 * np.mean(part):.3f}% on {len(part)}" for label, part in
                 ((label, _group_nmes(int8["nmes"], groups, folders))
                  for label, folders in GROUPS.items()) if groups and part]
        crops.append(f"| all {len(int8['nmes'])}" + (f" ({'; '.join(parts)})" if parts else "")
                     + f" | **{_pct(int8['nme'])}%** | {100 * int8['fr']:.2f}% "
                     f"| results/{BUNDLE_BENCHMARK} |")
    val = _load(f"val_{BUNDLE_RUN}_qat.json")
    if val and "hard_view" in val:
        hard = val["hard_view"]["all"]
        kinds = ", ".join(k.replace("_", " ") for k in hard_view.KINDS)
        crops.append(f"| made hard (the hard view, pooled over its {len(hard_view.KINDS)} "
                     f"seeded kinds: {kinds}), QAT model | {_pct(hard['nme'])}% "
                     f"| {100 * hard['fr']:.2f}% | results/val_{BUNDLE_RUN}_qat.json |")
    pair = _load("pair_study.json")
    if pair and "profile" in pair["views"]:
        cells = pair["scores"]["all"]["profile"]
        main, both = cells["main, flip test"], cells[_pair_row(pair)]
        fr = (f"{100 * main['fr']:.0f}%; {100 * both['fr']:.0f}%" if "fr" in both else "")
        crops.append(f"| turned 50-75° in 3D: the main model alone; as the predictor runs "
                     f"the models (the large-pose one takes these faces) "
                     f"| {_pct(main['nme'])}%; {_pct(both['nme'])}% | {fr} "
                     f"| results/pair_study.json |")
    if len(crops) > 2:
        out += ["", "**The main int8 landmark model**, on the same faces' crops:", ""] + crops

    rest = ["| what | measured | from |", "| --- | --- | --- |"]
    speed = _load("predict_speed.json")
    if speed:
        frames = ", ".join(f"{f['median_ms']:.1f} ms (`{Path(f['image']).name}`)"
                           for f in speed["frames"])
        frames += f" on {_cpu(speed)}"
        other, files = _load("predict_speed_no_vnni.json"), "results/predict_speed.json"
        if other:   # the same bundle on a CPU without int8 dot products, where int8 gains nothing
            frames += "; " + ", ".join(f"{f['median_ms']:.1f} ms" for f in other["frames"]) + \
                f" on {_cpu(other)}"
            files += ", results/predict_speed_no_vnni.json"
        rest.append(f"| predictor per {speed['frame'][0]}×{speed['frame'][1]} frame, one face, "
                    f"1 thread, median | {frames} | {files} |")
    ratio, study = _load("speed_ratio.json"), pair
    ensemble = _load("speed_ratio_ensemble.json")
    if ratio:
        bought, files = "", ["results/speed_ratio.json"]
        if study and study.get("against"):
            # What the extra time buys: the predictor against that pair, crop by crop.
            cells, row = study["scores"]["all"], _pair_row(study)
            gains = [f"{label} {100 * cells[view][row]['vs_before']['mean']:+.2f}"
                     for view, label in (("plain", "plain"), ("occlusion", "occluded"),
                                         ("profile", "turned")) if view in cells]
            bought = f", for {', '.join(gains)} points of NME on the crops"
            files.append("results/pair_study.json")
        if ensemble:
            bought += f"; {ensemble['ratio']:.2f}× the pair alone"
            files.append("results/speed_ratio_ensemble.json")
        rest.append(f"| what the ensemble costs | {ratio['ratio']:.2f}× the time of the pair "
                    f"bundled before (the two taking turns){bought} | {', '.join(files)} |")
    video = _load("video_benchmark.json")
    if video and "track+smooth" in video["ratios"]:
        r, m = video["ratios"]["track+smooth"], video["modes"]["track+smooth"]
        rest.append(f"| video: tracking and smoothing (the default) against detecting every "
                    f"frame | jitter {r['jitter']:.2f}× (a still face's {r['still_jitter']:.2f}×), "
                    f"NME {r['nme_points']:+.2f} points, time {r['ms']:.2f}×, "
                    f"{m['unmarked_frames']} faces in view unmarked ({_cpu(video)}) "
                    f"| results/video_benchmark.json |")
    conf = _load("confidence.json")
    if conf:
        rest.append(f"| per-mark confidence: how well it flags marks off by more than 0.1 eye "
                    f"distance | AUROC {conf['all']['auroc']:.3f} on held-back validation faces, "
                    f"plain and hard | results/confidence.json |")
    sizes = [f"{(ROOT / f).stat().st_size / 1e6:.2f} MB" for f in
             (BUNDLED_INT8, BUNDLED_POSE_INT8, BUNDLED_SECOND_INT8) if (ROOT / f).is_file()]
    if sizes:
        growth = _growth()
        sources = ["assets/"] + [f"results/val_{r}.json" for r in GROWTH_RUNS if growth]
        rest.append(f"| int8 landmark files: main, large-pose, second main | {', '.join(sizes)}"
                    f"{growth} | {', '.join(sources)} |")
    if len(rest) > 2:
        out += ["", "**Speed, size and the rest:**", ""] + rest
    if bench and rows.get(("float", "float32")):
        out += ["", "**Every TFLite conversion** of the main model, float and QAT:", "",
                modes_table(rows)]
    if not out:
        return "_No results yet: `make reproduce` writes them._"
    return "\n".join(out).lstrip("\n")


# The main network's widenings, one recipe at two sizes (LINEAGE, runs v28-v32).
GROWTH_RUNS = ("resnet_v21", "resnet_v32")


def _growth():
    """': the main network ... bought ...' of GROWTH_RUNS' files, '' without them:
    why the int8 file is past the 1 MB it was, and what that bought."""
    small, wide = (_load(f"val_{r}.json") for r in GROWTH_RUNS)
    if not (small and wide and small.get("params") and wide.get("params")):
        return ""
    a, b = _run_scores(wide), _run_scores(small)
    cells = _paired_cells(a, b, ("plain", "hard view"), relative=False)
    return (f": the main network has {wide['params'] / 1e6:.2f} M parameters against run "
            f"{GROWTH_RUNS[0].removeprefix('resnet_')}'s {small['params'] / 1e6:.2f} M, and widening "
            f"it bought plain {cells[0]}, hard view {cells[1]} points of NME (paired s.e.; run "
            f"{GROWTH_RUNS[1].removeprefix('resnet_')} against run "
            f"{GROWTH_RUNS[0].removeprefix('resnet_')}, float, validation crops)")


def _true_yaws(study):
    """gate_study.json's per-face |yaw| of the validation photos, NaN where none."""
    return np.array([np.nan if y is None else y for y in study.get("true_yaws", [])], float)


def _real_turned_row(end):
    """The validation photos' really turned faces (gate_study's true yaws),
    as a row of the whole-predictor table; none without those yaws."""
    study = _load("gate_study.json") or {}
    real = study.get("real_turned")
    yaws = _true_yaws(study)
    if not real or len(yaws) != len(end["nmes"]):
        return []
    nmes = np.array([np.nan if n is None else n for n in end["nmes"]], float)[yaws >= real["min_yaw"]]
    found = nmes[np.isfinite(nmes)]
    return [f"| of those, the {len(nmes)} turned {real['min_yaw']:g}° or more in their photos "
            f"(docs/RESEARCH.md, \"The gate\") | {100 * found.mean():.3f}% "
            f"| {100 * (found > FAILURE_THRESHOLD).mean():.1f}% | {len(nmes) - len(found)} "
            f"| results/{BUNDLE_PREDICTOR_EVAL}, results/gate_study.json |"]


def modes_table(rows):
    """One row per TFLite mode: what it costs each model against the float
    model's float32 conversion (NME points, 1-thread latency ratio, size)."""
    base = rows[("float", "float32")]
    modes = list(dict.fromkeys(mode for _, mode in rows))
    lines = [f"| TFLite mode | float model: NME change, latency × | QAT model: NME change, "
             f"latency × | size KB (float / QAT) |", "| --- | --- | --- | --- |"]

    def cell(model, mode):
        r = rows.get((model, mode))
        if r is None:
            return "—"
        if r.get("nme") is None:
            return f"not converted ({(r.get('note') or 'refused').split(':')[0]})"
        ratio = r["latency_ms_1thread_median"] / base["latency_ms_1thread_median"]
        return f"{100 * (r['nme'] - base['nme']):+.3f}, {ratio:.2f}×"

    def size(model, mode):
        r = rows.get((model, mode))
        return f"{r['size_kb']:.0f}" if r and r.get("size_kb") else "—"
    for mode in modes:
        lines.append(f"| `{mode}` | {cell('float', mode)} | {cell('qat', mode)} "
                     f"| {size('float', mode)} / {size('qat', mode)} |")
    lines += ["", f"Against the float model's float32 file ({_pct(base['nme'])}%, "
              f"{base['latency_ms_1thread_median']:.2f} ms a face at 1 thread) on "
              f"{_cpu(_load(BUNDLE_BENCHMARK) or {}) or 'an unrecorded CPU'} "
              f"(results/{BUNDLE_BENCHMARK}; docs/QUANTIZATION.md has the full tables)."]
    return "\n".join(lines)


# --------------------------------------------------------------- research --

def _run_scores(m, folders=None, yaw_ratio=None):
    """{column: per-face NMEs} of an evaluation file: all faces, each group,
    and (for a file with a hard view) every kind and all kinds pooled, on
    the faces of `folders` only if given. `yaw_ratio`: per face, the yaw
    view's eye distance over the unturned face's (_yaw_ratio), for files
    written before evaluations gave the yaw kind over the unturned eyes."""
    groups = m.get("groups") or [None] * len(m["nmes"])
    keep = [folders is None or g in folders for g in groups]

    def pick(nmes):
        return [n for n, k in zip(nmes, keep) if k]
    columns = {"plain": pick(m["nmes"])}
    hard = m.get("hard_view")
    if hard:
        # The profile kind stands apart, as in the evaluation's own "all".
        columns["hard view"] = [n for kind, scores in hard["kinds"].items()
                                if kind != PROFILE_KIND for n in pick(scores["nmes"])]
        for kind, scores in hard["kinds"].items():
            columns[kind] = pick(scores["nmes"])
        yaw = hard["kinds"].get("yaw", {})
        if "unturned" in yaw:
            columns[UNTURNED] = pick(yaw["unturned"]["nmes"])
        elif yaw_ratio is not None and len(yaw_ratio) == len(yaw.get("nmes", ())):
            columns[UNTURNED] = pick(list(np.multiply(yaw["nmes"], yaw_ratio)))
    return columns


UNTURNED = "yaw, unturned eyes"


def _yaw_ratio(files, seed):
    """Per face, the yaw view's eye distance over the unturned face's: the
    same for every model scored on that seed's views, so it is read from the
    first of `files` that gives the yaw kind both ways."""
    for m in files:
        hard = m.get("hard_view") or {}
        yaw = hard.get("kinds", {}).get("yaw", {})
        if hard.get("seed") == seed and "unturned" in yaw:
            return np.divide(yaw["unturned"]["nmes"], yaw["nmes"])
    return None


PROFILE_KIND = hard_view.PROFILE
# The comparison of the wild recipe with the bundle it replaces (trained on
# every HELEN + AFW face, so only its LFPW figures are held out), and run
# v22, the same recipe at --wild 0.5, where its file exists, runs v28 and
# v31 (wider), v32 (stem), v36 (--wild 0.7) and v37 (--wild 0.5); the
# bound under the table is the last run's.
WILD_RUNS = ("bundle_v20", "resnet_v21", "resnet_v22", "resnet_v28", "resnet_v31", "resnet_v32",
             "resnet_v36", "resnet_v37")
WILD_BASELINE = "bundle_v20"


def wild_section():
    runs = [(name, _load(f"val_{name}.json")) for name in WILD_RUNS]
    runs = [(name, m) for name, m in runs if m]
    if not runs:
        return "_No run on the 2,012-face split yet._"
    seed = runs[-1][1].get("hard_view", {}).get("seed", "—")
    ratio = _yaw_ratio([m for _, m in runs], seed)
    lfpw = {name: _run_scores(m, GROUPS["LFPW"], ratio) for name, m in runs}
    columns = list(dict.fromkeys(c for name, _ in runs for c in lfpw[name]))
    lines = ["LFPW's 80 validation faces, held out for every row (NME %):", "",
             "| run | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for name, _ in runs:
        lines.append(f"| `{name}` | " + " | ".join(
            f"{100 * np.mean(lfpw[name][c]):.3f}" if lfpw[name].get(c) else "—"
            for c in columns) + " |")
    base = lfpw.get(WILD_BASELINE)
    for name, _ in runs:
        if base is None or name == WILD_BASELINE:
            continue
        cells = _paired_cells(lfpw[name], base, columns)
        lines.append(f"| `{name}` − `{WILD_BASELINE}`, points (paired s.e.); relative | "
                     + " | ".join(cells) + " |")
    old = _load("val_resnet_v20.json")      # the 1,207-face split: the 121 faces alone
    lines += ["", "The 121 HELEN + AFW validation faces (the bundle trained on them, so run "
              "v20's split model, trained on the other 1,086, stands for it):", "",
              "| run | plain NME % | vs run v20, points (paired s.e.) | hard view NME % |",
              "| --- | --- | --- | --- |"]
    if old:
        lines.append(f"| run v20 (results/val_resnet_v20.json) | {_pct(old['nme'])} | | — |")
    for name, m in runs:
        if name == WILD_BASELINE or not m.get("groups"):
            continue
        first = _run_scores(m, GROUPS["HELEN + AFW"])
        compare = ""
        if old and len(first["plain"]) == len(old["nmes"]):
            compare = "{:+.3f} ({:.3f})".format(*paired_difference(first["plain"], old["nmes"]))
        hard = f"{100 * np.mean(first['hard view']):.3f}" if first.get("hard view") else "—"
        lines.append(f"| `{name}` | {100 * np.mean(first['plain']):.3f} | {compare} | {hard} |")
    lines += ["", "Files: " + ", ".join(f"results/val_{name}.json" for name, _ in runs)
              + f". Float models (best epoch), validation crops; the hard view is `hard_view.py` "
              f"(seed {seed}), all kinds' views pooled in its column (not profile, nor the "
              f"yaw kind's second column: its errors over the unturned face's eye distance)."]
    return "\n".join(lines + _wild_bound(lfpw, runs[-1][0]) + _plain_needed(lfpw, runs[-1][0]))


def _hard_view_target(lfpw):
    """The pooled hard view 30% below the baseline's on LFPW's faces (issue
    22's target), or None without the baseline's file."""
    base = lfpw.get(WILD_BASELINE)
    return None if base is None else 0.7 * np.mean(base["hard view"])


def _wild_bound(lfpw, name):
    """What the 30% target on LFPW's hard view asks of run `name`: the pooled
    hard view it would score were every kind but yaw as good as its plain
    faces, against the target."""
    scores, target = lfpw[name], _hard_view_target(lfpw)
    if target is None or UNTURNED not in scores or "hard view" not in scores:
        return []
    kinds = [k for k in scores if k not in ("plain", "hard view", PROFILE_KIND, UNTURNED)]
    plain, yaw = np.mean(scores["plain"]), np.mean(scores["yaw"])
    floor = (plain * (len(kinds) - 1) + yaw) / len(kinds)
    shrink = np.mean(scores[UNTURNED]) / yaw
    return ["", f"The yaw kind's NME is taken over the squashed face's eye distance, on "
            f"LFPW's faces {shrink:.2f} of the unturned face's on average: `{name}`'s errors "
            f"there are {100 * np.mean(scores[UNTURNED]):.3f}% of the unturned eye distance, "
            f"against {100 * plain:.3f}% on the plain faces, but {100 * yaw:.3f}% of the "
            f"squashed one. Were its {len(kinds) - 1} other kinds as good as its plain faces, "
            f"its pooled hard view would be {100 * floor:.3f}%, "
            + (f"still above the {100 * target:.3f}% that 30% below `{WILD_BASELINE}` asks: "
               f"that target needs the plain faces better, not only the hard ones."
               if floor > target else
               f"within the {100 * target:.3f}% that 30% below `{WILD_BASELINE}` asks.")]


def _plain_needed(lfpw, name):
    """The plain NME run `name` would need to meet the 30% target on LFPW's
    hard view were its hard kinds to keep their present ratio to its plain
    faces, against what the runs since the baseline have bought."""
    runs = [n for n in lfpw if n != WILD_BASELINE]
    scores, target = lfpw[name], _hard_view_target(lfpw)
    if target is None or "hard view" not in scores or runs[0] == name:
        return []
    plain, first = np.mean(scores["plain"]), np.mean(lfpw[runs[0]]["plain"])
    ratio = np.mean(scores["hard view"]) / plain
    need = target / ratio
    return ["", f"At `{name}`'s robustness (its hard view {ratio:.2f}× its plain NME), the "
            f"target asks for plain faces at {100 * need:.3f}%, {100 * (1 - need / plain):.0f}% "
            f"below its {100 * plain:.3f}%; from `{runs[0]}` to `{name}` the plain faces "
            f"fell {100 * (1 - plain / first):.0f}%."]


def precision_section():
    lines = []
    speed = _load("train_throughput.json")
    if speed:
        med = speed["median_images_per_s"]
        lines += ["| precision | training images/s (median epoch) | epochs timed |",
                  "| --- | --- | --- |"]
        lines += [f"| {p} | {med[p]:.0f} | {len(speed['images_per_s'][p])} |" for p in med]
        lines += ["", f"bf16 is **{speed['bf16_speedup']:.2f}×** float32 on {speed['cpu']} "
                  f"(flags: {', '.join(speed['cpu_flags'])}), batch {speed['batch_size']}, "
                  f"{speed['rounds']} rounds taking turns (results/train_throughput.json)."]
    pair = [_load(f"val_precision_{p}.json") for p in ("float32", "mixed_bfloat16")]
    if all(pair):
        d, se = paired_difference(pair[1]["nmes"], pair[0]["nmes"])
        epochs = (pair[0].get("training") or {}).get("epochs", "?")
        lines += ["", f"Accuracy: the same recipe trained {epochs} epochs in each precision "
                  f"scores {_pct(pair[0]['nme'])}% (float32) and {_pct(pair[1]['nme'])}% "
                  f"(mixed_bfloat16) on the {pair[0]['num_faces']} validation faces: "
                  f"{d:+.3f} points, paired s.e. {se:.3f} "
                  "(results/val_precision_float32.json, "
                  "results/val_precision_mixed_bfloat16.json)."]
    return "\n".join(lines) or "_Not measured yet: `train_throughput.py`._"


def profile_section():
    """One table per profile_training.py file: the bundled recipe's, then
    others (training_profile_*.json, e.g. another network or CPU)."""
    files = [RESULTS / "training_profile.json"] + _in_order(RESULTS.glob("training_profile_*.json"))
    out = []
    for path in files:
        r = _load(path.name)
        if not r:
            continue
        parts = r["ms_per_step"]
        step = parts.get("train step, with heatmap regulariser")
        recipe = r.get("recipe", [])
        stages = recipe[recipe.index("--stages") + 1] if "--stages" in recipe[:-1] else "default"
        lines = ["| part | ms per training step | share of the step |", "| --- | --- | --- |"]
        lines += [f"| {name} | {ms:.1f} | {100 * ms / step:.0f}% |" for name, ms in parts.items()]
        lines += ["", f"Stages {stages}, batch {r['batch_size']}, {r['steps_per_epoch']} steps an "
                  f"epoch, {r['precision']}, {_cpu(r)} (results/{path.name})."]
        out.append("\n".join(lines))
    return "\n\n".join(out) or "_Not profiled yet: `profile_training.py`._"


# (question, [(change, before file, after file)]): what each step bought, on
# the 121 HELEN + AFW validation faces of the 1,207-face split.
QUESTIONS = [
    ("How should marks come out?", [
        ("dense head → integral regression (run v2 → v5)", "val_resnet_v2", "val_resnet_v5")]),
    ("How noisy is one training run?", [
        ("run v2's command again, another random start (v2 → v2b)", "val_resnet_v2",
         "val_resnet_v2b")]),
    ("What regularises the integral head?", [
        ("wider augmentation, a grey occluder in half the crops, weight decay (v5 → v6)",
         "val_resnet_v5", "val_resnet_v6"),
        ("+ a weight average, decay 0.999 (v6 → v7)", "val_resnet_v6", "val_resnet_v7"),
        ("+ 32×32 score maps and the NME-weighted Wing loss (v7 → v9)", "val_resnet_v7",
         "val_resnet_v9"),
        ("+ the last 50 epochs calm (v9 → v10)", "val_resnet_v9", "val_resnet_v10"),
        ("+ the heatmap regulariser, weight 5 (v10 → v11)", "val_resnet_v10", "val_resnet_v11")]),
    ("Where does capacity pay?", [
        ("96-channel head instead of 64 (v11 → v13)", "val_resnet_v11", "val_resnet_v13"),
        ("a second block on the 32×32 map (v13 → v15)", "val_resnet_v13", "val_resnet_v15"),
        ("a third block (v15 → v16)", "val_resnet_v15", "val_resnet_v16"),
        ("250 epochs instead of 200 (v15 → v18)", "val_resnet_v15", "val_resnet_v18"),
        ("third block and 250 epochs (v15 → v20)", "val_resnet_v15", "val_resnet_v20")]),
    ("What do test time and QAT do to run v20?", [
        ("flip test: average with the mirrored crop", "val_resnet_v20", "val_resnet_v20_flip"),
        ("10 QAT epochs (fake-quantized, best epoch)", "val_resnet_v20", "val_resnet_v20_qat")]),
]


def questions_section():
    lines = []
    for question, rows in QUESTIONS:
        lines += [f"**{question}**", "", "| change | before NME % | after NME % "
                  "| change, points (paired s.e.) |", "| --- | --- | --- | --- |"]
        files = sorted({f"results/{name}.json" for _, *names in rows for name in names},
                       key=lambda f: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", f)])
        for change, before, after in rows:
            a, b = _load(f"{before}.json"), _load(f"{after}.json")
            if not (a and b):
                lines.append(f"| {change} | results/{before}.json or {after}.json is missing | | |")
                continue
            d, se = paired_difference(b["nmes"], a["nmes"])
            lines.append(f"| {change} | {_pct(a['nme'])} | {_pct(b['nme'])} "
                         f"| {d:+.3f} ({se:.3f}) |")
        lines += ["", "Files: " + ", ".join(files), ""]
    return "\n".join(lines).strip()


def loss_section():
    runs = [(p.stem.removeprefix("loss_"), json.loads(p.read_text()))
            for p in sorted(RESULTS.glob("loss_*.json"))]
    if not runs:
        return "_No loss comparison yet: `make loss-study` writes results/loss_*.json._"
    lines = ["| loss | NME % | FR@0.10 % | epochs | file |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {_pct(m['nme'])} | {100 * m['fr']:.2f} "
              f"| {(m.get('training') or {}).get('epochs', '')} | results/loss_{name}.json |"
              for name, m in runs]
    return "\n".join(lines)


# ----------------------------------------------------------- quantization --

def benchmark_section():
    path = RESULTS / "ptq_benchmark.md"
    if not path.is_file():
        return "_No benchmark yet: `make benchmark` writes results/ptq_benchmark.md._"
    text = (path.read_text().strip() + "\n\nFrom results/ptq_benchmark.md and "
            "results/ptq_benchmark.json; CED curves per mode: results/ced.png")
    # What a mode's 1-thread latency is against float32 depends on the CPU:
    # int8 pays only where it has int8 dot-product instructions.
    lines = []
    for p in [path.with_suffix(".json")] + _in_order(RESULTS.glob("ptq_benchmark_*.json")):
        r = _load(p.name)
        rows = {(x["model"], x["mode"]): x for x in (r or {}).get("rows", [])}
        base = rows.get(("float", "float32"))
        if not base:
            continue
        cells = []
        for model, mode in (("qat", "int8_only"), ("qat", "dynamic_range"), ("float", "float16")):
            x = rows.get((model, mode))
            cells.append(f"{x['latency_ms_1thread_median'] / base['latency_ms_1thread_median']:.2f}×"
                         if x and x.get("latency_ms_1thread_median") else "—")
        lines.append(f"| results/{p.name} | `{r.get('models', {}).get('float', '?')}` | {_cpu(r)} "
                     f"| {base['latency_ms_1thread_median']:.2f} "
                     f"| {' | '.join(cells)} |")
    if len(lines) > 1:
        text += ("\n\nThe main model's network, 1-thread latency against its float32 file, "
                 "on CPUs with and without int8 dot-product instructions (`ptq_benchmark.py`, "
                 "each file one run on one machine, the models taking turns):\n\n"
                 "| file | float model | CPU | float32 ms | QAT `int8_only` | QAT `dynamic_range` "
                 "| float `float16` |\n| --- | --- | --- | --- | --- | --- | --- |\n"
                 + "\n".join(lines))
    return text


def techniques_section():
    path = RESULTS / "ptq_techniques.md"
    if not path.is_file():
        return "_No technique comparison yet: `make techniques` writes results/ptq_techniques.md._"
    note = ""
    run, benchmark = _load("ptq_techniques.json") or {}, _load("ptq_benchmark.json") or {}
    faces = {len(row["nmes"]) for row in benchmark.get("rows", []) if row.get("nmes")}
    if run.get("num_faces") and faces and run["num_faces"] not in faces:
        note = (f" It was made on {run['num_faces']} validation faces, not today's "
                f"{max(faces)}: its float model is named as the path stood then, which now holds "
                "another model; `make techniques` makes it again for the current one.")
    return (path.read_text().strip() + "\n\nFrom results/ptq_techniques.md and "
            "results/ptq_techniques.json; plot: results/ptq_techniques.png." + note)


# -------------------------------------------------------------- predictor --

def speed_section():
    runs = [(p, json.loads(p.read_text())) for p in sorted(RESULTS.glob("predict_speed*.json"))]
    ratios = [(p, json.loads(p.read_text())) for p in sorted(RESULTS.glob("speed_ratio*.json"))]
    if not runs and not ratios:
        return "_No speed run yet: `predict.py test_images/ --speed results/predict_speed.json`._"
    lines = []
    if runs:
        first = runs[0][1]
        lines = [f"Detector + int8 landmarks per {first['frame'][0]}×{first['frame'][1]} frame, "
                 f"{first['threads']} thread, {first.get('rounds', 1)} rounds of {first['runs']} runs "
                 "per photo (`predict.py test_images/ --speed FILE`):", "",
                 "| file | landmark model | re-crop passes | flip test | photo in the frame | faces "
                 "| widest face / frame width | detector used | median ms | p90 ms "
                 "| median of each round, ms | CPU |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| results/{p.name} | `{speed.get('landmark_model', 'bundled')}` | {speed['refine']} "
                  f"| {'yes' if speed['flip'] else 'no'} | `{Path(f['image']).name}` | {f['faces']} "
                  f"| {f['face_share']:.2f} | `{f['detector']}` | **{f['median_ms']:.2f}** "
                  f"| {f['p90_ms']:.2f} | " + ", ".join(f"{m:.1f}" for m in f.get("round_medians_ms", []))
                  + f" | {_cpu(speed) or 'not recorded'} |"
                  for p, speed in runs for f in speed["frames"]]
    if ratios:
        def models(setup):
            names = ["mirrored look" if setup[k] == FLIP_SECOND else f"`{setup[k]}`"
                     for k in ("landmark_model", "pose_model", "second_model") if setup.get(k)]
            threads = setup.get("threads", 1)
            return " + ".join(names) + (f", {threads} threads" if threads > 1 else "")
        lines += ([""] if lines else []) + [
            "Per-frame time of one set-up against another, taking turns in one run "
            "(`speed_ratio.py`; mean of the photos' ratios of medians):", "",
            "| file | before | after | after / before | CPU |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| results/{p.name} | {models(r['setups']['before'])} "
                  f"| {models(r['setups']['after'])} | **{r['ratio']:.2f}×** | {_cpu(r)} |"
                  for p, r in ratios if "setups" in r]
    return "\n".join(lines)


def predictor_section():
    # The validation photos only: the turned and small faces have their own tables.
    # A run's ensemble after its pair, which it is compared with.
    files = _in_order(RESULTS.glob("predictor_eval*.json"),
                      name=lambda p: p.name.replace("_ensemble", "_z_ensemble"))
    runs = [(p, r) for p, r in ((p, json.loads(p.read_text())) for p in files)
            if not r.get("profile") and not r.get("small")]
    if not runs:
        return ("_No predictor evaluation yet: `make evaluate-predictor` writes "
                "results/predictor_eval_*.json._")
    lines = ["| file | landmark model | face detectors, in order | flip test | faces | missed "
             "| NME % | FR@0.10 % | AUC@0.10 | vs the file above, points (paired s.e.) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    previous = None
    for p, r in runs:
        compare = ""
        nmes = r.get("nmes", [])
        # A split that gained faces keeps its earlier ones first, in order
        # (generate_mesh_dataset splits each group on its own): compare on those.
        if previous and r["nme"] is not None and len(previous) <= len(nmes):
            compare = "{:+.3f} ({:.3f})".format(*paired_difference(nmes[:len(previous)], previous))
            if len(previous) < len(nmes):
                compare += f" on the first {len(previous)}"
        previous = nmes
        detectors = r.get("detector", "default")
        detectors = " → ".join(f"`{d}`" for d in detectors) if isinstance(detectors, list) else detectors
        model = f"`{r['model']}`" + "".join(
            " + its mirrored look" if r[k] == FLIP_SECOND else f" + `{Path(r[k]).name}`"
            for k in ("pose_model", "second_model") if r.get(k))
        lines.append(f"| results/{p.name} | {model} | {detectors} "
                     f"| {'yes' if r.get('flip') else 'no'} "
                     f"| {r['faces']} | **{r['missed']}** ({100 * r['missed_share']:.1f}%) "
                     f"| **{_pct(r['nme'])}** | {100 * (r['fr'] or 0):.2f} | {r['auc'] or 0:.4f} "
                     f"| {compare} |")
    return "\n".join(lines)


def threads_section():
    r = _load("predictor_threads.json")
    if not r:
        return "_Not measured yet: `python thread_benchmark.py`._"
    rate = r["calls_per_s"]
    return "\n".join([
        "| predictors | calls/s, 4 threads | memory |", "| --- | --- | --- |",
        f"| one, shared | {rate['shared']:.1f} | {r['mb_first_predictor']:.0f} MB |",
        f"| one per thread | {rate['per_thread']:.1f} | +{r['mb_per_extra_predictor']:.0f} MB "
        f"each |", "",
        f"{r['threads']} threads × {r['calls_per_round'] // r['threads']} calls on the test "
        "photos, "
        f"median of {r['rounds']} rounds taking turns, {r['cpu_count']} cores ({_cpu(r)}); "
        f"every answer identical to one thread's: {'yes' if r['answers_as_one_thread'] else 'NO'} "
        "(results/predictor_threads.json). A predictor per thread gives "
        f"{rate['per_thread'] / rate['shared']:.2f}× the shared one's calls/s here."])


# ------------------------------------------------------------- model card --

def bundle_section():
    """The bundled recipe's float and QAT models on the validation split."""
    lines = ["| model | all NME % | " + " | ".join(f"{g} NME %" for g in GROUPS)
             + " | FR@0.10 % | hard view NME % | hard view FR@0.10 % | file |",
             "| --- |" + " --- |" * (len(GROUPS) + 5)]
    found = False
    for suffix, label in (("", "float"), ("_qat", "QAT")):
        m = _load(f"val_{BUNDLE_RUN}{suffix}.json")
        if not m:
            continue
        label += " (best epoch)" if m.get("model", "").endswith("best.weights.h5") else " (last epoch)"
        found = True
        scores = {g: _run_scores(m, folders)["plain"] for g, folders in GROUPS.items()}
        hard = m.get("hard_view", {}).get("all")
        hard_cells = f"{_pct(hard['nme'])} | {100 * hard['fr']:.2f}" if hard else "— | —"
        lines.append(f"| {label} | {_pct(m['nme'])} | " + " | ".join(
            f"{100 * np.mean(scores[g]):.3f}" if scores.get(g) else "—" for g in GROUPS)
            + f" | {100 * m['fr']:.2f} | {hard_cells} | results/val_{BUNDLE_RUN}{suffix}.json |")
    return "\n".join(lines) if found else "_The bundled recipe has no validation file yet._"


def reproduce_section():
    """What `make reproduce` costs on 2 cores: a table of the bundled
    recipes' trainings, from their own runs' files."""
    rows, total, unnamed = [], 0.0, 0

    def cell(name):
        """'93 min: 160 epochs at 63 images/s' of a run's file, its CPUs and file."""
        t = (_load(f"val_{name}.json") or {}).get("training") or {}
        if "train_minutes" not in t:
            return None
        return (t["train_minutes"], f"{t['train_minutes']:.0f} min: {t['epochs']} epochs at "
                f"{t['images_per_s_median']:.0f} images/s", t.get("cpus"), f"results/val_{name}.json")

    pose_all, pose_all_what = POSE_RUN + "_all", "large-pose model on all faces"
    if not _load(f"val_{pose_all}.json"):
        # Its retraining on all faces is still to run: the run before it
        # trained the same network for as many epochs.
        pose_all = POSE_ALL_STAND_IN
        pose_all_what += (f" (run {POSE_ALL_STAND_IN.removeprefix('resnet_')}'s time: "
                          f"run {POSE_RUN.removeprefix('resnet_')}_all is not trained yet)")
    for run, what in ((BUNDLE_RUN, "main model (`make train`)"),
                      (POSE_RUN, "large-pose model (`make train-pose`)"),
                      (BUNDLE_RUN + "_all", "main model on all 2,012 faces (`make train-all`)"),
                      (pose_all, pose_all_what)):
        cells = [c for c in (cell(run), cell(run + "_qat")) if c]
        if not cells:
            continue
        by_step = {c[3].endswith("_qat.json"): c for c in cells}
        cpus = sorted({cpu for c in cells for cpu in (c[2] or ["not recorded"])})
        unnamed += sum(not c[2] for c in cells)
        total += sum(c[0] for c in cells)
        rows.append(f"| {what} | {by_step[False][1] if False in by_step else '—'} "
                    f"| {by_step[True][1] if True in by_step else '—'} | {', '.join(cpus)} "
                    f"| {', '.join(c[3] for c in cells)} |")
    if not rows:
        return ""
    text = ["`make reproduce` (records → turned faces → box mapping → train → QAT → export → "
            "benchmarks → predictor check → split models → large-pose model "
            "→ pair study → turned and small faces end to end → video benchmark → the bundle "
            "retrained on all faces → WFLW sample → speed → these tables) spends most of its "
            f"time in the landmark models' trainings, {total / 60:.1f} h in all on 2 cores:", "",
            "| model | training | QAT | CPU | from |", "| --- | --- | --- | --- | --- |", *rows, ""]
    tail = ("The rest goes to the PTQ techniques' AdaRound passes and the benchmarks' "
            "conversions. The trainings ran on different 2-core machines, so speeds compare "
            "only on one CPU")
    if unnamed:
        # Runs trained before landmark.py recorded the CPU name none.
        tail += f"; {unnamed} of them predate landmark.py's record of the CPU"
    tail += "."
    # The second main model is rebuilt only on request (the Makefile's `second`).
    second = [c for run in (SECOND_RUN, SECOND_RUN + "_all") for c in (cell(run), cell(run + "_qat")) if c]
    if second:
        tail += (f" The second main model, which predictor() no longer runs by default, is not "
                 f"retrained: `make second` would add {sum(c[0] for c in second):.0f} min "
                 f"({', '.join(c[3] for c in second)}).")
    profiled = _load("profiled.json")
    if profiled:
        tail += (f" Turning the {profiled['faces']:,} training faces ({profiled['written']:,} "
                 f"views, `make profile`) took {profiled['seconds'] / 60:.1f} min with "
                 f"{profiled['processes']} processes on {_cpu(profiled)} (results/profiled.json).")
    return "\n".join(text + [tail])


# The profiled-faces test (issue: large poses): the bundle's recipe (run
# v21), and two 24-epoch fine-tunes of its float model with the same
# recipe, one mixing in profile_faces.py's turned faces (v23) and one
# without (v23_control), so the fine-tune itself is not credited.
PROFILED_RUNS = ("resnet_v21", "resnet_v23_control", "resnet_v23", "resnet_v23b", "resnet_v24",
                 "resnet_v25", "resnet_v26")
PROFILED_PAIRS = (("resnet_v23", "resnet_v23_control"), ("resnet_v23b", "resnet_v23_control"),
                  ("resnet_v23", "resnet_v21"), ("resnet_v24", "resnet_v21"),
                  ("resnet_v25", "resnet_v21"), ("resnet_v26", "resnet_v25"))


def _runs_table(run_names, pairs, empty, kinds=(), models="Float models (best epoch)"):
    """NME of each run's model on the plain crops, each group, the hard
    view, its `kinds` and its profile kind, then the paired differences
    `pairs`; `models` says which of each run's models the files score."""
    runs = {name: _load(f"val_{name}.json") for name in run_names}
    runs = {name: m for name, m in runs.items() if m}
    if not runs:
        return empty
    scores = {}
    for name, m in runs.items():
        columns = _run_scores(m)
        for label, folders in GROUPS.items():
            columns[label] = _run_scores(m, folders)["plain"]
        scores[name] = columns
    names = ["plain", "HELEN + AFW", "LFPW", "hard view", *kinds, PROFILE_KIND]
    lines = ["| run (NME %) | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for name, columns in scores.items():
        lines.append(f"| `{name}` | " + " | ".join(_nme_cells(columns, names)) + " |")
    for a, b in pairs:
        if a not in scores or b not in scores:
            continue
        cells = _paired_cells(scores[a], scores[b], names)
        lines.append(f"| `{a}` − `{b}`, points (paired s.e.); relative | " + " | ".join(cells) + " |")
    lines += ["", "Files: " + ", ".join(f"results/val_{name}.json" for name in runs)
              + f". {models} {CROPS_NOTE}"]
    return "\n".join(lines)


# Toward the 30% hard-view target: the main recipe (run v32) with the wild
# conditions half as likely again (run v34, --wild 1.5), with a quarter of
# each epoch moderately turned faces (run v35, profile_faces --yaw 10 40),
# with the wild conditions less likely (run v36, --wild 0.7), and less
# likely again (run v37, --wild 0.5).
TOWARD_RUNS = ("resnet_v32", "resnet_v34", "resnet_v35", "resnet_v36", "resnet_v37")
TOWARD_PAIRS = (("resnet_v34", "resnet_v32"), ("resnet_v35", "resnet_v32"), ("resnet_v36", "resnet_v32"),
                ("resnet_v37", "resnet_v36"))
HARD_KINDS = hard_view.KINDS


def toward_section():
    return _runs_table(TOWARD_RUNS, TOWARD_PAIRS, "_No run yet._", HARD_KINDS)


# Runs v32, v36 and v37 after QAT as `make qat` ran it until 2026-12-07
# (10 epochs, the best on the validation faces kept), and run v36's QAT three
# times more: once alike, twice with the wild conditions at strength 1 as run
# v32's QAT had them. Last, run v37's QAT under today's rule (a weight
# average, its last epoch kept) against its picked one.
TOWARD_QAT_RUNS = ("resnet_v32_qat", "resnet_v36_qat", "resnet_v36_qat_repeat", "resnet_v36_qat_wild1",
                   "resnet_v36_qat_wild1_repeat", "resnet_v37_qat_picked", "resnet_v37_qat")
TOWARD_QAT_PAIRS = (("resnet_v36_qat", "resnet_v32_qat"), ("resnet_v36_qat_repeat", "resnet_v36_qat"),
                    ("resnet_v36_qat_wild1_repeat", "resnet_v36_qat_wild1"),
                    ("resnet_v36_qat_wild1", "resnet_v36_qat"), ("resnet_v37_qat_picked", "resnet_v36_qat"),
                    ("resnet_v37_qat", "resnet_v37_qat_picked"))


def toward_qat_section():
    return _runs_table(TOWARD_QAT_RUNS, TOWARD_QAT_PAIRS, "_No QAT run yet._", HARD_KINDS,
                       "QAT models (the best of 10 epochs on these faces; `resnet_v37_qat` "
                       "the last of a weight average)")


def profiled_section():
    return _runs_table(PROFILED_RUNS, PROFILED_PAIRS, "_No profiled-faces run yet._")


# Wider networks (48-192 channels instead of 32-128, then 64-256): the
# large-pose recipe (v27 against v25, v29 against v27) and the main one (v28
# against v21, v31 against v28).
WIDE_RUNS = ("resnet_v21", "resnet_v28", "resnet_v31", "resnet_v25", "resnet_v27", "resnet_v29",
             "resnet_v30")
WIDE_PAIRS = (("resnet_v28", "resnet_v21"), ("resnet_v31", "resnet_v28"), ("resnet_v27", "resnet_v25"),
              ("resnet_v29", "resnet_v27"), ("resnet_v30", "resnet_v29"))


def wide_section():
    return _runs_table(WIDE_RUNS, WIDE_PAIRS, "_No wide run yet._")


# The stem: run v31's network with a 32-filter first convolution and one
# residual block at 64 px (run v32) against it, the same for the large-pose
# recipe (run v33 against run v30), and where the main runs' error lies by
# region of the face.
STEM_RUNS = ("resnet_v31", "resnet_v32", "resnet_v30", "resnet_v33")
STEM_PAIRS = (("resnet_v32", "resnet_v31"), ("resnet_v33", "resnet_v30"))
REGION_RUNS = ("resnet_v31", "resnet_v32")


def gate_section():
    """gate_study.py's grid: the gate chosen on the even faces against the
    one before it, the main model alone and no gate at all."""
    r = _load("gate_study.json")
    if not r:
        return "_No gate study yet: `gate_study.py`._"
    from gate_study import BEFORE, MAIN_FLIP, TURNED, gate_name

    chosen = gate_name(r["chosen_on_even"])
    never = gate_name((float("inf"), float("inf")))
    names = [MAIN_FLIP, never, BEFORE, chosen]
    heads = ["main model alone, flip test", "no gate (every face fused with its mirrored look)",
             "gate before: yaw 20°, spread 0.65, every unsure face sent on",
             f"chosen: {chosen}, unsure faces where the large-pose model claims them",
             "chosen − before, points (paired s.e.), all faces", "the same, odd faces only"]
    lines = ["| view (NME %) | " + " | ".join(heads) + " |", "| --- |" + " --- |" * len(heads)]
    for view in r["views"]:
        cells, odd = r["scores"]["all"][view], r["scores"]["odd"][view][chosen]["vs_before"]
        diff = cells[chosen]["vs_before"]
        lines.append(f"| {view} | " + " | ".join(f"{100 * cells[n]['nme']:.2f}" for n in names)
                     + f" | {100 * diff['mean']:+.3f} ({100 * diff['se']:.3f}) | "
                     f"{100 * odd['mean']:+.3f} ({100 * odd['se']:.3f}) |")
    lo, hi = r["turned_range"]
    lines += ["", f"results/gate_study.json: the split int8 models on the 201 validation crops; "
              f"`{TURNED}` is the same faces turned in 3D to {lo:g}-{hi:g}° of yaw, `profile` "
              f"to 50-75°. The file holds every gate of the grid (yaw "
              + ", ".join(f"{y:g}" for y in sorted({g[0] for g in r["gates"]}))
              + "°; spread " + ", ".join(f"{s:g}" for s in sorted({g[1] for g in r["gates"]})) + ")."]
    real = r.get("real_turned")
    if real:
        # The trade the yaw threshold makes, at the chosen spread: real turned
        # faces against the rendered turns the large-pose model trained on.
        spread = r["chosen_on_even"][1]
        rows = [MAIN_FLIP] + [gate_name(g) for g in r["gates"] if g[1] == spread]
        views = [v for v in (TURNED, "profile") if v in r["views"]]
        lines += ["", f"The {real['faces']} real faces among them turned {real['min_yaw']:g}° or "
                  f"more (their annotated marks fitted in their photos, `head_pose.py`), plain "
                  f"crops, against the rendered turns, by the gate's yaw (spread {spread:g}):", "",
                  "| gate | real turned faces, NME % | − main model alone, points (paired s.e.) | "
                  + " | ".join(f"`{v}` NME %" for v in views) + " |",
                  "| --- | --- | --- |" + " --- |" * len(views)]
        for name in rows:
            cell = real["scores"][name]
            lines.append(f"| {name} | {100 * cell['nme']:.2f} | "
                         + ("" if name == MAIN_FLIP else
                            f"{100 * cell['vs_main']['mean']:+.3f} ({100 * cell['vs_main']['se']:.3f})")
                         + " | " + " | ".join(f"{100 * r['scores']['all'][v][name]['nme']:.2f}"
                                              for v in views) + " |")
        lines += _real_turns_end_to_end(r, real["min_yaw"])
    return "\n".join(lines)


# The whole predictor on the validation photos (in the record's order, as
# gate_study's true yaws are), split by the annotated turn.
REAL_TURN_FILES = (("predictor_eval_v37_flip.json", "main model alone, flip test"),
                   ("predictor_eval_v37_pair.json", "the pair"),
                   ("predictor_eval_v37_v30_flip_ensemble.json",
                    "predictor() with run v30 as the large-pose model (until 2026-12-07)"),
                   (BUNDLE_PREDICTOR_EVAL, "predictor() (run v38 as the large-pose model)"))


def _real_turns_end_to_end(r, min_yaw):
    yaws = _true_yaws(r)
    base = _load(BUNDLE_PREDICTOR_EVAL)
    if not len(yaws) or not base or len(base["nmes"]) != len(yaws):
        return []
    turned = np.isfinite(yaws) & (yaws >= min_yaw)
    reference = np.array(base["nmes"], float)
    lines = ["", f"End to end on the validation photos (detector included), the same "
             f"{int(turned.sum())} turned faces and the other {int((~turned).sum())}:", "",
             "| set-up | turned faces, NME % | − predictor(), points (paired s.e.) "
             "| other faces, NME % | file |", "| --- | --- | --- | --- | --- |"]
    for name, label in REAL_TURN_FILES:
        other = _load(name)
        if not other or len(other["nmes"]) != len(yaws):
            continue
        nmes = np.array(other["nmes"], float)
        both = turned & np.isfinite(nmes) & np.isfinite(reference)
        diff = "" if name == BUNDLE_PREDICTOR_EVAL else \
            "{:+.3f} ({:.3f})".format(*paired_difference(nmes[both], reference[both]))
        lines.append(f"| {label} | {100 * np.nanmean(nmes[turned]):.3f} | {diff} "
                     f"| {100 * np.nanmean(nmes[~turned]):.3f} | results/{name} |")
    return lines


# The research log's summary: each recipe the bundle has carried, in order,
# with what each changed and what that bought over the one before it.
LINEAGE = {
    "main model": (("resnet_v21", "more faces (LFPW) and the wild conditions"),
                   ("resnet_v28", "a network 1.5× as wide"),
                   ("resnet_v31", "wider again (64-256 channels)"),
                   ("resnet_v32", "a wider stem"),
                   ("resnet_v36", "the wild conditions less likely (0.7)"),
                   ("resnet_v37", "less likely again (0.5)")),
    "large-pose model": (("resnet_v25", "a quarter of each epoch turned in 3D"),
                         ("resnet_v27", "a network 1.5× as wide"),
                         ("resnet_v29", "wider again (64-256 channels)"),
                         ("resnet_v30", "half of each epoch turned"),
                         ("resnet_v38", "the wild conditions at 0.5, as the main model's")),
}
LINEAGE_COLUMNS = ("plain", "hard view", PROFILE_KIND)


def lineage_section():
    lines = ["| model | run | what it changed | plain | hard view | profile "
             "| − the run before, points (paired s.e.): plain; hard view; profile |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    files = []
    for model, runs in LINEAGE.items():
        before = None
        for name, change in runs:
            m = _load(f"val_{name}.json")
            if not m:
                continue
            files.append(f"results/val_{name}.json")
            scores = _run_scores(m)
            cells = _nme_cells(scores, LINEAGE_COLUMNS)
            delta = "; ".join(_paired_cells(scores, before, LINEAGE_COLUMNS, relative=False)) if before else ""
            lines.append(f"| {model} | `{name}` | {change} | " + " | ".join(cells) + f" | {delta} |")
            before = scores
    if not files:
        return "_No run yet._"
    return "\n".join(lines + ["", "Files: " + ", ".join(files) + f". NME % of the float models (best epoch) {CROPS_NOTE}"])


def pose_wild_section():
    """The large-pose recipe with the wild conditions as likely as the main
    model's since run v37 (run v38) against run v30, and its two runs (the
    first one's files lost but for their scores) against each other."""
    return _runs_table(("resnet_v30", "resnet_v38_first", "resnet_v38"),
                       (("resnet_v38_first", "resnet_v30"), ("resnet_v38", "resnet_v30"),
                        ("resnet_v38", "resnet_v38_first")), "_No run v38 yet._")


def stem_section():
    table = _runs_table(STEM_RUNS, STEM_PAIRS, "_No stem run yet._")
    runs = [(name, _load(f"val_{name}.json")) for name in REGION_RUNS]
    runs = [(name, m["per_region"]) for name, m in runs if m and "per_region" in m]
    if not runs:
        return table
    regions = list(runs[0][1])
    lines = ["", "By region of the face, validation crops: NME % of the region's marks "
             "(its share of the summed error):", "",
             "| run | " + " | ".join(regions) + " |", "| --- |" + " --- |" * len(regions)]
    for name, per_region in runs:
        lines.append(f"| `{name}` | " + " | ".join(
            f"{100 * per_region[r]['nme']:.2f} ({100 * per_region[r]['share']:.0f}%)"
            for r in regions) + " |")
    return table + "\n" + "\n".join(lines)


def _pair_row(r):
    """pair_study's row of the predictor's way (before layouts.paired_flip: the margin's)."""
    return "predictor" if "predictor" in r["scores"]["all"]["plain"] else f"pair, margin {r['margin_in_code']}"


def pair_section():
    r = _load("pair_study.json")
    if not r:
        return "_No pair study yet: `make pair-study`._"
    chosen = _pair_row(r)
    fused = f"pair, margin {r['margin_in_code']}"
    ensemble = bool(r.get("second_main"))
    # Files before 2026-12-07 have no SECOND_ENSEMBLE row: their predictor was it.
    second_row = ensemble and SECOND_ENSEMBLE in r["scores"]["all"]["plain"]
    names = ["main, flip test", "large-pose, flip test", fused] + (
        [PAIR_WAY, TWO_MAINS] if ensemble else []) + ([SECOND_ENSEMBLE] if second_row else []) + [chosen]
    before = bool(r.get("against"))
    heads = ["main model, flip test", "large-pose model, flip test", "pair, fused"] + (
        ["pair, large-pose flip test on turned faces (the predictor until 2026-12-06)",
         "two main models, fused"] if ensemble else []) + (
        ["ensemble with the second main model (the predictor until 2026-12-07)",
         "predictor: the ensemble with the main model's mirrored look"] if second_row else
        ["predictor: the ensemble"] if ensemble else
        ["predictor (pair; turned faces: large-pose flip test)"])
    heads += ["predictor − main, points (paired s.e.), all faces", "the same, odd faces only"]
    if before:
        heads += ["the pair bundled before", "predictor − pair before, points (paired s.e.)"]
    lines = ["| view (NME %) | " + " | ".join(heads) + " |", "| --- |" + " --- |" * len(heads)]
    for view in r["views"]:
        cells = r["scores"]["all"][view]
        diff, odd = cells[chosen]["vs_main"], r["scores"]["odd"][view][chosen]["vs_main"]
        line = (f"| {view} | " + " | ".join(f"{100 * cells[n]['nme']:.2f}" for n in names)
                + f" | {100 * diff['mean']:+.3f} ({100 * diff['se']:.3f}) | "
                f"{100 * odd['mean']:+.3f} ({100 * odd['se']:.3f}) |")
        if before:
            gain = cells[chosen]["vs_before"]
            line += (f" {100 * cells[BEFORE]['nme']:.2f} | {100 * gain['mean']:+.3f} "
                     f"({100 * gain['se']:.3f}) |")
        lines.append(line)

    def beyond(row):
        """The views where the predictor differs from `row` beyond 2 s.e."""
        found = []
        for view in r["views"]:
            diff = r["scores"]["all"][view][row]["vs_pair"]   # row - predictor
            if abs(diff["mean"]) > 2 * diff["se"] > 0:
                found.append(f"{view} {-100 * diff['mean']:+.3f} (s.e. {100 * diff['se']:.3f})")
        return "; ".join(found) or "none"
    import layouts
    if second_row:
        lines += ["", f"The predictor is the ensemble (`layouts.ensembled`): the main model on "
                  f"every crop; a face its marks show turned beyond {layouts.CASCADE_YAW:g}° of "
                  f"yaw, or whose maps are unsure where the large-pose model's are sharper, goes "
                  f"the pair's way (the large-pose model "
                  f"fused in, its flip test where the face is turned beyond "
                  f"{layouts.TURNED_YAW:g}°); every other face fuses the main model's marks "
                  f"with its own on the mirrored crop (`layouts.mirrored_model`), as it fused "
                  f"them with a second main model's until 2026-12-07. Two invokes a face, three "
                  f"a turned one. Against the ensemble with the second main model, beyond 2 "
                  f"s.e.: {beyond(SECOND_ENSEMBLE)} points; against the pair's way: "
                  f"{beyond(PAIR_WAY)} points; the other views are level."]
    elif ensemble:
        lines += ["", f"The predictor is the ensemble (`layouts.ensembled`): the main model on "
                  f"every crop; a face its marks show turned beyond {layouts.CASCADE_YAW:g}° of "
                  f"yaw, or whose maps are unsure, goes the pair's way (the large-pose model "
                  f"fused in, its flip test where the face is turned beyond "
                  f"{layouts.TURNED_YAW:g}°); every other face fuses the two main models. Two "
                  f"invokes a face, three a turned one, as the pair's way. Against the pair's "
                  f"way, beyond 2 s.e.: {beyond(PAIR_WAY)} points; the other views are level."]
    elif chosen != fused:
        lines += ["", f"The predictor fuses the pair's marks, except on faces whose fused marks "
                  f"turn beyond {layouts.TURNED_YAW:g}° of yaw (`layouts.TURNED_YAW`) or that "
                  f"it took whole from the large-pose model: those take the large-pose model's "
                  f"flip test (a third invoke). Against the fused pair, beyond 2 s.e.: "
                  f"{beyond(fused)} points; the other views are level."]
    margins = ", ".join("never" if m is None else f"{m:g}" for m in r["margins"])
    second = (f", `{Path(r['second_main']).name}` (run {SECOND_RUN.split('_')[-1]})"
              if ensemble else "")
    lines += ["", f"int8 files: `{Path(r['model']).name}` (run {BUNDLE_RUN.split('_')[-1]}), "
              f"`{Path(r['pose_model']).name}` (run {POSE_RUN.split('_')[-1]}){second}; 201 "
              f"validation crops. The pair's margin (take the large-pose model whole when its "
              f"maps are sharper by more than this in mean log spread) was chosen on the "
              f"even-numbered faces from {margins}: {r['chosen_margin']} (layouts.PICK_MARGIN "
              f"{r['margin_in_code']}); \"odd faces only\" are the faces that did not choose it"
              + (f"; the pair bundled before is `{' + '.join(r['against'])}`" if before else "")
              + " (results/pair_study.json)."]
    return "\n".join(lines)


# The turned-faces end-to-end files (make evaluate-profile), first the
# predictor as it was before the box mapping saw turned faces.
PROFILE_ROWS = (
    ("predictor_eval_profile_before_main.json", "run v21 alone, flip test (the bundle before the pair)",
     "photos only", "no"),
    ("predictor_eval_profile_before.json", "pair of runs v21 + v25", "photos only", "no"),
    ("predictor_eval_profile_main.json", "run v37 alone, flip test", "photos + turned faces", "yes"),
    ("predictor_eval_profile_v27.json", "pair of runs v28 + v27 (bundled until 2026-12-05)",
     "photos + turned faces", "yes"),
    ("predictor_eval_profile_v29.json", "pair of runs v28 + v29 (bundled until 2026-12-06)",
     "photos + turned faces", "yes"),
    ("predictor_eval_profile_v31.json", "pair of runs v31 + v30 (bundled until 2026-12-06)",
     "photos + turned faces", "yes"),
    ("predictor_eval_profile_v32_pair.json", "pair of runs v32 + v30 (bundled until 2026-12-06)",
     "photos + turned faces", "yes"),
    ("predictor_eval_profile_v32_ensemble.json",
     "ensemble of runs v32 + v31 + v30 (bundled until 2026-12-07)", "photos + turned faces", "yes"),
    ("predictor_eval_profile_v36_ensemble.json",
     "ensemble of runs v36 + v31 + v30 (bundled until 2026-12-07)", "photos + turned faces", "yes"),
    ("predictor_eval_profile_v30.json",
     "ensemble of run v37, its mirrored look and run v30 (bundled until 2026-12-07)",
     "photos + turned faces", "yes"),
    ("predictor_eval_profile_no_recrop.json", "ensemble of run v37, its mirrored look and run v38",
     "photos + turned faces", "no"),
    ("predictor_eval_profile.json", "ensemble of run v37, its mirrored look and run v38 (the default)",
     "photos + turned faces", "yes"),
)


def turned_section():
    reference = _load(PROFILE_ROWS[1][0])
    if not reference:
        return "_No turned-faces check yet: `make evaluate-profile`._"
    lines = ["| file | landmark models | box mapping fitted on | re-crop and refine pass | missed | "
             "NME % | FR@0.10 | "
             "− pair before, points (paired s.e.) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, models, mapping, recrop in PROFILE_ROWS:
        r = _load(name)
        if not r:
            continue
        diff = "" if name == PROFILE_ROWS[1][0] else "{:+.2f} ({:.2f})".format(
            *paired_difference(r["nmes"], reference["nmes"]))
        lines.append(f"| results/{name} | {models} | {mapping} | {recrop} | {r['missed']} of "
                     f"{r['faces']} | {100 * r['nme']:.2f} | {100 * r['fr']:.1f}% | {diff} |")
    yaw = reference["profile"]["yaw"]
    widths = reference["profile"]["face_widths"]
    lines += ["", f"The {reference['faces']} validation faces turned in 3D to {yaw[0]:g}-{yaw[1]:g} "
              f"degrees of yaw (the hard view's profile kind), each in a 640×480 frame with its "
              f"landmark box {widths[0]:g}-{widths[1]:g} px wide, through detector, crop and "
              f"landmarks (`evaluate_predictor.py --profile tfrecords/test.record`); int8, "
              f"NME over the eye-corner distance of the found faces."]
    return "\n".join(lines)


REFINE_VIEWS = [("the validation photos", BUNDLE_PREDICTOR_EVAL),
                ("small faces (30-80 px in 1024×768)", "predictor_eval_small.json"),
                ("turned faces (50-75°, 40-160 px in 640×480)", "predictor_eval_profile.json")]


def refine_section():
    lines = ["| view | refine=None (the default) | faces given the pass | refine=0 | "
             "difference, points (paired s.e.) |", "| --- | --- | --- | --- | --- |"]
    for view, name in REFINE_VIEWS:
        auto, none = _load(name), _load(name.replace(".json", "_refine0.json"))
        if not (auto and none) or "refined" not in auto:
            continue
        lines.append(f"| {view} | {_pct(auto['nme'])}%, FR@0.10 {100 * auto['fr']:.1f}% | "
                     f"{auto['refined']} (+{auto['recropped']} re-cropped) of "
                     f"{auto['faces'] - auto['missed']} | {_pct(none['nme'])}%, FR@0.10 "
                     f"{100 * none['fr']:.1f}% | "
                     "{:+.3f} ({:.3f}) |".format(*paired_difference(auto["nmes"], none["nmes"])))
    if len(lines) == 2:
        return "_No refine check yet: `make evaluate-refine`._"
    lines += ["", "Int8 pair, end to end (`evaluate_predictor.py`, each view with `--refine 0` "
              "against the default); a re-cropped face (`geometry.RECROP_SHIFT`) has had its pass."]
    return "\n".join(lines)


def small_section():
    rows = [("predictor_eval_small.json", "yes (the default)"),
            ("predictor_eval_small_no_squares.json", "no (`small_faces=False`)")]
    loaded = [(name, label, _load(name)) for name, label in rows if _load(name)]
    if not loaded:
        return "_No small-faces check yet: `make evaluate-small`._"
    lines = ["| file | search in squares | missed | detections matching no annotated face | "
             "NME % (found faces) | FR@0.10 | ms per photo (median) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, label, r in loaded:
        lines.append(f"| results/{name} | {label} | {r['missed']} of {r['faces']} | "
                     f"{r['unmatched_detections']} | {100 * r['nme']:.2f} | {100 * r['fr']:.1f}% | "
                     f"{r['ms_per_photo_median']:.1f} |")
    small, cpu = loaded[0][2]["small"], _cpu(loaded[0][2])
    lines += ["", f"The {loaded[0][2]['faces']} validation photos, each shrunk so its face's "
              f"landmark box is {small['face_widths'][0]:g}-{small['face_widths'][1]:g} px wide, in a "
              f"{small['frame'][0]}×{small['frame'][1]} frame whose margin repeats the photo's edge "
              f"(`evaluate_predictor.py --small tfrecords/test.record`, seed {small['seed']}); the "
              f"bundled int8 pair. A face found both ways gets the same marks, so the NME moves only "
              f"by the faces the squares add. The ms were timed in the two runs, not taking turns"
              + (f", on {cpu}." if cpu else ".")]
    return "\n".join(lines)


def confidence_section():
    r = _load("confidence.json")
    if not r:
        return "_No confidence check yet: `confidence.py`._"
    views = r["views"]
    lines = ["| view | AUROC, marks > 0.1 eye distance | bad marks | mean confidence |",
             "| --- | --- | --- | --- |"]
    for name, v in views.items():
        lines.append(f"| {name} | {v['auroc']:.3f} | {100 * v['bad_share']:.1f}% | "
                     f"{v['mean_confidence']:.2f} |")
    lines.append(f"| **all** | **{r['all']['auroc']:.3f}** | {100 * r['all']['bad_share']:.1f}% | |")
    lines += ["", f"`{Path(r['model']).name}`{' with the flip test' if r['flip_test'] else ''}; "
              f"curve fitted on the {r['fitted_on']}, scored on the {r['scored_on']} "
              f"(results/confidence.json, reliability plot results/confidence_reliability.png)."]
    return "\n".join(lines)


def video_section():
    r = _load("video_benchmark.json")
    if not r:
        return "_No video benchmark yet: `video_benchmark.py`._"
    lines = ["| mode | NME % | jitter % | still-face jitter % | lag after a cut, frames | "
             "unmarked frames | ms/frame |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for mode, m in r["modes"].items():
        lines.append(f"| {mode} | {100 * m['nme']:.2f} | {100 * m['jitter']:.3f} | "
                     f"{100 * m['still_jitter']:.3f} | {m['lag_frames']:.1f} | "
                     f"{m['unmarked_frames']} | {m['ms_mean']:.2f} |")
    ratio = r["ratios"].get("track+smooth")
    if ratio:
        lines += ["", f"Tracking + smoothing against detect-every-frame: jitter "
                  f"{ratio['jitter']:.2f}×, still-face jitter {ratio['still_jitter']:.2f}×, NME "
                  f"{ratio['nme_points']:+.2f} points, time {ratio['ms']:.2f}×; a tracked 640×480 "
                  f"frame with one face {r['tracked_frame_ms']:.2f} ms (median)"
                  + (f", the same frame through `predict` {r['detected_frame_ms']:.2f} ms, taking "
                     f"turns" if "detected_frame_ms" in r else "") + "."]
        unmarked = r["modes"]["track+smooth"]["unmarked_frames"]
        targets = [("jitter", f"{ratio['jitter']:.2f}×", "≤ 0.5×", ratio["jitter"] <= 0.5),
                   ("still-face jitter", f"{ratio['still_jitter']:.2f}×", "≤ 0.4×",
                    ratio["still_jitter"] <= 0.4),
                   ("NME", f"{ratio['nme_points']:+.2f} points", "≤ +0.10 points",
                    ratio["nme_points"] <= 0.10),
                   ("faces in view left unmarked", str(unmarked), "0", unmarked == 0),
                   ("time per frame", f"{ratio['ms']:.2f}×", "≤ 0.6×", ratio["ms"] <= 0.6),
                   ("tracked frame, one face", f"{r['tracked_frame_ms']:.2f} ms", "≤ 3 ms",
                    r["tracked_frame_ms"] <= 3)]
        lines += ["", "| default video mode against `--no-track` | measured | target | met |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {what} | {got} | {want} | {'yes' if ok else '**no**'} |"
                  for what, got, want, ok in targets]
    for mode, option in (("track+smooth, both models", "one_model=False"),
                         ("track+smooth, one model", "one_model=True"),
                         ("track+smooth, no image motion", "flow=False")):
        other = r["ratios"].get(mode)
        if other:
            frame = {"one_model=False": r.get("tracked_frame_both_models_ms")}.get(option)
            lines += ["", f"With `{option}`: jitter {other['jitter']:.2f}×, still-face jitter "
                      f"{other['still_jitter']:.2f}×, NME {other['nme_points']:+.2f} points, time "
                      f"{other['ms']:.2f}×" + (f", tracked frame {frame:.2f} ms" if frame else "")
                      + "."]
    lines += ["", f"{r['clips']} clips of {sum(n for _, n in r['segments'])} frames at "
              f"{r['fps']:.0f} fps ({', '.join(f'{s} {n}' for s, n in r['segments'])}), camera "
              f"noise σ {r['noise_sigma']:g}; tracker {r['tracker']}; 1 thread, "
              f"{_cpu(r)} (results/video_benchmark.json)."]
    cuts = r.get("cut_distances")
    if cuts:
        lines[-1] += (f" Colour-histogram distance from frame to frame: {cuts['cuts_min']:.2f} or "
                      f"more at the cuts, at most {cuts['others_max']:.2f} elsewhere (median "
                      f"{cuts['others_median']:.2f}); a cut is above {cuts['threshold']:g}.")
    return "\n".join(lines)


SECTIONS = {"headline": headline_section, "wild": wild_section, "precision": precision_section,
            "questions": questions_section, "loss": loss_section,
            "benchmark": benchmark_section, "techniques": techniques_section,
            "speed": speed_section, "predictor": predictor_section, "bundle": bundle_section,
            "threads": threads_section, "reproduce": reproduce_section,
            "profile": profile_section, "profiled": profiled_section,
            "confidence": confidence_section, "video": video_section, "pair": pair_section,
            "turned": turned_section, "wide": wide_section, "small": small_section, "stem": stem_section,
            "toward": toward_section, "toward_qat": toward_qat_section, "gate": gate_section,
            "pose_wild": pose_wild_section, "lineage": lineage_section,
            "refine": refine_section}
# Which generated sections each document holds.
DOCUMENTS = {"README.md": ("headline", "reproduce", "threads"),
             "docs/RESEARCH.md": ("lineage", "wild", "toward", "toward_qat", "wide", "stem", "profiled", "pair", "gate",
                                  "pose_wild", "turned", "precision", "profile", "questions", "loss"),
             "docs/QUANTIZATION.md": ("benchmark", "techniques"),
             "docs/PREDICTOR.md": ("refine", "predictor", "speed", "small", "threads", "confidence",
                                   "video"),
             "assets/MODEL_CARD.md": ("bundle", "headline")}


def fill(path, names):
    """Rebuild the sections `names` of the document at `path`."""
    text = path.read_text()
    for name in names:
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            sys.exit(f"error: {path.relative_to(ROOT)} has no <!-- BEGIN {name} --> ... "
                     f"<!-- END {name} --> block")
        text = pattern.sub(lambda m: m.group(1) + SECTIONS[name]() + "\n" + m.group(2), text)
    path.write_text(text)
    print(f"updated {path.relative_to(ROOT)}: " + ", ".join(names))


def main():
    for document, names in DOCUMENTS.items():
        if (ROOT / document).is_file() or document == "README.md":
            fill(ROOT / document, names)


if __name__ == "__main__":
    main()
