"""A1111 hypernetworks: read, validate, write and create the `.pt` files, and build their MLPs.

A hypernetwork file is a pickled dict: every **int** key is a context width (768, 320, 640,
1280, ...) holding a pair of MLP state dicts ``(k, v)``; the other keys are settings
(`layer_structure`, `activation_func`, `is_layer_norm`, ...). Each MLP is A1111's
`nn.Sequential` named ``linear``: Linear, [activation], [LayerNorm], [Dropout], repeated, so its
keys are ``linear.<i>.weight/bias`` with the index counting every module. At use,
``out = x + mlp(x) * multiplier`` on the context before `to_k` / `to_v`.

Missing settings get A1111's load defaults (layer_structure ``[1, 2, 1]``, `activate_output`
True, the dropout structure derived from `use_dropout`/`last_layer_dropout`); old
``linear1/linear2`` keys are renamed ``linear.0/linear.1``. A missing or ``None`` activation is
``"linear"`` (no activation), which is what A1111 does with it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from brushwork.core.errors import (
    ConfigError,
    CorruptModelError,
    UnsupportedModelError,
    WrongKindError,
)
from brushwork.core.kinds import FileFormat, ModelKind
from brushwork.formats import safeio
from brushwork.formats.embedding import describe_contents

WEIGHT_INITIALIZATIONS = (
    "Normal",
    "XavierUniform",
    "XavierNormal",
    "KaimingUniform",
    "KaimingNormal",
)
DEFAULT_WIDTHS = (768, 320, 640, 1280)  # A1111's UI default: SD1 cross-attention + self-attention
_NAMED_ACTIVATIONS = {
    "relu": "ReLU",
    "leakyrelu": "LeakyReLU",
    "elu": "ELU",
    "swish": "Hardswish",  # A1111's "swish" is Hardswish
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
}
_OLD_KEYS = {
    "linear1.weight": "linear.0.weight",
    "linear1.bias": "linear.0.bias",
    "linear2.weight": "linear.1.weight",
    "linear2.bias": "linear.1.bias",
}
_DROPOUT_P = 0.3  # what A1111 derives for files that carry no dropout_structure

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True, eq=False)
class Hypernetwork:
    """One A1111 hypernetwork: an MLP pair per context width, and its settings."""

    name: str
    layers: dict[int, tuple[StateDict, StateDict]]  # width -> (k MLP, v MLP) state dicts
    layer_structure: list[float]
    activation_func: str = "linear"
    is_layer_norm: bool = False
    weight_initialization: str = "Normal"
    use_dropout: bool = False
    dropout_structure: list[float] | None = None  # None: derived as A1111 does
    last_layer_dropout: bool = False
    activate_output: bool = False
    step: int | None = 0
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    optional_info: str | None = None

    def __post_init__(self) -> None:
        if self.dropout_structure is None:
            derived = derive_dropout_structure(
                self.layer_structure, self.use_dropout, self.last_layer_dropout
            )
            object.__setattr__(self, "dropout_structure", derived)
        problem = settings_problem(self)
        if problem:
            raise ValueError(f"hypernetwork {self.name!r}: {problem}")

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.layers)

    @property
    def dropouts(self) -> list[float]:
        """The dropout structure (always set after construction)."""
        return list(self.dropout_structure or [])


def derive_dropout_structure(
    layer_structure: Sequence[float], use_dropout: bool, last_layer_dropout: bool
) -> list[float]:
    """A1111's dropout structure for files without one: [0, 0.3..., 0.3 or 0, 0]."""
    if not use_dropout:
        return [0.0] * len(layer_structure)
    middle = [_DROPOUT_P] * (len(layer_structure) - 3)
    return [0.0, *middle, _DROPOUT_P if last_layer_dropout else 0.0, 0.0]


def settings_problem(hn: Hypernetwork) -> str | None:
    """What is wrong with a hypernetwork's settings (None when they can build MLPs)."""
    ls = hn.layer_structure
    if len(ls) < 2 or not all(isinstance(x, int | float) and x > 0 for x in ls):
        return f"layer_structure {ls} must be two or more positive numbers"
    if ls[0] != 1 or ls[-1] != 1:
        return f"layer_structure {ls} must start and end with 1"
    drops = hn.dropouts
    if len(drops) < len(ls) or not all(isinstance(p, int | float) and 0 <= p < 1 for p in drops):
        return f"dropout_structure {drops} must give a probability in [0, 1) per layer of {ls}"
    if hn.weight_initialization not in WEIGHT_INITIALIZATIONS:
        return (
            f"weight_initialization {hn.weight_initialization!r} is not one of "
            f"{', '.join(WEIGHT_INITIALIZATIONS)}"
        )
    if hn.activation_func != "linear" and hn.activation_func not in activation_names():
        return f"activation_func {hn.activation_func!r} is not a torch.nn activation"
    if any(type(width) is not int or width < 1 for width in hn.layers):
        return f"layer widths {list(hn.layers)} must be positive integers"
    return None


# ---------------------------------------------------------------------------------------------
# the MLP


def activation_names() -> dict[str, type[torch.nn.Module]]:
    """Activation names A1111 accepts: its own list plus every lowercased torch.nn activation."""
    module = torch.nn.modules.activation
    found = {
        name.lower(): cls
        for name, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and issubclass(cls, torch.nn.Module)
    }
    found.update({alias: getattr(torch.nn, name) for alias, name in _NAMED_ACTIVATIONS.items()})
    found["linear"] = torch.nn.Identity
    return found


def build_mlp(hn: Hypernetwork, width: int) -> torch.nn.Sequential:
    """A1111's ``linear`` Sequential for one context width, with torch's default init.

    Its state dict keys are those of a file's MLP without the ``linear.`` prefix; use
    `load_mlps` to get the pair with a file's weights in it.
    """
    ls, drops, last = hn.layer_structure, hn.dropouts, len(hn.layer_structure) - 2
    activation = None if hn.activation_func == "linear" else activation_names()[hn.activation_func]
    modules: list[torch.nn.Module] = []
    for i in range(len(ls) - 1):
        out_width = int(width * ls[i + 1])
        modules.append(torch.nn.Linear(int(width * ls[i]), out_width))
        if activation is not None and (i < last or hn.activate_output):
            modules.append(_instantiate(activation))
        if hn.is_layer_norm:
            modules.append(torch.nn.LayerNorm(out_width))
        if drops[i + 1] > 0:
            modules.append(torch.nn.Dropout(p=drops[i + 1]))
    return torch.nn.Sequential(*modules)


def _instantiate(activation: type[torch.nn.Module]) -> torch.nn.Module:
    try:
        return activation()
    except TypeError as exc:  # e.g. MultiheadAttention needs arguments: not an activation
        raise ConfigError(f"{activation.__name__} cannot be used as an activation: {exc}") from None


def load_mlps(hn: Hypernetwork, width: int) -> tuple[torch.nn.Sequential, torch.nn.Sequential]:
    """The (k, v) MLPs for `width` with the hypernetwork's weights loaded strictly."""
    if width not in hn.layers:
        raise ConfigError(f"hypernetwork {hn.name!r} has no layers for width {width}")
    pair = []
    for state in hn.layers[width]:
        mlp = build_mlp(hn, width)
        mlp.load_state_dict({_strip(k): v for k, v in state.items()}, strict=True)
        pair.append(mlp.eval())
    return pair[0], pair[1]


def _strip(key: str) -> str:
    return key.removeprefix("linear.")


def _expected_shapes(hn: Hypernetwork, width: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        mlp = build_mlp(hn, width)
    return {f"linear.{k}": tuple(v.shape) for k, v in mlp.state_dict().items()}


def state_dict_problem(hn: Hypernetwork, width: int, state: Mapping[str, Any]) -> str | None:
    """What does not match between one MLP state dict and the settings (None when it loads)."""
    expected = _expected_shapes(hn, width)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {missing}"] if missing else []) + (
            [f"unexpected {unexpected}"] if unexpected else []
        )
        return f"keys do not match the settings: {'; '.join(parts)}"
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            return f"{key} is a {type(value).__name__}, not a tensor"
        if tuple(value.shape) != shape:
            return (
                f"{key} has shape {list(value.shape)}, but layer_structure "
                f"{hn.layer_structure} at width {width} needs {list(shape)}"
            )
    return None


# ---------------------------------------------------------------------------------------------
# reading


def read_hypernetwork(path: Path | str) -> Hypernetwork:
    """Read and validate an A1111 hypernetwork `.pt` (through the guarded unpickler)."""
    path = Path(path)
    if safeio.sniff_format(path) is FileFormat.SAFETENSORS:
        _kind, looks_like = describe_contents(safeio.read_safetensors(path).tensors)
        raise WrongKindError(
            path,
            f"is a safetensors file, and A1111 hypernetworks are .pt pickles; {looks_like}",
        )
    data = safeio.read_pickle(path)
    if not isinstance(data, Mapping) or not any(type(k) is int for k in data):
        kind, looks_like = describe_contents(data)
        error = WrongKindError if kind not in (None, ModelKind.HYPERNETWORK) else CorruptModelError
        raise error(path, f"is not a hypernetwork (no layers keyed by width): {looks_like}")
    _refuse_forks(path, data)
    settings = _settings(path, data)
    layers = {width: _layer_pair(path, data[width], width) for width in data if type(width) is int}
    try:
        hn = Hypernetwork(layers=layers, **settings)
    except ValueError as exc:
        raise CorruptModelError(path, f"has invalid settings: {exc}") from None
    for width, pair in layers.items():
        for which, state in zip("kv", pair, strict=True):
            problem = state_dict_problem(hn, width, state)
            if problem:
                raise CorruptModelError(path, f"layer {width} ({which} MLP): {problem}")
    return hn


def _refuse_forks(path: Path, data: Mapping[Any, Any]) -> None:
    for key in ("skip_connection", "upsample_linear"):
        if data.get(key):
            raise UnsupportedModelError(
                path, f"uses {key!r}, a feature of a WebUI fork that brushwork does not implement"
            )


def _settings(path: Path, data: Mapping[Any, Any]) -> dict[str, Any]:
    """The settings with A1111's load defaults (which differ from its create defaults)."""
    layer_structure = _number_list(path, data, "layer_structure", [1.0, 2.0, 1.0])
    dropout_structure = _number_list(path, data, "dropout_structure", None)
    stored_use = bool(data.get("use_dropout", False))
    use_dropout = bool(dropout_structure and any(dropout_structure)) or stored_use
    activation = data.get("activation_func") or "linear"
    if not isinstance(activation, str):
        raise CorruptModelError(path, f"has a non-text activation_func {activation!r}")
    step = data.get("step", 0)
    return {
        "name": _text(data.get("name")) or path.stem,
        "layer_structure": layer_structure,
        "activation_func": activation,
        "is_layer_norm": bool(data.get("is_layer_norm", False)),
        "weight_initialization": _text(data.get("weight_initialization")) or "Normal",
        "use_dropout": use_dropout,
        "dropout_structure": dropout_structure,
        "last_layer_dropout": bool(data.get("last_layer_dropout", False)),
        "activate_output": bool(data.get("activate_output", True)),
        "step": step if type(step) is int else None,
        "sd_checkpoint": _text(data.get("sd_checkpoint")),
        "sd_checkpoint_name": _text(data.get("sd_checkpoint_name")),
        "optional_info": _text(data.get("optional_info")),
    }


def _number_list(
    path: Path, data: Mapping[Any, Any], key: str, default: list[float] | None
) -> list[float] | None:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, list | tuple) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        raise CorruptModelError(path, f"has a {key} that is not a list of numbers: {value!r}")
    return [float(x) for x in value]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _layer_pair(path: Path, value: Any, width: int) -> tuple[StateDict, StateDict]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise CorruptModelError(
            path, f"layer {width} is a {type(value).__name__}, not a (k, v) pair of state dicts"
        )
    pair = []
    for which, state in zip("kv", value, strict=True):
        if not isinstance(state, Mapping):
            raise CorruptModelError(path, f"layer {width} ({which} MLP) is not a state dict")
        fixed = {_OLD_KEYS.get(str(k), str(k)): v for k, v in state.items()}
        pair.append({k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in fixed.items()})
    return pair[0], pair[1]


# ---------------------------------------------------------------------------------------------
# writing and creating


def write_hypernetwork(path: Path | str, hn: Hypernetwork, *, overwrite: bool = False) -> None:
    """Write `hn` as A1111 saves it: int keys -> (k, v) state dicts, then the settings."""
    payload: dict[Any, Any] = {
        width: tuple(
            {k: v.detach().to("cpu").contiguous().clone() for k, v in s.items()} for s in pair
        )
        for width, pair in hn.layers.items()
    }
    payload.update(
        step=hn.step,
        name=hn.name,
        layer_structure=list(hn.layer_structure),
        activation_func=hn.activation_func,
        is_layer_norm=hn.is_layer_norm,
        weight_initialization=hn.weight_initialization,
        sd_checkpoint=hn.sd_checkpoint,
        sd_checkpoint_name=hn.sd_checkpoint_name,
        activate_output=hn.activate_output,
        use_dropout=hn.use_dropout,
        dropout_structure=hn.dropouts,
        last_layer_dropout=hn.last_layer_dropout,
        optional_info=hn.optional_info or None,
    )
    safeio.write_pickle(path, payload, overwrite=overwrite)


def create_hypernetwork(
    name: str,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    layer_structure: Sequence[float] = (1, 2, 1),
    activation_func: str = "linear",
    weight_initialization: str = "Normal",
    add_layer_norm: bool = False,
    use_dropout: bool = False,
    dropout_structure: Sequence[float] | None = None,
    seed: int | None = None,
) -> Hypernetwork:
    """A new hypernetwork initialised as A1111's create does (activate_output False).

    As in A1111, the name keeps only letters, digits and ``._- ``; without an explicit
    `dropout_structure` a new one has no dropout even when `use_dropout` is set.
    """
    clean_name = "".join(c for c in name if c.isalnum() or c in "._- ")
    if not clean_name:
        raise ConfigError(f"hypernetwork name {name!r} has no usable characters")
    if dropout_structure is not None and not use_dropout:
        raise ConfigError("dropout_structure was given but use_dropout is False")
    structure = [float(x) for x in layer_structure]
    drops = [float(p) for p in dropout_structure] if dropout_structure else [0.0] * len(structure)
    settings: dict[str, Any] = {
        "name": clean_name,
        "layer_structure": structure,
        "activation_func": activation_func.lower(),
        "is_layer_norm": add_layer_norm,
        "weight_initialization": weight_initialization,
        "use_dropout": use_dropout,
        "dropout_structure": drops,
        "last_layer_dropout": len(drops) >= 2 and drops[-2] != 0,
        "activate_output": False,
    }
    try:
        template = Hypernetwork(layers={}, **settings)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    layers = {}
    for width in widths:
        pair = []
        for _ in "kv":
            mlp = build_mlp(template, int(width))
            initialise_mlp(mlp, weight_initialization, template.activation_func, generator)
            pair.append({f"linear.{k}": v.detach().clone() for k, v in mlp.state_dict().items()})
        layers[int(width)] = (pair[0], pair[1])
    return Hypernetwork(layers=layers, **settings)


def initialise_mlp(
    mlp: torch.nn.Sequential,
    weight_initialization: str,
    activation_func: str,
    generator: torch.Generator | None = None,
) -> None:
    """A1111's init: Normal is w ~ N(0, 0.01), b = 0 (also for every LayerNorm); others zero b."""
    if weight_initialization not in WEIGHT_INITIALIZATIONS:
        raise ConfigError(f"unknown weight initialization {weight_initialization!r}")
    init = torch.nn.init
    nonlinearity: Literal["leaky_relu", "relu"] = (
        "leaky_relu" if activation_func == "leakyrelu" else "relu"
    )
    with torch.no_grad():
        for layer in mlp:
            if type(layer) not in (torch.nn.Linear, torch.nn.LayerNorm):
                continue
            weight, bias = layer.weight, layer.bias
            assert isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)
            if weight_initialization == "Normal" or isinstance(layer, torch.nn.LayerNorm):
                init.normal_(weight, mean=0.0, std=0.01, generator=generator)
            elif weight_initialization == "XavierUniform":
                init.xavier_uniform_(weight, generator=generator)
            elif weight_initialization == "XavierNormal":
                init.xavier_normal_(weight, generator=generator)
            elif weight_initialization == "KaimingUniform":
                init.kaiming_uniform_(weight, nonlinearity=nonlinearity, generator=generator)
            else:  # KaimingNormal
                init.kaiming_normal_(weight, nonlinearity=nonlinearity, generator=generator)
            init.zeros_(bias)
