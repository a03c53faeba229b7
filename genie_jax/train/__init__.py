"""One trainer for both phases: `python -m genie_jax.train --config FILE.py:VARIANT --workdir W`."""
