"""dpm-flair: diffusion-model reconstruction of accelerated FLAIR MRI inside the Gadgetron stream."""
from setuptools import find_packages, setup

setup(
    name="dpm-flair",
    version="0.1.0",
    description="Diffusion probabilistic model MRI reconstruction (pre-train + fine-tune) for the Gadgetron stream",
    python_requires=">=3.10",
    packages=find_packages(include=["dpm_core", "dpm_core.*", "gadgets", "gadgets.*", "training", "training.*"]),
    package_data={"dpm_core": ["models/*.safetensors", "models/*.json"],
                  "training": ["assets/*"],
                  "gadgets": ["configs/*.xml"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.2,<2.15",          # the CPU build 2.13.0 satisfies this; CUDA builds work the same
        "numpy>=1.26",
        "scipy>=1.11",
        "h5py>=3.9",
        "sigpy>=0.1.26",
        "pywavelets>=1.5",
        "ismrmrd>=1.14",
        "gadgetron>=1.4.1",
        "xsdata",
        "pydicom>=2.4",
        "pynetdicom>=2.0",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "pillow>=9",
        "matplotlib>=3.7",
        "scikit-image>=0.21",        # SSIM (dpm_core.metrics)
        "nibabel>=5",
        "nilearn>=0.10",             # ships the MNI152 templates the synthetic corpus (and the demo) are built from
        "dipy>=1.8",                 # ships the real brain images of the real-anatomy corpus (training.real_anatomy)
        "tensorboard>=2.14",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout>=2.1"],
    },
    entry_points={
        "console_scripts": [
            "dpm-demo=training.demo:main",
            "dpm-replay=gadgets.replay:main",
            "dpm-server=gadgets.server:main",
            "dpm-synth=training.synth:main",
            "dpm-real-anatomy=training.real_anatomy:main",
            "dpm-pretrain=training.pretrain:main",
            "dpm-finetune=training.finetune:main",
            "dpm-experiment=training.experiments:main",
        ],
    },
)
