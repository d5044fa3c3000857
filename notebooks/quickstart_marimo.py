import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full", app_title="SemanticLens quickstart (marimo)")


@app.cell(hide_code=True)
def _(mo):
    mo.md(
        r"""
        # SemanticLens quickstart, in marimo

        **SemanticLens** (Dreyer, Berend et al., 2025) makes the knowledge inside a vision model
        searchable: every *component* of a layer (a conv channel, an MLP unit, an SAE latent) gets
        one vector in the embedding space of a foundation model such as CLIP, the mean embedding of
        its *concept examples* (the crops of the images on which it fires most). Text and images share
        CLIP's space, so components can be searched with words, labelled with a vocabulary, mapped,
        audited and compared.

        This is the marimo version of `quickstart.ipynb`: the same Lens on the **demo world** that ships
        with the package, and every view of `semlens_widgets` (they are anywidgets, so they run in
        marimo as in JupyterLab). Run it with `marimo edit notebooks/quickstart_marimo.py` (or
        `marimo run` for the app view). The first run computes for a few minutes on a laptop CPU;
        the results are stored in `demo-lens-store/` next to the notebook (or `$SLW_DEMO_STORE`) and
        later runs load them in seconds.
        """
    )
    return


@app.cell
def _():
    import os

    import marimo as mo

    import semlens_widgets as slw
    return mo, os, slw


@app.cell
def _(mo, os, slw):
    world = slw.demo.load()
    store = os.environ.get("SLW_DEMO_STORE") or str(mo.notebook_dir() / "demo-lens-store")
    lens = slw.Lens(world.model, world.dataset, world.fm, layers=world.layers, m=30,
                    class_names=world.class_names, store=store, progress=False)
    lens.run()                              # collect + crop + embed (loads from the store when done)
    lens.set_vocabulary(world.concepts())   # labels shown by search, gallery and map
    STAR = world.shortcut_target            # the class with the planted watermark shortcut
    VALID = world.valid_concepts[world.shortcut_class]
    mo.md(f"`{lens}`")
    return STAR, VALID, lens, world


@app.cell(hide_code=True)
def _(mo):
    mo.md(
        r"""
        ## Search by text

        `score_k = cos(probe, theta_k) - cos(null, theta_k)` (paper eq. 4): the probe is the text's
        embedding, `null` the empty prompt's. The table is ranked by score; the search box below shows
        each hit's concept examples.
        """
    )
    return


@app.cell
def _(lens):
    hits = lens.search("watermark", k=8)
    hits
    return (hits,)


@app.cell
def _(mo, slw, lens):
    search = mo.ui.anywidget(slw.SearchBox(lens, query="sand"))
    search
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(
        r"""
        ## One component, the semantic map, the attribution graph

        The gallery shows the crops of the best "watermark" hit, its label, clarity and the classes
        it matters for; the map is a UMAP of all `theta_k` of `block4` coloured by label; the Sankey
        shows how the relevance of the class *star* flows through labelled concepts.
        """
    )
    return


@app.cell
def _(hits, lens, mo, slw):
    gallery = mo.ui.anywidget(slw.ConceptGallery(lens, "block4", int(hits.iloc[0].component)))
    gallery
    return


@app.cell
def _(lens, mo, slw):
    semantic_map = mo.ui.anywidget(slw.SemanticMap(lens, "block4"))
    semantic_map
    return


@app.cell
def _(STAR, lens, mo, slw):
    sankey = mo.ui.anywidget(slw.AttributionSankey(lens, STAR))
    sankey
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(
        r"""
        ## Audit and compare

        The audit of *star*: each component's alignment with the valid concept (x) and with
        "watermark" (y), sized by its relevance for the class; the planted shortcut shows as large red
        points. The comparison puts `block3` and `block4` side by side (paper eqs. 5/6).
        """
    )
    return


@app.cell
def _(STAR, VALID, lens, mo, slw):
    audit = mo.ui.anywidget(slw.AuditView(lens, VALID, ["watermark"], "block4", STAR))
    audit
    return


@app.cell
def _(lens, mo, slw):
    compare = mo.ui.anywidget(slw.CompareView(lens, lens, "block3", "block4", names=("block3", "block4")))
    compare
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(
        r"""
        ## The explorer

        Search box, map, gallery, Sankey and audit with linked selection: selecting a component
        anywhere selects it everywhere.
        """
    )
    return


@app.cell
def _(STAR, VALID, lens, mo, slw):
    explorer = slw.Explorer(lens, target=STAR, valid=VALID, spurious=["watermark"])  # its views in marimo stacks
    explorer
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(
        r"""
        ## A report to send

        `lens.report(path, audit=...)` writes one standalone HTML file (labels, search strips, the map,
        the audit, the attribution summary, the measures) that opens in any browser without Python.
        """
    )
    return


@app.cell
def _(STAR, VALID, lens, mo, world):
    path = lens.report(mo.notebook_dir() / "reports" / "quickstart_marimo.html", progress=False,
                       audit=dict(valid=VALID, spurious=["watermark", "ruler", "band-aid", "red tint"], target=STAR))
    mo.md(f"Wrote `{path.name}` ({path.stat().st_size / 1e6:.1f} MB) for the {len(world.class_names)} classes "
          "of the demo world.")
    return


if __name__ == "__main__":
    app.run()
