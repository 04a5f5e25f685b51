"""The nucleus configuration tree of each component (``services.<name>.configuration``).

Modelled on the nucleus' ``config/Topics.java`` and ``config/Topic.java`` (aws-greengrass-nucleus at
a28341c41509bb52b0596212992cf5e6e5c57327):

- keys are case-insensitive and keep the spelling they were created with (Topics uses
  ``CaseInsensitiveString`` keys);
- a leaf takes a proposed value only if the proposal is not older than the leaf's modtime, and
  an equal value changes nothing (Topic.withNewerValue);
- a merge keeps children the map does not name, a map replaces a leaf and a leaf replaces a
  container, and watchers move to the new node (Topics.updateFromMap / updateChild);
- values keep the JSON types they arrive with: Jackson, which the nucleus uses for deployment
  documents and recipes, keeps integers integral, so no int-to-float conversion is modelled.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ChangeListener = Callable[[str, list[str]], None]
"""Called with (component, key path of the node that changed) after a change."""


class ConfigError(Exception):
    """A configuration request that cannot be applied."""


class StaleUpdateError(ConfigError):
    """The proposed timestamp is older than the node's (FailedUpdateConditionCheckError)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Node:
    name: str
    modtime: int
    value: Any = None
    children: dict[str, _Node] | None = None  # None: a leaf

    @property
    def is_container(self) -> bool:
        return self.children is not None

    def child(self, key: str) -> _Node | None:
        assert self.children is not None
        return self.children.get(key.lower())

    def latest(self) -> int:
        if self.children is None:
            return self.modtime
        return max([self.modtime, *(c.latest() for c in self.children.values())])

    def to_pojo(self) -> Any:
        if self.children is None:
            return copy.deepcopy(self.value)
        return {c.name: c.to_pojo() for c in self.children.values()}


@dataclass
class _Subscription:
    component: str
    key_path: tuple[str, ...]
    listener: ChangeListener


@dataclass
class _Changes:
    paths: list[list[str]] = field(default_factory=list)


class ConfigStore:
    """Configuration of every component, with merges, timestamps and change notifications."""

    def __init__(self, clock_ms: Callable[[], int] = _now_ms) -> None:
        self._clock_ms = clock_ms
        self._lock = threading.RLock()
        self._roots: dict[str, _Node] = {}
        self._subscriptions: dict[int, _Subscription] = {}
        self._ids = itertools.count(1)

    # -- reading -------------------------------------------------------------------------
    def components(self) -> list[str]:
        """Names of the components that have a configuration."""
        with self._lock:
            return [node.name for node in self._roots.values()]

    def has_component(self, component: str) -> bool:
        """Whether the component has a configuration tree."""
        with self._lock:
            return component in self._roots

    def _find(self, component: str, key_path: Sequence[str]) -> _Node | None:
        node = self._roots.get(component)
        for key in key_path:
            if node is None or not node.is_container:
                return None
            node = node.child(key)
        return node

    def exists(self, component: str, key_path: Sequence[str]) -> bool:
        """Whether a node exists at the key path."""
        with self._lock:
            return self._find(component, key_path) is not None

    def is_leaf(self, component: str, key_path: Sequence[str]) -> bool:
        """Whether the node at the key path is a leaf; KeyError when there is none."""
        with self._lock:
            node = self._find(component, key_path)
            if node is None:
                raise KeyError(f"{component}: no configuration at {list(key_path)}")
            return not node.is_container

    def get(self, component: str, key_path: Sequence[str] = ()) -> Any:
        """A copy of the value (leaf) or tree (container) at the key path; KeyError when absent."""
        with self._lock:
            node = self._find(component, key_path)
            if node is None:
                raise KeyError(f"{component}: no configuration at {list(key_path)}")
            return node.to_pojo()

    def name_at(self, component: str, key_path: Sequence[str]) -> str:
        """The stored spelling of the last key of the path (keys are case-insensitive)."""
        with self._lock:
            node = self._find(component, key_path)
            if node is None:
                raise KeyError(f"{component}: no configuration at {list(key_path)}")
            return node.name

    # -- writing -------------------------------------------------------------------------
    def replace(
        self, component: str, configuration: Mapping[str, Any], timestamp_ms: int | None = None
    ) -> None:
        """Set the component's whole configuration (a deployment's resolved configuration)."""
        self._write(component, (), configuration, timestamp_ms, replace=True)

    def merge(
        self,
        component: str,
        configuration: Mapping[str, Any],
        key_path: Sequence[str] = (),
        timestamp_ms: int | None = None,
    ) -> None:
        """Merge a map into the container at the key path (a deployment's MERGE)."""
        self._write(component, key_path, configuration, timestamp_ms, replace=False)

    def reset(self, component: str, key_path: Sequence[str]) -> None:
        """Remove the node at the key path (a deployment's RESET before defaults are merged back)."""
        with self._lock:
            if not key_path:
                raise ConfigError(f"{component}: reset needs a key path; use replace for all of it")
            parent = self._find(component, key_path[:-1])
            if parent is None or not parent.is_container or parent.child(key_path[-1]) is None:
                return
            assert parent.children is not None
            removed = parent.children.pop(key_path[-1].lower())
            changes = _Changes([[*self._spelled(component, key_path[:-1]), removed.name]])
        self._notify(component, changes)

    def update(
        self,
        component: str,
        key_path: Sequence[str],
        value_to_merge: Mapping[str, Any],
        timestamp_ms: int,
    ) -> None:
        """UpdateConfiguration as ConfigStoreIPCEventStreamAgent.UpdateConfigurationOperationHandler does it."""
        if not isinstance(value_to_merge, Mapping):
            raise ConfigError(
                f"{component}: valueToMerge must be a map, not {type(value_to_merge).__name__}"
            )
        with self._lock:
            if component not in self._roots:
                raise ConfigError(f"Component config not found for component {component}")
            node = self._find(component, key_path)
            changes = _Changes()
            if node is None:
                # a newly created node uses the current time, so the check below passes
                created = self._lookup_container(component, key_path, changes)
                timestamp_ms = created.modtime
                self._merge_map(
                    created,
                    list(self._spelled(component, key_path)),
                    value_to_merge,
                    timestamp_ms,
                    False,
                    changes,
                )
            elif not node.is_container:
                parent = self._find(component, key_path[:-1])
                assert parent is not None
                self._merge_map(
                    parent,
                    list(self._spelled(component, key_path[:-1])),
                    {node.name: dict(value_to_merge)},
                    timestamp_ms,
                    False,
                    changes,
                )
            else:
                self._merge_map(
                    node,
                    list(self._spelled(component, key_path)),
                    value_to_merge,
                    timestamp_ms,
                    False,
                    changes,
                )
            updated = self._find(component, key_path)
            stale = updated is not None and timestamp_ms < updated.latest()
        self._notify(component, changes)
        if stale:
            raise StaleUpdateError(
                "Proposed timestamp is older than the config's latest modified timestamp"
            )

    def _write(
        self,
        component: str,
        key_path: Sequence[str],
        configuration: Mapping[str, Any],
        timestamp_ms: int | None,
        *,
        replace: bool,
    ) -> None:
        if not isinstance(configuration, Mapping):
            raise ConfigError(
                f"{component}: configuration must be a map, not {type(configuration).__name__}"
            )
        stamp = self._clock_ms() if timestamp_ms is None else timestamp_ms
        with self._lock:
            changes = _Changes()
            node = self._lookup_container(component, key_path, changes)
            self._merge_map(
                node,
                list(self._spelled(component, key_path)),
                configuration,
                stamp,
                replace,
                changes,
            )
        self._notify(component, changes)

    def _spelled(self, component: str, key_path: Sequence[str]) -> list[str]:
        node = self._roots.get(component)
        out: list[str] = []
        for key in key_path:
            node = node.child(key) if node is not None and node.is_container else None
            out.append(node.name if node is not None else key)
        return out

    def _lookup_container(
        self, component: str, key_path: Sequence[str], changes: _Changes
    ) -> _Node:
        root = self._roots.get(component)
        if root is None:
            root = self._roots[component] = _Node(component, self._clock_ms(), children={})
        node = root
        for i, key in enumerate(key_path):
            assert node.children is not None
            child = node.child(key)
            if child is None or not child.is_container:
                if child is not None:
                    changes.paths.append([*self._spelled(component, key_path[:i]), child.name])
                child = node.children[key.lower()] = _Node(key, self._clock_ms(), children={})
            node = child
        return node

    def _merge_map(
        self,
        node: _Node,
        path: list[str],
        values: Mapping[str, Any],
        stamp: int,
        replace: bool,
        changes: _Changes,
    ) -> None:
        assert node.children is not None
        named = set()
        for key, value in values.items():
            if not isinstance(key, str):
                raise ConfigError(f"configuration key {key!r} at {path} is not a string")
            lower = key.lower()
            named.add(lower)
            existing = node.children.get(lower)
            if isinstance(value, Mapping):
                if existing is None or not existing.is_container:
                    if existing is not None:
                        changes.paths.append([*path, existing.name])
                    existing = node.children[lower] = _Node(key, stamp, children={})
                self._merge_map(existing, [*path, existing.name], value, stamp, replace, changes)
                continue
            if existing is not None and existing.is_container:
                del node.children[lower]
                existing = None
            if existing is None:
                node.children[lower] = _Node(key, stamp, value=copy.deepcopy(value))
                changes.paths.append([*path, key])
            elif stamp >= existing.modtime:
                # Topic.withNewerValue: an equal value only moves the timestamp forward
                if existing.value != value or type(existing.value) is not type(value):
                    existing.value = copy.deepcopy(value)
                    changes.paths.append([*path, existing.name])
                existing.modtime = stamp
        if replace:
            for lower in [k for k in node.children if k not in named]:
                removed = node.children.pop(lower)
                changes.paths.append([*path, removed.name])

    # -- notifications -------------------------------------------------------------------
    def subscribe(self, component: str, key_path: Sequence[str], listener: ChangeListener) -> int:
        """Call ``listener`` for every change at or under the key path; returns a handle."""
        with self._lock:
            handle = next(self._ids)
            self._subscriptions[handle] = _Subscription(
                component, tuple(k.lower() for k in key_path), listener
            )
            return handle

    def unsubscribe(self, handle: int) -> None:
        """Stop a subscription (unknown handles are ignored)."""
        with self._lock:
            self._subscriptions.pop(handle, None)

    def _notify(self, component: str, changes: _Changes) -> None:
        if not changes.paths:
            return
        with self._lock:
            subscriptions = [s for s in self._subscriptions.values() if s.component == component]
        for path in changes.paths:
            lowered = tuple(k.lower() for k in path)
            for sub in subscriptions:
                if lowered[: len(sub.key_path)] == sub.key_path:
                    sub.listener(component, list(path))
