"""report.html: the Markdown report rendered by markdown-it-py, self-contained (images inlined as
data URIs, styles in the page), laid out to read at 1280 px without horizontal scrolling."""

from __future__ import annotations

import base64
import html

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans KR",sans-serif;line-height:1.45;color:#1b1b1b;
 max-width:1180px;margin:1.5em auto;padding:0 1.2em;overflow-wrap:anywhere}
h1{font-size:1.6em;margin-bottom:.3em}h2{font-size:1.3em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1.1em}
ul{padding-left:1.3em}li{margin:.25em 0}
#verdict + ul{background:#f5f8fc;border-left:4px solid #2b6cb0;padding:.6em .8em .6em 2em}
.table{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
img{max-width:100%;height:auto;display:block;margin:1em 0}
code{font-family:ui-monospace,monospace;font-size:.92em;background:#f2f2f2;padding:0 .2em}
"""


def render_html(markdown: str, images: dict[str, bytes] | None = None, title: str = "kocurate train-eval") -> str:
    """The page for `markdown`; `images` maps the file names the Markdown links to their PNG bytes."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.renderer.rules["table_open"] = lambda *args: '<div class="table"><table>\n'
    md.renderer.rules["table_close"] = lambda *args: "</table></div>\n"
    tokens = md.parse(markdown)
    for index, token in enumerate(tokens):  # headings get ids, so the verdict box can be styled
        if token.type == "heading_open":
            text = tokens[index + 1].content
            token.attrSet("id", "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-"))
        for child in token.children or []:
            if child.type == "image" and images and child.attrGet("src") in images:
                data = base64.b64encode(images[child.attrGet("src")]).decode("ascii")
                child.attrSet("src", f"data:image/png;base64,{data}")
    body = md.renderer.render(tokens, md.options, {})
    return (f"<!doctype html>\n<html lang=\"ko\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n")
