"""Datasets and the Grain loader: layout, alignment, episode boundaries, resume, sharding."""
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import coinrun, loader, records, sprites, video_folder


def test_chunk_starts_cover_episode_and_respect_min_frames():
  for n, c, m in [(100, 32, 16), (40, 24, 16), (16, 16, 16), (17, 16, 8), (5, 16, 8)]:
    starts = records.chunk_starts(n, c, m)
    if n < m:
      assert starts == []
      continue
    covered = np.zeros(n, bool)
    for s in starts:
      stop = min(s + c, n)
      assert stop - s >= m and s >= 0
      covered[s:stop] = True
    assert covered.all()


def test_coinrun_round_trip(coinrun_dir):
  source, meta = records.open_split(coinrun_dir, "coinrun", "train")
  assert meta["num_actions"] == coinrun.NUM_PROCGEN_ACTIONS and meta["has_actions"]
  assert len(source) > 0
  for i in range(len(source)):
    r = source[i]
    assert r["frames"].dtype == np.uint8 and r["frames"].shape[1:] == (64, 64, 3)
    assert r["actions"].dtype == np.int32 and r["actions"].shape == r["frames"].shape[:1]
    assert 16 <= r["frames"].shape[0] <= 32
    assert ((r["actions"] >= 0) & (r["actions"] < 15)).all()


def test_coinrun_actions_aligned_with_frames(tmp_path):
  """Replaying the stored actions from the same level reproduces the stored frames."""
  from procgen import ProcgenGym3Env
  episode = next(coinrun.generate_episodes(split="test", episodes=1, max_steps=20, num_levels=1,
                                           seed=3, num_envs=1, progress=False))
  start, _ = coinrun.level_range(split="test", seed=3, num_levels=1)
  env = ProcgenGym3Env(num=1, env_name="coinrun", distribution_mode="hard", start_level=start,
                       num_levels=1, rand_seed=3 * 7919 + 2)
  for t in range(len(episode.actions) - 1):
    _, obs, _ = env.observe()
    np.testing.assert_array_equal(obs["rgb"][0], episode.frames[t])
    env.act(episode.actions[t:t + 1])  # actions[t] causes frames[t] -> frames[t+1]


def test_coinrun_held_policy_keeps_its_key_for_hold_mean_steps_on_average(tmp_path):
  """--policy held: a key is kept with probability 1 - 1/hold_mean at each step (or drawn
  again, 1 in 15 the same), so consecutive keys agree at 1 - 1/m + 1/(15 m); at
  hold_mean=1 the episodes are the random policy's, draw for draw."""
  kw = dict(split="train", episodes=6, max_steps=120, num_levels=50, seed=0, num_envs=2, progress=False)
  held = list(coinrun.generate_episodes(hold_mean=8.0, **kw))
  same = np.concatenate([e.actions[1:] == e.actions[:-1] for e in held])
  expected = 1 - 1 / 8 + 1 / (8 * coinrun.NUM_PROCGEN_ACTIONS)
  assert len(same) > 300 and abs(same.mean() - expected) < 0.06, (same.mean(), expected)
  plain = list(coinrun.generate_episodes(**kw))
  for a, b in zip(plain, coinrun.generate_episodes(hold_mean=1.0, **kw)):
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.frames, b.frames)
  random_same = np.concatenate([e.actions[1:] == e.actions[:-1] for e in plain]).mean()
  assert random_same < 0.2, random_same  # 1 in 15 by chance
  with pytest.raises(ValueError, match="hold_mean"):
    next(coinrun.generate_episodes(hold_mean=0.5, **kw))
  with pytest.raises(ValueError, match="hold_mean"):  # refused before a file is written
    coinrun.build(data_dir=str(tmp_path / "held"), episodes=2, eval_episodes=1, max_steps=20, num_levels=5,
                  policy="held", hold_mean=0.5, progress=False)
  assert not (tmp_path / "held").exists()


def test_coinrun_splits_use_disjoint_levels():
  ranges = [coinrun.level_range(split=s, seed=1, num_levels=100) for s in ("train", "validation", "test")]
  for i in range(3):
    for j in range(i + 1, 3):
      assert ranges[i][1] <= ranges[j][0] or ranges[j][1] <= ranges[i][0]


def _sprite_colour(frames):
  """The colour that newly covered pixels share (uncovered background varies, the sprite not)."""
  t = next(t for t in range(len(frames) - 1) if np.any(frames[t] != frames[t + 1]))
  changed = frames[t + 1][np.any(frames[t] != frames[t + 1], axis=-1)]
  colours, counts = np.unique(changed, axis=0, return_counts=True)
  return colours[np.argmax(counts)].astype(int)


def _sprite_corner(frames, sprite_color):
  """Top-left (row, col) of the sprite in each frame: where every channel is its colour."""
  match = np.all(frames.astype(int) == sprite_color, axis=-1)
  rows, cols = np.argmax(match.any(2), axis=1), np.argmax(match.any(1), axis=1)
  return np.stack([rows, cols], axis=1)


@pytest.mark.parametrize("world", [dict(), dict(sprite=8, speed=4, background="stripes")])
def test_sprites_every_action_decides_the_motion(world):
  ep = sprites.render_episode(seed=3, num_steps=200, **world)
  sprite = world.get("sprite", 12)
  colour = _sprite_colour(ep.frames)
  moves = np.diff(_sprite_corner(ep.frames, colour), axis=0)
  direction = np.sign(moves)
  expected = sprites._MOVES[ep.actions[:-1]]
  np.testing.assert_array_equal(direction, expected)  # stay -> no move; a move is never blocked
  assert np.abs(moves).max() <= world.get("speed", 6) and sprite > 0


def test_sprites_wall_moves_can_be_blocked_and_bad_worlds_are_refused():
  ep = sprites.render_episode(seed=3, num_steps=400, wall_moves=True)
  colour = _sprite_colour(ep.frames)
  still = np.all(np.diff(_sprite_corner(ep.frames, colour), axis=0) == 0, axis=1)
  assert np.any(still & (ep.actions[:-1] != 0))  # a move into a wall looks like "stay"
  with pytest.raises(ValueError, match="sprite"):
    sprites.render_episode(seed=0, num_steps=2, sprite=64)
  with pytest.raises(ValueError, match="background"):
    sprites.render_episode(seed=0, num_steps=2, background="plaid")


def _windows(ds, n):
  return [ds[i] for i in range(n)]


def test_windows_never_cross_episodes(sprites_dir):
  ds, _ = loader.host_dataset(data_dir=sprites_dir, name="sprites", split="train",
                              local_batch_size=4, window=8, stride=2, seed=0)
  source, _ = records.open_split(sprites_dir, "sprites", "train")
  episodes = {}
  for i in range(len(source)):
    r = source[i]
    episodes.setdefault(int(r["episode_id"]), {}).update(
        {int(r["start_frame"]) + k: r["frames"][k] for k in range(r["frames"].shape[0])})
  for batch in _windows(ds, 10):
    for b in range(4):
      ep = episodes[int(batch["episode_id"][b])]
      start = int(batch["start_frame"][b])
      for k in range(8):
        frame_index = start + 2 * k
        assert frame_index in ep  # the window stays inside its episode
        np.testing.assert_array_equal(batch["frames"][b, k], ep[frame_index])


def test_same_seed_same_batches_and_exact_resume(sprites_dir):
  import jax
  from genie_jax import parallel
  mesh = parallel.make_mesh(data=-1)
  cfg = _data_cfg(sprites_dir)
  a = loader.make_iterator(cfg, mesh=mesh, rules=parallel.DEFAULT_RULES, global_batch_size=8, seed=5)
  full = [jax.device_get(next(a)) for _ in range(6)]
  b = loader.make_iterator(cfg, mesh=mesh, rules=parallel.DEFAULT_RULES, global_batch_size=8, seed=5)
  for _ in range(3):
    next(b)
  state = b.get_state()
  c = loader.make_iterator(cfg, mesh=mesh, rules=parallel.DEFAULT_RULES, global_batch_size=8, seed=5)
  c.set_state(state)
  for k in range(3, 6):
    got = jax.device_get(next(c))
    for key in full[k]:
      np.testing.assert_array_equal(got[key], full[k][key])
  assert full[0]["frames"].dtype == np.uint8


def test_datasets_of_either_array_encoding_give_the_same_batches(sprites_dir, tmp_path):
  """Arrays are written as raw bytes now; a dataset written before, under TFDS's default
  encoding, still loads, window for window the same (TFDS reads each dataset's own)."""
  import jax
  from genie_jax import parallel
  old = str(tmp_path / "old")
  sprites.build(data_dir=old, episodes=12, eval_episodes=4, max_steps=40, chunk_size=24, min_frames=16,
                array_encoding="none")
  mesh = parallel.make_mesh(data=-1)
  batches = [loader.make_iterator(_data_cfg(d), mesh=mesh, rules=parallel.DEFAULT_RULES, global_batch_size=8, seed=3)
             for d in (sprites_dir, old)]
  for _ in range(3):
    new_batch, old_batch = (jax.device_get(next(b)) for b in batches)
    for key in new_batch:
      np.testing.assert_array_equal(new_batch[key], old_batch[key])
  with pytest.raises(ValueError, match="array_encoding"):
    sprites.build(data_dir=str(tmp_path / "bad"), episodes=1, eval_episodes=1, max_steps=20, array_encoding="png")


@pytest.mark.eight_devices
def test_batches_are_global_arrays_on_the_mesh(sprites_dir):
  from genie_jax import parallel
  mesh = parallel.make_mesh(data=2, fsdp=2, tensor=2)
  it = loader.make_iterator(_data_cfg(sprites_dir), mesh=mesh, rules=parallel.DEFAULT_RULES,
                            global_batch_size=8, seed=0)
  batch = next(it)
  assert batch["frames"].shape == (8, 8, 64, 64, 3)
  assert batch["frames"].sharding.spec[0] == ("data", "fsdp")


def test_two_processes_get_disjoint_windows(sprites_dir):
  seen = []
  for p in range(2):
    ds, _ = loader.host_dataset(data_dir=sprites_dir, name="sprites", split="train",
                                local_batch_size=2, window=8, seed=0, process_index=p, process_count=2)
    seen.append({(int(e), int(s)) for batch in _windows(ds, 3)
                 for e, s in zip(batch["episode_id"], batch["start_frame"])})
  assert seen[0] and seen[1] and not (seen[0] & seen[1])


def test_window_longer_than_records_is_refused(sprites_dir):
  with pytest.raises(ValueError, match="min_frames"):
    loader.host_dataset(data_dir=sprites_dir, name="sprites", split="train", local_batch_size=2,
                        window=17, seed=0)


def test_missing_dataset_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no dataset 'coinrun'"):
    records.open_split(str(tmp_path), "coinrun", "train")


def test_video_folder_names_the_corrupt_file(tmp_path):
  import imageio.v3 as iio
  src = tmp_path / "videos"
  src.mkdir()
  rng = np.random.default_rng(0)
  iio.imwrite(src / "good.gif", (rng.random((20, 30, 40, 3)) * 255).astype(np.uint8))
  np.save(src / "good2.npy", (rng.random((18, 90, 160, 3)) * 255).astype(np.uint8))
  (src / "broken.mp4").write_bytes(b"this is not a video")
  summaries, failures = video_folder.build(src=str(src), data_dir=str(tmp_path / "d"),
                                           resolution=(90, 160), log=lambda *_: None)
  assert [p for p, _ in failures] == [str(src / "broken.mp4")]
  assert sum(s.episodes_written for s in summaries.values()) == 2
  source, meta = records.open_split(str(tmp_path / "d"), "video_folder", "train")
  r = source[0]
  assert r["frames"].shape[1:] == (90, 160, 3) and (r["actions"] == -1).all()
  with pytest.raises(video_folder.VideoDecodeError, match="broken.mp4"):
    video_folder.build(src=str(src), data_dir=str(tmp_path / "d2"), resolution=(64, 64), on_error="stop")


def _data_cfg(data_dir):
  import ml_collections
  return ml_collections.ConfigDict(dict(name="sprites", data_dir=data_dir, split="train", window=8,
                                        stride=1, num_threads=2))


def test_split_larger_than_the_shuffle_buffer_is_written_without_tensorflow(tmp_path, monkeypatch):
  # TFDS spills a split past MAX_MEM_BUFFER_SIZE (1 GB) to disk through tf.io.gfile; shrink
  # the buffer so this small set spills too, and check every frame comes back intact.
  from tensorflow_datasets.core import shuffle
  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1 << 16)
  sprites.build(data_dir=str(tmp_path), episodes=6, eval_episodes=1, max_steps=20, chunk_size=20,
                min_frames=16)
  source, _ = records.open_split(str(tmp_path), "sprites", "train")
  got = sorted((int(r["episode_id"]), r["frames"].tobytes()) for r in (source[i] for i in range(len(source))))
  assert len(got) == 6
  for episode_id, frames in got:
    assert frames == sprites.render_episode(seed=episode_id, num_steps=20).frames.tobytes()


def test_a_bad_record_stops_naming_its_file_or_is_skipped_and_counted(bad_record_sprites_dir, capsys):
  from data_pipelines import bad_records
  kwargs = dict(data_dir=bad_record_sprites_dir, name="sprites", split="train", local_batch_size=4, window=8,
                shuffle=False, num_epochs=1)
  ds, _ = loader.host_dataset(**kwargs)
  with pytest.raises(bad_records.BadRecordError,
                     match=r"record \d+ of .*/sprites-train\.array_record-00000-of-00001 \(index \d+ of the split\): "
                           r"it cannot be decoded: RuntimeError: Corrupted Riegeli"):
    list(ds)
  counter = bad_records.BadRecordCounter()
  ds, _ = loader.host_dataset(**kwargs, on_bad_record="skip", bad_record_counter=counter)
  assert len(list(ds)) == len(ds) and counter.skipped == 1 and len(counter.distinct) == 1  # batches stay full
  assert "warning: skipping bad record in dataset 'sprites' split 'train': record" in capsys.readouterr().err


def test_a_record_of_the_wrong_shape_is_named_or_replaced_by_the_next():
  from data_pipelines import bad_records
  good = lambda i: {"frames": np.full((16, 8, 8, 3), i, np.uint8), "actions": np.zeros(16, np.int32),
                    "episode_id": i, "start_frame": 0}
  source = [good(0), {**good(1), "frames": np.zeros((16, 4, 8, 3), np.uint8)}, good(2)]
  layout = dict(name="dataset 'x' split 'train'", height=8, width=8, min_frames=16)
  checked = bad_records.CheckedSource(source, **layout)
  assert checked[0]["episode_id"] == 0
  with pytest.raises(bad_records.BadRecordError, match=r"'train': record 1: frames are uint8 \[16, 4, 8, 3\], "
                                                      r"expected uint8 \[N, 8, 8, 3\]"):
    checked[1]
  skipping = bad_records.CheckedSource(source, **layout, on_bad_record="skip")
  assert skipping[1]["episode_id"] == 2 and skipping.counter.skipped == 1
  with pytest.raises(ValueError, match="on_bad_record must be one of"):
    bad_records.CheckedSource(source, **layout, on_bad_record="ignore")


def test_a_truncated_shard_is_named(sprites_dir, tmp_path):
  import glob
  import shutil
  from data_pipelines import bad_records
  shutil.copytree(sprites_dir, str(tmp_path), dirs_exist_ok=True)
  (shard,) = glob.glob(f"{tmp_path}/sprites/*/sprites-train.array_record-*")
  os.truncate(shard, os.path.getsize(shard) * 2 // 3)  # a copy that ran out of disk: no footer
  ds, _ = loader.host_dataset(data_dir=str(tmp_path), name="sprites", split="train", local_batch_size=4,
                              window=8, num_epochs=1)
  with pytest.raises(bad_records.BadRecordError, match=f"of {shard} .*Failed to read RiegeliPostscript"):
    next(iter(ds))
  ds, _ = loader.host_dataset(data_dir=str(tmp_path), name="sprites", split="train", local_batch_size=4,
                              window=8, num_epochs=1, on_bad_record="skip")
  with pytest.raises(bad_records.BadRecordError, match="no readable record found"):  # nothing left to train on
    next(iter(ds))


def test_dataset_commands_print_their_own_summary_not_tfds_chatter(tmp_path):
  out = subprocess.run([sys.executable, "-m", "data_pipelines.sprites", "--data_dir", str(tmp_path),
                        "--episodes", "2", "--eval_episodes", "1", "--max_steps", "20"],
                       capture_output=True, text=True, check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  text = out.stdout + out.stderr
  assert "train: 2 episodes, 40 frames" in out.stdout
  assert "Downloading and preparing" not in text and "Unknown size" not in text
  assert not [line for line in text.splitlines() if line.startswith("I1") or line.startswith("I0")]


def test_coinrun_action_effects_group_the_procgen_keys():
  """CoinRun reads LEFT, RIGHT and UP only: procgen's ids 0-2 go left, 6-8 right, 2/5/8 jump
  (the order of procgen.env.ProcgenGym3Env.get_combos)."""
  effects = coinrun.action_effects(np.arange(15))
  np.testing.assert_array_equal(effects["horizontal"][0], [0, 0, 0, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(np.flatnonzero(effects["jump"][0]), [2, 5, 8])
  labels, count = effects["horizontal x jump"]
  assert count == 6 and len(set(labels.tolist())) == 6
