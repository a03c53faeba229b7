"""Unreadable checkpoints: the trainer falls back to the newest one that restores and
moves the bad ones aside; readers (load_params, Genie.load) warn and fall back without
moving anything; when nothing restores, the error names every step's path."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genie_jax.train import checkpoints, recovery


def _saved(workdir, steps):
  """Saves a small state {"params": ..., "opt": ...} at each step; returns a fresh
  Checkpointer on them (as a restarted trainer or a reader opens it) and the states."""
  ckpt = checkpoints.Checkpointer(workdir, async_save=False, keep=10)
  states = {}
  for s in steps:
    # random values: a constant array compresses to bytes that OCDBT stores inline, not in files
    states[s] = {"params": {"w": jax.random.normal(jax.random.PRNGKey(s), (64, 64))},
                 "opt": {"m": jax.random.normal(jax.random.PRNGKey(100 + s), (4096,))}}
    ckpt.save(s, states[s], None, data_state={"next_index": s})
  ckpt.close()
  return checkpoints.Checkpointer(workdir, async_save=False, keep=10), states


def _abstract(state):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)


def _truncate_arrays(step_dir):
  """Cuts every array data file of a checkpoint to its first 16 bytes, as a copy that ran out
  of disk. (Cut to half, a file could still hold whole the arrays a reader asks for, as
  under load the async writer may put the params first: the suite once read it back.)"""
  data = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
  for name in os.listdir(data):
    os.truncate(os.path.join(data, name), min(16, os.path.getsize(os.path.join(data, name)) // 2))


def test_training_falls_back_past_bad_checkpoints_and_moves_them_aside(tmp_path, capsys):
  ckpt, states = _saved(str(tmp_path), [1, 2, 3])
  _truncate_arrays(ckpt.step_path(3))                         # truncated array files
  with open(os.path.join(ckpt.step_path(2), "state", "manifest.ocdbt"), "w") as f:
    f.write("garbage")                                        # bad metadata
  step, state = recovery.restore_for_training(ckpt, _abstract(states[1]), None)
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, state, states[1])
  err = capsys.readouterr().err
  assert f"checkpoint step 3 cannot be read ({ckpt.step_path(3)})" in err and "OUT_OF_RANGE" in err
  assert f"checkpoint step 2 cannot be read ({ckpt.step_path(2)})" in err and "manifest" in err
  assert "resuming from step 1, the newest checkpoint that restores; unreadable step(s) 3, 2 moved" in err
  corrupt = os.path.join(str(tmp_path), recovery.CORRUPT_DIR)
  assert sorted(os.listdir(corrupt)) == ["2", "3"] and ckpt.all_steps() == [1]
  ckpt.save(2, states[2], None, data_state={"next_index": 2})  # the rerun saves step 2 anew
  assert ckpt.all_steps() == [1, 2]
  ckpt.close()


def test_when_nothing_restores_nothing_moves_and_every_step_is_named(tmp_path):
  ckpt, states = _saved(str(tmp_path), [1, 2])
  other_config = _abstract({"params": {"w": jnp.zeros((32, 64))}, "opt": {"m": jnp.zeros(4096)}})
  with pytest.raises(recovery.UnreadableCheckpointError) as e:  # e.g. a changed config
    recovery.restore_for_training(ckpt, other_config, None)
  assert ckpt.step_path(1) in str(e.value) and ckpt.step_path(2) in str(e.value)
  assert ckpt.all_steps() == [1, 2] and not os.path.exists(os.path.join(str(tmp_path), recovery.CORRUPT_DIR))
  assert recovery.restore_for_training(checkpoints.Checkpointer(str(tmp_path / "empty")), other_config, None) is None
  ckpt.close()


def test_readers_warn_and_fall_back_without_moving_anything(tmp_path, capsys):
  ckpt, states = _saved(str(tmp_path), [1, 2])
  _truncate_arrays(ckpt.step_path(2))
  step, params = recovery.restore_params_for_reading(ckpt, _abstract(states[1]["params"]))
  assert step == 1
  np.testing.assert_array_equal(params["w"], states[1]["params"]["w"])
  assert "using step 1" in capsys.readouterr().err
  assert ckpt.all_steps() == [1, 2] and not os.path.exists(os.path.join(str(tmp_path), recovery.CORRUPT_DIR))
  _truncate_arrays(ckpt.step_path(1))
  with pytest.raises(recovery.UnreadableCheckpointError, match="no checkpoint in .* can be read"):
    recovery.restore_params_for_reading(ckpt, _abstract(states[1]["params"]))
  ckpt.close()


def test_genie_load_names_the_unreadable_checkpoint(tiny_world, tmp_path):
  from genie_jax.genie import Genie
  workdir = str(tmp_path / "world")
  shutil.copytree(tiny_world["world"], workdir)
  (step,) = checkpoints.Checkpointer(workdir).all_steps()
  step_dir = os.path.join(workdir, "checkpoints", str(step))
  shutil.rmtree(os.path.join(step_dir, "state", "d"))  # the params' array files are gone
  with pytest.raises(recovery.UnreadableCheckpointError, match=f"step {step} \\({step_dir}\\)"):
    Genie.load(workdir, tokenizer_workdir=tiny_world["tokenizer"])
  assert os.path.isdir(step_dir)  # a reader moves nothing
