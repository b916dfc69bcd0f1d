"""``python -m vggish_tf2.devices``: print the device report."""
import sys

from vggish_tf2.devices.report import main

sys.exit(main())
