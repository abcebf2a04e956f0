"""Launch files and their parameter files, checked statically (ARCHITECTURE.md §7).

launch_ros does not install on the development machine, so nothing here imports ``launch`` or
``launch_ros``: the launch files are read with ``ast``, the parameter files with PyYAML and, once, with
rcl's own parser through rclpy. What is pinned:
* each ``launch/*.launch.py`` parses and declares exactly the arguments README.md documents, with the
  documented constant defaults;
* every ``package=``/``executable=`` pair is a console script of setup.py or a known external node, and
  every executable whose node class is an rclpy LifecycleNode is launched as one and activated only
  after configuring;
* every included launch file receives only arguments it declares; the per-robot files forward all of
  ``dreamzero.launch.py``'s arguments except ``embodiment``, which they fix to their robot;
* ``launch/params/<embodiment>.yaml`` exist for every embodiment, have the ``/**: {node: {ros__parameters}}``
  shape, and set only parameters the targeted node declares, with valid types, choices and bounds;
* the installed share directory holds current copies of all of them.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dreamzero_embodiments.spec import embodiment_names
from dreamzero_policy.params import ADAPTER_NODE_PARAMS, CONTROL_MUX_PARAMS, POLICY_NODE_PARAMS, Param

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
PARAMS = LAUNCH / "params"
PACKAGE = "dreamzero_policy"
MAIN = "dreamzero.launch.py"
LAUNCH_FILES = sorted(p.name for p in LAUNCH.glob("*.launch.py"))
PARAM_FILES = sorted(p.name for p in PARAMS.glob("*.yaml"))
# Executables of other packages that launch files may start.
EXTERNAL_EXECUTABLES = {("robot_state_publisher", "robot_state_publisher")}
# Our executables that other work adds; a launch file may start them only under a condition.
PENDING_EXECUTABLES = {"sim_droid": "arrives with the simulation work"}
NODE_TABLES: dict[str, tuple[Param, ...]] = {"policy_node": POLICY_NODE_PARAMS, "adapter_node": ADAPTER_NODE_PARAMS,
                                             "control_mux": CONTROL_MUX_PARAMS}
# Set by the launch file from its arguments after params_file, so a value in a params file would be dead.
SET_BY_LAUNCH = {"embodiment", "use_sim_time"}


# ---------------------------------------------------------------- helpers: launch files as syntax trees

def _tree(name: str) -> ast.Module:
    return ast.parse((LAUNCH / name).read_text(), filename=name)


def _calls(tree: ast.AST, function: str) -> list[ast.Call]:
    """Every call of ``function`` (``f(...)`` or ``x.f(...)``) in ``tree``."""
    def name(node: ast.expr) -> str:
        return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and name(n.func) == function]


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _constants(tree: ast.Module) -> dict[str, Any]:
    """Module-level ``NAME = <literal>`` assignments."""
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return constants


def _string(node: ast.expr | None, constants: dict[str, Any]) -> str | None:
    """The string a literal or a module constant holds; None for anything computed."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and isinstance(constants.get(node.id), str):
        return constants[node.id]
    return None


def _literal(node: ast.expr | None, constants: dict[str, Any]) -> Any:
    """A literal, a module constant, or ``list``/``tuple`` of one."""
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("list", "tuple") \
            and len(node.args) == 1:
        return list(_literal(node.args[0], constants))
    return ast.literal_eval(node)


def _arguments(name: str) -> dict[str, ast.Call]:
    """``DeclareLaunchArgument`` calls of a launch file by argument name; a name declared twice fails."""
    arguments: dict[str, ast.Call] = {}
    for call in _calls(_tree(name), "DeclareLaunchArgument"):
        argument = _string(call.args[0] if call.args else _keyword(call, "name"), _constants(_tree(name)))
        assert argument is not None, f"{name}:{call.lineno}: DeclareLaunchArgument without a literal name"
        assert argument not in arguments, f"{name}: argument {argument!r} declared twice"
        arguments[argument] = call
    return arguments


def _includes(name: str) -> dict[str, ast.expr | None]:
    """Launch files ``name`` includes (by their file name constant) -> the ``launch_arguments`` expression."""
    includes = {}
    for call in _calls(_tree(name), "IncludeLaunchDescription"):
        targets = {n.value for n in ast.walk(call.args[0]) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str) and n.value.endswith(".launch.py")}
        assert len(targets) == 1, f"{name}:{call.lineno}: include names no single launch file: {targets}"
        includes[targets.pop()] = _keyword(call, "launch_arguments")
    return includes


def _launch_arguments(expression: ast.expr | None) -> dict[str, ast.expr]:
    """``{...}.items()`` of an include -> {argument name: value expression}."""
    assert isinstance(expression, ast.Call) and isinstance(expression.func, ast.Attribute), "not {...}.items()"
    mapping = expression.func.value
    assert isinstance(mapping, ast.Dict) and expression.func.attr == "items", "launch_arguments must be {...}.items()"
    return {ast.literal_eval(key): value for key, value in zip(mapping.keys, mapping.values)}


def _wrappers() -> list[str]:
    return [name for name in LAUNCH_FILES if MAIN in _includes(name)]


def _console_scripts() -> dict[str, str]:
    """Console scripts of setup.py's ``entry_points``: name -> module."""
    setup = next(c for c in _calls(ast.parse((ROOT / "setup.py").read_text()), "setup"))
    entry_points = ast.literal_eval(_keyword(setup, "entry_points"))
    scripts = {}
    for entry in entry_points["console_scripts"]:
        name, _, target = entry.partition("=")
        scripts[name.strip()] = target.split(":")[0].strip()
    return scripts


def _is_lifecycle_executable(module: str) -> bool:
    """Whether the module of a console script defines a LifecycleNode subclass (read, not imported);
    ``ManagedNode`` (dreamzero_policy.lifecycle) is one."""
    tree = ast.parse((ROOT / Path(*module.split("."))).with_suffix(".py").read_text())
    return any(isinstance(n, ast.ClassDef)
               and any(ast.unparse(b).endswith(("LifecycleNode", "ManagedNode")) for b in n.bases)
               for n in tree.body)


# ---------------------------------------------------------------- helpers: README

def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("### Launch arguments")
    end = text.find("\n## ", start)
    return text[start:end if end >= 0 else len(text)]


def _readme_tables() -> dict[str, dict[str, str]]:
    """Launch file -> {argument: default cell} of the table right after a paragraph naming the file."""
    tables: dict[str, dict[str, str]] = {}
    files: list[str] = []
    for block in re.split(r"\n\s*\n", _readme_section()):
        lines = block.strip().splitlines()
        if lines and lines[0].startswith("|"):
            rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[2:]]
            for name in files:
                tables[name] = {row[0].strip("`"): row[1] for row in rows}
            files = []
        else:  # a paragraph opening with a launch file's name introduces the next table
            files = re.findall(r"^`([\w.]+\.launch\.py)`", block.strip()) or files
    return tables


def _documented_default(call: ast.Call) -> str | None:
    """How README writes a constant default (`value` or (empty)); None for a computed default."""
    default = _keyword(call, "default_value")
    if not isinstance(default, ast.Constant):
        return None
    return f"`{default.value}`" if default.value != "" else "(empty)"


# ---------------------------------------------------------------- launch files

def test_launch_files_exist_and_parse() -> None:
    assert {"dreamzero.launch.py", "droid.launch.py", "agibot_g1.launch.py", "yam.launch.py",
            "robot_description.launch.py"} <= set(LAUNCH_FILES)
    for name in LAUNCH_FILES:
        tree = _tree(name)
        functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert "generate_launch_description" in functions, f"{name} has no generate_launch_description()"


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_each_launch_file_declares_exactly_the_documented_arguments(name: str) -> None:
    declared = _arguments(name)
    tables = _readme_tables()
    if name in tables:
        documented = tables[name]
    else:  # a per-robot file: documented as dreamzero.launch.py's table without embodiment
        assert name in _wrappers(), f"README.md 'Launch arguments' has no table for {name}"
        assert f"`{name}`" in _readme_section(), f"README.md 'Launch arguments' does not mention {name}"
        documented = {k: v for k, v in tables[MAIN].items() if k != "embodiment"}
    assert set(declared) == set(documented), (
        f"{name}: declared but undocumented {sorted(set(declared) - set(documented))}, "
        f"documented but not declared {sorted(set(documented) - set(declared))}")
    readme = (ROOT / "README.md").read_text()
    for argument, call in declared.items():
        assert f"`{argument}`" in readme
        expected = _documented_default(call)
        if expected is not None:
            assert documented[argument] == expected, f"{name}: README default of {argument} is " \
                                                     f"{documented[argument]}, the file says {expected}"


def test_launched_executables_are_console_scripts_or_known_external_nodes() -> None:
    scripts = _console_scripts()
    launched: set[str] = set()
    for name in LAUNCH_FILES:
        tree = _tree(name)
        constants = _constants(tree)
        for call in [c for c in ast.walk(tree) if isinstance(c, ast.Call) and _keyword(c, "executable")]:
            package = _string(_keyword(call, "package"), constants)
            executable = _string(_keyword(call, "executable"), constants)
            where = f"{name}:{call.lineno}"
            assert package and executable, f"{where}: package= and executable= must be literals or constants"
            if package != PACKAGE:
                assert (package, executable) in EXTERNAL_EXECUTABLES, f"{where}: unknown {package}/{executable}"
            elif executable in PENDING_EXECUTABLES and executable not in scripts:
                assert _keyword(call, "condition") is not None, \
                    f"{where}: {executable} ({PENDING_EXECUTABLES[executable]}) must be guarded by a condition"
            else:
                assert executable in scripts, f"{where}: {executable} is not a console script of setup.py"
            launched.add(executable)
    assert {"policy_node", "adapter_node", "control_mux", "robot_state_publisher"} <= launched


def test_lifecycle_executables_are_launched_as_lifecycle_nodes_configured_then_activated() -> None:
    scripts = _console_scripts()
    tree = _tree(MAIN)
    constants = _constants(tree)
    launched = {_string(_keyword(c, "executable"), constants): c for c in ast.walk(tree)
                if isinstance(c, ast.Call) and _keyword(c, "executable")}
    lifecycle = {name for name in launched if name in scripts and _is_lifecycle_executable(scripts[name])}
    assert {"policy_node", "adapter_node", "control_mux"} <= lifecycle
    for name, call in launched.items():  # a lifecycle node started as a plain Node would never activate
        assert (ast.unparse(call.func) == "LifecycleNode") == (name in lifecycle), f"{MAIN}: {name}"
    transitions = {ast.unparse(_keyword(c, "transition_id")) for c in _calls(tree, "ChangeState")}
    transitions |= {ast.unparse(a) for c in _calls(tree, "change_state") for a in c.args}
    assert {"Transition.TRANSITION_CONFIGURE", "Transition.TRANSITION_ACTIVATE"} <= transitions
    handlers = [(_string(_keyword(c, "start_state"), constants), _string(_keyword(c, "goal_state"), constants))
                for c in _calls(tree, "OnStateTransition")]
    assert ("configuring", "inactive") in handlers  # activate after configure only, never after a deactivate


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_included_launch_files_receive_only_arguments_they_declare(name: str) -> None:
    for target, expression in _includes(name).items():
        assert target in LAUNCH_FILES, f"{name} includes {target}, which is not in launch/"
        passed = set(_launch_arguments(expression))
        assert passed <= set(_arguments(target)), f"{name} passes {sorted(passed - set(_arguments(target)))} " \
                                                  f"to {target}, which does not declare them"


def test_every_embodiment_has_a_per_robot_launch_file() -> None:
    choices = _literal(_keyword(_arguments(MAIN)["embodiment"], "choices"), _constants(_tree(MAIN)))
    assert sorted(choices) == embodiment_names()
    assert sorted(_wrappers()) == sorted(f"{robot}.launch.py" for robot in choices)


@pytest.mark.parametrize("name", ["droid.launch.py", "agibot_g1.launch.py", "yam.launch.py"])
def test_per_robot_files_forward_every_argument_except_embodiment(name: str) -> None:
    robot = name.removesuffix(".launch.py")
    main = _arguments(MAIN)
    wrapper = _arguments(name)
    assert set(wrapper) == set(main) - {"embodiment"}
    forwarded = _launch_arguments(_includes(name)[MAIN])
    assert set(forwarded) == set(main)
    assert ast.literal_eval(forwarded["embodiment"]) == robot
    for argument in wrapper:
        value = forwarded[argument]
        assert ast.unparse(value) == f"LaunchConfiguration({argument!r})", f"{name}: {argument} is not forwarded"
        for field in ("choices",) if argument == "params_file" else ("default_value", "choices"):
            mine, theirs = _keyword(wrapper[argument], field), _keyword(main[argument], field)
            assert (mine and ast.dump(mine)) == (theirs and ast.dump(theirs)), f"{name}: {field} of {argument} differs"
    params_default = {n.value for n in ast.walk(_keyword(wrapper["params_file"], "default_value"))
                      if isinstance(n, ast.Constant)}
    assert {"launch", "params", f"{robot}.yaml"} <= params_default


# ---------------------------------------------------------------- parameter files

def _params(name: str) -> dict[str, dict[str, Any]]:
    """node name -> ros__parameters of a params file, after checking the /**: {node: {ros__parameters}} shape."""
    document = yaml.safe_load((PARAMS / name).read_text())
    assert isinstance(document, dict) and list(document) == ["/**"], f"{name}: top level must be only '/**'"
    nodes = document["/**"]
    assert isinstance(nodes, dict) and nodes, f"{name}: '/**' must map node names"
    assert set(nodes) <= {"policy_node", "adapter_node", "control_mux"}, f"{name}: unknown nodes {sorted(nodes)}"
    for node, body in nodes.items():
        assert isinstance(body, dict) and list(body) == ["ros__parameters"], f"{name}: {node} needs ros__parameters"
        assert isinstance(body["ros__parameters"], dict) and body["ros__parameters"], f"{name}: {node} is empty"
    return {node: body["ros__parameters"] for node, body in nodes.items()}


def _problem(param: Param, value: Any) -> str | None:
    """Why ``value`` cannot be given to ``param`` (rclpy's type rules, the table's choices and bounds)."""
    default = param.default
    if isinstance(default, list):
        ok = isinstance(value, list) and all(type(v) is type(default[0]) for v in value)
    else:
        ok = type(value) is type(default)  # bool is not int, int is not float for rclpy
    if not ok:
        return f"{value!r} has type {type(value).__name__}, the parameter is {type(default).__name__}"
    if param.choices and value not in param.choices:
        return f"{value!r} is not one of {param.choices}"
    if param.bounds and not param.bounds[0] <= value <= param.bounds[1]:
        return f"{value!r} is outside {param.bounds}"
    return None


def test_there_is_one_params_file_per_embodiment() -> None:
    assert sorted(Path(n).stem for n in PARAM_FILES) == embodiment_names()


@pytest.mark.parametrize("name", PARAM_FILES)
def test_params_file_sets_only_declared_parameters_with_valid_values(name: str) -> None:
    for node, values in _params(name).items():
        assert not SET_BY_LAUNCH & set(values), f"{name}: {node} sets {sorted(SET_BY_LAUNCH & set(values))}, " \
                                                 "which the launch arguments always override"
        table = {param.name: param for param in NODE_TABLES[node]}
        for key, value in values.items():
            assert key in table, f"{name}: {node} has no parameter {key!r} (see dreamzero_policy/params.py)"
            problem = _problem(table[key], value)
            assert problem is None, f"{name}: {node}.{key}: {problem}"


@pytest.mark.parametrize("name", PARAM_FILES)
def test_rcl_applies_params_file_to_namespaced_nodes(name: str, ros_context: None, unique_name: str) -> None:
    from rclpy.node import Node

    from dreamzero_policy.params import declare

    for node_name, values in _params(name).items():
        node = Node(node_name, namespace=f"/{unique_name}", use_global_arguments=False,
                    cli_args=["--ros-args", "--params-file", str(PARAMS / name)])
        try:
            declare(node, NODE_TABLES[node_name])
            applied = {key: node.get_parameter(key).value for key in values}
        finally:
            node.destroy_node()
        assert applied == values


# ---------------------------------------------------------------- installation

def test_share_directory_holds_current_launch_and_params_files() -> None:
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory(PACKAGE)) / "launch"
    for relative in [*LAUNCH_FILES, *(f"params/{n}" for n in PARAM_FILES)]:
        installed = share / relative
        assert installed.is_file(), f"{relative} is not installed under {share}: run make setup"
        assert installed.read_bytes() == (LAUNCH / relative).read_bytes(), f"{installed} is stale: run make setup"
