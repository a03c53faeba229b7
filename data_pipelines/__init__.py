"""Dataset builders (CoinRun, your own videos, a synthetic sprite world) and the Grain loader.

Every builder writes the same record layout (see `records.py`): a TFDS dataset in
ArrayRecord format whose records each hold one chunk of one episode.
"""
