"""Packaging for densebackbones.

``heads/`` stands at the top level of the repository but installs as ``densebackbones.heads`` (a top-level package
named ``heads`` would collide with other projects in site-packages); this works for ``pip install .`` and ``-e .``.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "densebackbones" / "__init__.py").read_text()).group(1)

setup(
    name="densebackbones",
    version=VERSION,
    description="Densely connected networks (DenseNet, DenseNet-BC, FC-DenseNet, DSOD) with a timm-style registry",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # An SPDX expression and the file (PEP 639); setuptools deprecates the "License ::" classifier beside them.
    license="Apache-2.0",
    license_files=["LICENSE"],
    python_requires=">=3.10",
    packages=find_packages(include=["densebackbones", "densebackbones.*"]) + ["densebackbones.heads"],
    package_dir={"densebackbones.heads": "heads"},
    # torch and torchvision are left unpinned so that pip resolves a matching pair from one index.
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "timm>=1.0.20",
        "safetensors>=0.4",
        "numpy>=1.24",
        # the official DenseNet release's Lua Torch 7 files (models/torch7.py): a small pure-Python reader
        "torchfile>=0.1",
        # the official Caffe releases (models/caffe.py): Caffe's messages built with protobuf, no Caffe install
        "protobuf>=4.21",
    ],
    extras_require={
        # mmengine registries, config files and the OpenMMLab backbone adapter (mmcv is never needed).
        "mm": ["mmengine>=0.10.6"],
        # training engine and tools: progress bars, curve plots, the digits default data set, SVHN's .mat files,
        # joint image/mask augmentation for segmentation, COCO json and COCO metrics for detection.
        "train": [
            "mmengine>=0.10.6",
            "tqdm>=4.60",
            "matplotlib>=3.7",
            "scikit-learn>=1.3",
            "scipy>=1.10",
            "albumentations>=1.4",
            "pycocotools>=2.0.7",
            # Cityscapes: the official label table (labelIds -> trainIds) and pixel-level evaluation
            "cityscapesscripts>=2.2",
        ],
        # inference export: ONNX files through the torch.export-based exporter, checked with onnxruntime.
        "export": ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18"],
        # deployment runtimes beside onnxruntime: OpenVINO (and NNCF, its int8 post-training quantization) and
        # ExecuTorch with its XNNPACK backend (docs/deployment.md).
        "deploy": ["openvino>=2025.1", "nncf>=2.18", "executorch>=1.0"],
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "ruff>=0.6",
            # tests/models/test_output_stride.py (DeepLabV3/V3+, skipped without) and tests/clients/test_smp.py (Unet,
            # FPN): smp with our backbones as `tu-` encoders
            "segmentation-models-pytorch>=0.5",
            # tests/clients/test_openmmlab.py: an mmpretrain classifier on DenseNetBackbone. mmpretrain imports mmcv;
            # mmcv-lite is mmcv without its compiled ops (a pure-Python wheel; the full mmcv compiles from source).
            "mmpretrain>=1.2",
            "mmcv-lite>=2.0,<2.4",
            # tests/clients/test_hook_tools.py: hook-based tools give the plain model's numbers in every memory mode
            "grad-cam>=1.5",
            "captum>=0.7",
            "torchinfo>=1.8",
            "ptflops>=0.7.3",
            "torch-pruning>=1.5",
            # tests/clients/test_lightning.py and test_transformers.py: other trainers and frameworks as users run them
            "lightning>=2.4",
            # below 4.52: mmpretrain 1.2 (above) imports GenerationMixin and BERT helpers from
            # transformers.modeling_utils, which 4.52 and 4.56 removed (its models then fail to import); 4.50 is the
            # first with TimmWrapper and AutoBackbone as used here
            "transformers>=4.50,<4.52",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
