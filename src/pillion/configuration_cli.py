"""``pillion config get|set|delete``: change a configuration.lmdb store from the shell.

The command opens the store's LMDB environment next to the running sidecars (LMDB
is multi-process), so a change is seen by their subscriptions at their next poll.
The store is found by name among the components of the resources folders, or is
the only configuration store there.
"""

from __future__ import annotations

import argparse
import json
import sys

CONFIGURATION_TYPES = ("configuration.lmdb",)


def add_parser(sub) -> None:
    config = sub.add_parser("config", help="read and change the items of a configuration.lmdb store")
    actions = config.add_subparsers(dest="action", required=True)
    for name, help_text in (("get", "print items (all when no key is given)"),
                            ("set", "write KEY=VALUE items in one transaction"),
                            ("delete", "remove items")):
        p = actions.add_parser(name, help=help_text)
        p.add_argument("--store", default=None, help="the component's name (default: the only configuration store)")
        p.add_argument("--resources-path", "--components-path", dest="resources_path", action="append", default=None,
                       help="folders with the component YAML (default ~/.pillion/components)")
        p.add_argument("--data-dir", default=None, help="the sidecars' data directory (default ~/.pillion/data)")
        if name == "set":
            p.add_argument("items", nargs="+", metavar="KEY=VALUE")
            p.add_argument("--metadata", action="append", default=[], metavar="NAME=VALUE",
                           help="item metadata, given to every item written")
        else:
            p.add_argument("keys", nargs="*" if name == "get" else "+", metavar="KEY")
        p.add_argument("-o", "--output", choices=["table", "json"], default="table")


class _Usage(Exception):
    """Bad arguments or resources: exit code 2."""


def _pairs(texts: list[str], what: str) -> dict[str, str]:
    out = {}
    for text in texts:
        key, eq, value = text.partition("=")
        if not eq or not key:
            raise _Usage(f"{what} must be NAME=VALUE, got {text!r}")
        out[key] = value
    return out


def _open_store(args, resources: list[str], data_dir: str):
    from .components import registry
    from .config.loader import load_resources

    components = load_resources(resources, app_id=None).components
    stores = [c for c in components if c.type in CONFIGURATION_TYPES]
    if args.store is not None:
        stores = [c for c in stores if c.name == args.store]
    if len(stores) != 1:
        found = ", ".join(c.name for c in stores) or "none"
        wanted = f"configuration store {args.store!r}" if args.store else "one configuration store"
        raise _Usage(f"{wanted} in {', '.join(resources)} (found: {found}); "
                     f"a component of type {' or '.join(CONFIGURATION_TYPES)}, chosen with --store")
    return registry.create(stores[0], registry.Context("", data_dir))


async def _run(args, store) -> int:
    try:
        if args.action == "set":
            items = await store.set({k: (v, _pairs(args.metadata, "--metadata")) for k, v in
                                     _pairs(args.items, "an item").items()})
            missing: list[str] = []
        elif args.action == "get":
            items = await store.get(args.keys)
            missing = [k for k in args.keys if k not in items]
        else:
            deleted = await store.delete(args.keys)
            items, missing = {}, [k for k in args.keys if k not in deleted]
            if args.output == "json":
                print(json.dumps({"deleted": deleted, "missing": missing}))
            else:
                for key in deleted:
                    print(f"deleted {key}")
            for key in missing:
                print(f"pillion config: no item {key!r}", file=sys.stderr)
            return 0
    finally:
        await store.close()
    if args.output == "json":
        print(json.dumps({key: item.to_json() for key, item in items.items()}))
    else:
        for key, item in items.items():
            extra = f"  {json.dumps(item.metadata)}" if item.metadata else ""
            print(f"{key} = {item.value}  (version {item.version}){extra}")
    for key in missing:
        print(f"pillion config: no item {key!r}", file=sys.stderr)
    return 1 if missing else 0


def run(args: argparse.Namespace, resources: list[str], data_dir: str) -> int:
    """Exit code 0 on success, 1 when a key asked for is missing, 2 on bad arguments or resources."""
    import asyncio

    from .components.state import StoreError
    from .errors import ConfigError

    try:
        store = _open_store(args, resources, data_dir)
        return asyncio.run(_run(args, store))
    except (_Usage, ConfigError) as exc:
        print(f"pillion config: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"pillion config: {exc}", file=sys.stderr)
        return 1
