"""Publish a robot's description and TF: xacro -> robot_state_publisher.

Included by the per-robot launch files; usable alone to check a description in RViz:

    ros2 launch dreamzero_policy robot_description.launch.py embodiment:=droid

Arguments:
    embodiment: robot description to load, ``urdf/<embodiment>.urdf.xacro`` (droid, agibot_g1, yam).
    xacro_args: extra xacro arguments, e.g. ``arm_id:=fr3``.
    namespace: namespace of robot_state_publisher.
    use_sim_time: take time from /clock (simulation, bag replay).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import Command, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

EMBODIMENTS = ("droid", "agibot_g1", "yam")


def generate_launch_description() -> LaunchDescription:
    embodiment = LaunchConfiguration("embodiment")
    xacro_file = PathJoinSubstitution([FindPackageShare("dreamzero_policy"), "urdf", [embodiment, ".urdf.xacro"]])
    description = Command(["xacro ", xacro_file, " ", LaunchConfiguration("xacro_args")])
    return LaunchDescription([
        DeclareLaunchArgument("embodiment", default_value="droid", choices=list(EMBODIMENTS),
                              description="robot description to load: urdf/<embodiment>.urdf.xacro"),
        DeclareLaunchArgument("xacro_args", default_value="",
                              description="extra xacro arguments, e.g. arm_id:=fr3"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of robot_state_publisher"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="take time from /clock"),
        Node(
            package="robot_state_publisher",
            executable="robot_state_publisher",
            namespace=LaunchConfiguration("namespace"),
            parameters=[{
                "robot_description": ParameterValue(description, value_type=str),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            }],
            output="screen",
        ),
    ])
