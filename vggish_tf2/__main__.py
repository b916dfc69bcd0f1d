"""``python -m vggish_tf2 ...`` is the ``vggish-tf2`` command."""
import sys

from vggish_tf2.cli import main

sys.exit(main())
