"""Command line: ``allocator check CONFIG`` validates a config and prints it resolved.

A file with an ``arms`` list is an allocator (serving) config; otherwise an engine config.
"""

from __future__ import annotations

import argparse
import json
import sys

from allocator import __version__
from allocator.config import EngineConfig, load_yaml, parse_config
from allocator.errors import AllocatorError
from allocator.serving.config import AllocatorConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="allocator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"entry-alloc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a config (YAML) and print it resolved")
    check.add_argument("config")
    args = parser.parse_args(argv)
    try:
        data = load_yaml(args.config)
        model = AllocatorConfig if isinstance(data, dict) and "arms" in data else EngineConfig
        cfg = parse_config(model, data, args.config)
    except AllocatorError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
