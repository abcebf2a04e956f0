"""dreamzero_embodiments: robot-side math and the embodiment YAMLs (ARCHITECTURE.md section 1).

Owns one YAML per robot (the single source of truth for joint names, rates, topics, relative masks;
joint limits come from the robot's URDF in ``urdf/``) and the pure functions around the model:
observation packing, view stitching, relative-to-absolute, smoothing, blending, limits.
Imports numpy, scipy, yaml and the pure-Python xacro only: never torch, rclpy or a ROS message
package (tests/test_layering.py). Functions take explicit times and never read a clock.
"""
