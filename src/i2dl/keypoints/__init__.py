"""I2DL facial keypoints: a CNN that regresses 15 keypoints on 96x96 grey faces (Kaggle's CSV layout)."""
