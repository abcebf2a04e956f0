"""The other process of the cross-process interface tests (test_interfaces.py).

Usage:
    python interface_peer.py publish-chunk TOPIC FIELDS_JSON   publish an ActionChunk built from the
        JSON fields every 50 ms once a subscriber is matched, until killed
    python interface_peer.py serve-mode SERVICE                serve SetControlMode: accepts
        teleop | policy | hold, refuses anything else and keeps the current mode

Prints ``ready`` on stdout once its publisher or service exists.
"""
from __future__ import annotations

import json
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from dreamzero_msgs.msg import ActionChunk
from dreamzero_msgs.srv import SetControlMode

MODES = ("teleop", "policy", "hold")


def build_chunk(fields: dict) -> ActionChunk:
    chunk = ActionChunk()
    chunk.header.stamp.sec = fields["header"]["stamp"]["sec"]
    chunk.header.stamp.nanosec = fields["header"]["stamp"]["nanosec"]
    chunk.header.frame_id = fields["header"]["frame_id"]
    for name in ("embodiment", "session_id", "chunk_id", "names", "relative", "anchor", "horizon", "dt",
                 "values", "latency"):
        setattr(chunk, name, fields[name])
    return chunk


def publish_chunk(node: Node, topic: str, fields: dict) -> None:
    chunk = build_chunk(fields)
    publisher = node.create_publisher(ActionChunk, topic, 10)

    def tick() -> None:
        if publisher.get_subscription_count() > 0:
            publisher.publish(chunk)

    node.create_timer(0.05, tick)


def serve_mode(node: Node, service: str) -> None:
    state = {"mode": "hold"}

    def handle(request: SetControlMode.Request, response: SetControlMode.Response) -> SetControlMode.Response:
        if request.mode in MODES:
            state["mode"] = request.mode
            response.success, response.message = True, f"mode set to {request.mode}"
        else:
            response.success = False
            response.message = f"unknown mode '{request.mode}'; expected one of {', '.join(MODES)}"
        response.mode = state["mode"]
        return response

    node.create_service(SetControlMode, service, handle)


def main(argv: list[str]) -> None:
    with rclpy.init():
        node = Node("interface_peer")
        if argv[0] == "publish-chunk":
            publish_chunk(node, argv[1], json.loads(argv[2]))
        elif argv[0] == "serve-mode":
            serve_mode(node, argv[1])
        else:
            raise SystemExit(f"unknown role {argv[0]!r}")
        print("ready", flush=True)
        try:
            rclpy.spin(node)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
