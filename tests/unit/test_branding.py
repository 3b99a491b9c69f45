"""Operator branding: what the settings accept, what they refuse at start, and what
the served pages get (``branding.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from binderless.branding import Branding, render_rich_text
from binderless.settings import Settings, load_settings

SITE = Path(__file__).resolve().parents[2] / "site"


def brand(**fields: str) -> Branding:
    return Branding.from_settings(Settings(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(("env", "words"), [
    ({"BINDERLESS_BRAND_ACCENT": "red"}, "brand_accent must be a colour"),
    ({"BINDERLESS_BRAND_BACKGROUND": "#12345"}, "brand_background must be a colour"),
    ({"BINDERLESS_BRAND_TEXT": "#abc; color: red"}, "brand_text must be a colour"),
    ({"BINDERLESS_BRAND_LOGO": "/nowhere/logo.png"}, "does not exist"),
    ({"BINDERLESS_BRAND_LOGO": "javascript:alert(1)"}, "not a javascript: address"),
    ({"BINDERLESS_BRAND_LOGO": "data:image/svg+xml,<svg/>"}, "not a data: address"),
    ({"BINDERLESS_BRAND_FOOTER": '<a href="javascript:alert(1)">x</a>'}, "is not an http(s)"),
    ({"BINDERLESS_BRAND_FOOTER": '<a href="//evil.example/">x</a>'}, "is not an http(s)"),
    ({"BINDERLESS_BRAND_FOOTER": "<script>alert(1)</script>"}, "not <script>"),
    ({"BINDERLESS_BRAND_ANNOUNCEMENT": '<a href="/" onclick="x()">x</a>'}, "not onclick"),
    ({"BINDERLESS_BRAND_ANNOUNCEMENT": "<img src=x onerror=alert(1)>"}, "not <img>"),
])
def test_invalid_branding_is_refused_when_settings_load(env: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError) as refused:
        load_settings(env)
    assert words in str(refused.value)


def test_a_logo_must_be_an_image_file_that_exists(tmp_path: Path) -> None:
    text = tmp_path / "logo.txt"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="must be an image file"):
        brand(brand_logo=str(text))
    logo = tmp_path / "logo.svg"
    logo.write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    found = brand(brand_logo=str(logo))
    assert found.logo_src == "/branding/logo.svg" and found.logo_file == logo


def test_footer_keeps_text_and_safe_links_only_escaped() -> None:
    assert render_rich_text('Run by <a href="https://lab.example/about?a=1&b=2">Lab</a> & co',
                            "brand_footer") == (
        'Run by <a href="https://lab.example/about?a=1&amp;b=2">Lab</a> &amp; co')
    assert render_rich_text("1 < 2 &lt;b&gt;", "brand_footer") == "1 &lt; 2 &lt;b&gt;"
    assert render_rich_text('<a href="mailto:ops@lab.example">mail</a>', "x") == (
        '<a href="mailto:ops@lab.example">mail</a>')


def test_pages_get_the_colours_name_announcement_and_footer() -> None:
    branding = brand(brand_name="Lab <Binder>", brand_accent="#a01060",
                     brand_announcement='Maintenance on <a href="/help.html">Friday</a>',
                     brand_footer="Operated by the Lab")
    for name in ("index.html", "loading.html"):
        page = branding.apply((SITE / name).read_text())
        head = page.split("</head>", 1)[0]
        assert "--accent:#a01060;" in head  # in the head: the first paint is branded
        assert ">Lab &lt;Binder&gt;</a>" in page and ">binderless</a>" not in page
        assert '<p class="brand-announcement" id="brand-announcement" role="note">Maintenance '\
               'on <a href="/help.html">Friday</a></p>' in page
        assert page.index("brand-announcement\"") > page.index("</header>")
        assert '<footer class="brand-footer" id="brand-footer">Operated by the Lab</footer>' \
            in page
        assert "<title>" in page and "Lab &lt;Binder&gt;" in page.split("</title>")[0]


def test_no_branding_leaves_pages_as_shipped() -> None:
    page = (SITE / "index.html").read_text()
    assert brand().apply(page) == page
    assert not brand().active


def test_a_light_accent_gets_dark_text_on_it() -> None:
    assert brand(brand_accent="#ffd700").colours["--on-accent"] == "#000000"
    assert brand(brand_accent="#102030").colours["--on-accent"] == "#ffffff"
