"""The named TFDS builders. They live in a package module (not in the `python -m` entry
scripts) because TFDS resolves a builder's files through its module's package."""
from data_pipelines.records import EpisodeChunkBuilder


class Coinrun(EpisodeChunkBuilder):
  """Procgen CoinRun, random policy (TFDS name `coinrun`)."""


class VideoFolder(EpisodeChunkBuilder):
  """A folder of the user's own videos, no actions (TFDS name `video_folder`)."""


class Sprites(EpisodeChunkBuilder):
  """Synthetic sprite world with known actions (TFDS name `sprites`)."""
