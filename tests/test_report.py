"""polyrec report: benchmark JSON results → one HTML page with the papers' numbers and figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polyrec.cli import app
from polyrec.errors import ConfigError, DataError
from polyrec.report import build_report, collect, load_papers, render_markdown, write_doc
from polyrec.report.papers import relative_gain

PNG = b"\x89PNG\r\n\x1a\n"


def _doc(benchmark: str, **parts: object) -> dict[str, object]:
    return {"schema": "polyrec-bench/1", "benchmark": benchmark, "title": benchmark,
            "date": "2026-12-04T00:00:00+00:00", "command": f"python benchmarks/{benchmark}.py",
            "machine": {"cpu_model": "test cpu", "cores": 2, "torch": "x"}, **parts}  # fmt: skip


def _row(ds: str, model: str, proto: str, **test: float) -> dict[str, object]:
    return {"dataset": ds, "model": model, "protocol": proto, "seeds": 3,
            "selection": f"validation {proto} ndcg@10", "split": "leave-one-out",
            "test": {k: [v, 0.01] for k, v in test.items()}}  # fmt: skip


def make_results(root: Path) -> Path:
    """A small results folder in the one layout the benchmark scripts write."""
    root.mkdir(parents=True)
    runs = []
    for model in ("cml", "mbgcn"):
        for sel in ("sampled", "full"):
            for seed in (2024, 2025):
                curve = [[e, 0.05 + 0.01 * e] for e in range(1, 6)]
                runs.append(
                    {"name": f"retailrocket-{model}-{sel}-{seed}", "dataset": "retailrocket",
                     "model": model, "seed": seed, "selection": f"validation {sel} ndcg@10",
                     "curve": curve, "curve_metric": "valid ndcg@10"}
                )  # fmt: skip
    results = [
        _row("retailrocket", "cml", "sampled", **{"hr@10": 0.30, "ndcg@10": 0.18}),
        _row("retailrocket", "cml", "full", **{"hr@10": 0.03, "ndcg@10": 0.02}),
        _row("retailrocket", "mbgcn", "sampled", **{"hr@10": 0.29, "ndcg@10": 0.15}),
        _row("retailrocket", "mbgcn", "full", **{"hr@10": 0.01, "ndcg@10": 0.01}),
        _row("tmall", "cml", "sampled", **{"hr@10": 0.30, "ndcg@10": 0.18}),
    ]
    (root / "multibehavior.json").write_text(
        json.dumps(_doc("multibehavior", results=results, runs=runs))
    )
    seq = [
        _row("beauty", "comirec-sa", "retrieval", **{"recall@50": 0.100, "ndcg_comirec@50": 0.05}),
        _row("beauty", "re4-sa", "retrieval", **{"recall@50": 0.110, "ndcg_comirec@50": 0.06}),
    ]
    (root / "re4.json").write_text(json.dumps(_doc("re4", results=seq)))
    table = {"columns": ["case", "threads", "s / pass (CPU)"], "rows": [["CML d=16", 1, 0.95]]}
    (root / "step-speed-cml.json").write_text(
        json.dumps(_doc("step-speed-cml", tables=[table], protocol=["Each case is a child."]))
    )
    (root / "unknown.json").write_text(json.dumps({"hello": 1}))
    (root / "broken.json").write_text("{not json")
    return root


def test_relative_gain() -> None:
    rows = {"a": {"r": 0.12}, "b": {"r": 0.10}, "c": {"r": 0.08}}
    assert relative_gain(rows, "a", "b", "r") == pytest.approx(0.2)
    assert relative_gain(rows, "c", "best", "r") == pytest.approx(0.08 / 0.12 - 1)
    assert relative_gain(rows, "a", "zzz", "r") is None
    assert relative_gain(rows, "a", "b", "missing") is None


def test_papers_data_is_complete() -> None:
    papers = load_papers()
    assert list(papers) == ["cml", "mba", "egcm", "re4", "hpcl4sr", "mule"]
    cml = papers["cml"]
    table, rows = cml.published_for("retailrocket") or ("", {})
    assert table == "Table 2" and rows["cml"] == {"hr@10": 0.356, "ndcg@10": 0.222}
    # our Tmall stands for MBA's Taobao (by the paper's dataset name), flagged as different
    assert papers["mba"].published_for("tmall") is not None
    assert papers["mba"].datasets["tmall"]["differences"]
    for p in papers.values():
        assert p.benchmarks and p.title
    # MuLe's JData table carries the cascades; our JData lacks page views, flagged
    table, rows = papers["mule"].published_for("jdata") or ("", {})
    assert rows["mule"]["ndcg@10"] == 0.4061 and rows["crgcn"]["hr@10"] == 0.5001
    assert any("page-view" in d for d in papers["mule"].datasets["jdata"]["differences"])


def test_collect_reads_the_one_layout(tmp_path: Path) -> None:
    col = collect(make_results(tmp_path / "res"))
    keys = {(r.benchmark, r.dataset, r.model, r.protocol) for r in col.results}
    assert ("multibehavior", "retailrocket", "cml", "full") in keys
    assert ("re4", "beauty", "re4-sa", "retrieval") in keys
    cml = next(r for r in col.results if r.model == "cml" and r.protocol == "sampled"
               and r.dataset == "retailrocket")  # fmt: skip
    assert cml.test["hr@10"] == (0.30, 0.01) and cml.seeds == 3
    # one curve per dataset × selection × model: the first seed's
    assert len([c for c in col.curves if c.benchmark == "multibehavior"]) == 4
    assert col.tables["step-speed-cml"][0]["rows"] == [["CML d=16", 1, 0.95]]
    assert sorted(s.split(":")[0] for s in col.skipped) == ["broken.json", "unknown.json"]


def test_report_renders_tables_flags_and_figures(tmp_path: Path) -> None:
    res = make_results(tmp_path / "res")
    out = tmp_path / "report"
    summary = build_report(res, out)
    page = (out / "index.html").read_text()
    # ours beside the paper's Table 2 under the paper's protocol
    assert "0.3000 ± 0.0100" in page and "0.3560" in page and "Table 2" in page
    # flags where protocol or data differ
    assert "best epoch chosen on validation (paper: on test)" in page
    assert "full ranking (paper: sampled 1+99)" in page
    assert "page-view behavior missing" in page
    assert "NDCG*" in page and "ComiRec&#x27;s variant" in page
    # the paper's sampled numbers are not put beside our full-ranking ones
    full_table = page.split("retailrocket — full ranking")[1].split("</table>")[0]
    assert "0.3560" not in full_table
    # relative gains: the paper's and ours
    assert "+22.7 %" in page  # CML vs MBGCN NDCG@10 on Retailrocket, Table 2
    assert "+10.0 %" in page  # ours, Re4-SA vs ComiRec-SA Recall@50
    assert "CML d=16" in page and "step-speed-cml" in page
    assert "broken.json" in page
    # figures: learning curves and gains, real PNGs referenced by the page
    assert summary["figures"], "matplotlib is in the dev extra: figures must be drawn"
    for f in summary["figures"]:
        data = (out / f).read_bytes()
        assert data.startswith(PNG) and len(data) > 2000
        assert f'src="{f}"' in page
    assert any("curves" in f for f in summary["figures"])
    assert any("gains" in f for f in summary["figures"])
    # a second run replaces the folder and leaves no temporary folders behind
    build_report(res, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "res"]


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such results directory"):
        collect(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no benchmark JSON results"):
        build_report(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "papers.toml"
    bad.write_text("[cml\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_papers(bad)
    bad.write_text("[cml]\nprotocol = 'sampled'\n")
    with pytest.raises(ConfigError, match=r"\[cml\] needs a title"):
        load_papers(bad)


def test_report_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    res = make_results(tmp_path / "res")
    r = runner.invoke(app, ["report", str(res), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and (tmp_path / "rep" / "index.html").exists()
    r = runner.invoke(app, ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2
    assert "no such results directory" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x").exists()


def test_markdown_from_the_same_json(tmp_path: Path) -> None:
    res = make_results(tmp_path / "res")
    doc = json.loads((res / "step-speed-cml.json").read_text())
    doc["load"] = {"threads": 1, "jobs": 2}
    doc["failures"] = ["x failed (exit 1):\nTraceback"]
    text = render_markdown(doc)
    assert text.startswith("# step-speed-cml\n\nDate 2026-12-04T00:00:00+00:00; machine: test cpu")
    assert "1 torch thread(s) per run, 2 run(s) at a time. Command: `python benchmarks/" in text
    assert "Each case is a child." in text
    assert "| case | threads | s / pass (CPU) |\n|---|---|---|\n| CML d=16 | 1 | 0.95 |" in text
    assert text.endswith("## Failures\n\n- x failed (exit 1):\n")
    path = write_doc(tmp_path / "out", doc)
    assert json.loads(path.read_text())["schema"] == "polyrec-bench/1"
    # polyrec report --markdown writes <name>.md beside each document (not beside other JSON)
    r = CliRunner().invoke(app, ["report", str(res), "--out", str(tmp_path / "rep"), "--markdown"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in res.glob("*.md")) == [
        "multibehavior.md",
        "re4.md",
        "step-speed-cml.md",
    ]
    assert "| CML d=16 | 1 | 0.95 |" in (res / "step-speed-cml.md").read_text()


def test_committed_results_are_documents() -> None:
    """Every committed result is a polyrec-bench/1 document and its markdown is its rendering."""
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    if not results.exists():
        pytest.skip("no benchmarks/ in this checkout")
    col = collect(results)
    assert not col.skipped
    for path in results.glob("*.json"):
        md = path.with_suffix(".md")
        assert md.exists(), md
        assert md.read_text() == render_markdown(json.loads(path.read_text())), md


def test_hide_target_results_are_flagged() -> None:
    from polyrec.report.papers import load_papers
    from polyrec.report.sources import Result, split_hide

    assert split_hide({"split": "purchases 4:1 at random + 10 % validation (MBA §4.3)"}) == "target"
    assert split_hide({"split": "leave-one-out on buy (published test purchase)"}) == "all"
    assert split_hide({"split": "leave-one-out, hide target"}) == "target"
    assert split_hide({"split": "users 8:1:1"}) is None
    assert split_hide({"split": "leave-one-out", "hide": "target"}) == "target"
    paper = next(iter(load_papers().values()))
    row = Result("b", "retailrocket", "m", "full", "validation", "s", 3, {}, hide="target")
    assert any("hide = target" in f for f in paper.flags(row))
    row.hide = "all"
    assert not any("hide = target" in f for f in paper.flags(row))


def test_gains_against_the_strongest_baseline(tmp_path: Path) -> None:
    # the table names pop-all as its strongest baseline (the benchmark chose it on validation):
    # the report shows CML's gain against it beside the paper's comparison, negative here
    root = tmp_path / "res"
    root.mkdir()
    rows = [
        {**_row("retailrocket", m, "sampled", **{"ndcg@10": v}), "strongest": "pop-all"}
        for m, v in (("cml", 0.18), ("mbgcn", 0.15), ("pop-all", 0.20))
    ]
    (root / "multibehavior.json").write_text(json.dumps(_doc("multibehavior", results=rows)))
    col = collect(root)
    assert {r.strongest for r in col.results} == {"pop-all"}
    out = tmp_path / "report"
    build_report(root, out)
    page = (out / "index.html").read_text()
    assert "strongest baseline: pop-all" in page
    assert "-10.0 %" in page  # CML 0.18 against pop-all 0.20
    assert "+20.0 %" in page  # and the paper's comparison, CML vs MBGCN, is still there
    assert "★ strongest baseline" in page
