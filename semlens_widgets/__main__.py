"""``python -m semlens_widgets ...``: the ``semlens`` command, also what torchrun starts
(``torchrun --nproc_per_node=N -m semlens_widgets run ...``)."""
import sys

from semlens_widgets.cli import main

if __name__ == "__main__":
    sys.exit(main())
