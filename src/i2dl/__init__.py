"""i2dl: tested reference implementations of classic deep-learning labs (TUM I2DL, MIT 6.S191).

Where things live:
- `cli.py`: `i2dl <lab> <subcommand>`, one entry point; each lab's `cli.py` registers its commands.
- The Lightning-free core every lab uses, RL included: `runs.py` (run folder naming, the lock, `results.json`,
  `i2dl runs`), `files.py` (atomic writes), `checkpoints.py` (safe loading, compatibility checks, RNG states),
  `schedules.py` (the one warm-up + cosine schedule), `hardware.py` (CPU flags, `precision: auto`), `configs/`
  (the shipped YAML configs).
- `training.py`: the thin Lightning layer of the four supervised labs (LabCLI, LabTrainer, figure callbacks' base);
  `viz.py`, `export.py`, `layers.py`: figures, ONNX export and layers that several labs share.
- `data/`: readers two or more labs share. One folder per lab: `digits/`, `autoencoder/`, `keypoints/`,
  `segmentation/`, `rl/`; `app/` is the web app.
"""

__version__ = "0.1.0"
