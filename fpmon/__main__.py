import sys

from fpmon.cli import main

sys.exit(main())
