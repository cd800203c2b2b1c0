"""The README and the docs site hold each fact once, and the generated parts are current."""

import os
import re

import yaml

from spark_tracking.settings_cli import configuration_page

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as fh:
        return fh.read()


def test_configuration_page_is_generated_from_the_settings_registry():
    assert _read("docs", "configuration.md") == configuration_page(), (
        "docs/configuration.md is stale: run `spark-tracking settings --markdown > docs/configuration.md`"
    )


def test_readme_is_short_and_starts_with_the_two_commands_and_the_cluster_install():
    readme = _read("README.md")
    assert len(readme.splitlines()) <= 200
    headings = re.findall(r"^## (.+)$", readme, flags=re.M)
    assert headings[:2] == ["The two commands", "Install on a cluster"]


def test_every_readme_part_a_page_includes_exists():
    """A page's `--8<-- "README.md:<name>"` needs the README's start/end markers of <name>."""
    readme = _read("README.md")
    for page in os.listdir(os.path.join(ROOT, "docs")):
        if not page.endswith(".md"):
            continue
        for name in re.findall(r'--8<-- "README\.md:([\w-]+)"', _read("docs", page)):
            assert f"--8<-- [start:{name}]" in readme and f"--8<-- [end:{name}]" in readme, (page, name)


def test_every_page_has_its_place_in_the_navigation():
    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as fh:
        nav = yaml.safe_load(fh)["nav"]
    in_nav = {page for entry in nav for page in entry.values()}
    pages = {p for p in os.listdir(os.path.join(ROOT, "docs")) if p.endswith(".md")}
    assert pages - in_nav == set(), "add these pages to nav in mkdocs.yml"
    assert in_nav - pages == set()


def test_every_test_a_page_cites_exists():
    """A page citing `test_x.py::test_name` (docs/reliability.md's last column, for one) names a
    test that is there: a renamed or moved test fails here, not silently in the docs."""
    tests = os.path.join(ROOT, "tests")
    by_name: dict[str, list[str]] = {}
    for folder, _, files in os.walk(tests):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                by_name.setdefault(name, []).append(os.path.join(folder, name))
    pages = ["README.md"] + [
        os.path.join("docs", p) for p in os.listdir(os.path.join(ROOT, "docs")) if p.endswith(".md")
    ]
    missing = []
    for page in pages:
        for path, test in re.findall(r"((?:[\w/]+/)?test_\w+\.py)::(\w+)", _read(page)):
            sources = [_read(f) for f in by_name.get(os.path.basename(path), [])]
            if not any(re.search(rf"^\s*(?:async )?def {test}\(", s, flags=re.M) for s in sources):
                missing.append(f"{page}: {path}::{test}")
    assert missing == [], "these cited tests do not exist (renamed or moved?)"


def test_every_doc_the_code_cites_is_in_the_repository():
    """Code and tests cite platform facts and pages as `docs/<page>.md`: each must exist here
    (a file outside the repository, such as a team's notes, is no source for a reader)."""
    cited = set()
    for top in ("spark_tracking", "tests", "benchmarks"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith((".py", ".sh")):
                    with open(os.path.join(folder, name), encoding="utf-8") as fh:
                        text = fh.read()
                    cited.update(re.findall(r"\bdocs/([\w-]+\.md)", text))
                    assert not re.search(r"(?<![/\w])PLATFORM\.md", text), f"{name}: cite docs/platform.md"
    assert sorted(p for p in cited if not os.path.exists(os.path.join(ROOT, "docs", p))) == []
