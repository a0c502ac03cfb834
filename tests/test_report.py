"""The study report: numbers equal to the index's, one offline file, every user string escaped."""

from __future__ import annotations

import base64
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from overfitlab.cli import main
from overfitlab.curves import mean_curve
from overfitlab.errors import OverfitlabError
from overfitlab.history import History
from overfitlab.stats import Summary, describe
from overfitlab.studies.report import curve_figures, render_report, write_report
from overfitlab.studies.report_data import StudyData, load_study
from overfitlab.viz.study_plots import gap_figure, grid_figure, small_multiples_figure

TINY = dict(dataset="digits", train_size=200, epochs=2, batch_size=32)
VARIANTS = [("baseline", {}), ("dropout", {"dropout": 0.3})]
SEEDS = (0, 1)
BROKEN = "impossible"


# --------------------------------------------------------------------------- a tiny real study
def build_tiny_study(runs_dir: Path) -> Path:
    """2 variants × 2 seeds on digits, 2 epochs each, through the study engine and its index.

    A third variant with an impossible dropout fails before training: the page must list it.
    """
    from overfitlab.studies.loop import run_study
    from overfitlab.studies.spec import make_spec

    spec = make_spec(
        TINY,
        [*VARIANTS, (BROKEN, {"dropout": 1.5})],
        seeds=list(SEEDS),
        name="tiny",
        description="tiny <study> & test",
    )
    run_study(spec, runs_dir, "tiny", backend="serial", threads=1, report=False)
    return runs_dir


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> Path:
    return build_tiny_study(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def tiny(tiny_runs) -> StudyData:
    return load_study(tiny_runs, "tiny")


@pytest.fixture(scope="module")
def page(tiny_runs) -> str:
    path = write_report(tiny_runs, "tiny")
    assert path == tiny_runs / "tiny" / "report.html"
    return path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- reading the page back
class DataCells(HTMLParser):
    """Every element's data-* attributes, plus tags, sources and text seen."""

    def __init__(self):
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.tags: list[str] = []
        self.sources: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attributes = dict(attrs)
        data = {k[5:]: v for k, v in attributes.items() if k.startswith("data-")}
        if data:
            self.cells.append(data)
        for key in ("src", "href"):
            if key in attributes:
                self.sources.append(attributes[key])

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> DataCells:
    parser = DataCells()
    parser.feed(page)
    return parser


def by_hand(values: list[float], metric: str = "") -> tuple[float, float, float, float]:
    """mean, sample std, and the t-interval ȳ ∓ t_{0.975, n−1}·s_y/√n of y = the values on the
    metric's scale, mapped back: logits for accuracies, logarithms for losses and counts."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = x.sum() / n
    s = math.sqrt(((x - mean) ** 2).sum() / (n - 1))
    scale = {"peak_valid_acc": "logit", "lowest_valid_loss": "log", "params": "log"}.get(metric)
    if scale == "logit":
        c = np.clip(x, 1e-4, 1 - 1e-4)
        y, back = np.log(c / (1 - c)), lambda v: 1 / (1 + math.exp(-v))
    elif scale == "log":
        y, back = np.log(x), math.exp
    else:
        y, back = x, lambda v: v
    centre = y.sum() / n
    half = scipy_stats.t.ppf(0.975, n - 1) * math.sqrt(((y - centre) ** 2).sum() / (n - 1)) / math.sqrt(n)
    return mean, s, min(back(centre - half), mean), max(back(centre + half), mean)


# --------------------------------------------------------------------------- tests
def test_variant_numbers_equal_the_rows(tiny, page):
    cells = [c for c in parse(page).cells if "run-metric" in c]
    checked = 0
    for metric in ("peak_valid_acc", "lowest_valid_loss", "final_gap_acc", "final_gap_loss", "params"):
        for variant, _ in VARIANTS:
            values = [r[metric] for r in tiny.rows if r["variant"] == variant and r["status"] == "complete"]
            [cell] = [c for c in cells if c["run-metric"] == metric and c["variant"] == variant]
            mean, s, low, high = by_hand(values, metric)
            assert int(cell["n"]) == len(SEEDS)
            assert float(cell["value"]) == pytest.approx(mean, rel=1e-12)
            assert float(cell["std"]) == pytest.approx(s, rel=1e-9, abs=1e-15)
            if s > 0:
                assert float(cell["low"]) == pytest.approx(low, rel=1e-9)
                assert float(cell["high"]) == pytest.approx(high, rel=1e-9)
            checked += 1
    assert checked == 10


def test_paired_difference_equals_hand_computation(tiny, page):
    cells = parse(page).cells
    [cell] = [c for c in cells if c.get("compare-metric") == "final_gap_acc" and c["variant"] == "dropout"]
    gap = {(r["variant"], r["seed"]): r["final_gap_acc"] for r in tiny.rows if r["status"] == "complete"}
    d = np.array([gap[("dropout", s)] - gap[("baseline", s)] for s in SEEDS])
    mean, s, low, high = by_hand(list(d))
    assert int(cell["n"]) == 2
    assert float(cell["value"]) == pytest.approx(mean, rel=1e-12, abs=1e-15)
    if s > 0:
        assert float(cell["low"]) == pytest.approx(low, rel=1e-9)
        t = mean / (s / math.sqrt(len(d)))
        assert float(cell["p"]) == pytest.approx(2 * scipy_stats.t.sf(abs(t), len(d) - 1), rel=1e-9)


class Tables(HTMLParser):
    """Each table's header texts and, per body row, its cells' text and data-* attributes."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, dict[str, list]] = {}
        self._table: dict[str, list] | None = None
        self._cell: dict[str, str] | None = None
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attributes.get("class") or "", {"head": [], "rows": []})
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr" and self._table is not None and not self._in_head:
            self._table["rows"].append([])
        elif tag in ("th", "td") and self._table is not None:
            self._cell = {"text": "", **{k[5:]: v or "" for k, v in attrs if k.startswith("data-")}}

    def handle_endtag(self, tag):
        if tag == "thead":
            self._in_head = False
        elif tag in ("th", "td") and self._cell is not None and self._table is not None:
            if self._in_head:
                self._table["head"].append(self._cell["text"].strip())
            else:
                self._table["rows"][-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def test_the_comparison_tables_header_names_each_of_its_columns(tiny, page):
    """Header and cells read together: as many headers as cells in every row, each metric's
    header above the cells of that metric (the old header had one column fewer than its rows,
    so "Δ gap (acc)" stood above the accuracy differences), sorted by the effect on the
    returned model's valid accuracy."""
    from overfitlab.studies.report_data import COMPARISON_HEADERS

    tables = Tables()
    tables.feed(page)
    compare = tables.tables["compare"]
    assert compare["head"][0] == "remedy" and compare["head"][-1] == "answer"
    assert compare["rows"]
    for cells in compare["rows"]:
        assert len(cells) == len(compare["head"])
        for header, cell in zip(compare["head"][1:-1], cells[1:-1], strict=True):
            assert COMPARISON_HEADERS[cell["compare-metric"]] == header
    effects = [float(r[1]["value"]) for r in compare["rows"] if r[1].get("value") not in (None, "nan")]
    assert effects == sorted(effects, reverse=True)
    assert compare["head"][1] == "Δ final valid acc (model returned)"
    variants = tables.tables["variants"]
    assert variants["head"][2] == "final valid accuracy (model returned)"  # after variant and n


def test_per_run_numbers_equal_the_rows(tiny, page):
    cells = {
        (c["run-id"], c["metric"]): float(c["value"])
        for c in parse(page).cells
        if "run-id" in c and "metric" in c
    }
    for row in tiny.rows:
        if row["status"] == "complete":
            assert cells[(row["run_id"], "peak_valid_acc")] == row["peak_valid_acc"]
            assert cells[(row["run_id"], "final_gap_acc")] == row["final_gap_acc"]
            assert cells[(row["run_id"], "stop_epoch")] == row["epochs_run"]


def test_page_is_self_contained(page):
    seen = parse(page)
    assert "script" not in seen.tags and "link" not in seen.tags and "iframe" not in seen.tags
    assert seen.sources and all(s.startswith("data:image/png;base64,") for s in seen.sources)
    for source in seen.sources:
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # With the images taken out, nothing may point anywhere: no URL, no CSS import or url().
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page).lower()
    assert not re.search(r"https?:|url\(|@import|//[a-z0-9]|<object|<embed", text)
    assert '<meta name="viewport"' in page


def test_user_strings_are_escaped(tiny, page):
    assert "tiny &lt;study&gt; &amp; test" in page  # the spec's description
    hostile = "x<script>alert(1)</script>&\"'"
    rows = [
        dict(
            r,
            variant=hostile if r["variant"] == "dropout" else r["variant"],
            run_id=r["run_id"] + hostile,
            error=hostile,
            stop_reason=hostile,
        )
        for r in tiny.rows
    ]
    study = dict(
        tiny.study,
        environment={hostile: hostile},
        spec=dict(
            tiny.study["spec"],
            description=hostile,
            base={"dataset": hostile},
            variants=[{"name": hostile, "overrides": {"model": hostile}}],
        ),
    )
    # strict=False: the hostile rows outnumber the histories; the extra rows get none.
    evil = render_report(
        StudyData(
            hostile,
            study,
            rows,
            {r["run_id"]: h for r, h in zip(rows, tiny.histories.values(), strict=False)},
        )
    )
    assert "<script>" not in evil and "alert(1)</" not in evil
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;&amp;&#34;&#39;" in evil  # MarkupSafe's entities
    assert parse(evil).tags.count("script") == 0


def test_report_names_question_failures_and_cannot_tell_apart(tiny, page):
    text = " ".join(parse(page).text)
    assert "Which remedy makes the returned model generalise better" in text
    failed = [r for r in tiny.rows if r["status"] == "failed"]
    assert [r["variant"] for r in failed] == [BROKEN] * len(SEEDS)
    assert "Failed runs" in text
    for row in failed:
        assert row["run_id"] in text and row["error"] in text and "dropout" in row["error"]
    # Two seeds: the answer says which of four it is, with the seeds behind it.
    assert re.search(r"dropout\s*: (helps|hurts|no effect larger than|undecided at 2 seeds)", text)
    assert re.search(rf"{BROKEN}\s*: no run completed", text)


def test_learning_curve_lines_are_the_seed_means():
    a = History(
        [
            {
                "epoch": e,
                "train_loss": 1 / e,
                "valid_loss": 1.2 / e,
                "train_acc": 0.5 + 0.1 * e,
                "valid_acc": 0.4 + 0.1 * e,
            }
            for e in (1, 2, 3)
        ]
    )
    b = History(
        [
            {
                "epoch": e,
                "train_loss": 2 / e,
                "valid_loss": 2.2 / e,
                "train_acc": 0.3 + 0.1 * e,
                "valid_acc": 0.2 + 0.1 * e,
            }
            for e in (1, 2)
        ]
    )
    columns = ("train_loss", "valid_loss", "train_acc", "valid_acc")
    fig = small_multiples_figure({"baseline": {c: mean_curve([a, b], c) for c in columns}}, "baseline")
    acc_ax = fig.axes[0]
    valid = [line for line in acc_ax.get_lines() if line.get_linestyle() == "-"][0]
    assert list(valid.get_xdata()) == [1, 2, 3]
    assert list(valid.get_ydata()) == pytest.approx([(0.5 + 0.3) / 2, (0.6 + 0.4) / 2, 0.7])


def test_gap_figure_draws_each_interval():
    rows = [
        ("baseline", describe([0.2, 0.25, 0.3])),
        ("dropout", describe([0.1, 0.12, 0.2])),
        ("single", describe([0.05])),
    ]
    fig = gap_figure(rows, "baseline")
    ax = fig.axes[0]
    segments = [c for c in ax.collections if hasattr(c, "get_segments")]
    spans = sorted(
        tuple(np.round(sorted((seg[0][0], seg[1][0])), 9)) for col in segments for seg in col.get_segments()
    )
    expected = sorted(tuple(np.round((s.low, s.high), 9)) for _, s in rows[:2])
    assert spans == expected
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0].startswith("baseline") and "(n=1)" in labels[2]


def test_grid_figure_plots_valid_accuracy_against_grid_value():
    def summary(mean):
        return Summary(3, mean, 0.01, mean - 0.02, mean + 0.02)

    by_value = {
        size: {
            "final_train_acc": summary(0.99),
            "final_valid_acc": summary(0.6 + size / 1000),
            "final_gap_acc": summary(0.39 - size / 1000),
        }
        for size in (100, 200, 400)
    }
    fig = grid_figure({"baseline": by_value}, "train_size", "baseline")
    acc_ax = fig.axes[0]
    solid = [line for line in acc_ax.get_lines() if line.get_linestyle() == "-"]
    assert list(solid[0].get_xdata()) == [100, 200, 400]
    assert list(solid[0].get_ydata()) == pytest.approx([0.7, 0.8, 1.0])
    assert acc_ax.get_xlabel() == "train size"


def test_grid_study_pairs_on_grid_value_and_draws_the_grid(tmp_path):
    rows = []
    for variant, shift in (("baseline", 0.0), ("l2", -0.05)):
        for size in (100, 1000):
            for seed in (0, 1, 2):
                gap = 0.3 - size / 10000 + shift + 0.01 * seed * (1 if variant == "l2" else 2)
                rows.append(
                    dict(
                        run_id=f"{variant}-{size}-{seed}",
                        variant=variant,
                        seed=seed,
                        grid_field="train_size",
                        grid_value=size,
                        status="complete",
                        final_gap_acc=gap,
                        final_train_acc=1.0,
                        final_valid_acc=1.0 - gap,
                        peak_valid_acc=1.0 - gap,
                        lowest_valid_loss=0.3,
                        final_gap_loss=0.1,
                        best_epoch=2,
                        stopped_epoch=None,
                        final_epoch=3,
                        epochs_run=3,
                        params=100,
                        seconds=1.0,
                        run_dir=None,
                    )
                )
    study = {
        "spec": {
            "variants": [{"name": "baseline", "overrides": {}}, {"name": "l2", "overrides": {"l2": 1e-3}}],
            "grid": {"field": "train_size", "values": [100, 1000]},
        }
    }
    page = render_report(StudyData("grid", study, rows))
    cells = parse(page).cells
    per_size = [c for c in cells if c.get("run-metric") == "final_gap_acc" and c["variant"] == "l2"]
    assert sorted(c["grid-value"] for c in per_size) == ["100", "1000"]
    [diff] = [c for c in cells if c.get("compare-metric") == "final_gap_acc"]
    d = [(-0.05 + 0.01 * s) - (0.02 * s) for s in (0, 1, 2) for _ in (100, 1000)]
    assert int(diff["n"]) == 6 and float(diff["value"]) == pytest.approx(np.mean(d))
    assert page.count("data:image/png;base64,") == 2  # gap per variant and accuracy against size


def test_report_reads_histories_of_every_run(tiny):
    complete = [r for r in tiny.rows if r["status"] == "complete"]
    assert len(complete) == 4 and set(tiny.histories) == {r["run_id"] for r in complete}
    assert all(len(tiny.histories[r["run_id"]]) == r["epochs_run"] for r in complete)


def test_missing_study_lists_known_studies(tiny_runs):
    with pytest.raises(OverfitlabError, match=r"no study 'nope' .*known studies are tiny$"):
        write_report(tiny_runs, "nope")
    with pytest.raises(OverfitlabError, match="no study index"):
        write_report(tiny_runs / "elsewhere", "tiny")


def test_cli_writes_where_asked(tiny_runs, tmp_path, capsys):
    out = tmp_path / "deep" / "page.html"
    assert main(["report", "tiny", "--runs-dir", str(tiny_runs), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert main(["report", "nope", "--runs-dir", str(tiny_runs)]) == 2
    assert "known studies are tiny" in capsys.readouterr().err


def test_curve_figures_group_a_grid_by_value_or_by_variant():
    one = [("baseline", 100), ("baseline", 300)]
    figures = curve_figures(one, {k: {} for k in one}, "train_size")
    assert [(t, list(p)) for t, p in figures] == [
        ("baseline by train_size", ["train_size = 100", "train_size = 300"])
    ]
    two = one + [("l2", 100), ("l2", 300)]
    figures = curve_figures(two, {k: {} for k in two if k != ("l2", 300)}, "train_size")
    assert [(t, list(p)) for t, p in figures] == [
        ("train_size = 100", ["baseline", "l2"]),
        ("train_size = 300", ["baseline"]),
    ]
    plain = [("baseline", None), ("l2", None)]
    assert [(t, list(p)) for t, p in curve_figures(plain, {k: {} for k in plain}, None)] == [
        ("", ["baseline", "l2"])
    ]


def test_learning_curves_are_small_multiples_on_shared_axes_and_one_overlay():
    """Eleven variants in a 3-column grid (4 rows, not 11 stacked), every panel on the same
    axes, the baseline's valid curve in each other panel; the overlay has every variant."""
    from overfitlab.viz.study_plots import overlay_figure

    def history(shift: float) -> History:
        return History(
            [
                {
                    "epoch": e,
                    "train_loss": 1 / e,
                    "valid_loss": 1.1 / e + shift,
                    "train_acc": 0.5 + 0.1 * e,
                    "valid_acc": 0.4 + 0.05 * e - shift,
                }
                for e in (1, 2, 3)
            ]
        )

    columns = ("train_loss", "valid_loss", "train_acc", "valid_acc")
    names = ["baseline"] + [f"remedy-{i}" for i in range(10)]
    curves = {n: {c: mean_curve([history(i / 100)], c) for c in columns} for i, n in enumerate(names)}
    fig = small_multiples_figure(curves, "baseline")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 11 and len(fig.axes) == 12  # 4 rows × 3 columns, one left empty
    assert len({ax.get_ylim() for ax in visible}) == 1 and len({ax.get_xlim() for ax in visible}) == 1
    assert fig.get_size_inches()[1] < 0.7 + 2.1 * 4 + 0.01
    dotted = [line for line in visible[5].get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == 1 and list(dotted[0].get_ydata()) == pytest.approx([0.45, 0.5, 0.55])
    assert not [line for line in visible[0].get_lines() if line.get_linestyle() == ":"]
    overlay = overlay_figure(curves, "baseline")
    for ax in overlay.axes:
        lines = ax.get_lines()
        assert [line.get_label() for line in lines][-1] == "baseline" and len(lines) == 11
        assert max(lines, key=lambda line: line.get_linewidth()).get_label() == "baseline"


def test_a_left_out_variant_is_named_once_in_its_section_and_not_compared(tiny):
    """A variant the model cannot take has no runs: it is in "Left out", not in the comparisons
    (where it read "no run matches a baseline seed") nor in the per-variant table."""
    rows = [r for r in tiny.rows if r["variant"] != "dropout"]
    study = {**tiny.study, "left_out": [{"variant": "dropout", "reason": "takes no <dropout>"}]}
    page = render_report(StudyData(tiny.name, study, rows, tiny.histories))
    assert 'data-left-out="dropout"' in page and "takes no &lt;dropout&gt;" in page
    assert 'data-remedy="dropout"' not in page and 'data-variant="dropout"' not in page
    assert f'data-remedy="{BROKEN}"' in page  # a variant that failed is still compared (and fails)
