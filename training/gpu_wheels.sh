#!/usr/bin/env bash
# The wheels training/gpu_retrain.sh and benchmarks/gpu_check.sh need on the lent GPU machine, downloaded into .whl/
# (git-ignored) on the development machine, for the device image's Python 3.12:
#   bash training/gpu_wheels.sh
# then name ".whl" in the device call's carry. The image already holds torch, numpy, scipy, h5py, pandas,
# scikit-learn, scikit-image, joblib, lxml, requests, tensorboard, tqdm, numba and safetensors
# (/work/.library/device/KINDS.md, read 2026-12-04); these are what it lacks, pinned to the versions the test suite
# runs with here: the corpus (PyWavelets, ismrmrd, xsdata, nibabel, nilearn; dipy with its trx-python, deepdiff,
# orderly-set, cachebox) and the gadget path of gpu_check.sh (gadgetron with multimethod and pyFFTW, pydicom,
# pynetdicom, sigpy). About 37 MB of the 64 MiB a call carries.
set -euo pipefail
WHEELS=(PyWavelets==1.9.0 ismrmrd==1.15.0 xsdata==26.10 nibabel==5.4.2 nilearn==0.14.1 dipy==1.12.1
        trx-python==0.6 deepdiff==9.1.0 orderly-set==5.5.0 cachebox==5.2.3
        gadgetron==1.4.1 multimethod==2.1 pyFFTW==0.15.1 pydicom==3.0.2 pynetdicom==3.0.4 sigpy==0.1.27)
PIP="${PIP:-python3 -m pip}"
mkdir -p .whl
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
ls -la .whl
du -sh .whl
