"""Extra networks of a generation: ``<lora:...>`` / ``<hypernet:...>`` tags and requested LoRAs.

Names are looked up in the model library as A1111 does (file stem, or a LoRA's
``ss_output_name`` alias; `library.Library.find`). When a name is missing but the infotext being
reproduced recorded its hash (``Lora hashes``), the hash is tried. LoRAs with both multipliers
0 are not merged at all (their result is the base model's, exactly); they still count for
``Lora hashes``. Networks are merged for the generation and restored afterwards, bit for bit.
Files already read are kept per `NetworkFiles` object (keyed by path, size and mtime).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import FileFormat, ModelKind
from brushwork.formats.hypernetwork import Hypernetwork, read_hypernetwork
from brushwork.formats.lora import LoraNetwork, read_lora
from brushwork.generation.request import LoraChoice
from brushwork.library.catalog import Library, LibraryScan
from brushwork.library.entry import ModelEntry
from brushwork.library.errors import ModelNotFoundError
from brushwork.loading import LoadedModel
from brushwork.patching import (
    HypernetworkApplication,
    HypernetworkPatcher,
    LoraApplication,
    LoraPatcher,
)
from brushwork.prompt import NetworkRef

logger = logging.getLogger(__name__)

FileKey = tuple[str, int, int]


@dataclass(frozen=True)
class ResolvedNetworks:
    """What to apply, and the hashes infotext records (``Lora hashes``: name -> 12 hex)."""

    loras: tuple[LoraApplication, ...] = ()
    hypernetworks: tuple[HypernetworkApplication, ...] = ()
    lora_hashes: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.loras and not self.hypernetworks


def _file_key(path: Path) -> FileKey:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


class NetworkFiles:
    """Reads LoRA and hypernetwork files once per (path, size, mtime)."""

    def __init__(self) -> None:
        self._loras: dict[FileKey, LoraNetwork] = {}
        self._hypernetworks: dict[FileKey, Hypernetwork] = {}

    def lora(self, path: Path, model: LoadedModel) -> tuple[LoraNetwork, FileKey]:
        key = _file_key(path)
        if key not in self._loras:
            self._loras[key] = read_lora(path, unet_config=dict(model.unet.config))
        return self._loras[key], key

    def hypernetwork(self, path: Path) -> tuple[Hypernetwork, FileKey]:
        key = _file_key(path)
        if key not in self._hypernetworks:
            self._hypernetworks[key] = read_hypernetwork(path)
        return self._hypernetworks[key], key


def lora_short_hash(entry: ModelEntry) -> str | None:
    """The 12 hex A1111 writes in ``Lora hashes``: the tensor (addnet) hash of a safetensors
    file (or the one recorded in it), the file's sha256 otherwise."""
    if entry.format is FileFormat.SAFETENSORS:
        return entry.short_hash
    return entry.sha256[:12] if entry.sha256 else None


def _find(
    library: Library | None,
    scan: LibraryScan | None,
    name: str,
    kind: ModelKind,
    known_hash: str | None,
) -> ModelEntry:
    tag = "lora" if kind is ModelKind.LORA else "hypernet"
    if library is None:
        raise ConfigError(
            f"<{tag}:{name}> needs a model library to find {name!r} in",
            hint="pass --root with the folder holding models/Lora (or models/hypernetworks)",
        )
    try:
        return library.find(name, kind=kind, scan=scan)
    except ModelNotFoundError as error:
        if known_hash:
            try:
                return library.find(known_hash, kind=kind, scan=scan)
            except ModelNotFoundError:
                pass
        recorded = f" (recorded hash {known_hash})" if known_hash else ""
        what = "LoRA" if kind is ModelKind.LORA else "hypernetwork"
        raise ConfigError(
            f"{what} {name!r}{recorded} named in the prompt is not in the library",
            hint=error.hint,
        ) from None


def resolve_networks(
    refs: Sequence[NetworkRef],
    extra_loras: Sequence[LoraChoice],
    model: LoadedModel,
    *,
    library: Library | None,
    files: NetworkFiles,
    known_hashes: Mapping[str, str] | None = None,
) -> ResolvedNetworks:
    """Find and read every network the prompt and the request name."""
    known = dict(known_hashes or {})
    wanted = [(ref.name, ref.te, ref.unet) for ref in refs if ref.kind == "lora"]
    wanted += [(c.name, c.te, c.te if c.unet is None else c.unet) for c in extra_loras]
    hypernets = [ref for ref in refs if ref.kind == "hypernet"]
    for ref in refs:
        if ref.kind not in ("lora", "hypernet"):
            logger.warning("extra network %s is not supported; ignored", ref.text)
        for problem in ref.problems:
            logger.warning("%s: %s", ref.text, problem)
    if not wanted and not hypernets:
        return ResolvedNetworks()
    scan = library.scan() if library is not None else None
    loras, hashes = [], []
    for name, te, unet in wanted:
        entry = _find(library, scan, name, ModelKind.LORA, known.get(name))
        if library is not None:
            entry = library.hash_entry(entry)
        short = lora_short_hash(entry)
        if short:
            hashes.append((name, short))
        if te == 0 and unet == 0:
            continue
        network, key = files.lora(entry.path, model)
        loras.append(LoraApplication(network, name, te, unet, identity=key))
    applications = []
    for ref in hypernets:
        entry = _find(library, scan, ref.name, ModelKind.HYPERNETWORK, None)
        hypernetwork, key = files.hypernetwork(entry.path)
        if ref.te != 0:
            applications.append(HypernetworkApplication(hypernetwork, ref.te, identity=key))
    return ResolvedNetworks(tuple(loras), tuple(applications), tuple(dict(hashes).items()))


@contextmanager
def networks_applied(model: LoadedModel, networks: ResolvedNetworks) -> Iterator[None]:
    """Merge the LoRAs and wrap the hypernetworks for the block; restore everything after."""
    if networks.empty:
        yield
        return
    with (
        LoraPatcher(unet=model.unet, text_encoders=model.text_encoders) as loras,
        HypernetworkPatcher(model.unet) as hypernetworks,
    ):
        loras.apply(networks.loras)
        hypernetworks.apply(networks.hypernetworks)
        yield
