"""Command line: ``polyrec train | tune | evaluate | recommend | export | serve | models | data
import | data info``.

User mistakes (``PolyrecError``) print one line and exit with status 2; bugs raise normally.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from polyrec import api
from polyrec.errors import PolyrecError
from polyrec.training import distributed
from polyrec.training.trainer import Reporter
from polyrec.tuning import TuneReporter

app = typer.Typer(
    add_completion=False,
    help="polyrec: multi-behavior and multi-interest recommendation, reproducible and fast.",
    pretty_exceptions_enable=False,
    # plain click help: flags shown as flags (the rich help of this typer prints "<bool>")
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(
    help="Import datasets and inspect them.",
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")

# piped output (not a terminal) is not wrapped at 80 columns: one record, one line
console = Console(soft_wrap=not sys.stdout.isatty())
err_console = Console(stderr=True, soft_wrap=not sys.stderr.isatty())


def _version(value: bool) -> None:
    if value:
        from polyrec import __version__

        console.print(f"polyrec {__version__}", highlight=False)
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """polyrec: multi-behavior and multi-interest recommendation, reproducible and fast."""
    if ctx.invoked_subcommand is None:  # no command: the help, and success
        console.print(ctx.get_help(), highlight=False)
        raise typer.Exit()


@data_app.callback(invoke_without_command=True)
def _data(ctx: typer.Context) -> None:
    """Import datasets and inspect them."""
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help(), highlight=False)
        raise typer.Exit()


def _progress() -> Progress:
    """The progress display of long work (epochs, batches, trials): bars that vanish when done."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=True,
    )


class _ConsoleProgress:
    """What the rich reporters share: a progress display (quiet: none) and dim messages."""

    quiet: bool
    progress: Progress | None

    def message(self, text: str) -> None:
        if not self.quiet:
            console.print(f"[dim]{text}[/dim]")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class RichReporter(_ConsoleProgress, Reporter):
    """Progress bars on epochs and batches; one log line per epoch."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.progress: Progress | None = None
        self.epoch_task: Any = None
        self.batch_task: Any = None
        self.best: float | None = None

    def start(self, total_epochs: int, first_epoch: int) -> None:
        if self.quiet:
            return
        self.progress = _progress()
        self.progress.start()
        self.epoch_task = self.progress.add_task(
            "epochs", total=total_epochs, completed=first_epoch - 1, info=""
        )
        self.batch_task = self.progress.add_task("batches", total=None, info="")

    def epoch_start(self, epoch: int, n_batches: int | None) -> None:
        if self.progress is not None:
            self.progress.reset(self.batch_task, total=n_batches, info="")

    def batch(self, stats: dict[str, float]) -> None:
        if self.progress is not None:
            self.progress.update(
                self.batch_task, advance=1, info=f"loss {stats.get('loss', 0):.4f}"
            )

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.update(self.epoch_task, completed=epoch)
        loss = record.get("train", {}).get("loss", float("nan"))
        line = f"epoch {epoch:>3}  loss {loss:.4f}  {record['seconds']:.2f}s"
        if record.get("valid"):
            # every metric at the smallest cut-off (@10 for scorers, @20 for retrieval)
            cuts = sorted({k.partition("@")[2] for k in record["valid"]}, key=_cut_key)
            parts = "  ".join(
                f"{k} {v:.4f}" for k, v in record["valid"].items() if k.partition("@")[2] == cuts[0]
            )
            proto = record.get("valid_protocol")  # which protocol the figures are
            line += f"  valid {proto} {parts}" if proto else f"  valid {parts}"
        console.print(line, highlight=False)


def _cut_key(cut: str) -> int:
    return int(cut) if cut.isdigit() else 1 << 30


@contextmanager
def _user_errors() -> Iterator[None]:
    """A PolyrecError raised inside prints one red line and exits with its status."""
    try:
        yield
    except PolyrecError as e:
        # escaped: a message may hold brackets ('[tune]', "polyrec[serve]") that are not markup
        err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=e.exit_code) from None


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The options the user gave (those not None), to pass on as keyword arguments."""
    return {k: v for k, v in options.items() if v is not None}


def _metrics_table(title: str, results: dict[str, Any]) -> Table:
    """Metrics as rows; (split, protocol) as columns — fits an 80-column terminal."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    cols: list[tuple[str, str]] = []
    for part in ("valid", "test"):
        res = results[part]
        for proto in res["metrics"]:
            if proto != "retrieval" and "retrieval" in res["metrics"]:
                continue  # interest models: "full"/"sampled" only mirror retrieval for selection
            label = proto if proto in ("full", "retrieval") else f"1+{res.get('n_negatives', 99)}"
            table.add_column(f"{part}\n{label}", justify="right")
            cols.append((part, proto))
    keys: list[str] = []
    for part, proto in cols:
        keys.extend(k for k in results[part]["metrics"][proto] if k not in keys)
    for k in keys:
        name, _, cut = k.partition("@")
        label = METRIC_LABELS.get(name, name)
        # a figure a protocol does not compute (sampled 1+N: no list-level metrics) shows "-"
        row = [_figure(results[p]["metrics"][q].get(k)) for p, q in cols]
        table.add_row(f"{label}@{cut}", *row)
    return table


METRIC_LABELS = {
    "hr": "HR",
    "ndcg": "NDCG",
    "recall": "Recall",
    "mrr": "MRR",
    "precision": "Precision",
    "map": "MAP",
    "coverage": "Coverage",
    "avgpop": "AvgPop",
    "gini": "Gini",
}


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_result(result: dict[str, Any]) -> None:
    split = result["valid"]["split"]
    console.print(
        _metrics_table(
            f"{result.get('model', '')} on {result.get('dataset', '')} — {split['name']} split, "
            f"seed {split['seed']}, {split['test_users']} test users",
            result,
        )
    )
    overlap = (split.get("aux_overlap") or {}).get("test")
    if overlap is not None:
        console.print(
            f"protocol: {split.get('label', split['name'])}; {overlap:.1%} of test pairs have an "
            "auxiliary-behavior row in training",
            highlight=False,
        )
    dropped = split.get("users_without_target", 0)
    if dropped:
        console.print(
            f"{dropped} users without a target interaction are not evaluated", highlight=False
        )
    for part in ("valid", "test"):
        for note in (result.get(part) or {}).get("notes", []):
            console.print(f"note: {note}", highlight=False)


@app.command()
def train(
    overrides: list[str] = typer.Argument(None, help="config overrides: key=value ..."),
    model: str = typer.Option(None, "--model", "-m", help="model name (see 'polyrec models')"),
    data: str = typer.Option(
        None, "--data", "-d", help="dataset directory or embedded:retailrocket"
    ),
    protocol: str = typer.Option(
        None, "--protocol", "-p", help="leave-one-out | random-ratio | user-split | time-slots"
    ),
    config: Path = typer.Option(None, "--config", "-c", help="TOML config file"),
    out: Path = typer.Option(
        None, "--out", "-o", help="run directory (default runs/<model>-<data>-<time>)"
    ),
    resume: Path = typer.Option(
        None, "--resume", help="continue a killed run from its last checkpoint"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
) -> None:
    """Train a model (default: LightGCN on the embedded Retailrocket data) and print its metrics."""
    with _user_errors():
        result = api.train(
            model,
            data,
            protocol=protocol,
            config=config,
            overrides=overrides or [],
            out=out,
            resume=resume,
            reporter=RichReporter(quiet=quiet or as_json),
        )
    if not distributed.is_main():
        return  # under torchrun rank 0 prints the result
    if as_json:
        print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=2))
        return
    _print_result(result)
    console.print(
        f"best epoch {result['best_epoch']} ({result['protocol']['selection']}); {result['stopped']}; "
        f"run saved in {result.get('run_dir', str(resume))}",
        highlight=False,
    )


class _TrialEpochs(Reporter):
    """The running trial's epochs, as one bar of the tune progress display."""

    def __init__(self, owner: RichTuneReporter) -> None:
        self.owner = owner

    def start(self, total_epochs: int, first_epoch: int) -> None:
        if self.owner.progress is not None:
            self.owner.progress.reset(
                self.owner.epoch_task, total=total_epochs, completed=first_epoch - 1, info=""
            )

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        if self.owner.progress is not None:
            value = record.get("valid", {}).get(self.owner.metric)
            info = "" if value is None else f"valid {self.owner.metric} {value:.4f}"
            self.owner.progress.update(self.owner.epoch_task, completed=epoch, info=info)


class RichTuneReporter(_ConsoleProgress, TuneReporter):
    """A bar over trials (with the best value so far), one over the running trial's epochs, and
    one line per finished trial."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.metric = ""
        self.progress: Progress | None = None
        self.trial_task: Any = None
        self.epoch_task: Any = None

    def start(self, total: int | None, done: int, minutes: float | None, metric: str) -> None:
        self.metric = metric
        if self.quiet:
            return
        budget = [f"{total} trials" if total else "", f"{minutes:g} min" if minutes else ""]
        console.print(f"tuning: budget {' / '.join(b for b in budget if b)}", highlight=False)
        self.progress = _progress()
        self.progress.start()
        self.trial_task = self.progress.add_task("trials", total=total, completed=done, info="")
        self.epoch_task = self.progress.add_task("epochs", total=None, info="")

    def trial_reporter(self) -> Reporter | None:
        return None if self.quiet else _TrialEpochs(self)

    def trial_end(self, record: dict[str, Any], best: dict[str, Any] | None) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            info = "" if best is None else f"best {best['value']:.4f} (trial {best['number']})"
            self.progress.update(self.trial_task, advance=1, info=info)
        value = "" if record["value"] is None else f"{record['value']:.4f}"
        console.print(
            f"trial {record['number']:>3}  {record['state']:<8}  {self.metric} {value:<7}  "
            f"{_params_text(record['params'])}",
            highlight=False,
        )


def _fmt_param(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _params_text(params: dict[str, Any]) -> str:
    return "  ".join(f"{k}={_fmt_param(v)}" for k, v in params.items())


def _print_tune(result: dict[str, Any]) -> None:
    obj = result["objective"]
    keys = list(result["settings"]["space"])
    table = Table(
        title=f"{result['model']}: {result['n_trials']} trials, validation {obj['protocol']} "
        f"{obj['metric']}",
        title_justify="left",
    )
    table.add_column("trial", justify="right")
    table.add_column("state")
    table.add_column(f"valid {obj['metric']}", justify="right")
    table.add_column("seconds", justify="right")
    for k in keys:
        table.add_column(k, justify="right")
    best = result["best"] or {}
    for t in result["trials"]:
        mark = " *" if t["number"] == best.get("number") else ""
        table.add_row(
            f"{t['number']}{mark}",
            t["state"],
            "" if t["value"] is None else f"{t['value']:.4f}",
            "" if t["seconds"] is None else f"{t['seconds']:.1f}",
            *[_fmt_param(t["params"][k]) if k in t["params"] else "" for k in keys],
        )
    console.print(table)
    if not best:
        return
    run_dir = Path(result["tune_dir"]) / best["run_dir"]
    console.print(
        f"best trial {best['number']}: valid {obj['metric']} {best['value']:.4f}  "
        f"{_params_text(best['params'])}",
        highlight=False,
    )
    test = best.get("test") or {}
    for proto, values in test.get("metrics", {}).items():
        parts = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
        console.print(f"test ({proto}) of the best trial: {parts}", highlight=False)
    console.print(f"[dim]{result['note']}[/dim]")
    console.print(
        f"best run {run_dir} (polyrec evaluate/export work on it); study in "
        f"{result['tune_dir']}/tune.json",
        highlight=False,
    )


@app.command()
def tune(
    overrides: list[str] = typer.Argument(None, help="config overrides: key=value ..."),
    config: Path = typer.Option(
        None, "--config", "-c", help="TOML config file with a \\[tune] table and \\[tune.space]"
    ),
    model: str = typer.Option(None, "--model", "-m", help="model name (see 'polyrec models')"),
    data: str = typer.Option(
        None, "--data", "-d", help="dataset directory or embedded:retailrocket"
    ),
    protocol: str = typer.Option(
        None, "--protocol", "-p", help="leave-one-out | random-ratio | user-split | time-slots"
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="tune directory (default runs/tune-<model>-<data>-<time>)"
    ),
    resume: Path = typer.Option(
        None, "--resume", help="continue an interrupted study in this tune directory"
    ),
    trials: int = typer.Option(None, "--trials", "-n", help="trial budget (the study's total)"),
    minutes: float = typer.Option(
        None, "--minutes", help="time budget of this invocation (checked between trials)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
    as_json: bool = typer.Option(False, "--json", help="print tune.json"),
) -> None:
    """Search hyperparameters on the validation split (Optuna TPE); the test split is used once,
    on the best trial, after selection."""
    with _user_errors():
        result = api.tune(
            model,
            data,
            protocol=protocol,
            config=config,
            overrides=overrides or [],
            out=out,
            resume=resume,
            trials=trials,
            minutes=minutes,
            reporter=RichTuneReporter(quiet=quiet or as_json),
        )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_tune(result)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="a run directory from 'polyrec train'"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
) -> None:
    """Re-evaluate a run's best weights on its saved validation and test split."""
    with _user_errors():
        result = api.evaluate(run_dir)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        _print_result(result)


@app.command()
def recommend(
    run_dir: Path = typer.Argument(
        ..., help="a run directory from 'polyrec train' or an export from 'polyrec export'"
    ),
    users: Path = typer.Option(
        ...,
        "--users",
        "-u",
        help="file of user ids (one per line, or CSV/Parquet with a 'user' column)",
    ),
    k: int = typer.Option(20, "--k", "-k", help="items per user"),
    out: Path = typer.Option(..., "--out", "-o", help="output file: .parquet, .csv or .jsonl"),
    include_seen: bool = typer.Option(
        False, "--include-seen", help="do not remove the user's training items"
    ),
    unknown: str = typer.Option(
        "error",
        "--unknown",
        help="users not in the dataset: error | skip (leave them out) | popular (most popular "
        "items, marked fallback, as polyrec serve answers them)",
    ),
) -> None:
    """Write the top-k items for each user in USERS."""
    with _user_errors():
        frame = api.recommend(
            run_dir, users, k=k, exclude_seen=not include_seen, out=out, unknown=unknown
        )
    n_fallback = frame.filter(pl.col("fallback"))["user"].n_unique() if frame.height else 0
    if n_fallback:
        err_console.print(
            f"{n_fallback} users not in the dataset got the most popular items (fallback)",
            highlight=False,
        )
    console.print(
        f"wrote {frame.height} recommendations for {frame['user'].n_unique()} users to {out}"
    )


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="a run directory from 'polyrec train'"),
    out: Path = typer.Option(..., "--out", "-o", help="export directory to write"),
    index: str = typer.Option(
        "flat", "--index", help="flat (exact inner product) | ivf | hnsw (approximate, faiss)"
    ),
    nprobe: int = typer.Option(None, "--nprobe", help="IVF lists visited per query"),
    nlist: int = typer.Option(None, "--nlist", help="IVF lists (default 4·√items)"),
    ef_search: int = typer.Option(None, "--ef-search", help="HNSW efSearch"),
    recall_k: int = typer.Option(None, "--recall-k", help="K of the measured recall@K"),
    force: bool = typer.Option(False, "--force", help="replace an existing export at --out"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
) -> None:
    """Export a run's best weights, embeddings, id maps and item index for serving."""
    options = _given(
        {"nprobe": nprobe, "nlist": nlist, "ef_search": ef_search, "recall_k": recall_k}
    )
    with _user_errors():
        manifest = api.export(run_dir, out, index=index, force=force, **options)
    if as_json:
        print(json.dumps(manifest, indent=2))
        return
    idx = manifest["index"]
    recall = idx.get("recall")
    line = f"exported {manifest['model']['name']} ({manifest['kind']}) to {out}; index {idx['type']} ({idx['backend']})"
    if recall:
        line += f", recall@{recall['k']} {recall['value']:.4f} against exact search"
    console.print(line, highlight=False)


@app.command("serve")
def serve_cmd(
    export_dir: Path = typer.Argument(..., help="an export directory from 'polyrec export'"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8000, "--port", help="port to listen on"),
    max_k: int = typer.Option(100, "--max-k", help="largest k a request may ask for"),
    max_batch: int = typer.Option(256, "--max-batch", help="most requests per batch call"),
    search: str = typer.Option(
        "auto", "--search", help="auto (faiss index when installed) | faiss | torch"
    ),
    threads: int = typer.Option(1, "--threads", help="torch/faiss CPU threads"),
    access_log: bool = typer.Option(False, "--access-log", help="log every request"),
) -> None:
    """Serve an export over HTTP (FastAPI + uvicorn); OpenAPI docs at /docs."""
    from polyrec.serve import serve

    def ready(app: Any) -> None:
        rec = app.state.recommender
        console.print(
            f"serving {rec.bundle.model_name} from {export_dir} on http://{host}:{port} "
            f"(search {rec.backend}; docs at /docs)",
            highlight=False,
            soft_wrap=True,
        )

    with _user_errors():
        serve(
            export_dir,
            host=host,
            port=port,
            threads=threads,
            access_log=access_log,
            on_ready=ready,
            max_k=max_k,
            max_batch=max_batch,
            search=search,
        )


@app.command("report")
def report_cmd(
    results_dir: Path = typer.Argument(
        ..., help="folder of benchmark results (e.g. benchmarks/results)"
    ),
    out: Path = typer.Option(Path("report"), "--out", "-o", help="folder to write index.html to"),
    papers: Path = typer.Option(
        None, "--papers", help="published numbers (TOML; default: the packaged papers.toml)"
    ),
    markdown: bool = typer.Option(
        False, "--markdown", help="also write <name>.md beside every benchmark JSON in RESULTS_DIR"
    ),
) -> None:
    """Paper vs polyrec: one HTML page with tables, flags, learning curves and speed figures;
    with --markdown, each benchmark's markdown report too."""
    from polyrec.report import build_report

    with _user_errors():
        summary = build_report(results_dir, out, papers, markdown=markdown)
    console.print(
        f"wrote {summary['out']}: {summary['results']} result rows from "
        f"{len(summary['benchmarks'])} benchmarks, {len(summary['figures'])} figures",
        highlight=False,
    )
    for s in summary["skipped"]:
        console.print(f"skipped {s}", highlight=False)
    if markdown:
        console.print(f"wrote {len(summary['markdown'])} markdown reports", highlight=False)


@app.command("models")
def models_cmd() -> None:
    """List every model with its paper."""
    table = Table(title="polyrec models")
    table.add_column("name")
    table.add_column("kind")
    table.add_column("paper")
    for m in api.models():
        table.add_row(m["name"], m["kind"], m["paper"])
    console.print(table)


@data_app.command("import")
def data_import(
    path: Path = typer.Argument(..., help="file or folder to import"),
    fmt: str = typer.Option(
        None,
        "--format",
        "-f",
        help="csv, tsv, parquet, hkuds, mba, lightgcn-txt, sasrec-txt, simrec, recbole, session-tsv (default: guess)",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="dataset directory to write (default: PATH's name + '-polyrec')"
    ),
    target: str = typer.Option(None, "--target", help="target behavior"),
    user_col: str = typer.Option(None, "--user-col", help="user column name (csv/tsv/parquet)"),
    item_col: str = typer.Option(None, "--item-col", help="item column name"),
    behavior_col: str = typer.Option(None, "--behavior-col", help="behavior column name"),
    time_col: str = typer.Option(None, "--time-col", help="timestamp column name"),
    category_col: str = typer.Option(None, "--category-col", help="item category column name"),
    fold_col: str = typer.Option(
        None,
        "--fold-col",
        help="column of a published split: 0/train, 1/valid, 2/test (a column named 'fold' is "
        "taken by default)",
    ),
    valid: Path = typer.Option(
        None, "--valid", help="file of the published validation interactions (same columns)"
    ),
    test: Path = typer.Option(
        None, "--test", help="file of the published test interactions (same columns)"
    ),
    time_format: str = typer.Option(
        None,
        "--time-format",
        help="strptime format of text timestamps, e.g. '%Y-%m-%d %H:%M:%S'",
    ),
    name: str = typer.Option(None, "--name", help="dataset name (default: --out's folder name)"),
) -> None:
    """Turn a log in a foreign format into a polyrec dataset directory."""
    options = _given(
        {
            "target": target,
            "user": user_col,
            "item": item_col,
            "behavior": behavior_col,
            "timestamp": time_col,
            "category": category_col,
            "fold": fold_col,
            "valid": valid,
            "test": test,
            "timestamp_format": time_format,
        }
    )
    stem = path.name.removesuffix(".gz")
    dest = out or path.with_name(Path(stem).stem + "-polyrec")
    with _user_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log = api.import_data(path, dest, fmt=fmt, name=name, **options)
    for w in caught:
        err_console.print(f"[yellow]warning:[/yellow] {w.message}", highlight=False)
    console.print(
        f"imported {len(log):,} interactions ({log.n_users:,} users × {log.n_items:,} items; "
        f"behaviors {', '.join(log.behaviors)}; target {log.target}) into {dest}",
        highlight=False,
    )


@data_app.command("info")
def data_info(
    directory: str = typer.Argument(..., help="dataset directory or embedded:retailrocket"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per-behavior counts, users, items, density and time span."""
    with _user_errors():
        info = api.data_info(directory)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(
        title=f"{info['name']}: {info['users']:,} users × {info['items']:,} items, target {info['target']}"
    )
    table.add_column("behavior")
    table.add_column("interactions", justify="right")
    table.add_column("users", justify="right")
    table.add_column("items", justify="right")
    for name, b in info["behaviors"].items():
        table.add_row(name, f"{b['interactions']:,}", f"{b['users']:,}", f"{b['items']:,}")
    console.print(table)
    console.print(f"density {info['density']:.6f}", highlight=False)
    if info["time_span"]:
        from datetime import UTC, datetime

        lo, hi = info["time_span"]
        try:
            if not 1e8 < lo <= hi < 1e11:  # not unix seconds (1973 .. 5138)
                raise ValueError
            fmt = "%Y-%m-%d"
            span = (
                f"time span {datetime.fromtimestamp(lo, UTC).strftime(fmt)} .. "
                f"{datetime.fromtimestamp(hi, UTC).strftime(fmt)} ({(hi - lo) / 86400:.1f} days)"
            )
        except (ValueError, OverflowError, OSError):  # any other unit: the numbers as they are
            span = f"time span {lo:g} .. {hi:g} (units of the source)"
        console.print(span, highlight=False)
    if info["published_split"]:
        console.print(f"published split: {info['published_split']}", highlight=False)


def main() -> None:
    code: int | str | None = 0
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        code = 130
    except SystemExit as e:
        code = e.code
    if isinstance(code, str):  # sys.exit("message"): print it, status 1, as Python does
        err_console.print(code)
        code = 1
    # after torchrun: leave without the interpreter's finalisation (see exit_process)
    distributed.exit_process(code or 0)


if __name__ == "__main__":
    main()
