"""`python -m comfy_aig.training <command> ...` (e.g. under torchrun): the same commands as `comfy-aig`."""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main())
