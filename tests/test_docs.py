"""The front page and the manual: README.md stays a front page whose links all resolve, and the
pages under docs/ build with `mkdocs build --strict`, so a broken link or anchor fails `make test`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import markdown
import pytest
import yaml

from conftest import scaled_timeout

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MKDOCS_YML = ROOT / "mkdocs.yml"


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], cwd=config.parent, capture_output=True, text=True,
                          timeout=scaled_timeout(300))


def _nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_manual_builds_with_mkdocs_strict(tmp_path):
    proc = _mkdocs_build(MKDOCS_YML, tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    for page in _nav_pages(yaml.safe_load(MKDOCS_YML.read_text())["nav"]):
        built = tmp_path / "site" / ("index.html" if page == "index.md" else Path(page).with_suffix("") / "index.html")
        assert built.is_file(), f"{page} was not built"
    # The generated demo files are carried over as they are, so the pages' links to them work on the site.
    assert (tmp_path / "site" / "demo-run" / "index.html").is_file()
    assert (tmp_path / "site" / "explain" / "demo_tflite-int8.png").is_file()


def test_every_page_under_docs_is_in_the_nav_or_generated():
    nav = set(_nav_pages(yaml.safe_load(MKDOCS_YML.read_text())["nav"]))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    generated = {p for p in pages if p.startswith(("demo-run/", "explain/", "arm64/"))}  # generated reports
    assert pages - generated - nav == set(), "add these pages to mkdocs.yml's nav"
    assert nav <= pages


@pytest.mark.parametrize("broken, named", [("[a page that is not there](no-such-page.md)", "no-such-page.md"),
                                           ("[an anchor that is not there](commands.md#no-such-section)", "#no-such-section"),
                                           ("![an image that is not there](no-such-image.png)", "no-such-image.png")])
def test_a_broken_link_fails_the_strict_build(tmp_path, broken, named):
    """The build above can fail: the same configuration on a copy of the pages with one broken link."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(MKDOCS_YML, tmp_path / "mkdocs.yml")
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text() + f"\n{broken}\n")
    proc = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0, proc.stderr
    assert any(line.startswith("WARNING") and named in line for line in proc.stderr.splitlines()), proc.stderr


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.targets += [attrs[k] for k in ("href", "src") if attrs.get(k)]
        if attrs.get("id"):
            self.ids.add(attrs["id"])


def _parse(md_file: Path) -> _Links:
    # The toc extension gives headings the ids mkdocs gives them, so anchors are checked the way
    # the site checks its own.
    parser = _Links()
    parser.feed(markdown.markdown(md_file.read_text(), extensions=["toc", "tables", "fenced_code"]))
    return parser


def _broken_links(md_file: Path) -> list[str]:
    broken = []
    for target in _parse(md_file).targets:
        url = urlsplit(target)
        if url.scheme or url.netloc:
            continue  # a web address: not checked offline
        path = md_file.parent / unquote(url.path) if url.path else md_file
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif url.fragment and path.suffix == ".md" and url.fragment not in _parse(path).ids:
            broken.append(f"{target}: no such heading in {path.name}")
    return broken


def test_every_relative_link_of_the_readme_resolves():
    assert _broken_links(README) == []


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## A section\n")
    readme = tmp_path / "README.md"
    readme.write_text("[ok](docs/page.md#a-section) [gone](docs/gone.md) [bad anchor](docs/page.md#nothing) "
                      "![gone](docs/gone.png) <https://example.org/not-checked>\n")
    assert _broken_links(readme) == ["docs/gone.md: no such file", "docs/page.md#nothing: no such heading in page.md",
                                     "docs/gone.png: no such file"]


def test_the_readme_is_a_front_page_that_links_every_page_of_the_manual():
    assert len(README.read_text().splitlines()) <= 300
    linked = {urlsplit(t).path for t in _parse(README).targets}
    nav = _nav_pages(yaml.safe_load(MKDOCS_YML.read_text())["nav"])
    assert [p for p in nav if f"docs/{p}" not in linked] == []
    readme = README.read_text()
    for must in ("make demo", "make test", "Not a medical device", "synthetic", "skinscan_edge_notebook.ipynb"):
        assert must in readme
