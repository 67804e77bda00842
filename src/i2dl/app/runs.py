"""Runs tab: every run folder under the runs folder with its lab, config, status, headline metric, time and
figures, in a table sorted by clicking a column; pick a run to see its figures and results.json."""

from __future__ import annotations

import pandas as pd

from i2dl.app.common import LABS, AppContext, AppError, find_runs, shows_errors

COLUMNS = ["updated (UTC)", "lab", "config", "status", "headline", "value", "minutes", "steps", "run folder"]
WIDTHS = ["135px", "100px", "130px", "90px", "180px", "75px", "80px", "75px", "200px"]
FIGURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
MAX_FIGURES = 24


def table(ctx: AppContext, lab: str | None = None) -> pd.DataFrame:
    """One row per run folder, newest first (columns: COLUMNS)."""
    rows = []
    for run in find_runs(ctx.runs):
        if lab and lab != "all" and run.lab != lab:
            continue
        rows.append(
            [
                run.updated[:16].replace("T", " "),
                run.lab,
                run.config,
                run.status,
                run.metric or "",
                None if run.value is None else round(run.value, 4),
                None if run.wall_time is None else round(run.wall_time / 60, 2),
                run.steps,
                run.rel,
            ]
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def run_choices(ctx: AppContext) -> list[tuple[str, str]]:
    return [(f"{run.rel} · {run.lab} · {run.status}", run.rel) for run in find_runs(ctx.runs)]


def details(ctx: AppContext, rel: str | None) -> tuple[list[tuple[str, str]], dict, str]:
    """(figures as (path, caption), results.json, summary) of the run folder `rel` (relative to the runs folder;
    anything else is refused)."""
    if not rel:
        return [], {}, "Pick a run (or click a row of the table)."
    runs = {run.rel: run for run in find_runs(ctx.runs)}
    if rel not in runs:
        raise AppError(f"`{rel}` is not a run folder under `{ctx.runs}`")
    run = runs[rel]
    figures = []
    folder = run.run_dir / "figures"
    candidates = sorted(folder.iterdir()) if folder.is_dir() else []
    candidates += sorted(p for p in run.run_dir.iterdir() if p.suffix.lower() in FIGURE_SUFFIXES)
    for path in candidates:
        if path.suffix.lower() in FIGURE_SUFFIXES and path.is_file() and not path.is_symlink():
            figures.append(path)
    value = "" if run.value is None else f" {run.value:.4g}"
    headline = f"{run.metric}{value}" if run.metric else "no headline metric"
    return (
        [(ctx.publish(path), path.name) for path in figures[:MAX_FIGURES]],
        run.results,
        f"**{run.rel}**: {run.lab}, {run.config}, {run.status}, {headline}, {len(figures)} figure(s)",
    )


def build(ctx: AppContext):
    import gradio as gr

    with gr.Row():
        lab = gr.Dropdown(["all", *LABS], value="all", label="lab", elem_id="runs-lab", scale=1)
        refresh = gr.Button("Refresh", elem_id="runs-refresh", scale=0)
    listing = gr.Dataframe(
        table(ctx),
        label="run folders (click a column to sort, a row to open it)",
        interactive=False,
        elem_id="runs-table",
        show_search="search",
        wrap=True,
        column_widths=WIDTHS,
        max_height=420,
        datatype=["str", "str", "str", "str", "str", "number", "number", "number", "str"],
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            found = run_choices(ctx)
            run = gr.Dropdown(found, value=None, label="run", elem_id="runs-run", allow_custom_value=True)
            message = gr.Markdown(elem_id="runs-message", elem_classes="i2dl-message")
            with gr.Accordion("results.json", open=False):
                results = gr.JSON(elem_id="runs-results")
        with gr.Column(scale=2):
            figures = gr.Gallery(
                label="figures",
                columns=2,
                height=520,
                elem_id="runs-figures",
                object_fit="contain",
                buttons=["download", "fullscreen"],
            )

    def reload(selected_lab):
        return table(ctx, selected_lab), gr.Dropdown(choices=run_choices(ctx))

    def pick(frame, evt):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return frame.iloc[int(row)]["run folder"]

    pick.__annotations__["evt"] = gr.SelectData  # Gradio finds the event by its type (no string annotation)

    show = shows_errors(3)(lambda r: details(ctx, r))
    lab.change(reload, lab, [listing, run], api_visibility="private")
    refresh.click(reload, lab, [listing, run], api_name="runs")
    listing.select(pick, listing, run, api_visibility="private")
    run.change(show, run, [figures, results, message], api_name="run_details")

    def on_page_load(page) -> None:
        page.load(reload, lab, [listing, run], api_visibility="private", show_progress="hidden")

    return on_page_load
