"""The labels section (the paper's labelling, built on the search score of eq. 4): per layer, every label group with its size, its
mean score and a gallery of its best components; the gaps of the vocabulary; the unlabelled."""
from __future__ import annotations

from ._context import ReportContext, Section
from ._html import bar, e, names_list


def card(ctx: ReportContext, layer: str, k: int, caption: str, n: int | None = None, height: int | None = None) -> str:
    """A component's crops with a caption under them (the caption is already escaped)."""
    strip = ctx.sheet.strip(layer, k, n or ctx.n_thumbs, height)
    return (f'<figure class="card" data-layer="{e(layer)}" data-component="{int(k)}">{strip}'
            f"<figcaption>{caption}</figcaption></figure>")


def labels_section(ctx: ReportContext) -> Section | None:
    if not ctx.labels:
        return None
    sec = Section("labels", "Labels")
    sec.html(
        "<p>Each component gets the concept of the vocabulary whose text embedding is closest to its "
        "semantic embedding, if that concept beats the empty prompt (score = cosine minus the "
        "empty prompt's cosine; SemanticLens paper, labelling). A <b>label group</b> is the set of "
        "components with one label: how many components encode a concept. <b>Gaps</b> are concepts "
        "of the vocabulary that no component carries. The crops are each component's top concept "
        f"examples (of {int(ctx.lens.m)}), the parts of images that make it fire most.</p>"
    )
    for layer in [ctx.layer] + [l for l in ctx.layers if l != ctx.layer]:  # the main layer first
        res = ctx.labels.get(layer)
        if res is None:
            continue
        t = res.table
        n = len(t)
        scores = ctx.label_scores(layer)
        counts = res.counts
        n_lab = int(t["label"].notna().sum())
        sec.html(
            f'<h3 id="labels-{e(layer)}">{e(layer)}: {len(counts)} concepts carried by {n_lab} of {n} '
            f"components, {len(res.gaps)} gaps</h3>"
        )
        rows = []
        top = int(counts.iloc[0]) if len(counts) else 1
        for concept, size in list(counts.items())[: ctx.max_groups]:
            comps = sorted(res.groups[concept], key=lambda c: -scores.get(int(c), 0.0))
            mean = sum(scores.get(int(c), 0.0) for c in comps) / max(1, len(comps))
            cards = "".join(card(ctx, layer, int(c), f"#{int(c)} &middot; {scores.get(int(c), 0.0):.3f}")
                            for c in comps[: ctx.per_group])
            more = len(comps) - min(len(comps), ctx.per_group)
            rows.append(
                f'<tr data-testid="label-group"><td class="label">{e(concept)}</td>'
                f"<td>{bar(size / top, str(int(size)))}</td><td class=\"num\">{mean:.3f}</td>"
                f'<td><div class="cards">{cards}</div>'
                + (f'<div class="small">+ {more} more: {", ".join("#" + str(int(c)) for c in comps[ctx.per_group:ctx.per_group + 12])}'
                   f'{" …" if more > 12 else ""}</div>' if more > 0 else "")
                + "</td></tr>"
            )
        rest = list(counts.items())[ctx.max_groups:]
        sec.html(
            '<table class="data groups"><thead><tr><th>concept</th><th>components</th><th>mean score</th>'
            f"<th>best components (concept examples, score)</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
        if rest:
            sec.html("<p class=\"small\">Smaller groups: "
                     + ", ".join(f'<span class="concept">{e(c)}</span> ({int(s)})' for c, s in rest) + "</p>")
        sec.html(f'<p><b>Gaps</b> (no component of {e(layer)} carries them): {names_list(res.gaps)}</p>')
        if n - n_lab:
            sec.html(f"<p><b>Unlabelled</b>: {n - n_lab} of {n} components; no concept of the vocabulary "
                     "beats the empty prompt for them (see them on the semantic map).</p>")
    return sec
