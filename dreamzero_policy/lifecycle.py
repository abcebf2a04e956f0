"""The lifecycle shape every dreamzero node shares (STYLE.md items 14, 27-32), and the console-script loop.

:class:`ManagedNode` turns the transitions into three hooks: ``_setup()`` on configure (an exception
is logged with its traceback, ``_teardown()`` runs and the node stays re-configurable), ``_teardown()``
on cleanup, shutdown and a failed configure (it must tolerate partial state), and ``_set_active()`` on
activate/deactivate. :func:`spin_node` is the ``main()`` of every node: init, an ``OrderlyExecutor``,
Ctrl-C handled, the node torn down.
"""
from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from dreamzero_policy.executor import OrderlyExecutor


class ManagedNode(LifecycleNode):
    """A lifecycle node whose subclasses implement ``_setup``, ``_teardown`` and ``_set_active``."""

    def _setup(self) -> None:
        raise NotImplementedError

    def _teardown(self) -> None:
        raise NotImplementedError

    def _set_active(self, active: bool) -> None:
        raise NotImplementedError

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._setup()
        except Exception:  # noqa: BLE001 - a failed configure must leave the node re-configurable
            self.get_logger().error(f"configure failed:\n{traceback.format_exc()}")
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._set_active(True)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._set_active(False)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def destroy_entities(self, entities: Iterable) -> None:
        """Destroy subscriptions, services, clients and timers created in ``_setup``."""
        for entity in entities:
            for destroy in (self.destroy_subscription, self.destroy_service, self.destroy_client, self.destroy_timer):
                if destroy(entity):
                    break


def spin_node(make_node: Callable[[], Node], args: list[str] | None = None) -> None:
    """Console-script body: spin the node on an OrderlyExecutor until Ctrl-C or shutdown."""
    with rclpy.init(args=args):
        node = make_node()
        executor = OrderlyExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            executor.shutdown(timeout_sec=5.0)
            if isinstance(node, ManagedNode):
                node._teardown()
            node.destroy_node()
