"""dreamzero_policy: the ROS 2 layer of dreamzero-ros (ARCHITECTURE.md section 1).

Thin rclpy glue over ``dreamzero_model`` and ``dreamzero_embodiments``: nodes, message conversion
and the ``dreamzero`` command line. Anything computable without ROS lives in those two packages.
"""
