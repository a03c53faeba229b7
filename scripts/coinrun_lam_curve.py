r"""The CoinRun LAM's learning curve: its codes against the real actions as it trains.

    python scripts/coinrun_lam_curve.py --config experiments/coinrun.py:cpu_lam_dynamics \
        --data_dir runs/coinrun/data --steps 2000 --report_every 250 [--config.lam.patch=8]

Trains the config's LAM alone (genie_jax/train/lam_control.py: its objective, optimizer
and batch, no tokenizer and no dynamics model, so several times cheaper than phase 2) on
random windows of the training split, and every `report_every` steps labels every
held-out transition (validation split, unseen levels) with its codes and prints their
best-mapping accuracy and NMI against the 15 real actions and against what they do in
CoinRun (data_pipelines.coinrun.action_effects), and against the view's scroll across the
transition (genie_jax/models/view_shift.py: up / still / down and left / still / right), since
the camera follows the player: which of the two the codes follow. The curve says whether
more steps would help; scripts/coinrun_action_probe.py says how far the frames allow.

Each report also gives the LAM's prediction error on 512 held-out windows (MSE of x_t+1,
against copying x_t, the first line). `--oracle` is the control for that error: the
decoder is trained on the codes of the real actions (horizontal direction x jump, the
config's 6 codes) instead of the encoder's, so its error says what the true actions are
worth to the LAM's objective, and whether the learned codes meet it better with something
else (its NMI columns score an encoder it does not train: ignore them). With
`--oracle_labels none` the decoder is fed one code for every transition: its error is what
the frames before x_t+1 predict with no action at all, the floor that both the keys and
the learned codes improve on.
"""
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from data_pipelines import coinrun
from genie_jax.agents import data as data_lib
from genie_jax.evals import action_metrics
from genie_jax.models import patching, view_shift
from genie_jax.train import lam_control

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/coinrun.py:cpu_lam_dynamics",
                                          "A lam_dynamics config (file.py:variant).", lock_config=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "A CoinRun dataset with its real actions.", required=True)
_STEPS = flags.DEFINE_integer("steps", 2000, "LAM training steps.")
_EVERY = flags.DEFINE_integer("report_every", 250, "Score the codes every this many steps.")
_SEED = flags.DEFINE_integer("seed", 0, "Initialisation and batch order.")
_ORACLE = flags.DEFINE_bool("oracle", False, "Train the decoder on the real actions' codes (horizontal x "
                            "jump), not the encoder's: what the true actions are worth to the objective.")
_ORACLE_LABELS = flags.DEFINE_enum("oracle_labels", "keys", ["keys", "none"], "With --oracle, the labels the "
                                   "decoder is fed: the real keys, or one label for every transition (the "
                                   "prediction from the frames alone, with no action: what the past explains).")
HELD_OUT_WINDOWS = 512


@functools.partial(jax.jit, static_argnames="oracle")
def _squared_error(lam, video, actions, oracle: bool):
  """-> the squared error of the LAM's prediction of x_t+1 (from its own codes, or with
  `oracle` from `actions`' codes), summed over the batch's pixels."""
  video = patching.to_unit_float(video)
  prediction = lam.predict_with(video, actions) if oracle else lam(video).prediction
  return jnp.sum(jnp.square(prediction - video[:, 1:]))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TFDS logs every split it opens at INFO
  config = _CONFIG.value
  window = config.data.window
  train = data_lib.read_episodes(_DATA_DIR.value, "coinrun", "train")
  held = data_lib.read_episodes(_DATA_DIR.value, "coinrun", "validation")
  held_t = data_lib.transition_frames(held)
  real = data_lib.real_actions(held, held_t)
  groups = {"15 actions": (real, coinrun.NUM_PROCGEN_ACTIONS), **coinrun.action_effects(real)}
  shift = np.concatenate([  # in blocks: a few hundred MB of spectra each
      np.asarray(view_shift.frame_shift(held.frames[held_t[i:i + 1024]], held.frames[held_t[i:i + 1024] + 1]))
      for i in range(0, len(held_t), 1024)])
  views = {"scroll vertical": (view_shift.direction_labels(shift[:, 0]), 3),
           "scroll horizontal": (view_shift.direction_labels(shift[:, 1]), 3)}
  for view, (labels, count) in views.items():
    print(f"{view} (share still {np.mean(labels == 1):.2f}) against the actions, NMI: " + ", ".join(
        f"{name} {action_metrics.accuracy_and_nmi(labels, real_labels, count, real_count)[1]:.3f}"
        for name, (real_labels, real_count) in groups.items()))
  groups.update(views)
  # a clip may start anywhere its window fits inside one training episode
  starts = data_lib.window_starts(train, window)
  offsets = np.arange(window)
  def pushes(episodes, index):  # the oracle's labels of the transitions that start at `index`
    if _ORACLE_LABELS.value == "none":
      return np.zeros(index.shape, np.int32)
    return coinrun.action_effects(data_lib.real_actions(episodes, index))["horizontal x jump"][0]

  if _ORACLE.value and config.lam.num_actions != 6:
    raise app.UsageError(f"--oracle feeds the LAM the 6 labels of horizontal direction x jump; the config "
                         f"has lam.num_actions={config.lam.num_actions}")

  def sample_clips(rng, batch_size):
    index = rng.choice(starts, size=batch_size)[:, None] + offsets[None, :]
    if _ORACLE.value:  # a_t is the action taken after frame t
      return train.frames[index], pushes(train, index[:, :-1])
    return train.frames[index]

  held_starts = data_lib.window_starts(held, window)
  held_index = held_starts[np.linspace(0, len(held_starts) - 1, HELD_OUT_WINDOWS).astype(int)][:, None] + offsets
  held_clips, held_pushes = held.frames[held_index], pushes(held, held_index[:, :-1])
  target_values = held_clips[:, 1:].size

  def held_out_error(lam):  # the prediction the LAM is trained on: its own codes, or the oracle's
    return sum(float(_squared_error(lam, jnp.asarray(held_clips[i:i + 64]),
                                    jnp.asarray(held_pushes[i:i + 64], jnp.int32), _ORACLE.value))
               for i in range(0, HELD_OUT_WINDOWS, 64)) / target_values

  print(f"LAM of {_CONFIG.value.lam.num_actions} codes on {len(starts)} training windows; scored on "
        f"{len(held_t)} held-out transitions")
  unit = held_clips.astype(np.float32) / 255.0
  print(f"held-out prediction error (MSE of x_t+1 on {HELD_OUT_WINDOWS} windows): copying x_t "
        f"{np.mean(np.square(unit[:, 1:] - unit[:, :-1])):.5f}" +
        (f"; below, the decoder fed {'the real actions' if _ORACLE_LABELS.value == 'keys' else 'one'} code"
         f"{'s' if _ORACLE_LABELS.value == 'keys' else ' for every transition'} (--oracle)" if _ORACLE.value else ""))
  print(f"{'step':>6s} {'used':>4s} " + " ".join(f"{name + ' acc / NMI':>27s}" for name in groups) +
        f" {'held-out MSE':>12s}  seconds")
  start = time.time()

  def report(step, lam):
    codes = data_lib.latent_actions(lam, held, window=window)
    cells = ["%.3f / %.3f" % action_metrics.accuracy_and_nmi(codes, labels, lam.num_actions, count)
             for labels, count in groups.values()]
    used = int(np.sum(np.bincount(codes, minlength=lam.num_actions) > 0))
    print(f"{step:6d} {used:4d} " + " ".join(f"{c:>27s}" for c in cells) +
          f" {held_out_error(lam):12.5f}  {time.time() - start:7.0f}", flush=True)

  lam_control.train_lam(config, steps=_STEPS.value, batch_size=config.train.batch_size, seed=_SEED.value,
                        sample_clips=sample_clips, report=report, report_every=_EVERY.value, oracle=_ORACLE.value)


if __name__ == "__main__":
  app.run(main)
