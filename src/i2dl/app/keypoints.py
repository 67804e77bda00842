"""Keypoints tab: a photo with one or more faces of any size (uploaded or from the webcam) -> every face found by
OpenCV's Haar cascade, cropped like the training faces, its 15 keypoints drawn on the photo, and all of them as a
JSON file to download."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from i2dl.app.common import (
    AppContext,
    AppError,
    TabParts,
    checkpoint_choices,
    read_photo,
    resolve_checkpoint,
    shows_errors,
)

# the keypoints lab, used only here
from i2dl.keypoints.faces import MIN_FACE, detect_faces, faces_json, keypoints_of_faces
from i2dl.keypoints.module import FacialKeypointsRegressor
from i2dl.training import load_module

LAB = "keypoints"
DISPLAY_MAX_SIDE = 1600  # the overlay shown in the page is at most this large (the JSON keeps full resolution)


def choices(ctx: AppContext) -> list[tuple[str, str]]:
    return checkpoint_choices(ctx.runs, LAB)


def draw_faces(image: Image.Image, boxes, keypoints) -> Image.Image:
    """The photo (scaled to at most DISPLAY_MAX_SIDE) with each face's box in green and its keypoints as red dots
    sized to the face."""
    scale = min(1.0, DISPLAY_MAX_SIDE / max(image.size))
    out = (
        image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        if scale < 1
        else image.copy()
    )
    draw = ImageDraw.Draw(out)
    for box, points in zip(boxes, keypoints):
        x, y, w, h = (v * scale for v in (box.x, box.y, box.width, box.height))
        draw.rectangle([x, y, x + w, y + h], outline=(40, 200, 90), width=max(1, round(w / 80)))
        r = max(1.5, w / 45)
        for px, py in (points * scale).tolist():
            draw.ellipse([px - r, py - r, px + r, py + r], fill=(235, 40, 40), outline=(255, 255, 255))
    return out


def find_keypoints(ctx: AppContext, photo, choice: str | None) -> tuple[np.ndarray, str, dict, str]:
    """(overlay RGB array, path of the JSON file, the JSON itself, a one-line summary) for an uploaded photo."""
    path = resolve_checkpoint(ctx.runs, choice, LAB)  # a bad choice is reported before the photo is read
    if photo is None:
        return None, None, None, ""
    image = read_photo(photo)
    name = Path(photo).name if isinstance(photo, (str, Path)) else "photo"
    boxes = detect_faces(image)
    if not boxes:
        raise AppError(
            f"No face found in {name} ({image.width}x{image.height}). The detector finds frontal, "
            f"upright faces of at least {MIN_FACE} pixels; try a photo where the faces look at the camera."
        )
    module = ctx.models.get(LAB, path, lambda p: load_module(FacialKeypointsRegressor, p))
    keypoints = keypoints_of_faces(module.predict_normalised, image, boxes)  # with its test-time flip, if any
    data = faces_json(name, image.width, image.height, boxes, keypoints)
    out = ctx.output_path(f"{Path(name).stem}_keypoints.json")
    out.write_text(json.dumps(data, indent=2) + "\n")
    faces = f"{len(boxes)} face{'s' if len(boxes) != 1 else ''}"
    return (
        np.asarray(draw_faces(image, boxes, keypoints)),
        str(out),
        data,
        f"**{faces}**, 15 keypoints each (in the photo's pixels in the JSON file).",
    )


def build(ctx: AppContext):
    import gradio as gr

    from i2dl.app.components import PhotoInput, checkpoint_picker

    found = choices(ctx)
    checkpoint, hint = checkpoint_picker(found, LAB, ctx.runs, "checkpoint")
    with gr.Row(equal_height=False):
        with gr.Column():
            photo = PhotoInput(
                label="a photo with one or more faces",
                sources=["upload", "webcam", "clipboard"],
                elem_id="keypoints-photo",
                height=420,
            )
        with gr.Column():
            message = gr.Markdown(elem_id="keypoints-message", elem_classes="i2dl-message")
            overlay = gr.Image(
                label="faces and keypoints",
                interactive=False,
                elem_id="keypoints-overlay",
                height=420,
                format="jpeg",
                buttons=["download", "fullscreen"],
            )
            download = gr.File(label="keypoints (JSON)", elem_id="keypoints-json", interactive=False)
            with gr.Accordion("keypoints as JSON", open=False):
                numbers = gr.JSON(elem_id="keypoints-numbers")
    handler = shows_errors(4)(lambda p, c: find_keypoints(ctx, p, c))
    photo.change(
        handler,
        [photo, checkpoint],
        [overlay, download, numbers, message],
        api_name="keypoints",
        trigger_mode="always_last",
    )
    checkpoint.change(handler, [photo, checkpoint], [overlay, download, numbers, message], api_visibility="private")
    return TabParts(checkpoint, hint, choices)
