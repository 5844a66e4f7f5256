import sys

from spkrobust.cli import main

sys.exit(main())
