"""``python -m entrodec.train ...`` (the same as ``entrodec train ...``), which is also what
``torchrun --nproc_per_node=2 -m entrodec.train --preset tiny`` runs in every process."""

import sys

from ..decoding.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
