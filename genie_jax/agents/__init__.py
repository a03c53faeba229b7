"""Agents that learn from videos without actions (Genie, Sec. 3.3 and App. E): a frozen
LAM labels expert videos with latent actions, a policy learns to predict them from
frames, and a few labelled transitions map latent actions to real ones (`bc.py`)."""
