"""The A1111 prompt language as pure functions (floor F1; no torch).

* ``prompt_schedule``: prompt editing ``[a:b:N]`` and alternation ``[a|b]`` per sampling step.
* ``parse_attention``: emphasis weights ``(x)``, ``[x]``, ``(x:1.2)``, escapes and ``BREAK``.
* ``split_and``: composable-diffusion ``AND`` parts with their ``:weight``.
* ``extract_networks``: ``<lora:...>``-style tags removed from the prompt, as ``NetworkRef``.
* ``parse_infotext`` / ``format_infotext``: the generation-parameters text stored with images.
* ``read_image_infotext``: that text from PNG, JPEG, WEBP (and other Pillow-readable) bytes.

A1111's order for a positive prompt: extract networks, split ``AND``, schedule each part, then
parse the attention of each scheduled text (see docs/architecture.md and the reference notes).
"""

from brushwork.prompt.attention import parse_attention
from brushwork.prompt.imageinfo import read_image_infotext
from brushwork.prompt.infotext import InfotextValue, format_infotext, parse_infotext
from brushwork.prompt.multicond import split_and
from brushwork.prompt.networks import NetworkRef, extract_networks
from brushwork.prompt.schedule import prompt_schedule

__all__ = [
    "InfotextValue",
    "NetworkRef",
    "extract_networks",
    "format_infotext",
    "parse_attention",
    "parse_infotext",
    "prompt_schedule",
    "read_image_infotext",
    "split_and",
]
