"""Bags without rosbag2 (ARCHITECTURE.md §6-7): record, replay and offline evaluation with ``rosbags``."""
