"""The search section: ranked hits per text query with score bars and concept-example strips."""
from __future__ import annotations

from ._html import e, img_tag, label_text

def search_section(lens, queries, search_layer, k, thumbs, n_thumbs):
    parts = []
    for q in queries:
        if not isinstance(q, str):
            raise TypeError(
                f"report queries must be text strings, got {type(q).__name__} ({q!r:.60}); "
                "image probes work in lens.search() and the SearchBox widget"
            )
        hits = lens.search(q, layer=search_layer, k=k)
        rows = []
        smax = max([float(s) for s in hits["score"]] + [1e-12]) if len(hits) else 1.0
        for pos, (_, h) in enumerate(hits.iterrows(), start=1):  # hits come ranked
            score = float(h["score"])
            width = max(0.0, min(1.0, score / smax)) * 100.0
            strip = thumbs.crops(h["layer"], int(h["component"]), n_thumbs)
            rows.append(
                "<tr>"
                f'<td class="num">{pos}</td>'
                f'<td>{e(h["layer"])} #{int(h["component"])}</td>'
                f'<td class="label">{e(label_text(h.get("label")))}</td>'
                f'<td><div class="bar"><div style="width:{width:.1f}%"></div></div>'
                f'<span class="num">{score:.3f}</span></td>'
                f"<td>{img_tag(strip, 'concept examples of ' + str(h['layer']) + ' #' + str(int(h['component'])))}</td>"
                "</tr>"
            )
        body = "".join(rows) or '<tr><td colspan="5"><em>no results</em></td></tr>'
        parts.append(
            f'<div class="query"><h3>Query: <q class="query-text">{e(q)}</q></h3>'
            '<table class="data search"><thead><tr><th>rank</th><th>component</th><th>label</th>'
            f"<th>score</th><th>concept examples</th></tr></thead><tbody>{body}</tbody></table></div>"
        )
    where = "all layers" if search_layer is None else f"layer {search_layer}"
    intro = (
        "<p>Each query is embedded with the foundation model's text encoder (mean over prompt "
        "templates); components are ranked by cosine similarity to their semantic embedding "
        "minus the similarity of the empty prompt (SemanticLens paper, eq. 4). "
        f"Searched: {e(where)}. The strip shows each hit's top concept examples.</p>"
    )
    return intro + "".join(parts)
