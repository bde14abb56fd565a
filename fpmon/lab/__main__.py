"""`python -m fpmon.lab lab run ...`: the lab without the other subsystems' dependencies."""

import sys

from fpmon.lab.cli import main

sys.exit(main())
