"""The demo world at 10 images per class with a run Lens on block4 (activation crops), and a
hand-hooked reference of block4's pooled activations: shared by the describe, faithfulness and
report tests of lens.describe / lens.faithfulness."""
from __future__ import annotations

import torch


def demo_lens(store=None):
    """``(world, lens)``: the demo world (80 test images) and a run Lens over block4 (m=5)."""
    import semlens_widgets as slw

    torch.set_num_threads(2)
    world = slw.demo.load(n_per_class=10)
    lens = slw.Lens(world.model, world.dataset, world.fm, layers=["block4"], m=5, crop="activation",
                    store=store, progress=False, batch_size=40)
    lens.run()
    return world, lens


def block4_activations(model, x: torch.Tensor) -> torch.Tensor:
    """block4's max-pooled activations ``[n, 128]`` of images ``x``, hooked by hand (the reference)."""
    out = []
    h = model.block4.register_forward_hook(lambda m, i, o: out.append(o.amax((2, 3))))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return out[0]
