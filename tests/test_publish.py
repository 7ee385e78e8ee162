"""bench/publish.py: the benchmark tables reach docs/performance.md, dated and placed."""

from __future__ import annotations

from tests.conftest import BENCH, bench_module

ROOT = BENCH.parent
publish = bench_module("publish")


def test_tables_replace_their_marked_section_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "training.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    doc = tmp_path / "perf.md"
    doc.write_text("prose stays\n<!-- bench/out/training.md -->\nold table\n"
                   "<!-- end bench/out/training.md -->\n<!-- bench/out/llc.md -->\nkept\n"
                   "<!-- end bench/out/llc.md -->\n")
    assert publish.publish(out, doc, where="a test box") == ["training.md"]
    text = doc.read_text()
    assert "old table" not in text and "| 1 | 2 |" in text and "prose stays" in text
    assert "kept" in text  # llc.md was not measured: its section is left alone
    assert "`bench/out/training.md`, measured 20" in text and "on a test box" in text
    publish.publish(out, doc, where="a test box")
    assert doc.read_text() == text  # publishing twice changes nothing


def test_the_performance_page_has_a_section_for_every_table():
    text = (ROOT / "docs/performance.md").read_text()
    for name in publish.TABLES:
        assert f"<!-- bench/out/{name} -->" in text and f"<!-- end bench/out/{name} -->" in text
