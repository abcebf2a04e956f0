"""Bring up DreamZero on bimanual i2rt YAM: ``dreamzero.launch.py`` with ``embodiment:=yam``.

    ros2 launch dreamzero_policy yam.launch.py backend:=remote server_url:=ws://gpu:8000

Every argument of ``dreamzero.launch.py`` except ``embodiment`` is declared again with the same
default and forwarded; see that file (and README.md, "Launch arguments") for what they do.
Deployment choices for this robot: ``launch/params/yam.yaml``; robot facts:
``embodiments/dreamzero_embodiments/robots/yam.yaml``.
"""
from __future__ import annotations

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

PACKAGE = "dreamzero_policy"


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
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
                              default_value=PathJoinSubstitution([share, "launch", "params", "yam.yaml"]),
                              description="parameter file of policy_node, adapter_node and control_mux"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "dreamzero.launch.py"])),
            launch_arguments={
                "embodiment": "yam",
                "backend": LaunchConfiguration("backend"),
                "checkpoint": LaunchConfiguration("checkpoint"),
                "server_url": LaunchConfiguration("server_url"),
                "prompt": LaunchConfiguration("prompt"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
                "with_mux": LaunchConfiguration("with_mux"),
                "with_sim": LaunchConfiguration("with_sim"),
                "namespace": LaunchConfiguration("namespace"),
                "xacro_args": LaunchConfiguration("xacro_args"),
                "joint_name_map": LaunchConfiguration("joint_name_map"),
                "params_file": LaunchConfiguration("params_file"),
            }.items()),
    ])
