"""The page of the report: its CSS and the Jinja template that places the sections."""
from __future__ import annotations

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 0; padding: 0 24px 48px; background: #fff; }
header { border-bottom: 1px solid #ddd; margin-bottom: 12px; }
nav a { margin-right: 14px; }
h1 { font-size: 22px; margin: 18px 0 4px; } h2 { font-size: 18px; margin-top: 28px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
table.data { border-collapse: collapse; margin: 6px 0 14px; }
table.data th, table.data td { border-bottom: 1px solid #e4e4e4; padding: 3px 8px; text-align: left;
       vertical-align: middle; }
table.data th { background: #f4f4f4; }
.num { font-variant-numeric: tabular-nums; }
.bar { display: inline-block; width: 90px; height: 9px; background: #eee; margin-right: 6px; }
.bar > div { height: 100%; background: #4c78a8; }
img.thumbs { image-rendering: auto; border: 1px solid #ddd; vertical-align: middle; }
.small { color: #666; font-size: 12px; margin-top: 4px; }
.spurious { border-left: 3px solid #d62728; padding: 4px 10px; margin: 10px 0; }
.concept, .label { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
.plot { margin: 8px 0 16px; }
"""


def page_template(sections: list[tuple[str, str, list[tuple[str, str]]]]) -> str:
    """Jinja template (extends bokeh's file template): per section, a heading and an ordered
    list of ("html", var) / ("plot", root name) pieces. All text goes in as variables that
    are escaped by the section builders; the template adds only fixed markup."""
    body = ["{{ header_html }}"]
    for sid, _title, pieces in sections:
        body.append(f'<section id="{sid}">{{{{ {sid}_title }}}}')
        for kind, ref in pieces:
            if kind == "html":
                body.append(f"{{{{ {ref} }}}}")
            else:
                body.append(f'<div class="plot" data-plot="{ref}">{{{{ embed(roots.{ref}) }}}}</div>')
        body.append("</section>")
    return (
        "{% block preamble %}<style>{{ css }}</style>{% endblock %}\n"
        "{% block contents %}\n" + "\n".join(body) + "\n{% endblock %}\n"
    )
