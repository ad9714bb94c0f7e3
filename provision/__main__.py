import gc
import sys

gc.set_threshold(100_000, 50, 100)  # before the imports too: see cli.GC_THRESHOLD

from .cli import main  # noqa: E402

sys.exit(main())
