"""``python -m dreamzero_model.training``: the ``dreamzero train`` command without the ROS package."""
import sys

from dreamzero_model.training.cli import main

sys.exit(main())
