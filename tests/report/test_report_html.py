"""report.html: one offline file with the matrix, every clause, and every run string escaped."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conformance.report.html import render_html, safe_href, write_html
from conformance.report.model import Results
from conformance.tour import resolve as tour_link

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def page(tmp_path: Path, sample: Results) -> str:
    path = tmp_path / "report.html"
    write_html(sample, path)
    return path.read_text(encoding="utf-8")


class Collect(HTMLParser):
    """Tags with their attributes, to check the page's structure without regexes over markup."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Collect()
    parser.feed(page)
    return parser.tags


def test_matrix_and_every_clause(page: str, sample: Results) -> None:
    assert 'id="matrix"' in page
    for cid in sample.clauses:
        assert cid in page
        assert f'id="clause-{cid}"' in page


def test_hostile_strings_are_escaped(page: str) -> None:
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # exactly one script element: ours, inline
    scripts = [attrs for tag, attrs in tags(page) if tag == "script"]
    assert scripts == [{}]


def test_no_remote_fetches(page: str) -> None:
    for tag, attrs in tags(page):
        for name in ("src", "href", "action", "srcset", "data"):
            value = attrs.get(name) or ""
            if tag == "a" and name == "href":
                continue  # a link a person may click is not a fetch
            assert not re.match(r"\s*(https?:)?//", value), (tag, attrs)
        assert tag not in {"img", "iframe", "object", "embed"} or not attrs.get("src")
        if tag == "link":
            assert attrs.get("rel") not in {"stylesheet", "preload", "prefetch", "icon"}, attrs
        if tag == "script":
            assert "src" not in attrs
    assert "@import" not in page
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    assert "default-src 'none'" in page  # the CSP forbids fetches even if a future template adds one


def test_unsafe_links_are_not_links(page: str) -> None:
    assert 'href="javascript:' not in page
    assert safe_href("javascript:alert(1)") is None
    assert safe_href("https://docs.kernel.org/x") == "https://docs.kernel.org/x"
    assert safe_href("docs/tour.md#step-3") == "docs/tour.md#step-3"
    assert f'href="{tour_link("docs/tour.md#step-3")}"' in page  # a tour step becomes a link where it is rendered


def test_matrix_cells_and_rows_carry_filter_data(page: str, sample: Results) -> None:
    found = tags(page)
    cells = [a for t, a in found if t == "td" and "data-verdict" in a]
    rows = [a for t, a in found if t == "tr" and (a.get("class") or "") == "clause"]
    assert len(rows) == len(sample.clauses)
    assert all(r.get("data-area") and r.get("data-level") in {"MUST", "SHOULD", "MAY"} for r in rows)
    assert len(cells) == len(sample.clauses) * len(sample.columns())
    verdicts = {c["data-verdict"] for c in cells}
    assert verdicts == {"pass", "fail", "warn", "skip", "xfail", "error", "timeout", "unreachable"}
    for control in ("f-area", "f-level", "f-verdict", "f-text"):
        assert f'id="{control}"' in page
    assert 'class="area" data-area="overlay"' in page


def test_sections_facts_failures_skips(page: str) -> None:
    assert 'id="facts"' in page and "kernel.release" in page and "kernel.config.OVERLAY_FS" in page
    assert page.index('id="failures"') < page.index('id="skips"')
    failures = page[page.index('id="failures"'): page.index('id="skips"')]
    # bad ones before the warning
    assert failures.index("finding v-unreachable") < failures.index("finding v-warn")
    assert failures.index("finding v-fail") < failures.index("finding v-warn")
    assert "<pre>ENOENT</pre>" in failures
    skips = page[page.index('id="skips"'): page.index('id="facts"')]
    assert "CAP_SYS_ADMIN" in skips and "known deviation" in skips


def test_autoescape_applies_to_the_template_itself(sample: Results) -> None:
    """A guard against someone renaming the template or changing the environment."""
    from conformance.report.html import TEMPLATE, _environment

    env = _environment()
    assert TEMPLATE.endswith(".j2")
    assert callable(env.autoescape) and env.autoescape(TEMPLATE)
    assert HOSTILE not in render_html(sample)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium for a headless run of the filter JS")
def test_filters_hide_rows_in_a_real_browser(tmp_path: Path, page: str) -> None:
    """Set the verdict and text filters, let the inline JS run, and read the DOM back."""
    driver = """<script>
    var v = document.getElementById("f-verdict"); v.value = "fail"; v.dispatchEvent(new Event("change"));
    var t = document.getElementById("f-text"); t.value = "whiteout"; t.dispatchEvent(new Event("input"));
    </script></body>"""
    path = tmp_path / "driven.html"
    path.write_text(page.replace("</body>", driver), encoding="utf-8")
    done = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    visible = [a["id"] for t, a in tags(done.stdout)
               if t == "tr" and a.get("class") == "clause" and "hidden" not in a]
    assert visible == ["clause-OVL-WHITEOUT-001"]
    assert "1 of 6 clauses" in done.stdout
