"""An operator's branding of the home and loading pages, from settings alone.

The pages in ``site/`` stay as shipped (so an upgrade replaces them and the branding
stays, since it lives in the settings): the server rewrites each page as it serves it
(``Branding.apply``), putting a ``<style>`` block of CSS variables in its head (so the
first paint is already branded, with no flash), the operator's name and logo in its
header, an announcement line under the header and a footer above the end of its body.

Every value is checked when the settings load (``Branding.from_settings`` raises
``ValueError``, which stops the server from starting): colours are ``#rgb`` or
``#rrggbb``; a logo is an https (or http) URL or an image file that exists; the footer and
the announcement are text with ``<a href>`` links whose addresses are http(s), mailto or
a path on this server. What is served is rebuilt from the parsed pieces, escaped, never
the operator's string as written.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["LOGO_PATH", "Branding", "render_rich_text"]

#: Where the server serves a logo given as a file (``Branding.logo_file``).
LOGO_PATH = "/branding/logo"
LOGO_TYPES = {".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg",
              ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}
MAX_LOGO_BYTES = 1024 * 1024
MAX_TEXT = 2000
COLOUR_RE = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_HEAD_END = re.compile(r"</head\s*>", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_HEADER_END = re.compile(r"</header\s*>", re.IGNORECASE)
_BRAND = re.compile(r'<a class="brand" href="/">.*?</a>', re.DOTALL)
_TITLE = re.compile(r"<title>(.*?)</title>", re.DOTALL)


def _rgb(colour: str) -> tuple[int, int, int]:
    digits = colour[1:]
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{max(0, min(255, round(c))):02x}" for c in rgb)


def _mix(colour: str, other: tuple[int, int, int], amount: float) -> str:
    (r, g, b), (r2, g2, b2) = _rgb(colour), other
    return _hex((r + (r2 - r) * amount, g + (g2 - g) * amount, b + (b2 - b) * amount))


def _luminance(colour: str) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _safe_href(href: str) -> bool:
    """http(s) and mailto addresses, and paths on this server (not ``//host``)."""
    if any(ord(c) < 0x21 or c == "\\" for c in href):
        return False
    if href.startswith("/"):
        return not href.startswith("//")
    parts = urlsplit(href)
    if parts.scheme in ("http", "https"):
        return bool(parts.netloc)
    return parts.scheme == "mailto"


class _LinksOnly(HTMLParser):
    """Parses text with ``<a href>`` links into escaped HTML; anything else is an error."""

    def __init__(self, setting: str) -> None:
        super().__init__(convert_charrefs=True)
        self.setting = setting
        self.out: list[str] = []
        self.open = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a" or self.open:
            raise ValueError(f"{self.setting} may hold text and <a href> links only, "
                             f"not <{tag}>")
        names = {name for name, _ in attrs}
        if names - {"href"}:
            raise ValueError(f"{self.setting}: links may have an href only, not "
                             f"{', '.join(sorted(names - {'href'}))}")
        href = dict(attrs).get("href") or ""
        if not _safe_href(href):
            raise ValueError(f"{self.setting}: the link {href!r} is not an http(s), mailto "
                             "or /path address")
        self.out.append(f'<a href="{html.escape(href, quote=True)}">')
        self.open = True

    def handle_endtag(self, tag: str) -> None:
        if tag != "a" or not self.open:
            raise ValueError(f"{self.setting} may hold text and <a href> links only, "
                             f"not </{tag}>")
        self.out.append("</a>")
        self.open = False

    def handle_data(self, data: str) -> None:
        self.out.append(html.escape(data, quote=False))

    def handle_comment(self, data: str) -> None:
        raise ValueError(f"{self.setting} may hold text and <a href> links only")

    def handle_decl(self, decl: str) -> None:
        self.handle_comment(decl)

    def handle_pi(self, data: str) -> None:
        self.handle_comment(data)

    def unknown_decl(self, data: str) -> None:
        self.handle_comment(data)


def render_rich_text(value: str, setting: str) -> str:
    """``value`` (text with ``<a href>`` links) as safe HTML; ``ValueError`` for anything
    else (other tags, other attributes, unsafe addresses)."""
    if len(value) > MAX_TEXT:
        raise ValueError(f"{setting} is longer than {MAX_TEXT} characters")
    parser = _LinksOnly(setting)
    parser.feed(value)
    parser.close()
    if parser.open:
        parser.out.append("</a>")
    return "".join(parser.out)


@dataclass(frozen=True)
class Branding:
    """What the pages show instead of binderless's own name, logo and colours."""

    name: str = ""
    #: The logo's address as pages use it (an URL, or ``LOGO_PATH`` + suffix).
    logo_src: str = ""
    #: A logo given as a file: the file the server serves at ``logo_src``.
    logo_file: Path | None = None
    colours: dict[str, str] = field(default_factory=dict)
    footer_html: str = ""
    announcement_html: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Branding:
        """The branding the settings describe; ``ValueError`` naming a wrong one."""
        colours: dict[str, str] = {}
        for name in ("brand_accent", "brand_background", "brand_text"):
            value = getattr(settings, name).strip()
            if value and not COLOUR_RE.fullmatch(value):
                raise ValueError(f"{name} must be a colour as #rgb or #rrggbb, not {value!r}")
        accent = settings.brand_accent.strip().lower()
        if accent:
            dark = _luminance(accent) < 0.35
            colours.update({
                "--accent": accent,
                "--accent-strong": _mix(accent, (0, 0, 0), 0.2) if dark else
                _mix(accent, (0, 0, 0), 0.45),
                "--accent-soft": _mix(accent, (255, 255, 255), 0.88),
                "--on-accent": "#ffffff" if dark else "#000000",
                "--focus": accent,
            })
        if settings.brand_background.strip():
            colours["--bg"] = settings.brand_background.strip().lower()
        if settings.brand_text.strip():
            colours["--text"] = settings.brand_text.strip().lower()
        logo_src, logo_file = cls._logo(settings.brand_logo.strip())
        name = settings.brand_name.strip()
        if len(name) > 80 or any(ord(c) < 0x20 for c in name):
            raise ValueError("brand_name must be one line of at most 80 characters")
        return cls(name=name, logo_src=logo_src, logo_file=logo_file, colours=colours,
                   footer_html=render_rich_text(settings.brand_footer, "brand_footer"),
                   announcement_html=render_rich_text(settings.brand_announcement,
                                                      "brand_announcement"))

    @staticmethod
    def _logo(value: str) -> tuple[str, Path | None]:
        if not value:
            return "", None
        parts = urlsplit(value)
        if parts.scheme in ("http", "https"):
            if not parts.netloc or not _safe_href(value):
                raise ValueError(f"brand_logo {value!r} is not a valid URL")
            return value, None
        if parts.scheme and len(parts.scheme) > 1:  # c:\ paths aside, a scheme is a URL
            raise ValueError(f"brand_logo must be an http(s) URL or an image file, not a "
                             f"{parts.scheme}: address")
        path = Path(value).expanduser()
        suffix = path.suffix.lower()
        if suffix not in LOGO_TYPES:
            raise ValueError(f"brand_logo {value!r} must be an image file: "
                             f"{', '.join(sorted(LOGO_TYPES))}")
        if not path.is_file():
            raise ValueError(f"brand_logo: {value} does not exist (or is no file)")
        if path.stat().st_size > MAX_LOGO_BYTES:
            raise ValueError(f"brand_logo: {value} is larger than {MAX_LOGO_BYTES} bytes")
        return LOGO_PATH + suffix, path.absolute()

    @property
    def active(self) -> bool:
        return bool(self.name or self.logo_src or self.colours or self.footer_html
                    or self.announcement_html)

    def style(self) -> str:
        """The CSS the pages get: variables, and the parts only branded pages have."""
        variables = "".join(f"{k}:{v};" for k, v in self.colours.items())
        return (f'<style id="branding">:root{{{variables}}}'
                ".brand-announcement{margin:0;padding:.55rem 1rem;text-align:center;"
                "background:var(--accent-soft);color:var(--text);"
                "border-bottom:1px solid var(--border)}"
                ".brand-footer{max-width:60rem;margin:2rem auto 1.5rem;padding:0 1rem;"
                "color:var(--muted);font-size:.9rem;text-align:center}"
                ".brand-footer a,.brand-announcement a{color:var(--accent-strong)}"
                ".brand img{object-fit:contain}</style>")

    def apply(self, page: str) -> str:
        """``page`` (one of the site's HTML pages) with this branding."""
        if not self.active or '<style id="branding">' in page:
            return page  # nothing to do, or branded already (the server brands as it sends)
        page = _HEAD_END.sub(lambda m: self.style() + m.group(0), page, count=1)
        if self.name or self.logo_src:
            logo = html.escape(self.logo_src or "/favicon.svg", quote=True)
            name = html.escape(self.name or "binderless")
            alt = "" if self.name else html.escape("binderless", quote=True)
            page = _BRAND.sub(lambda _m: (
                f'<a class="brand" href="/"><img src="{logo}" alt="{alt}" height="28" '
                f'style="width:auto;max-width:160px">{name}</a>'), page, count=1)
        if self.name:
            page = _TITLE.sub(lambda m: "<title>" + m.group(1).replace(
                "binderless", html.escape(self.name)) + "</title>", page, count=1)
        if self.announcement_html:
            page = _HEADER_END.sub(lambda m: m.group(0) + (
                '<p class="brand-announcement" id="brand-announcement" role="note">'
                f"{self.announcement_html}</p>"), page, count=1)
        if self.footer_html:
            page = _BODY_END.sub(lambda m: (
                f'<footer class="brand-footer" id="brand-footer">{self.footer_html}'
                "</footer>" + m.group(0)), page, count=1)
        return page
