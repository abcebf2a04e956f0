"""Bring up DreamZero on one robot (ARCHITECTURE.md §2): policy_node -> adapter_node -> control_mux -> controllers.

    ros2 launch dreamzero_policy dreamzero.launch.py embodiment:=droid backend:=remote server_url:=ws://gpu:8000

Starts, in ``namespace``:
* ``policy_node``, ``adapter_node`` and (``with_mux:=true``) ``control_mux``: lifecycle nodes, each
  configured on start and activated once configuring has reached ``inactive`` (a failed configure is
  logged and left unconfigured; a later operator ``deactivate`` is not undone). The adapter reads
  chunks from ``policy_node/action_chunk`` (the policy node's ``~/action_chunk``) and publishes
  ``policy/<group>`` per controller group; the mux arbitrates ``policy/<group>`` and ``teleop/<group>``
  (modes on ``control_mux/set_mode``) and commands the controllers. With ``with_mux:=false`` the
  adapter's ``policy/<group>`` is remapped straight to each group's ``command_topic`` from the
  embodiment YAML.
* ``robot_state_publisher`` through ``robot_description.launch.py``.
* ``sim_droid`` (``with_sim:=true`` and ``embodiment:=droid``): the simulated DROID, whose executable
  arrives with the simulation work; until then ``with_sim:=true`` fails to find it.

Node parameters, later entries winning: the node's defaults (``dreamzero_policy/params.py``), then
``params_file`` (deployment choices per robot), then the launch arguments. ``embodiment`` and
``use_sim_time`` are always set from the arguments; ``backend``, ``checkpoint``, ``server_url`` and
``prompt`` only when given (empty: the value in ``params_file``, else the node's default).

Arguments:
    embodiment: robot: embodiment YAML, robot description and default params file (droid, agibot_g1, yam).
    backend: where the model runs, local or remote; empty: from params_file.
    checkpoint: checkpoint directory of the local backend, or tiny; empty: from params_file.
    server_url: WebSocket URL of the remote backend; empty: from params_file.
    prompt: initial instruction (change it later on policy_node/prompt); empty: from params_file.
    use_sim_time: take time from /clock (simulation, bag replay).
    with_mux: start control_mux between the adapter and the controllers.
    with_sim: start the simulated DROID (sim_droid); only meaningful for droid.
    namespace: namespace of every node.
    xacro_args: xacro arguments of the robot description, e.g. ``arm_id:=fr3`` (a Franka FR3 on DROID), given to
        robot_state_publisher and, as the ``xacro_args`` parameter, to the nodes that read joint limits.
    joint_name_map: space-separated ``yaml_name=robot_name`` or ``yaml_prefix*=robot_prefix*`` entries renaming
        the embodiment's joints (the nodes' ``joint_name_map`` parameter), e.g. ``panda_*=fr3_*``.
    params_file: ROS 2 parameter file for policy_node, adapter_node and control_mux;
        default: share/dreamzero_policy/launch/params/<embodiment>.yaml.
"""
from __future__ import annotations

from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.action import Action
from launch.actions import (DeclareLaunchArgument, EmitEvent, IncludeLaunchDescription, LogInfo, OpaqueFunction,
                            RegisterEventHandler)
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from dreamzero_embodiments.spec import load_embodiment

PACKAGE = "dreamzero_policy"
EMBODIMENTS = ("droid", "agibot_g1", "yam")
POLICY_NODE = "policy_node"
ADAPTER_NODE = "adapter_node"
MUX_NODE = "control_mux"
SIM_NODE = "sim_droid"
# Launch arguments that override params_file only when not empty.
OPTIONAL_OVERRIDES = ("backend", "checkpoint", "server_url", "prompt")


def _configure_then_activate(node: LifecycleNode, name: str) -> list[Action]:
    """Configure ``node`` now; activate it when configuring ends in inactive; log a failed configure."""
    def change_state(transition_id: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))

    # start_state "configuring": a later operator deactivate (active -> deactivating -> inactive) must
    # not be undone by an automatic activate.
    return [
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
            entities=[change_state(Transition.TRANSITION_ACTIVATE)])),
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state="configuring", goal_state="unconfigured",
            entities=[LogInfo(msg=f"{name} failed to configure (reason in its log); after fixing it run "
                                  f"'ros2 lifecycle set <namespace>/{name} configure'")])),
        change_state(Transition.TRANSITION_CONFIGURE),
    ]


def _lifecycle_nodes(context: LaunchContext) -> list[Action]:
    """policy_node, adapter_node and control_mux (with_mux), wired to each other or straight to the controllers."""
    embodiment = LaunchConfiguration("embodiment").perform(context)
    params_file = LaunchConfiguration("params_file").perform(context)
    if not Path(params_file).is_file():
        raise FileNotFoundError(f"params_file {params_file!r} does not exist (launch argument params_file)")
    namespace = LaunchConfiguration("namespace")
    common = {
        "embodiment": ParameterValue(embodiment, value_type=str),
        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
    }
    given = {name: LaunchConfiguration(name).perform(context) for name in OPTIONAL_OVERRIDES}
    overrides = {name: ParameterValue(value, value_type=str) for name, value in given.items() if value}
    robot = {  # the robot's own names and description, for every node that reads its joints; empty: params_file
        "xacro_args": [arg.replace(":=", "=", 1) for arg in LaunchConfiguration("xacro_args").perform(context).split()],
        "joint_name_map": LaunchConfiguration("joint_name_map").perform(context).split()}
    common.update({name: value for name, value in robot.items() if value})

    chunk_topic = f"{POLICY_NODE}/action_chunk"  # the policy node's ~/action_chunk, resolved in the same namespace
    with_mux = IfCondition(LaunchConfiguration("with_mux")).evaluate(context)
    remappings = []  # without the mux, policy/<group> goes straight to the group's controller (embodiment YAML)
    if not with_mux:
        remappings = [(f"policy/{group.name}", group.command_topic)  # topics only: joint names do not matter
                      for group in load_embodiment(embodiment).controller_groups]

    policy = LifecycleNode(
        package=PACKAGE, executable="policy_node", name=POLICY_NODE, namespace=namespace,
        parameters=[params_file, {**common, **overrides}], output="screen")
    adapter = LifecycleNode(
        package=PACKAGE, executable="adapter_node", name=ADAPTER_NODE, namespace=namespace,
        parameters=[params_file, {**common, "chunk_topic": ParameterValue(chunk_topic, value_type=str)}],
        remappings=remappings, output="screen")
    actions = [adapter, *_configure_then_activate(adapter, ADAPTER_NODE),
               policy, *_configure_then_activate(policy, POLICY_NODE)]
    if with_mux:  # its policy_reset_service default, policy_node/reset, names the policy node above
        mux = LifecycleNode(
            package=PACKAGE, executable="control_mux", name=MUX_NODE, namespace=namespace,
            parameters=[params_file, common], output="screen")
        actions += [mux, *_configure_then_activate(mux, MUX_NODE)]
    return actions


def generate_launch_description() -> LaunchDescription:
    embodiment = LaunchConfiguration("embodiment")
    namespace = LaunchConfiguration("namespace")
    with_sim = LaunchConfiguration("with_sim")
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("embodiment", default_value="droid", choices=list(EMBODIMENTS),
                              description="robot: embodiment YAML, robot description and default params file"),
        DeclareLaunchArgument("backend", default_value="", choices=["", "local", "remote"],
                              description="where the model runs; empty: from params_file"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="local backend's checkpoint directory, or tiny; empty: from params_file"),
        DeclareLaunchArgument("server_url", default_value="",
                              description="WebSocket URL of the remote backend; empty: from params_file"),
        DeclareLaunchArgument("prompt", default_value="",
                              description="initial instruction (later: policy_node/prompt); empty: from params_file"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="take time from /clock"),
        DeclareLaunchArgument("with_mux", default_value="true", choices=["true", "false"],
                              description="start control_mux between the adapter and the controllers"),
        DeclareLaunchArgument("with_sim", default_value="false", choices=["true", "false"],
                              description="start the simulated DROID (sim_droid); only meaningful for droid"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of every node"),
        DeclareLaunchArgument("xacro_args", default_value="",
                              description="xacro arguments of the robot description, e.g. arm_id:=fr3"),
        DeclareLaunchArgument("joint_name_map", default_value="",
                              description="joint renames 'yaml_prefix*=robot_prefix*' ..., e.g. panda_*=fr3_*"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, "launch", "params", [embodiment, ".yaml"]]),
                              description="parameter file of policy_node, adapter_node and control_mux"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "robot_description.launch.py"])),
            launch_arguments={"embodiment": embodiment, "namespace": namespace,
                              "xacro_args": LaunchConfiguration("xacro_args"),
                              "use_sim_time": LaunchConfiguration("use_sim_time")}.items()),
        OpaqueFunction(function=_lifecycle_nodes),
        Node(
            package=PACKAGE,
            executable="sim_droid",  # arrives with the simulation work
            name=SIM_NODE,
            namespace=namespace,
            condition=IfCondition(PythonExpression(["'", with_sim, "' == 'true' and '", embodiment, "' == 'droid'"])),
            output="screen",
        ),
        LogInfo(
            msg=["with_sim:=true only starts a simulation for droid; none started for ", embodiment],
            condition=IfCondition(PythonExpression(["'", with_sim, "' == 'true' and '", embodiment, "' != 'droid'"])),
        ),
    ])
