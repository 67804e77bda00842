"""I2DL facial keypoints: a CNN that regresses 15 keypoints on 96x96 grey faces (Kaggle's CSV layout).

`kaggle_csv.py` reads Kaggle's files (training/test CSV, lookup table), `data.py` the datamodule with
keypoint-aware augmentation, `model.py` the networks, `module.py` the LightningModule and the lab's metrics,
`predict.py` keypoints for any photo (letterboxed) and Kaggle submissions, `faces.py` finds faces in a photo,
`figures.py` the figures and their callback, `cli.py` is `i2dl keypoints ...`.
"""
