# Every target sets up .venv first (pinned requirements.txt), so each one
# works on a fresh clone. `make test` is what CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared/data/300w
MODEL ?= resnet
# What both bundled models share: a ResNet of plain 3x3 convolutions with
# an integral head of 32x32 score maps, trained on crops made hard as faces
# in the wild are (--wild: light, textured and hand-like occluders, low
# resolution, blur, noise, JPEG, a yaw-like warp; rotation up to 45
# degrees), the NME-weighted Wing loss with the score maps pulled towards a
# Gaussian at each mark, weight decay, a weight average, and milder
# augmentation in the last epochs. docs/RESEARCH.md says what each part
# bought and gives the flags of earlier runs.
RECIPE := --head integral --occlusion 0.25 --weight_decay 0.05 --weight_average 0.999 \
    --integral_cells 32 --loss wing_nme --heatmap_loss 5 --wild 1 --rotation 45 --calm_rotation 30
# The network of runs v27 and v28: 48-192 channels (1.9 M parameters, a 2 MB
# int8 file); runs v20-v26 had 32-128 (0.89 M, under 1 MB).
WIDE := --head_channels 128 --stages 48x3,96x2,144x2,192x1
SMALL := --head_channels 96 --stages 32x3,64x2,96x2,128x1
# The network of both bundled models since runs v29 (large-pose) and v31
# (main): 64-256 channels (3.4 M parameters, a 3.5 MB int8 file).
WIDER := --head_channels 160 --stages 64x3,128x2,192x2,256x1
# The bundled main model, run v37: the wider network with a 32-filter stem
# and one residual block at 64 px, 160 epochs, the last 40 calm, and the
# wild conditions half as likely as RECIPE's (--wild 0.5; the later flag
# wins). Runs v36 (--wild 0.7) and v32 (--wild 1) were bundled until
# 2026-12-07; run v31 before them had no stem block.
EPOCHS ?= 160
TRAIN_FLAGS ?= $(RECIPE) $(WIDER) --stem 32x1 --calm_epochs 40 --wild 0.5
RUN ?= resnet_v37
# The large-pose model the predictor pairs with it (run v38): the wider
# network, 200 epochs (the last 50 calm), half of each epoch drawn from the
# turned faces `make profile` writes (docs/RESEARCH.md, "Two models"), and
# the main model's milder wild conditions (the later --wild wins; run v30,
# bundled before it, had 1: docs/RESEARCH.md, run v38).
POSE_SHARE ?= 0.5
POSE_EPOCHS ?= 200
POSE_WILD ?= 0.5
POSE_RECIPE := $(RECIPE) $(WIDER) --calm_epochs 50 --profiled_share $(POSE_SHARE) --wild $(POSE_WILD)
POSE_FLAGS := $(POSE_RECIPE) --profiled_record tfrecords/profiled.record
POSE_RUN ?= resnet_v38
POSE_DIRS ?= --checkpoint_dir checkpoints_pose --qat_checkpoint_dir quantized_checkpoints_pose
POSE_EXPORT ?= exported_pose
# The second main model of the ensemble (layouts.ensembled), run v31: the
# main recipe without the stem block (bundled as the main model until
# 2026-12-06). Fused with the main model on faces that are not turned.
SECOND_FLAGS := $(RECIPE) $(WIDER) --calm_epochs 40
SECOND_RUN ?= resnet_v31
SECOND_DIRS ?= --checkpoint_dir checkpoints_second --qat_checkpoint_dir quantized_checkpoints_second
SECOND_EXPORT ?= exported_second
# Run v21, the main model bundled before run v28 (the small network, 200
# epochs, the last 50 calm): the profiled-faces study fine-tunes its export.
V21_FLAGS := $(RECIPE) $(SMALL) --calm_epochs 50
V21_EXPORT ?= exported_v21
QAT_EPOCHS ?= 10
LOSS_EPOCHS ?= 8
# The loss study's short runs are run v2's recipe (dense head), whatever TRAIN_FLAGS is.
LOSS_FLAGS ?= --head_channels 96 --rotation 20 --scale_jitter 0.12 --shift 0.07
RECORDS := --train_record tfrecords/train.record --val_record tfrecords/test.record

BUNDLE := assets/landmarks_300w
# The split runs' int8 files (trained on the 1,811 training faces): every
# validation figure is theirs. The bundle beside them is the same
# recipes retrained on all 2,012 faces (`make train-all bundle-all`).
SPLIT_BUNDLE := assets/split/landmarks_300w
SPLIT_MAIN := --model $(SPLIT_BUNDLE)_int8.tflite
SPLIT_PAIR := $(SPLIT_MAIN) --pose_model $(SPLIT_BUNDLE)_pose_int8.tflite
# The models as predictor() runs them: the pair's ensemble with the main
# model's look at the mirrored crop as the second opinion (predict.FLIP_SECOND);
# SPLIT_SECOND has the second main model there, the default until 2026-12-07.
SPLIT_MODELS := $(SPLIT_PAIR) --second_model flip
SPLIT_SECOND := $(SPLIT_PAIR) --second_model $(SPLIT_BUNDLE)_second_int8.tflite

.PHONY: test demo data profile profiled-study video-benchmark train evaluate qat export benchmark techniques loss-study readme reproduce second figures timed bundle train-all train-main-all train-second-all train-pose-all \
    bundle-main-all bundle-second-all bundle-pose-all \
    evaluate-predictor speed speed-ratio bundle-before training-speed precision-check train-pose bundle-pose train-second bundle-second pair-study gate-study box-mapping evaluate-profile \
    evaluate-small evaluate-refine data-all bundle-all wflw-sample

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# The main job: bundled detector + int8 landmarks on test_images/, a speed
# check, and the quantization benchmark of the bundled float and QAT models
# (on tfrecords/test.record if it exists, else label-free; the bundle trained
# on those faces, so read its NME changes, not their level). It writes only
# under results/ (ignored by git): the README's picture, drawn on another CPU,
# can differ by a grey level, so `make speed` alone redraws it.
demo: $(VENV)/.installed
	$(PY) predict.py test_images/ --out results/predictions --montage results/demo/result.png \
	    --speed results/demo/predict_speed.json
	$(PY) ptq_benchmark.py --float_model $(BUNDLE)_float --qat_model $(BUNDLE)_qat \
	    --out_dir results/demo
	@echo "annotated images: results/predictions/ and results/demo/result.png"
	@echo "speed: results/demo/predict_speed.json; benchmark: results/demo/ptq_benchmark.md"

# 300-W faces from ../shared: a fixed, seeded 10% of HELEN+AFW (the same 121
# faces as before LFPW came) plus a seeded 10% of LFPW are validation.
FACE_DIRS := --train_dirs $(SHARED)/helen_trainset $(SHARED)/afw --train_dirs $(SHARED)/lfpw_trainset
data: $(VENV)/.installed
	$(PY) generate_mesh_dataset.py --dataset 300w $(FACE_DIRS) \
	    --val_fraction 0.1 --seed 0 --out_dir tfrecords

# Turned views of the training faces (profile_faces.py, 300W-LP's method:
# fit the 3D face model of ../shared/data/3dmm, turn it to 30-75 degrees of
# yaw, re-render), two per face; validation faces are refused.
profile: $(VENV)/.installed
	$(PY) profile_faces.py --record tfrecords/train.record --out tfrecords/profiled.record \
	    --views 2 --seed 0 --examples tfrecords/profiled_examples.png --summary results/profiled.json

# Where each detector's box puts the landmark crop (assets/*.box_mapping.json),
# fitted on the training photos and on 1,000 of their turned views, so a
# turned face's crop is placed as well as a frontal one's.
box-mapping: $(VENV)/.installed
	$(PY) fit_box_mapping.py $(SHARED)/helen_trainset $(SHARED)/afw --exclude tfrecords/summary.json \
	    --profiled tfrecords/profiled.record

# Turned validation faces end to end (detector, crop, landmarks): the predictor
# as it runs, without its re-crop (nor the refine pass, which would stand
# in for it), and the main model alone.
evaluate-profile: $(VENV)/.installed
	$(PY) evaluate_predictor.py --profile tfrecords/test.record $(SPLIT_MODELS) \
	    --out results/predictor_eval_profile.json
	$(PY) evaluate_predictor.py --profile tfrecords/test.record $(SPLIT_MODELS) --recrop none --refine 0 \
	    --out results/predictor_eval_profile_no_recrop.json
	$(PY) evaluate_predictor.py --profile tfrecords/test.record $(SPLIT_MAIN) --pose_model none \
	    --out results/predictor_eval_profile_main.json

# Small faces end to end: the validation photos shrunk so each face is
# 30-80 px wide in a 1024x768 frame, with and without the search in squares.
evaluate-small: $(VENV)/.installed
	$(PY) evaluate_predictor.py --small tfrecords/test.record $(SPLIT_MODELS) \
	    --out results/predictor_eval_small.json
	$(PY) evaluate_predictor.py --small tfrecords/test.record $(SPLIT_MODELS) --no-small_faces \
	    --out results/predictor_eval_small_no_squares.json

# The refine pass small and turned faces get (predict.REFINE_BELOW,
# REFINE_YAW): each end-to-end view again without it.
evaluate-refine: $(VENV)/.installed
	$(PY) evaluate_predictor.py --split tfrecords/summary.json $(SPLIT_MODELS) --refine 0 \
	    --out results/predictor_eval_$(SPLIT)_flip_ensemble_refine0.json
	$(PY) evaluate_predictor.py --small tfrecords/test.record $(SPLIT_MODELS) --refine 0 \
	    --out results/predictor_eval_small_refine0.json
	$(PY) evaluate_predictor.py --profile tfrecords/test.record $(SPLIT_MODELS) --refine 0 \
	    --out results/predictor_eval_profile_refine0.json

# The profiled-faces study (docs/RESEARCH.md): 24-epoch fine-tunes of run
# v21's float model (V21_EXPORT: `make train` with EPOCHS=200 and
# TRAIN_FLAGS as V21_FLAGS, then `landmark.py --export_only --export_dir
# exported_v21`), its own recipe, without and with turned faces.
FINETUNE := --model $(MODEL) $(V21_FLAGS) --init_from $(V21_EXPORT) --lr 5e-4 --epochs 24 \
    --calm_epochs 8 --batch_size 32 $(RECORDS) --hard_view
PROFILED := --profiled_record tfrecords/profiled.record
profiled-study: $(VENV)/.installed
	$(PY) landmark.py $(FINETUNE) --checkpoint_dir checkpoints_v23_control \
	    --metrics_out results/val_resnet_v23_control.json
	$(PY) landmark.py $(FINETUNE) $(PROFILED) --profiled_share 0.25 --checkpoint_dir checkpoints_v23 \
	    --metrics_out results/val_resnet_v23.json
	$(PY) landmark.py $(FINETUNE) $(PROFILED) --profiled_share 0.5 --checkpoint_dir checkpoints_v23b \
	    --metrics_out results/val_resnet_v23b.json

train: $(VENV)/.installed
	$(PY) landmark.py --model $(MODEL) $(TRAIN_FLAGS) --epochs $(EPOCHS) --batch_size 32 $(RECORDS) \
	    --hard_view --metrics_out results/val_$(RUN).json

# A model in its own folders: train, QAT and export;
# $(call train_model,FLAGS,EPOCHS,RUN,DIRS,EXPORT[,RECORDS: the split's, scored with the hard view][,QAT FLAGS]).
# Resumable: add INITIAL=N to go on after N epochs.
define train_model
	$(PY) landmark.py --model $(MODEL) $(1) --epochs $(2) --batch_size 32 $(or $(6),$(RECORDS) --hard_view) \
	    $(4) --metrics_out results/val_$(3).json --initial_epoch $(INITIAL)
	$(PY) landmark.py --quantization --epochs $(QAT_EPOCHS) --batch_size 32 $(or $(7),$(SPLIT_QAT)) \
	    $(or $(6),$(RECORDS) --hard_view) $(4) --metrics_out results/val_$(3)_qat.json
	$(PY) landmark.py --export_only $(4) --export_dir $(5)
	$(PY) landmark.py --export_only --quantization $(4) --checkpoint last --export_dir $(5)_quantized
endef

train-pose: $(VENV)/.installed
	$(call train_model,$(POSE_FLAGS),$(POSE_EPOCHS),$(POSE_RUN),$(POSE_DIRS),$(POSE_EXPORT))

train-second: $(VENV)/.installed
	$(call train_model,$(SECOND_FLAGS),$(EPOCHS),$(SECOND_RUN),$(SECOND_DIRS),$(SECOND_EXPORT))

evaluate: $(VENV)/.installed
	$(PY) landmark.py --eval_only --hard_view $(RECORDS) --metrics_out results/val_$(RUN).json

# QAT starts from the float model's last checkpoint and keeps the last epoch
# of a weight average, never the epoch that scores best on the validation
# faces: that pick read 0.095 points (s.e. 0.010) better than run v37's QAT
# is (results/val_resnet_v37_qat_picked.json against _qat.json). The split
# large-pose and second models predate this rule (docs/RESEARCH.md).
QAT_AVERAGE := --weight_average 0.995
SPLIT_QAT := $(QAT_AVERAGE) --checkpoint last
qat: $(VENV)/.installed
	$(PY) landmark.py --quantization --epochs $(QAT_EPOCHS) --batch_size 32 $(SPLIT_QAT) $(RECORDS) \
	    --hard_view --metrics_out results/val_$(RUN)_qat.json

export: $(VENV)/.installed
	$(PY) landmark.py --export_only
	$(PY) landmark.py --export_only --quantization --checkpoint last

benchmark: $(VENV)/.installed
	$(PY) ptq_benchmark.py --float_model exported --qat_model exported_quantized \
	    --test_record tfrecords/test.record --rep_record tfrecords/train.record --out_dir results

# The white paper's PTQ techniques on the float model (W8A8 and simulated W4A8),
# with a 4-bit-weight QAT fine-tune as the reference row.
techniques: $(VENV)/.installed
	$(PY) landmark.py --quantization --weight_bits 4 --epochs 8 --batch_size 32 $(RECORDS) \
	    --qat_checkpoint_dir quantized_checkpoints_w4 --metrics_out results/val_$(RUN)_qat_w4.json
	$(PY) landmark.py --export_only --quantization --qat_checkpoint_dir quantized_checkpoints_w4 \
	    --export_dir exported_quantized_w4
	$(PY) ptq_techniques.py --float_model exported --qat_w4_model exported_quantized_w4 \
	    --test_record tfrecords/test.record --rep_record tfrecords/train.record --out_dir results

# Short runs, one per loss, same schedule: which loss to train with.
loss-study: $(VENV)/.installed
	for loss in wing l1 mse; do \
	    $(PY) landmark.py --model $(MODEL) $(LOSS_FLAGS) --loss $$loss --epochs $(LOSS_EPOCHS) $(RECORDS) \
	        --checkpoint_dir runs/loss_$$loss --metrics_out results/loss_$$loss.json || exit 1; \
	done

# The whole predictor (detector + the QAT model as int8) on the validation
# photos, with and without the flip test. Files are named after the run.
SPLIT := $(RUN:resnet_%=%)
evaluate-predictor: $(VENV)/.installed
	$(PY) ptq_benchmark.py --float_model exported --qat_model exported_quantized \
	    --modes int8_only --keep_tflite --runs 20 --out_dir runs/split_$(SPLIT)
	$(PY) evaluate_predictor.py --split tfrecords/summary.json --no-flip \
	    --model runs/split_$(SPLIT)/tflite/qat_int8_only.tflite --out results/predictor_eval_$(SPLIT).json
	$(PY) evaluate_predictor.py --split tfrecords/summary.json --flip \
	    --model runs/split_$(SPLIT)/tflite/qat_int8_only.tflite --out results/predictor_eval_$(SPLIT)_flip.json

# Training speed: float32 against bf16 taking turns, and where a step's time goes.
training-speed: $(VENV)/.installed
	$(PY) train_throughput.py --out results/train_throughput.json -- --model $(MODEL) \
	    --head integral --head_channels 96 --stages 32x3,64x2,96x2,128x1 --occlusion 0.5 \
	    --weight_decay 0.05 --weight_average 0.999 --integral_cells 32 --loss wing_nme --heatmap_loss 5
	$(PY) profile_training.py --out results/training_profile.json -- --model $(MODEL) $(TRAIN_FLAGS)

# The same recipe a few epochs in each precision: does bf16 train as float32 does?
precision-check: $(VENV)/.installed
	for p in float32 mixed_bfloat16; do \
	    $(PY) landmark.py --model $(MODEL) $(TRAIN_FLAGS) --calm_epochs 3 --epochs 12 --batch_size 32 \
	        --precision $$p $(RECORDS) --checkpoint_dir checkpoints_precision_$$p \
	        --metrics_out results/val_precision_$$p.json || exit 1; \
	done

readme: $(VENV)/.installed
	$(PY) readme_results.py

# The second main model is not retrained: predictor() has not run it by
# default since 2026-12-07, and its two trainings were a quarter of the
# time. Its committed files stay (the pair study's comparison rows, and
# `second_model_path=`); `make second` rebuilds them.
reproduce: data profile box-mapping train evaluate qat export benchmark techniques evaluate-predictor \
    bundle train-pose bundle-pose pair-study gate-study evaluate-profile evaluate-small \
    evaluate-refine video-benchmark data-all train-all bundle-all wflw-sample speed speed-ratio readme

second: train-second bundle-second train-second-all bundle-second-all

# A QAT export as the integer-only file the predictor loads:
# $(call bundle_int8,FLOAT_EXPORT,OUT_DIR,TARGET[,QAT_EXPORT: FLOAT_EXPORT_quantized]).
define bundle_int8
	$(PY) ptq_benchmark.py --float_model $(1) --qat_model $(or $(4),$(1)_quantized) \
	    --modes int8_only --keep_tflite --runs 20 --out_dir $(2)
	cp $(2)/tflite/qat_int8_only.tflite $(3)
endef

# The split run's exports as int8 in assets/split/ (trained on the 1,811
# training faces, so the validation figures are measured on them), with the
# main model's confidence curve.
bundle: $(VENV)/.installed
	mkdir -p assets/split
	$(call bundle_int8,exported,runs/bundle,$(SPLIT_BUNDLE)_int8.tflite,exported_quantized)
	$(PY) confidence.py $(SPLIT_MAIN) --pose_model none --write_calibration

# The large-pose model as int8 beside the split main model; the pair's confidence
# curve; the whole predictor with the pair (`--second_model none`) on the
# validation photos; then the same for the ensemble predictor() runs. The
# large-pose model gets its own confidence curve, unflipped: a tracked face
# the pair hands to it runs it alone (tracking.py).
bundle-pose: $(VENV)/.installed
	$(call bundle_int8,$(POSE_EXPORT),runs/bundle_pose,$(SPLIT_BUNDLE)_pose_int8.tflite)
	$(PY) confidence.py $(SPLIT_PAIR) --second_model none --write_calibration \
	    --out runs/bundle_pose/confidence_pair.json --plot runs/bundle_pose/confidence_pair.png
	$(PY) confidence.py --model $(SPLIT_BUNDLE)_pose_int8.tflite --pose_model none --no-flip \
	    --write_calibration --out runs/bundle_pose/confidence.json --plot runs/bundle_pose/confidence.png
	$(PY) evaluate_predictor.py --split tfrecords/summary.json $(SPLIT_PAIR) \
	    --out results/predictor_eval_$(SPLIT)_pair.json
	$(PY) confidence.py $(SPLIT_MODELS) --write_calibration
	$(PY) evaluate_predictor.py --split tfrecords/summary.json $(SPLIT_MODELS) \
	    --out results/predictor_eval_$(SPLIT)_flip_ensemble.json

# The second main model as int8 beside the split main model; the confidence
# curve and the whole predictor on the validation photos of the ensemble with
# it in the mirrored look's place (`second_model_path=` its file).
bundle-second: $(VENV)/.installed
	$(call bundle_int8,$(SECOND_EXPORT),runs/bundle_second,$(SPLIT_BUNDLE)_second_int8.tflite)
	$(PY) confidence.py $(SPLIT_SECOND) --write_calibration \
	    --out runs/bundle_second/confidence.json --plot runs/bundle_second/confidence.png
	$(PY) evaluate_predictor.py --split tfrecords/summary.json $(SPLIT_SECOND) \
	    --out results/predictor_eval_$(SPLIT)_ensemble.json

# The main model, the large-pose one and the pair on the validation crops
# and their hard view; chooses layouts.PICK_MARGIN on half the faces.
pair-study: $(VENV)/.installed bundle-before
	$(PY) pair_study.py $(SPLIT_PAIR) --second_main $(SPLIT_BUNDLE)_second_int8.tflite \
	    --against runs/bundle_before/landmarks_300w_int8.tflite \
	    runs/bundle_before/landmarks_300w_pose_int8.tflite --out results/pair_study.json

# The ensemble's gate (layouts.CASCADE_YAW, CASCADE_SPREAD) on a grid, the
# predictor's way on the validation crops; chooses it on half the faces.
gate-study: $(VENV)/.installed
	$(PY) gate_study.py $(SPLIT_PAIR) --out results/gate_study.json

# Video: tracking and smoothing against detect-every-frame on clips made
# from validation photos, with a sweep of the tracker's settings.
video-benchmark: $(VENV)/.installed
	$(PY) video_benchmark.py --sweep $(SPLIT_MODELS) --out results/video_benchmark.json

# The five real WFLW faces of ../shared end to end, on their 68 300-W marks
# by region, with the split models (the bundle trained on none of them either).
wflw-sample: $(VENV)/.installed
	$(PY) evaluate_predictor.py --wflw $(SHARED)/../wflw_sample/list_98pt_train_sample.txt \
	    $(SPLIT_MODELS) --out results/wflw_sample_split.json
	$(PY) evaluate_predictor.py --wflw $(SHARED)/../wflw_sample/list_98pt_train_sample.txt \
	    --out results/wflw_sample.json

# The bundled predictor's speed (and the README's picture), and one
# predictor shared by threads against one per thread.
speed: $(VENV)/.installed
	$(PY) predict.py test_images/ --out results/predictions --montage test_images/result.png \
	    --speed results/predict_speed.json
	$(PY) thread_benchmark.py --out results/predictor_threads.json

# The pair bundled at commit BEFORE (runs v21 + v25, until run v28), which
# the pair study and the speed ratio compare with, taken from git.
BEFORE ?= 71c1e60
bundle-before:
	mkdir -p runs/bundle_before
	for name in landmarks_300w_int8 landmarks_300w_pose_int8; do \
	    git show $(BEFORE):assets/$$name.tflite > runs/bundle_before/$$name.tflite || exit 1; \
	done

# Per-frame speed of the bundled pair against the pair before, taking turns in one run.
# Then what the mirrored look costs: the bundled pair alone against predictor();
# and predictor() with each interpreter on two threads against one.
speed-ratio: $(VENV)/.installed bundle-before
	$(PY) speed_ratio.py test_images/ --before runs/bundle_before/landmarks_300w_int8.tflite \
	    runs/bundle_before/landmarks_300w_pose_int8.tflite --rounds 20 --out results/speed_ratio.json
	$(PY) speed_ratio.py test_images/ --before $(BUNDLE)_int8.tflite $(BUNDLE)_pose_int8.tflite \
	    --rounds 20 --out results/speed_ratio_ensemble.json
	$(PY) speed_ratio.py test_images/ --before default --threads 1 2 --rounds 20 \
	    --out results/speed_ratio_threads.json

# After a new model is put in place (`make bundle`, `bundle-pose`, then
# `bundle-main-all` or `bundle-pose-all`): every figure that depends on the
# models, then the timed ones on a machine with nothing else running.
figures: pair-study gate-study evaluate-profile evaluate-small evaluate-refine wflw-sample readme
timed: video-benchmark speed speed-ratio readme

# The bundle: the main and large-pose recipes retrained on all 2,012 faces
# (the second main model's by `make second`), in folders of
# their own. The validation faces join training, so the val record only
# monitors and the last checkpoint is kept, not the best on those faces.
# Resumable: add INITIAL=N to go on after N epochs.
INITIAL ?= 0
ALL_RECORDS := --train_record tfrecords_all/train.record --val_record tfrecords/test.record
ALL_EXPORT ?= exported_all
SECOND_ALL_EXPORT ?= exported_second_all
POSE_ALL_EXPORT ?= exported_pose_all
data-all: $(VENV)/.installed
	$(PY) generate_mesh_dataset.py --dataset 300w $(FACE_DIRS) --out_dir tfrecords_all
	$(PY) profile_faces.py --record tfrecords_all/train.record --out tfrecords_all/profiled.record \
	    --views 2 --seed 0

# QAT averages its weights and keeps its last epoch, as for the split models
# (SPLIT_QAT): at 0.995 its last epoch beat plain QAT's by 0.023 points
# (paired s.e. 0.007) and its last epochs agree within 0.01
# (results/val_resnet_v32_qat_ema.json).
ALL_QAT := $(QAT_AVERAGE)
train-all: train-main-all train-pose-all

train-main-all: $(VENV)/.installed
	$(call train_model,$(TRAIN_FLAGS),$(EPOCHS),$(RUN)_all,--checkpoint_dir checkpoints_all \
	    --qat_checkpoint_dir quantized_checkpoints_all --checkpoint last,$(ALL_EXPORT),$(ALL_RECORDS),$(ALL_QAT))

train-second-all: $(VENV)/.installed
	$(call train_model,$(SECOND_FLAGS),$(EPOCHS),$(SECOND_RUN)_all,--checkpoint_dir checkpoints_second_all \
	    --qat_checkpoint_dir quantized_checkpoints_second_all --checkpoint last,$(SECOND_ALL_EXPORT),$(ALL_RECORDS),$(ALL_QAT))

train-pose-all: $(VENV)/.installed
	$(call train_model,$(POSE_RECIPE) --profiled_record tfrecords_all/profiled.record,$(POSE_EPOCHS),$(POSE_RUN)_all,\
	    --checkpoint_dir checkpoints_pose_all --qat_checkpoint_dir quantized_checkpoints_pose_all \
	    --checkpoint last,$(POSE_ALL_EXPORT),$(ALL_RECORDS),$(ALL_QAT))

# The retrained models into assets/ as what predictor() loads, with the
# main one's float and QAT SavedModels; their confidence curves are the
# split models' (no face is left to fit them on).
bundle-all: bundle-main-all bundle-pose-all

bundle-main-all: $(VENV)/.installed
	rm -rf $(BUNDLE)_float $(BUNDLE)_qat
	cp -r $(ALL_EXPORT) $(BUNDLE)_float
	cp -r $(ALL_EXPORT)_quantized $(BUNDLE)_qat
	$(call bundle_int8,$(BUNDLE)_float,runs/bundle_all,$(BUNDLE)_int8.tflite,$(BUNDLE)_qat)
	cp assets/split/*.confidence.json assets/

bundle-second-all: $(VENV)/.installed
	$(call bundle_int8,$(SECOND_ALL_EXPORT),runs/bundle_second_all,$(BUNDLE)_second_int8.tflite)

bundle-pose-all: $(VENV)/.installed
	$(call bundle_int8,$(POSE_ALL_EXPORT),runs/bundle_pose_all,$(BUNDLE)_pose_int8.tflite)
	cp assets/split/*.confidence.json assets/
