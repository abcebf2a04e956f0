"""``python -m dreamzero_model.serving``: the ``dreamzero serve`` command without the ROS package."""
import sys

from dreamzero_model.serving.cli import main

sys.exit(main())
