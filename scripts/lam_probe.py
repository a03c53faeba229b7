r"""Trains the latent action model alone on a sprite world and prints, every --every steps,
what decides whether it learns actions: its held-out prediction error against copying
the last frame, how many of its codes it uses, how well they name the true actions, and
(categorical quantizer) the mean top probability of the held-out codes, how sure they are.

    python scripts/lam_probe.py --data_dir runs/sprites/data --steps 800 [--oracle] \
        [--set lam.encoder_input=frames --set optim.lr=0.001 ...]

--oracle feeds the decoder the TRUE action's code instead of the encoder's: a control
that measures how fast the decoder can use an action at all. --set overrides fields of
experiments/sprites.py:lam_dynamics. It also prints, before training, the mean cosine
similarity between the initial model's action latents of different clips (near 1: every
clip starts on the same code). The README's LAM ablation comes from this script.
"""
from __future__ import annotations

import argparse
import ast
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data_pipelines import loader, sprites as sprite_world
from experiments import sprites
from genie_jax import parallel
from genie_jax.evals import action_metrics
from genie_jax.evals import run as eval_run
from genie_jax.models import build, patching, quantizer
from genie_jax.models.lam import LAMOutput
from genie_jax.train import losses, state as state_lib


def apply_override(config, assignment: str):
  key, value = assignment.split("=", 1)
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  old = node[leaf]
  node[leaf] = value if isinstance(old, str) else type(old)(ast.literal_eval(value))


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data_dir", required=True)
  ap.add_argument("--steps", type=int, default=800)
  ap.add_argument("--every", type=int, default=100)
  ap.add_argument("--oracle", action="store_true", help="decoder gets the true action's code")
  ap.add_argument("--set", action="append", default=[], help="config override, e.g. optim.lr=0.001")
  args = ap.parse_args()

  c = sprites.get_config("lam_dynamics")
  c.data.data_dir = args.data_dir
  for assignment in args.set:
    apply_override(c, assignment)
  mesh = parallel.make_mesh(data=1, devices=jax.devices()[:1])
  lam = build.make_lam(c, nnx.Rngs(c.seed))
  graphdef, params = nnx.split(lam, nnx.Param)
  tx = state_lib.make_optimizer(c.optim, args.steps, one_model=True)
  opt_state = tx.init(params)
  reseed = c.lam.quantizer == "vq" and c.lam.dead_code_steps and not args.oracle

  soft_weight = 0.0 if args.oracle else c.lam.get("soft_weight", 0.0)

  def forward(params, video, true_actions, shift_rng=None):
    model = nnx.merge(graphdef, params)
    if not args.oracle:
      return model(video, shift_rng=shift_rng, soft=soft_weight > 0)
    patches = model._patches(video)  # pylint: disable=protected-access
    q = model._encode(patches)  # pylint: disable=protected-access
    return LAMOutput(model.decode(patches, model.quantizer.lookup(true_actions), model.scroll(video)), q.indices,
                     jnp.zeros(()), q.normalized)

  def loss_fn(params, video, true_actions, shift_rng):
    out = forward(params, video, true_actions, shift_rng)
    loss, mse, _ = losses.lam_loss(out, video, soft_weight=soft_weight)
    return loss, (mse, out.actions, out.latents)

  @jax.jit
  def train_step(params, opt_state, age, video, true_actions, key):
    (_, (mse, actions, latents)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, video, true_actions, jax.random.fold_in(key, 1))
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    age = quantizer.update_code_age(age, quantizer.code_usage(actions, lam.num_actions))
    if reseed:
      params["quantizer"]["codebook"], age = quantizer.reseed_dead_codes(
          params["quantizer"]["codebook"], age, latents, key, c.lam.dead_code_steps)
    return params, opt_state, age, mse

  @jax.jit
  def probe(params, video, true_actions):
    out = forward(params, video, true_actions)
    return out.actions, jnp.mean(jnp.square(out.prediction - video[:, 1:])), out.latents

  val = next(eval_run.evaluation_batches(c, batch_size=64))
  video = patching.to_unit_float(jnp.asarray(val["frames"]))
  true_val = jnp.asarray(val["actions"][:, :-1])
  copy_mse = float(jnp.mean(jnp.square(video[:, 1:] - video[:, :-1])))
  _, _, latents = probe(params, video, true_val)
  z = np.asarray(latents).reshape(-1, latents.shape[-1])
  z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-9)
  print(f"config: lam {dict(c.lam)} lr {c.optim.lr} oracle {args.oracle}")
  print(f"held-out: {len(z)} transitions; copying x_t gives MSE {copy_mse:.5f}; "
        f"initial latents' mean pairwise cosine {float((z @ z.T).mean()):.3f}")
  data = loader.make_iterator(c.data, mesh=mesh, rules=c.rules, global_batch_size=c.train.batch_size,
                              seed=c.seed)
  age = jnp.zeros((lam.num_actions,), jnp.int32)
  started = time.perf_counter()
  for step in range(1, args.steps + 1):
    batch = next(data)
    params, opt_state, age, mse = train_step(params, opt_state, age, patching.to_unit_float(batch["frames"]),
                                             batch["actions"][:, :-1], jax.random.key(step))
    if step % args.every == 0 or step == args.steps:
      actions, val_mse, val_latents = probe(params, video, true_val)
      actions = np.asarray(actions)
      # the categorical's latents are its probabilities: how sure each transition's code is
      sure = (f"  top probability {float(jnp.mean(jnp.max(val_latents, axis=-1))):.3f}"
              if c.lam.quantizer == "categorical" and not args.oracle else "")
      table = action_metrics.contingency(actions, np.asarray(true_val), lam.num_actions, len(sprite_world.ACTION_NAMES))
      print(f"step {step:5d}  train MSE {float(mse):.5f}  held-out MSE {float(val_mse):.5f} "
            f"({float(val_mse) / copy_mse:.2f} of copying)  codes used "
            f"{np.bincount(actions.ravel(), minlength=lam.num_actions).tolist()}  "
            f"accuracy {action_metrics.best_mapping_accuracy(table):.3f}  "
            f"NMI {action_metrics.normalized_mutual_information(table):.3f}{sure}  "
            f"({time.perf_counter() - started:.0f} s)", flush=True)
  print("held-out codes (rows) against true actions (columns: " + ", ".join(sprite_world.ACTION_NAMES) + "):")
  print(table)


if __name__ == "__main__":
  main()
