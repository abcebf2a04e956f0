"""Simulated robots for closed-loop runs without hardware (ARCHITECTURE.md §2, "Simulation nodes").

ROS-free like the rest of ``dreamzero_embodiments``: numpy, pybullet and the embodiment YAMLs only.
The ROS nodes that drive these worlds live in ``dreamzero_policy`` (``sim_droid.py``). pybullet is
imported only by the modules here, never by the package ``__init__``, so ``dreamzero_embodiments``
stays importable without it.
"""
