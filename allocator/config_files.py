"""Reading a configuration file: untrusted text in, plain data out, or a ConfigError.

YAML is parsed with the safe constructor (plain data, never executes tags), by libyaml
when it is installed. Before anything is built from the parsed tree, the file is bounded
in bytes, and the tree in values *after aliases are expanded* — a few hundred bytes of
nested aliases stand for billions of values, which validation would otherwise walk —
and a key repeated in one mapping is refused rather than silently last-wins. Nesting is
bounded by the parser (a deeper file is a ConfigError, never a RecursionError).
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from allocator.errors import ConfigError, brief

#: Largest config file read (about 90,000 arms; larger catalogues grow through the API).
MAX_YAML_BYTES = 4 << 20
#: Most values (scalars, lists, mappings) a file may hold once its aliases are expanded.
MAX_YAML_VALUES = 1_000_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_tree(root: yaml.Node, path: Path) -> None:
    """Refuse a repeated key or more than :data:`MAX_YAML_VALUES` expanded values.

    Each node is visited once (aliases share nodes); its expanded size is computed after
    its children's, so a shared structure costs its own size, not its expansion.
    """
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            total = 1 + sum(size[id(c)] for c in _children(node))
            if total > MAX_YAML_VALUES:
                raise ConfigError(
                    f"config file {path} holds more than {MAX_YAML_VALUES:,} values once its "
                    "aliases are expanded"
                )
            size[id(node)] = total
            continue
        if id(node) in size:
            continue
        size[id(node)] = 0  # in progress
        if isinstance(node, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if (key.tag, key.value) in seen:
                        raise ConfigError(
                            f"config file {path}, line {key.start_mark.line + 1}: key "
                            f"{brief(key.value)} appears twice in one mapping"
                        )
                    seen.add((key.tag, key.value))
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _read(path: Path) -> str:
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise ConfigError(f"config file {path} is not a regular file")
        with path.open("rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_YAML_BYTES:,} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text: {err.reason}") from None


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML config file into plain data (see the module docstring for the bounds)."""
    path = Path(path)
    loader = _Loader(_read(path))
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_tree(node, path)
        return loader.construct_document(node)
    except ConfigError:
        raise
    except (yaml.YAMLError, ValueError, OverflowError) as err:
        # ValueError, OverflowError: a scalar its tag cannot build (2025-13-01, an int of
        # over 4,300 digits, !!int 1e5)
        message = " ".join(str(err).split())
        raise ConfigError(f"config file {path} is not valid YAML: {message[:300]}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None
    finally:
        loader.dispose()
