"""Reading recipes without running anything: YAML and ``key=value`` overrides, resolvers refused.

omegaconf registers resolvers globally (``${oc.env:VAR}`` reads the environment, ``${oc.decode:...}``
parses strings, and any library may register more); a recipe is passed between people, and whatever
a resolver returned would be written into every saved ``config.yaml``. So a recipe may hold plain
values and plain interpolations of its own keys (``${model.hidden_size}``), nothing that calls a
resolver: ``${name:...}`` anywhere (escaped ``\\${...}`` is a literal and fine) is an error naming
the key. Nothing is ever instantiated from YAML.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

_RESOLVER = re.compile(r"(?<!\\)\$\{\s*([A-Za-z_][\w.\-]*)\s*:")


def check_no_resolvers(node: Any, where: str, key: str = "") -> None:
    """Raise ``ValueError`` if any string under ``node`` (plain containers) calls a resolver."""
    if isinstance(node, dict):
        for k, v in node.items():
            check_no_resolvers(v, where, f"{key}.{k}" if key else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            check_no_resolvers(v, where, f"{key}[{i}]")
    elif isinstance(node, str):
        m = _RESOLVER.search(node)
        if m:
            raise ValueError(f"{where}: {key or 'value'} = {node!r} calls the resolver {m.group(1)!r}; recipes may not "
                             "run resolvers (no environment values, no code): write the value itself")


def load_yaml_mapping(source: str | Path, where: str | None = None) -> dict[str, Any]:
    """A YAML mapping (a file path or the text itself) -> plain dict, unresolved, resolver-free."""
    if isinstance(source, Path):
        where = where or str(source)
        try:
            text = source.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{where}: cannot read it ({type(e).__name__}: {e})") from e
    else:
        text, where = source, where or "recipe"
    try:
        loaded = OmegaConf.create(text) if text.strip() else OmegaConf.create({})
    except (OmegaConfBaseException, ValueError, yaml.YAMLError) as e:
        raise ValueError(f"{where}: not valid YAML ({_first_line(e)})") from e
    if not isinstance(loaded, DictConfig):
        raise ValueError(f"{where} must hold a mapping of sections (model, data, train, ...), got a list")
    d: dict[str, Any] = OmegaConf.to_container(loaded, resolve=False)  # type: ignore[assignment]
    check_no_resolvers(d, where)
    return d


def load_dotlist(overrides: list[str], where: str = "command-line override") -> dict[str, Any]:
    """``["train.steps=100", ...]`` -> nested dict, resolver-free."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"overrides must be key=value (e.g. train.steps=100), got {bad}")
    try:
        d: dict[str, Any] = OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)),  # type: ignore[assignment]
                                                   resolve=False)
    except (OmegaConfBaseException, ValueError) as e:
        raise ValueError(f"{where}: {_first_line(e)}") from e
    check_no_resolvers(d, where)
    return d


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return " ".join(x.strip() for x in lines[:3]) if lines else type(e).__name__
