"""The page of the report: its CSS and the Jinja template that places the sections."""
from __future__ import annotations

import re

CSS = """
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; background: #fff; }
main.report { padding: 0 28px 64px; }
header { border-bottom: 1px solid #ddd; padding-bottom: 10px; }
nav.top { position: sticky; top: 0; z-index: 10; background: rgba(255,255,255,0.95); padding: 8px 0;
          border-bottom: 1px solid #eee; margin-bottom: 8px; }
nav.top a { margin-right: 16px; text-decoration: none; color: #1f5fa8; font-weight: 500; }
h1 { font-size: 24px; margin: 18px 0 4px; } h2 { font-size: 20px; margin: 36px 0 8px; padding-top: 8px;
     border-top: 2px solid #e6e6e6; }
section, h3 { scroll-margin-top: 52px; }
h3 { font-size: 16px; margin: 22px 0 6px; } h4 { font-size: 14px; margin: 16px 0 6px; }
p { max-width: 110ch; }
table.data { border-collapse: collapse; margin: 6px 0 14px; }
table.data th, table.data td { border-bottom: 1px solid #e8e8e8; padding: 4px 10px; text-align: left;
       vertical-align: middle; }
table.data th { background: #f5f5f5; font-weight: 600; }
table.groups { width: 100%; }
table.groups td:first-child { white-space: nowrap; font-weight: 600; }
.num { font-variant-numeric: tabular-nums; }
.bar { display: inline-block; width: 110px; height: 10px; background: #eee; margin-right: 8px;
       vertical-align: middle; border-radius: 2px; overflow: hidden; }
.bar > span { display: block; height: 100%; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 6px; }
.th { display: inline-block; background-repeat: no-repeat; background-size: auto 100%;
      background-position: 0 0; background-color: #f0f0f0; vertical-align: middle; border-radius: 2px; }
.cards { display: flex; flex-wrap: wrap; gap: 6px 14px; }
figure.card { margin: 0; }
figure.card figcaption { font-size: 12px; color: #555; line-height: 1.3; margin-top: 2px; }
.small { color: #666; font-size: 13px; }
.concept { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; background: #f1f3f6;
           padding: 0 5px; border-radius: 3px; white-space: nowrap; }
.label { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
.strips { display: grid; grid-template-columns: minmax(140px, 14ch) 1fr; column-gap: 16px; }
.qrow { display: contents; }
.qrow > div { padding: 8px 0; border-bottom: 1px solid #eee; }
.qname q { font-weight: 600; }
.plotrow { display: flex; gap: 16px; align-items: flex-start; margin: 8px 0 16px; }
.plotrow > .plot { flex: 1 1 auto; min-width: 0; }
.plot { margin: 8px 0 16px; }
aside.peek { flex: 0 0 auto; border: 1px solid #ddd; border-radius: 6px; padding: 10px 12px;
             background: #fafafa; position: sticky; top: 56px; min-height: 120px; }
aside.peek .peek-title { font-weight: 600; margin-bottom: 6px; }
aside.peek .peek-text { white-space: pre-line; margin-top: 6px; }
aside.peek:not(.on) .peek-title { color: #888; font-weight: 400; }
.glances { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 12px; margin: 14px 0; }
.glance { border: 1px solid #e3e3e3; border-radius: 8px; padding: 10px 14px; background: #fbfbfb; }
.glance-title { font-size: 13px; color: #555; text-transform: uppercase; letter-spacing: .03em; }
.glance-big { font-size: 26px; font-weight: 650; margin: 2px 0; }
.verdict { font-size: 15px; }
.spurious { border-left: 4px solid #e15759; padding: 6px 12px; margin: 12px 0; }
.pair { display: flex; gap: 24px; flex-wrap: wrap; margin-top: 4px; }
.gcols { display: flex; flex-wrap: wrap; gap: 8px 32px; }
@media (max-width: 1100px) { .plotrow { flex-direction: column; } aside.peek { position: static; } }
"""


def plot_name(name: str) -> str:
    """A bokeh root name usable in the template (letters, digits and underscores)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def page_template(sections: list[tuple[str, list[tuple[str, str]]]]) -> str:
    """Jinja template (extends bokeh's file template): the header, then per section an ordered list
    of ("html", variable) / ("plot", root name) / ("peek", variable) pieces. All text goes in as
    variables that the section builders escaped; the template adds only fixed markup."""
    body = ['<main class="report">', "{{ header_html }}"]
    for sid, pieces in sections:
        body.append(f'<section id="{sid}">')
        i = 0
        while i < len(pieces):
            kind, ref = pieces[i]
            if kind == "html":
                body.append(f"{{{{ {ref} }}}}")
            elif kind == "plot":
                plot = f'<div class="plot" data-plot="{ref}">{{{{ embed(roots.{ref}) }}}}</div>'
                if i + 1 < len(pieces) and pieces[i + 1][0] == "peek":
                    body.append(f'<div class="plotrow">{plot}{{{{ {pieces[i + 1][1]} }}}}</div>')
                    i += 1
                else:
                    body.append(plot)
            i += 1
        body.append("</section>")
    body.append("</main>")
    return (
        "{% block preamble %}<style>{{ css }}</style><style>{{ thumb_css }}</style>{% endblock %}\n"
        "{% block contents %}\n" + "\n".join(body) + "\n{% endblock %}\n"
    )
