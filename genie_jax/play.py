r"""Play a trained world model, in a window or headless.

    python -m genie_jax.play --workdir runs/quickstart/lam_dynamics [--prompt image.png]
        number keys 0..A-1 step the world with that latent action; R restarts from the
        prompt; Esc or Q quits. --record run.gif (or .mp4) saves the session on exit.
    python -m genie_jax.play --workdir W --actions 0,3,3,1 --out run.gif
        headless: rolls those actions out and writes the frames, no window.

Without --prompt, the first frame of a clip from the workdir's validation split is used.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags

from genie_jax import media

def parse_actions(text: str, num_actions: int) -> list[int]:
  """"0,3,3,1" -> [0, 3, 3, 1]; a clear error for anything else or out of 0..A-1."""
  items = [t.strip() for t in text.split(",") if t.strip()]
  if not items:
    raise ValueError(f"--actions {text!r} holds no action; give e.g. --actions 0,3,3,1")
  actions = []
  for item in items:
    try:
      actions.append(int(item))
    except ValueError:
      raise ValueError(f"--actions: {item!r} is not an integer latent action") from None
  bad = [a for a in actions if not 0 <= a < num_actions]
  if bad:
    raise ValueError(f"--actions: latent action {bad[0]} is out of range: this model has "
                     f"{num_actions} latent actions (0..{num_actions - 1})")
  return actions


def default_prompt(genie) -> np.ndarray:
  """The first frame of the first validation record of the data the model was trained on."""
  from data_pipelines import records  # pylint: disable=g-import-not-at-top
  data = genie.config.data
  try:
    source, _ = records.open_split(data.data_dir, data.name, data.eval_split)
  except (FileNotFoundError, ValueError) as e:
    raise FileNotFoundError(f"no --prompt given and the training data is not readable ({e}); "
                            "pass --prompt image.png") from e
  return np.asarray(source[0]["frames"][:1])


def run_headless(genie, prompt, actions: list[int], out: str, *, fps: float, scale: int, seed: int) -> str:
  start = time.perf_counter()
  frames = genie.rollout(prompt, actions, seed=seed)[0]
  first = genie.prompt_frames(prompt)[0, -1:]
  path = media.write_video(out, np.concatenate([first, frames]), fps=fps, scale=scale)
  print(f"{len(actions)} frames in {time.perf_counter() - start:.1f} s (compile included) -> {path}")
  return path


def run_window(genie, prompt, *, scale: int, record: str | None, fps: float,
               max_frames: int | None = None, scripted_keys: list[int] | None = None) -> list[np.ndarray]:
  """The interactive loop. `scripted_keys`/`max_frames` drive it without a person (tests)."""
  import pygame  # pylint: disable=g-import-not-at-top
  pygame.init()
  height, width, _ = genie.frame_shape
  legend_height = 48
  screen = pygame.display.set_mode((width * scale, height * scale + legend_height))
  pygame.display.set_caption("genie_jax: keys 0-%d act, R restart, Esc quit" % (genie.num_actions - 1))
  font = pygame.font.Font(None, 22)
  state = genie.start(prompt)
  frame = genie.prompt_frames(prompt)[0, -1]
  session = [frame]
  fps_shown, last_action = 0.0, None
  keys = {getattr(pygame, f"K_{i}"): i for i in range(min(genie.num_actions, 10))}
  keys.update({getattr(pygame, f"K_KP{i}"): i for i in range(min(genie.num_actions, 10))})
  running, script = True, list(scripted_keys or [])

  def draw():
    surface = pygame.surfarray.make_surface(media.upscale(frame, scale).swapaxes(0, 1))
    screen.fill((20, 20, 20))
    screen.blit(surface, (0, 0))
    lines = [f"latent actions: keys 0..{genie.num_actions - 1}   R: restart   Esc: quit",
             f"last action: {last_action if last_action is not None else '-'}   "
             f"{fps_shown:.1f} frames/s   frame {len(session) - 1}"]
    for i, line in enumerate(lines):
      screen.blit(font.render(line, True, (230, 230, 230)), (6, height * scale + 4 + 20 * i))
    pygame.display.flip()

  draw()
  while running:
    events = pygame.event.get()
    if script:
      events.append(pygame.event.Event(pygame.KEYDOWN, key=script.pop(0)))
    for event in events:
      if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key in (pygame.K_ESCAPE, pygame.K_q)):
        running = False
      elif event.type == pygame.KEYDOWN and event.key == pygame.K_r:
        state, frame, last_action = genie.start(prompt), genie.prompt_frames(prompt)[0, -1], None
        session.append(frame)
      elif event.type == pygame.KEYDOWN and event.key in keys:
        last_action = keys[event.key]
        start = time.perf_counter()
        state, frames = genie.step(state, last_action)
        fps_shown = 1.0 / (time.perf_counter() - start)
        frame = frames[0]
        session.append(frame)
    draw()
    if max_frames is not None and len(session) > max_frames:
      running = False
    if not script and scripted_keys is not None:
      running = False
    if not events:
      time.sleep(0.01)
  pygame.quit()
  if record:
      print(f"session -> {media.write_video(record, np.stack(session), fps=fps, scale=scale)}")
  return session


def define_flags():
  """The command line's flags, defined only when run as a command (the quickstart, tests and
  the notebook import this module's functions)."""
  flags.DEFINE_string("workdir", None, "Phase-2 (lam_dynamics) workdir.", required=True)
  flags.DEFINE_string("tokenizer_workdir", None, "Tokenizer workdir (default: the one the run used).")
  flags.DEFINE_string("prompt", None, "Image or video to start from (default: a validation clip).")
  flags.DEFINE_string("actions", None, "Headless: comma-separated latent actions, e.g. 0,3,3,1.")
  flags.DEFINE_string("out", None, "Headless: where to write the rollout (.gif or .mp4).")
  flags.DEFINE_string("record", None, "Window: save the session to this .gif or .mp4 on exit.")
  flags.DEFINE_integer("scale", 6, "Window/recording pixels per model pixel.")
  flags.DEFINE_float("fps", 10.0, "Frame rate of written videos.")
  flags.DEFINE_integer("steps", None, "MaskGIT steps per frame (default: the config's).")
  flags.DEFINE_float("temperature", None, "Sampling temperature (default: the config's).")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")


def main(argv):
  del argv
  f = flags.FLAGS
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from genie_jax.genie import Genie  # pylint: disable=g-import-not-at-top
  if (f.actions is None) != (f.out is None):
    sys.exit("error: headless play needs both --actions and --out")
  try:
    for path in (f.out, f.record):  # a bad file name fails now, not after the rollout
      if path:
        media.check_video_path(path)
    genie = Genie.load(f.workdir, tokenizer_workdir=f.tokenizer_workdir, steps=f.steps,
                       temperature=f.temperature, seed=f.seed)
    actions = parse_actions(f.actions, genie.num_actions) if f.actions is not None else None
    prompt = genie.prompt_frames(f.prompt) if f.prompt else default_prompt(genie)
    if actions is not None:
      run_headless(genie, prompt, actions, f.out, fps=f.fps, scale=f.scale, seed=f.seed)
    else:
      run_window(genie, prompt, scale=f.scale, record=f.record, fps=f.fps)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
