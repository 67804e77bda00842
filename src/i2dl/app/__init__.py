"""`i2dl app`: every lab in the browser (Gradio), one module per tab.

`server.py` builds the page and serves it; `common.py` holds what every tab shares (the runs folder, checkpoint
choices, safe image reading, the message shown when something is wrong); `digits.py`, `autoencoder.py`,
`keypoints.py`, `segmentation.py`, `rl.py` and `runs.py` are the tabs. Each tab keeps its imports of its lab in one
place, and its work in plain functions (tested without a browser) apart from the Gradio layout.
"""
