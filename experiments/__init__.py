"""ml_collections configs: pick one as `--config experiments/FILE.py:VARIANT`."""
