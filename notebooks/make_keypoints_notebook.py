"""Writes notebooks/keypoints.ipynb (outputs empty). Run: python notebooks/make_keypoints_notebook.py"""

from pathlib import Path

import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell("""# Facial keypoints (I2DL)

A CNN that finds 15 keypoints (eye centres and corners, eyebrows, nose tip, mouth) on 96x96 grey faces stored in
Kaggle's "Facial Keypoints Detection" CSV layout. The course's score is 1 / (2 MSE) on coordinates normalised to
[-1, 1] by (pixel - 48) / 48; Kaggle's metric is the RMSE in pixels. Everything here is also a command:
`i2dl keypoints fit -c configs/keypoints/keypointnet.yaml`.

With `I2DL_NOTEBOOK_SMOKE=1` (the tests) the notebook uses a few faces and a few steps."""),
    nbf.v4.new_code_cell("""import os
from pathlib import Path

import lightning as L
import torch

from i2dl.data import resolve_data_dir
from i2dl.keypoints.kaggle_csv import KEYPOINT_NAMES, read_keypoints_csv, split_path
from i2dl.keypoints.data import FacialKeypointsDataModule, KeypointAugment, pack_targets
from i2dl.keypoints.figures import plot_keypoint_grid
from i2dl.keypoints.module import FacialKeypointsRegressor

SMOKE = os.environ.get("I2DL_NOTEBOOK_SMOKE") == "1"
torch.set_num_threads(1 if SMOKE else torch.get_num_threads())
DATA = resolve_data_dir(None)
OUT = Path(os.environ.get("I2DL_RUNS", "runs")) / "keypoints" / "notebook"
print("data:", DATA / "facial_keypoints", "| outputs:", OUT, "| smoke:", SMOKE)"""),
    nbf.v4.new_markdown_cell("""## The data
One row per face: 30 coordinates (x, y of each keypoint, in pixels; "left" is the subject's left, so it lies on
the image's right) and 9,216 grey values. The reader keeps them in memory as one uint8 tensor."""),
    nbf.v4.new_code_cell("""val = read_keypoints_csv(split_path(DATA, "val"))
train = val.subset(slice(0, 64)) if SMOKE else read_keypoints_csv(split_path(DATA, "train"))
print(f"train {len(train)} faces, val {len(val)} faces; images {tuple(val.images.shape)} {val.images.dtype}")
print("keypoints:", ", ".join(KEYPOINT_NAMES))
x = val.images[:12].unsqueeze(1).float() / 255
truth = pack_targets(val.keypoints[:12], val.visible[:12])
plot_keypoint_grid(x, truth[..., :2].flatten(1), None, OUT / "faces.png", title="val faces and their keypoints")"""),
    nbf.v4.new_markdown_cell("""## Augmentation that respects keypoints
A horizontal flip must also swap the names: the subject's left eye becomes the right one. Rotation, scale and
shift come from `torchvision.transforms.v2` acting on the image and `tv_tensors.KeyPoints` together."""),
    nbf.v4.new_code_cell("""augment = KeypointAugment(max_rotation=15, max_scale=0.1, max_shift=0.05)
xa, points, seen = augment(x[:6].repeat(2, 1, 1, 1), val.keypoints[:6].repeat(2, 1, 1), val.visible[:6].repeat(2, 1),
                           torch.Generator().manual_seed(0))
plot_keypoint_grid(xa, pack_targets(points, seen)[..., :2].flatten(1), None, OUT / "augmented.png",
                   title="augmented faces: the keypoints move with the image")"""),
    nbf.v4.new_markdown_cell("""## Training
`FacialKeypointsRegressor` wraps a plain `nn.Module` (`KeypointNet`, under 0.5M parameters) with the MSE loss,
the course's score and the RMSE in pixels. The full run (`configs/keypoints/keypointnet.yaml`) takes about half
an hour on a 2-core CPU; here a short one shows the mechanics."""),
    nbf.v4.new_code_cell("""data = FacialKeypointsDataModule(batch_size=16 if SMOKE else 64)
data.train, data.val, data.test = train, val.subset(slice(0, 32 if SMOKE else None)), None
model = FacialKeypointsRegressor(arch="keypointnet", width=16, lr=3e-3, optimizer="adamw", schedule="onecycle")
trainer = L.Trainer(max_epochs=1 if SMOKE else 5, limit_train_batches=2 if SMOKE else None,
                    default_root_dir=OUT, logger=False, enable_checkpointing=False, enable_progress_bar=not SMOKE,
                    enable_model_summary=False)
trainer.fit(model, datamodule=data)
metrics = trainer.validate(model, datamodule=data, verbose=False)[0]
print({k: round(v, 3) for k, v in metrics.items()})"""),
    nbf.v4.new_markdown_cell("## Predictions: green true, red predicted"),
    nbf.v4.new_code_cell("""model.eval()
with torch.no_grad():
    pred = model(x)
plot_keypoint_grid(x, pred, truth, OUT / "predictions.png", title="val faces (green: true, red: predicted)")"""),
    nbf.v4.new_markdown_cell("""## From here
- `i2dl keypoints fit -c configs/keypoints/keypointnet.yaml`: the full run, with test metrics and figures in
  `runs/keypoints/keypointnet/`.
- `i2dl keypoints predict --ckpt_path runs/keypoints/keypointnet/checkpoints/best.ckpt face.jpg`: overlay PNG and
  JSON in the photo's own pixels; `--kaggle_test test.csv --id_lookup IdLookupTable.csv` writes a submission.
- `i2dl keypoints export --ckpt_path ...`: ONNX, checked against onnxruntime."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
nbf.write(nb, Path(__file__).with_name("keypoints.ipynb"))
