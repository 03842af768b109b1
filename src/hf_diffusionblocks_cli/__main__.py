"""`python -m hf_diffusionblocks_cli`: the same as the `hf-diffusionblocks` command."""

import sys

from . import main

sys.exit(main())
