"""Language prompt templates per embodiment and the fixed negative prompt (facts §1.11).

The instruction is lower-cased and appears twice inside the embodiment's template; there is no
separator between it and " The video", so an instruction should end with a period. The tags
``<LAPA>``, ``<DREAM>`` and ``<COTRAIN>`` are stripped. An instruction written as a Python list
literal, as LeRobot datasets store tasks (``"['Push the button.']"``), is replaced by its first
element, as the official ``collate`` does (facts §10). Unknown embodiments are an error.
Imports the standard library only.
"""
from __future__ import annotations

import ast
import difflib

DEFAULT_INSTRUCTION = "Perform the default behavior."
STRIPPED_TAGS = ("<LAPA>", "<DREAM>", "<COTRAIN>")

TEMPLATES: dict[str, str] = {
    "oxe_droid": (
        "A multi-view video shows that a robot {x} The video is split into three views: The top view shows "
        "the camera view from the robot's wrist, the bottom-left view shows the camera view from the left "
        "exterior camera, and the bottom-right view shows the camera view from the right exterior camera. "
        "During training, one of the two bottom exterior views may be a black screen (dropped view). "
        "The robot {x}"
    ),
    "agibot": (
        "A multi-view video shows that a robot {x} The video is split into four views: The top-left view "
        "shows the camera view from the robot's head, the top-right view shows the camera view from the "
        "right hand, the bottom-left view shows the camera view from the left hand, and the bottom-right "
        "view is a black screen (inactive view). The robot {x}"
    ),
    "yam": (
        "A multi-view video shows that a robot {x} The video is split into four views: The top-left view "
        "shows the top camera, the top-right view shows the right camera, the bottom-left view shows the "
        "left camera, and the bottom-right view is a black screen. The robot {x}"
    ),
}

NEGATIVE_PROMPT = (
    "Vibrant colors, overexposed, static, blurry details, text, subtitles, style, artwork, painting, image, "
    "still, grayscale, dull, worst quality, low quality, JPEG artifacts, ugly, mutilated, extra fingers, "
    "bad hands, bad face, deformed, disfigured, mutated limbs, fused fingers, stagnant image, cluttered "
    "background, three legs, many people in the background, walking backwards."
)


def unwrap_list_literal(instruction: str) -> str:
    """The first element of an instruction written as a non-empty list literal, else the instruction.

    ``"['Push the button.']"`` -> ``"Push the button."``. Only a string that starts with ``[`` and
    ends with ``]`` is parsed, with :func:`ast.literal_eval` (literals only, never code); a string that
    does not parse, or parses to an empty list, is returned unchanged.
    """
    text = instruction.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return instruction
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return instruction
    return str(parsed[0]) if isinstance(parsed, list) and parsed else instruction


def format_prompt(embodiment_tag: str, instruction: str) -> str:
    """The model prompt for an instruction, e.g. ``format_prompt("oxe_droid", "Pick up the cup.")``.

    Raises:
        ValueError: unknown embodiment tag (with the closest known one).
    """
    if embodiment_tag not in TEMPLATES:
        close = difflib.get_close_matches(embodiment_tag, TEMPLATES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"no prompt template for embodiment {embodiment_tag!r}{hint} "
                         f"(known: {', '.join(TEMPLATES)})")
    for tag in STRIPPED_TAGS:
        instruction = instruction.replace(tag, "")
    instruction = unwrap_list_literal(instruction).strip() or DEFAULT_INSTRUCTION
    return TEMPLATES[embodiment_tag].format(x=instruction.lower())
