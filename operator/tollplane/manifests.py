"""Reading a folder of Kubernetes manifests, for the commands that work without a cluster."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest file cannot be read; the message names the file."""


def manifest_files(root: Path) -> list[Path]:
    """Every manifest file under ``root`` (or ``root`` itself), in apply (sorted) order."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ManifestError(f"{root}: no such file or directory")
    return sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file())


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"{path}: a document is not a mapping")
        if doc.get("kind") == "List":
            yield from (item for item in doc.get("items") or [] if isinstance(item, dict))
        else:
            yield doc


def load(root: Path) -> list[Mapping[str, Any]]:
    """All objects in the manifests under ``root``."""
    return [doc for path in manifest_files(root) for doc in _documents(path)]


def fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a manifest is edited, added or removed (for polling)."""
    stats = []
    for path in manifest_files(root):
        try:
            st = path.stat()
        except OSError:
            continue
        stats.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(stats)
