"""One truth about forwarding on standard access mode, and a table of what is verified where."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _read(*parts: str) -> str:
    return REPO.joinpath(*parts).read_text(encoding="utf-8")


def test_the_docs_agree_on_forwarding_from_tasks_on_standard_access():
    for page in (("README.md",), ("docs", "cluster.md"), ("docs", "connect.md")):
        text = _read(*page)
        assert "does not forward from tasks yet" not in text, page
    assert "real standard-access cluster" in _read("README.md")
    assert "a real Databricks standard-access cluster has not confirmed it yet" in " ".join(
        _read("docs", "cluster.md").split()
    )
    assert "(connect.md#verified-where)" in _read("docs", "cluster.md")


def test_connect_page_has_the_verified_where_table_and_the_confirming_cell():
    text = _read("docs", "connect.md")
    assert "## Verified where" in text
    assert "| what | verified in CI against | what only a real cluster can confirm |" in text
    assert 'spark.range(4).repartition(2).mapInPandas(probe, "id long").collect()' in text
