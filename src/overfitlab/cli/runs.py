"""``overfitlab runs``: list, show and compare the runs in the index; rebuild it from the folders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OverfitlabError, did_you_mean
from ..history import History
from ..metrics import SHORT_LABELS
from ..store import HISTORY_JSON, atomic_write, check_writable
from ..studies.index import INDEX, RUN_COLUMNS, RunIndex, rebuild_index

if TYPE_CHECKING:
    from collections.abc import Callable

    from matplotlib.figure import Figure

    from ._common import SubParsers

# Labels from overfitlab.metrics: the same words as summary.txt and the study's table.
LIST_COLUMNS = (
    ("run", "run_id"),
    ("status", "status"),
    ("epochs", "epochs_run"),
    *((SHORT_LABELS[key], key) for key in ("final_valid_acc", "final_gap_acc", "peak_valid_acc")),
    (SHORT_LABELS["lowest_valid_loss"], "lowest_valid_loss"),
    ("seconds", "seconds"),
)
# Every column of a run row but its config (shown on its own), in the index's order.
SUMMARY_FIELDS = tuple(column for column in RUN_COLUMNS if column != "config")
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "gap_acc", "epoch_seconds")


def text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    return (
        "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head] + rows
        )
        + "\n"
    )


def open_index(runs_dir: str) -> RunIndex:
    path = Path(runs_dir) / INDEX
    if not path.is_file():
        raise OverfitlabError(
            f"no run index at {path}: run `overfitlab train` or `overfitlab study` "
            "first, pass --runs-dir, or `overfitlab runs rebuild`"
        )
    return RunIndex(path)


def folder_name(run_id: str) -> str:
    """A run's folder name: the id of a train run, the part after "study/" of a study's run."""
    return run_id.rsplit("/", 1)[-1]


def find_run(index: RunIndex, name: str) -> dict[str, Any]:
    """A run by id (study/run, or a train run's name), by folder name when unique, or by the
    path of its folder."""
    row = index.run(name)
    if row is not None:
        return row
    rows = index.runs()
    path = Path(name).resolve()
    by_path = [r for r in rows if r["run_dir"] and Path(r["run_dir"]).resolve() == path]
    if by_path:
        return by_path[0]
    by_folder = [r for r in rows if folder_name(r["run_id"]) == folder_name(name.rstrip("/"))]
    if len(by_folder) == 1:
        return by_folder[0]
    if len(by_folder) > 1:
        raise OverfitlabError(
            f"run {name!r} is in several studies: pass one of {', '.join(r['run_id'] for r in by_folder)}"
        )
    ids = [r["run_id"] for r in rows]
    close = did_you_mean(name, ids, n=5, cutoff=0.5) or did_you_mean(
        folder_name(name), [folder_name(i) for i in ids], n=5, cutoff=0.5
    )
    hint = close.rstrip() or "see `overfitlab runs list`"
    raise OverfitlabError(f"no run {name!r} in {index.path}: {hint}")


def load_history(row: dict[str, Any]) -> History:
    path = Path(row["run_dir"] or "") / HISTORY_JSON
    if not path.is_file():
        raise OverfitlabError(
            f"run {row['run_id']} has no history ({path} missing): its status is {row['status']}"
        )
    try:
        return History.from_json(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise OverfitlabError(f"{path} is corrupt ({err})") from None


# --------------------------------------------------------------------------- commands
def list_runs(args: argparse.Namespace) -> int:
    with open_index(args.runs_dir) as index:
        if args.study is not None and index.study(args.study) is None:
            known = [s["name"] for s in index.studies()]
            close = did_you_mean(args.study, known, n=5, cutoff=0.5).rstrip()
            raise OverfitlabError(
                f"no study {args.study!r} in {index.path}: "
                + (close or f"known studies are {', '.join(known) or 'none'}")
            )
        rows = index.runs(args.study)
    if args.json:
        print(json.dumps(rows))
        return 0
    body = [[text(r[key]) for _, key in LIST_COLUMNS] for r in rows]
    print(render_table([label for label, _ in LIST_COLUMNS], body), end="")
    return 0


def show_run(args: argparse.Namespace) -> int:
    with open_index(args.runs_dir) as index:
        row = find_run(index, args.run)
    history = load_history(row) if row["run_dir"] and Path(row["run_dir"], HISTORY_JSON).is_file() else None
    if args.json:
        print(json.dumps({**row, "history": history.epochs if history else None}))
        return 0
    print("config")
    for key, value in (row["config"] or {}).items():
        if value is not None:
            print(f"  {key} = {value}")
    print("summary")
    width = max(len(f) for f in SUMMARY_FIELDS)
    for key in SUMMARY_FIELDS:
        if key != "config":
            print(f"  {key:<{width}}  {text(row[key])}")
    if history is not None and len(history):
        print("history")
        body = [[text(e.get(c)) for c in HISTORY_COLUMNS] for e in history.epochs]
        print(
            "".join("  " + line + "\n" for line in render_table(list(HISTORY_COLUMNS), body).splitlines()),
            end="",
        )
    return 0


def compare_figure(histories: dict[str, History]) -> Figure:
    """Loss and accuracy of several runs: a colour per run, train dashed, valid solid."""
    # start-up: loaded for this command only (torch, matplotlib, scipy)
    from ..viz.plots import TRAIN_STYLE, VALID_STYLE, integer_epochs, new_figure

    fig, axes = new_figure(1, 2, figsize=(11, 4))
    for ax, metric, label in zip(axes, ("loss", "acc"), ("cross-entropy loss", "accuracy"), strict=True):
        for number, (name, history) in enumerate(histories.items()):
            color = f"C{number % 10}"
            epochs = history.column("epoch")
            ax.plot(
                epochs,
                history.column(f"train_{metric}"),
                color=color,
                linestyle=TRAIN_STYLE["linestyle"],
                label=f"{name} train",
            )
            ax.plot(
                epochs,
                history.column(f"valid_{metric}"),
                color=color,
                linestyle=VALID_STYLE["linestyle"],
                label=f"{name} valid",
            )
        ax.set_xlabel("epoch")
        integer_epochs(ax)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return fig


def compare_runs(args: argparse.Namespace) -> int:
    if len(args.runs) < 2:
        raise OverfitlabError("compare needs two runs or more: overfitlab runs compare RUN RUN ...")
    with open_index(args.runs_dir) as index:
        rows = [find_run(index, name) for name in args.runs]
    configs = [row["config"] or {} for row in rows]
    differing = [
        k
        for k in dict.fromkeys(k for c in configs for k in c)
        if len({json.dumps(c.get(k)) for c in configs}) > 1
    ]
    if args.json:
        print(json.dumps({"runs": rows, "differing_config": differing}))
    else:
        fields = [
            f for f in SUMMARY_FIELDS if f not in ("run_id", "run_dir", "started_at", "ended_at", "error")
        ]
        head = ["field"] + [r["run_id"] for r in rows]
        body = [[f] + [text(r[f]) for r in rows] for f in fields]
        body += [[f"config.{k}"] + [text(c.get(k)) for c in configs] for k in differing]
        print(render_table(head, body), end="")
    if args.plot:
        # start-up: loaded for this command only (torch, matplotlib, scipy)
        from ..viz.plots import figure_png

        histories = {row["run_id"]: load_history(row) for row in rows}
        atomic_write(args.plot, figure_png(compare_figure(histories)))
        if not args.json:
            print(f"plot: {args.plot}")
    return 0


def rebuild(args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise OverfitlabError(f"no runs folder {runs_dir}: pass --runs-dir")
    check_writable(runs_dir, "runs folder", "--runs-dir")
    studies, count, kept = rebuild_index(runs_dir)
    if kept is not None:
        print(f"the corrupt index was kept as {kept}")
    print(f"rebuilt {runs_dir / INDEX}: {studies} studies, {count} runs")
    return 0


def add_parser(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "runs",
        help="list, show and compare recorded runs",
        description="Read the run index (RUNS_DIR/index.sqlite).",
    )
    sub = parser.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True

    def action(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--runs-dir", default="runs", help="folder holding index.sqlite (default: runs)")
        p.set_defaults(handler=handler)
        return p

    p = action("list", list_runs, "one line per run")
    p.add_argument("--study", help="only this study's runs")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p = action("show", show_run, "a run's config, summary and history")
    p.add_argument("run", help="run id (study/run), or a run folder name or path")
    p.add_argument("--json", action="store_true", help="print the row and history as JSON")
    p = action("compare", compare_runs, "runs side by side, with their differing config fields")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (study/run), folder names or paths")
    p.add_argument("--plot", metavar="FILE.png", help="also draw their learning curves")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    action("rebuild", rebuild, "recreate the index from the study and run folders")
