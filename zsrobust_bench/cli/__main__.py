"""`python -m zsrobust_bench.cli` (the form torchrun needs) runs `zsbench`."""

import sys

from . import main

sys.exit(main())
