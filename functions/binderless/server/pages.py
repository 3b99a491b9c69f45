"""Short HTML pages for people who land somewhere a launch page does not cover: a session
that has stopped, an address with nothing at it. API clients keep getting JSON; a browser
(``Accept: text/html``) gets a page that says what happened and offers what helps.
Every value is escaped."""

from __future__ import annotations

import html

from aiohttp import web

__all__ = ["message_page", "wants_page"]


def wants_page(request: web.Request) -> bool:
    """Whether a person's browser asked (a page load), not a script or an API client."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def message_page(title: str, paragraphs: list[str], actions: list[tuple[str, str]], *,
                 status: int) -> web.Response:
    """A page with a heading, paragraphs and links styled as buttons (the first is the main
    one); ``actions`` are (label, href) pairs, hrefs on this server."""
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    buttons = "".join(
        f'<a class="button{" primary" if i == 0 else ""}" href="{html.escape(href, quote=True)}">'
        f"{html.escape(label)}</a>" for i, (label, href) in enumerate(actions))
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)} | binderless</title>"
        "<link rel='icon' href='/favicon.svg' type='image/svg+xml'>"
        "<link rel='stylesheet' href='/assets/css/binderless.css'></head><body>"
        "<header class='site-header'><div class='inner'><a class='brand' href='/'>"
        "<img src='/favicon.svg' alt='' width='28' height='28'>binderless</a></div></header>"
        "<main id='main' tabindex='-1'><section class='card'>"
        f"<h1>{html.escape(title)}</h1>{body}<p class='actions'>{buttons}</p>"
        "</section></main></body></html>")
    return web.Response(text=page, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store"})
