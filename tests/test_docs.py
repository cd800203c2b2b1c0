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
