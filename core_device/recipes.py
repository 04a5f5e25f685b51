"""Recipes as the Greengrass nucleus reads them: manifest selection, configuration, interpolation.

Sources (nucleus at /work/.mirror/aws-greengrass+aws-greengrass-nucleus, HEAD a28341c):
``componentmanager/KernelConfigResolver.java`` (KCR), ``config/PlatformResolver.java``,
``config/Topics.java`` / ``config/Topic.java`` (configuration merge), and the developer guide page
``component-recipe-reference.md`` (guide). Line numbers refer to those files.
"""

from __future__ import annotations

import copy
import json
import math
import platform as _platform
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

NUCLEUS_COMPONENT = "aws.greengrass.Nucleus"
INTERPOLATE_COMPONENT_CONFIGURATION = "interpolateComponentConfiguration"

# KCR:83 — {namespace:key}; the key may be any JSON pointer but holds no ':' or '}'.
# Java's \w is ASCII-only, hence re.ASCII.
_SAME_COMPONENT = re.compile(r"\{([.\w-]+):([^:}]*)}", re.ASCII)
# KCR:90 — {component:namespace:key}
_CROSS_COMPONENT = re.compile(r"\{([.\w-]+):([.\w-]+):([^:}]*)}", re.ASCII)
# the timestamp KCR:386-387 merges DefaultConfiguration with ("timestamp 1 to denote a default")
DEFAULT_TIMESTAMP = 1


class RecipeError(Exception):
    """A recipe or a configuration update cannot be used (names the file/component and the field)."""


# --------------------------------------------------------------------------- recipe model


@dataclass(frozen=True)
class Artifact:
    """One artifact of the selected manifest."""

    uri: str
    unarchive: str = "NONE"  # guide "Unarchive": NONE (default) or ZIP
    read: str = "OWNER"  # guide "Permission.Read", default OWNER
    execute: str = "NONE"  # guide "Permission.Execute", default NONE

    @property
    def file_name(self) -> str:
        """The artifact's file name: the last segment of its URI."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Dependency:
    """A ComponentDependencies entry."""

    name: str
    version_requirement: str = "*"
    dependency_type: str = "HARD"  # guide: DependencyType defaults to HARD


@dataclass(frozen=True)
class Recipe:
    """A recipe with its platform manifest selected."""

    name: str
    version: str
    dependencies: Mapping[str, Dependency]
    default_configuration: Mapping[str, Any]
    lifecycle: Mapping[str, Any]
    artifacts: tuple[Artifact, ...]
    source: str = ""
    document: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _get(mapping: Mapping[str, Any], key: str) -> Any:
    """Case-insensitive lookup: the nucleus keys its configuration (lifecycle included) by
    CaseInsensitiveString (config/Topics.java:29, :91)."""
    if key in mapping:
        return mapping[key]
    lower = key.lower()
    for name, value in mapping.items():
        if isinstance(name, str) and name.lower() == lower:
            return value
    return None


def current_platform() -> dict[str, str]:
    """The platform attributes the nucleus detects (PlatformResolver.java:68-175)."""
    system = _platform.system().lower()
    # :123-135 — windows, darwin ("mac os"), linux when /proc exists, else unknown
    os_name = (
        "windows"
        if system.startswith("win")
        else "darwin"
        if system == "darwin"
        else "linux"
        if Path("/proc").exists()
        else "unknown"
    )
    machine = _platform.machine().lower()
    # :137-152 — x86_64/amd64 → amd64, i386/x86 → x86, *arm* → arm, aarch64 → aarch64
    if machine in ("x86_64", "amd64"):
        arch = "amd64"
    elif machine in ("i386", "x86"):
        arch = "x86"
    elif "arm" in machine:
        arch = "arm"
    elif machine == "aarch64":
        arch = "aarch64"
    else:
        arch = "unknown"
    detected = {"os": os_name, "architecture": arch}
    # :154-175 — architecture.detail only for arm, from `uname -m`, when in the supported list
    if arch in ("arm", "aarch64") and machine in (
        "armv6l",
        "armv7l",
        "armv8l",
        "armv6b",
        "armv7b",
        "armv8b",
    ):
        detected["architecture.detail"] = machine
    return detected


def platform_matches(requirement: Mapping[str, Any] | None, device: Mapping[str, str]) -> bool:
    """Whether a manifest's ``Platform`` matches the device (guide, "Manifests" → "Platform"):
    an exact value, ``*`` (also matches an absent attribute) or a ``/regex/``."""
    for key, wanted in (requirement or {}).items():
        wanted = str(wanted)
        have = device.get(key)
        if wanted == "*":
            continue
        if have is None:
            return False
        if len(wanted) >= 2 and wanted.startswith("/") and wanted.endswith("/"):
            if re.fullmatch(wanted[1:-1], have) is None:
                return False
        elif wanted != have:
            return False
    return True


def _filter_selections(source: Any, keywords: set[str], selectors: Sequence[str]) -> Any:
    """The global lifecycle narrowed to a manifest's Selections (PlatformResolver.java:197-234):
    at a level holding any selection key, the first matching selector wins, then ``all``."""
    if not isinstance(source, Mapping):
        return source
    if any(key in keywords for key in source):
        for selector in [*selectors, "all"]:
            if source.get(selector) is not None:
                return _filter_selections(source[selector], keywords, selectors)
        return None
    out = {}
    for key, value in source.items():
        filtered = _filter_selections(value, keywords, selectors)
        if filtered is not None:
            out[key] = filtered
    return out


def parse_recipe(doc: Any, *, where: str, device: Mapping[str, str] | None = None) -> Recipe:
    """Check a recipe document and select its manifest for ``device`` (default: this machine)."""
    if not isinstance(doc, Mapping):
        raise RecipeError(f"{where}: a recipe must be a mapping")
    name, version = _get(doc, "ComponentName"), _get(doc, "ComponentVersion")
    if not isinstance(name, str) or not name:
        raise RecipeError(f"{where}: ComponentName missing")
    if not isinstance(version, str) or not version:
        raise RecipeError(f"{where}: ComponentVersion missing")
    device = current_platform() if device is None else device
    manifests = _get(doc, "Manifests") or []
    if not isinstance(manifests, list):
        raise RecipeError(f"{where}: Manifests must be a list")
    # guide: "The core device uses the first manifest with platform requirements that the device
    # meets"; "If no manifest matches ... the deployment fails"
    chosen = None
    for index, manifest in enumerate(manifests):
        if not isinstance(manifest, Mapping):
            raise RecipeError(f"{where}: Manifests[{index}] must be a mapping")
        if platform_matches(_get(manifest, "Platform"), device):
            chosen = manifest
            break
    if chosen is None:
        raise RecipeError(f"{where}: no manifest matches this platform {dict(device)}")
    lifecycle: Any = _get(chosen, "Lifecycle")
    if lifecycle is None:
        # guide: "If the selected manifest doesn't define a lifecycle, the core device uses the
        # global lifecycle" narrowed by the manifest's selection keys (or `all`)
        keywords = {"all"}
        for manifest in manifests:
            keywords.update(str(s) for s in (_get(manifest, "Selections") or []))
        selectors = [str(s) for s in (_get(chosen, "Selections") or [])]
        lifecycle = _filter_selections(_get(doc, "Lifecycle") or {}, keywords, selectors) or {}
    if not isinstance(lifecycle, Mapping):
        raise RecipeError(f"{where}: the selected manifest's Lifecycle must be a mapping")
    artifacts = []
    for index, entry in enumerate(_get(chosen, "Artifacts") or []):
        if not isinstance(entry, Mapping) or not isinstance(_get(entry, "URI"), str):
            raise RecipeError(f"{where}: Artifacts[{index}].URI missing")
        permission = _get(entry, "Permission") or {}
        unarchive = str(_get(entry, "Unarchive") or "NONE").upper()
        if unarchive not in ("NONE", "ZIP"):
            raise RecipeError(f"{where}: Artifacts[{index}].Unarchive {unarchive!r}: NONE or ZIP")
        read = str(_get(permission, "Read") or "OWNER").upper()
        execute = str(_get(permission, "Execute") or "NONE").upper()
        for what, value in (("Read", read), ("Execute", execute)):
            if value not in ("NONE", "OWNER", "ALL"):
                raise RecipeError(f"{where}: Artifacts[{index}].Permission.{what} {value!r}")
        artifacts.append(Artifact(_get(entry, "URI"), unarchive, read, execute))
    dependencies = {}
    for dep_name, spec in (_get(doc, "ComponentDependencies") or {}).items():
        spec = spec or {}
        if not isinstance(spec, Mapping):
            raise RecipeError(f"{where}: ComponentDependencies.{dep_name} must be a mapping")
        kind = str(_get(spec, "DependencyType") or "HARD").upper()
        if kind not in ("HARD", "SOFT"):
            raise RecipeError(f"{where}: ComponentDependencies.{dep_name}.DependencyType {kind!r}")
        requirement = str(_get(spec, "VersionRequirement") or "*")
        dependencies[str(dep_name)] = Dependency(str(dep_name), requirement, kind)
    configuration = _get(doc, "ComponentConfiguration") or {}
    default = (
        _get(configuration, "DefaultConfiguration") if isinstance(configuration, Mapping) else None
    )
    if default is not None and not isinstance(default, Mapping):
        raise RecipeError(f"{where}: ComponentConfiguration.DefaultConfiguration must be a mapping")
    return Recipe(
        name=name,
        version=version,
        dependencies=dependencies,
        default_configuration=copy.deepcopy(dict(default or {})),
        lifecycle=copy.deepcopy(dict(lifecycle)),
        artifacts=tuple(artifacts),
        source=where,
        document=doc,
    )


def load_recipe(path: Path, *, device: Mapping[str, str] | None = None) -> Recipe:
    """Read a recipe file (``.yaml``/``.yml`` or ``.json``) and select its manifest."""
    import yaml  # a tooling dependency; imported here so importing this module stays cheap

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc.strerror})") from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: not valid {path.suffix.lstrip('.').upper()} ({exc})") from None
    return parse_recipe(doc, where=str(path), device=device)


# ------------------------------------------------------------------ configuration (merge/reset)


class _Leaf:
    """A configuration value with its modification time (config/Topic.java)."""

    __slots__ = ("value", "modtime")

    def __init__(self, value: Any, modtime: int) -> None:
        self.value = value
        self.modtime = modtime


class _Node(dict[str, "_Node | _Leaf"]):
    """An interior configuration node (config/Topics.java)."""


def _child_key(node: _Node, key: str) -> str | None:
    lower = key.lower()  # Topics.java:29 — children keyed case-insensitively
    for name in node:
        if name.lower() == lower:
            return name
    return None


class RunningConfiguration:
    """A component's configuration as the nucleus keeps it: values with modification times, so
    a recipe default never overwrites a value a deployment merged (KCR:381-393)."""

    def __init__(self) -> None:
        self._root = _Node()

    def copy(self) -> RunningConfiguration:
        """A deep copy (KCR:356-363 copies the running configuration before resolving)."""
        other = RunningConfiguration()
        other._root = copy.deepcopy(self._root)
        return other

    def merge(self, timestamp: int, values: Mapping[str, Any]) -> None:
        """``Configuration.mergeMap`` (Topics.java:309-364): maps merge key by key; a leaf takes
        the new value unless its own modtime is newer (Topic.java:228-237); a type change replaces
        the node whatever its time (Topics.java:342-349, :355-361)."""
        self._merge(self._root, timestamp, values)

    def _merge(self, node: _Node, timestamp: int, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            key = str(key)
            existing_key = _child_key(node, key)
            name = existing_key if existing_key is not None else key
            existing = node.get(name)
            if isinstance(value, Mapping):
                if not isinstance(existing, _Node):
                    existing = _Node()
                    node[name] = existing
                self._merge(existing, timestamp, value)
            elif isinstance(existing, _Leaf):
                if timestamp >= existing.modtime:
                    existing.value, existing.modtime = copy.deepcopy(value), timestamp
            else:
                node[name] = _Leaf(copy.deepcopy(value), timestamp)

    def reset(self, pointer: str) -> None:
        """Remove the node at a JSON pointer (KCR:401-433); ``""`` clears everything; a pointer
        into a list element is ignored (KCR:417-422)."""
        if pointer == "":
            self._root = _Node()
            return
        tokens = _pointer_tokens(pointer, where=f"reset path {pointer!r}")
        node: _Node | _Leaf | None = self._root
        for token in tokens[:-1]:
            if not isinstance(node, _Node):
                return
            key = _child_key(node, token)
            node = None if key is None else node[key]
        if not isinstance(node, _Node):
            return  # a list element or a missing path: nothing to remove
        key = _child_key(node, tokens[-1])
        if key is not None:
            del node[key]

    def to_dict(self) -> dict[str, Any]:
        """The plain configuration (``Topics.toPOJO``)."""
        return _to_plain(self._root)


def _to_plain(node: _Node) -> dict[str, Any]:
    return {
        key: _to_plain(child) if isinstance(child, _Node) else copy.deepcopy(child.value)
        for key, child in node.items()
    }


@dataclass(frozen=True)
class ConfigurationUpdate:
    """A deployment's ``configurationUpdate`` for one component."""

    merge: Mapping[str, Any] | None = None
    reset: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Any, *, where: str) -> ConfigurationUpdate:
        """From CreateDeployment's form: ``merge`` is a JSON object as a string (or a mapping),
        ``reset`` a list of JSON pointers."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise RecipeError(f"{where}: configurationUpdate must be a mapping")
        merge = raw.get("merge")
        if isinstance(merge, str):
            try:
                merge = json.loads(merge)
            except ValueError as exc:
                raise RecipeError(f"{where}.merge: not valid JSON ({exc})") from None
        if merge is not None and not isinstance(merge, Mapping):
            raise RecipeError(f"{where}.merge: must be a JSON object")
        reset = raw.get("reset") or []
        if not isinstance(reset, list) or not all(isinstance(p, str) for p in reset):
            raise RecipeError(f"{where}.reset: must be a list of JSON pointers")
        for pointer in reset:
            if pointer != "" and not pointer.startswith("/"):
                raise RecipeError(f"{where}.reset: {pointer!r} is not a JSON pointer")
        return cls(merge=merge, reset=tuple(reset))


def resolve_configuration(
    default: Mapping[str, Any],
    running: RunningConfiguration | None,
    update: ConfigurationUpdate | None,
    *,
    timestamp: int,
) -> RunningConfiguration:
    """The configuration a deployment applies (KCR:350-399): the running configuration, minus
    the reset paths, plus the recipe defaults at timestamp 1, plus the merge at ``timestamp``.
    Without an update the running values (earlier merges) stay (KCR:359-363)."""
    result = running.copy() if running is not None else RunningConfiguration()
    if update is not None:
        for pointer in update.reset:
            result.reset(pointer)
            if pointer == "":
                break  # KCR:408-411 returns after a whole-document reset
    result.merge(DEFAULT_TIMESTAMP, default)
    if update is not None and update.merge is not None:
        result.merge(timestamp, update.merge)
    return result


# ------------------------------------------------------------------------------ interpolation


class SystemPaths(Protocol):
    """The nucleus paths recipe variables expand to (util/NucleusPaths.java)."""

    @property
    def root(self) -> Path:
        """``{kernel:rootPath}``."""
        ...

    def artifacts_path(self, name: str, version: str) -> Path:
        """``{artifacts:path}``."""
        ...

    def decompressed_path(self, name: str, version: str) -> Path:
        """``{artifacts:decompressedPath}``."""
        ...

    def work_path(self, name: str) -> Path:
        """``{work:path}``."""
        ...


@dataclass
class ResolvedService:
    """One component in the resolved services map (KCR:153-197)."""

    recipe: Recipe
    configuration: dict[str, Any]
    lifecycle: dict[str, Any]

    @property
    def version(self) -> str:
        """The component version."""
        return self.recipe.version


def _pointer_tokens(pointer: str, *, where: str) -> list[str]:
    if not pointer.startswith("/"):
        # Jackson's JsonPointer.compile refuses it; the nucleus' resolve() fails on that
        raise RecipeError(f"{where}: JSON pointer must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


_MISSING = object()


def json_pointer(document: Any, pointer: str, *, where: str) -> Any:
    """The node at an RFC 6901 pointer, or a private "missing" marker (Jackson ``at``)."""
    if pointer == "":  # KCR:93 — "" is the whole document
        return document
    node = document
    for token in _pointer_tokens(pointer, where=where):
        if isinstance(node, Mapping):
            if token not in node:
                return _MISSING
            node = node[token]
        elif isinstance(node, list):
            if not token.isdigit() or (token != "0" and token.startswith("0")):
                return _MISSING
            index = int(token)
            if index >= len(node):
                return _MISSING
            node = node[index]
        else:
            return _MISSING
    return node


def _java_double(value: float) -> str:
    """``Double.toString``, which Jackson's ``asText`` uses for a floating-point node: plain
    decimals in [1e-3, 1e7), else ``d.dddE<n>``, always with a fraction digit."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        text = repr(value)
        return text if "." in text else text + ".0"
    for places in range(1, 18):  # the shortest mantissa that round-trips
        candidate = f"{value:.{places}e}"
        if float(candidate) == value:
            break
    mantissa, exponent = candidate.split("e")
    mantissa = mantissa.rstrip("0")
    if mantissa.endswith("."):
        mantissa += "0"
    return f"{mantissa}E{int(exponent)}"


def render_value(node: Any) -> str:
    """How a configuration node renders in a recipe variable (KCR:637-653, guide "Recipe
    variables"): a value as its text (null → ``null``), a container as compact JSON with sorted
    keys (KCR:94-96 ORDER_MAP_ENTRIES_BY_KEYS)."""
    if isinstance(node, bool):
        return "true" if node else "false"
    if node is None:
        return "null"
    if isinstance(node, float):
        return _java_double(node)
    if isinstance(node, Mapping | list):
        return json.dumps(node, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return str(node)


@dataclass(frozen=True)
class Interpolator:
    """Recipe-variable interpolation as ``KernelConfigResolver.replace`` does it (KCR:530-614)."""

    paths: SystemPaths
    thing_name: str

    def system_parameter(self, namespace: str, key: str, name: str, version: str) -> str | None:
        """KCR:120-137 — the system parameters; an unknown key gives None (left as is, KCR:661)."""
        table: dict[str, dict[str, Callable[[], str]]] = {
            "artifacts": {
                "path": lambda: str(self.paths.artifacts_path(name, version).absolute()),
                "decompressedPath": lambda: str(
                    self.paths.decompressed_path(name, version).absolute()
                ),
            },
            "work": {"path": lambda: str(self.paths.work_path(name).absolute())},
            "kernel": {"rootPath": lambda: str(self.paths.root.absolute())},
            "iot": {"thingName": lambda: self.thing_name},
        }
        producer = table.get(namespace, {}).get(key)
        return None if producer is None else producer()

    @staticmethod
    def is_system_namespace(namespace: str) -> bool:
        """The namespaces KCR:120-137 registers."""
        return namespace in ("artifacts", "work", "kernel", "iot")

    def interpolate(
        self,
        value: Any,
        *,
        component: str,
        version: str,
        dependencies: Iterable[str],
        services: Mapping[str, ResolvedService],
        with_configuration: bool,
    ) -> Any:
        """Interpolate strings inside ``value`` (maps and lists recursively, KCR:499-528)."""
        deps = frozenset(dependencies)
        return self._walk(value, component, version, deps, services, with_configuration)

    def _walk(
        self,
        value: Any,
        component: str,
        version: str,
        deps: frozenset[str],
        services: Mapping[str, ResolvedService],
        with_configuration: bool,
    ) -> Any:
        if isinstance(value, str):
            return self._replace(value, component, version, deps, services, with_configuration)
        if isinstance(value, Mapping):
            return {
                k: self._walk(v, component, version, deps, services, with_configuration)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [
                self._walk(v, component, version, deps, services, with_configuration) for v in value
            ]
        return value

    def _lookup_configuration(
        self, target: str, pointer: str, services: Mapping[str, ResolvedService], where: str
    ) -> str | None:
        service = services.get(target)
        if service is None:
            return None
        node = json_pointer(service.configuration, pointer, where=where)
        # KCR:643-647 — a missing node leaves the variable as it is
        return None if node is _MISSING else render_value(node)

    def _replace(
        self,
        text: str,
        component: str,
        version: str,
        deps: frozenset[str],
        services: Mapping[str, ResolvedService],
        with_configuration: bool,
    ) -> str:
        # KCR:537-562: matches are found in the original string, and each replacement replaces
        # every occurrence of the placeholder text in the string as it is by then
        for match in list(_SAME_COMPONENT.finditer(text)):
            namespace, key = match.group(1), match.group(2)
            where = f"{component}: {match.group(0)}"
            replacement: str | None = None
            if with_configuration and namespace == "configuration":
                replacement = self._lookup_configuration(component, key, services, where)
            elif self.is_system_namespace(namespace):
                replacement = self.system_parameter(namespace, key, component, version)
            # else: unknown namespace, left as is (KCR:557-561)
            if replacement is not None:
                text = text.replace(match.group(0), replacement)
        # KCR:564-611: cross-component variables, on the string after the first pass
        for match in list(_CROSS_COMPONENT.finditer(text)):
            target, namespace, key = match.group(1), match.group(2), match.group(3)
            if target not in deps or target not in services:  # KCR:572-586
                continue
            where = f"{component}: {match.group(0)}"
            replacement = None
            if with_configuration and namespace == "configuration":
                replacement = self._lookup_configuration(target, key, services, where)
            elif self.is_system_namespace(namespace):
                replacement = self.system_parameter(
                    namespace, key, target, services[target].version
                )
            if replacement is not None:
                text = text.replace(match.group(0), replacement)
        return text


def should_interpolate_configuration(
    nucleus_configuration: Mapping[str, Any] | None, current: bool = False
) -> bool:
    """KCR:200-221 — the new Nucleus configuration's ``interpolateComponentConfiguration`` if it
    has one, else the device's current setting (default false)."""
    if nucleus_configuration is not None:
        option = _get(nucleus_configuration, INTERPOLATE_COMPONENT_CONFIGURATION)
        if option is not None:
            return _coerce_bool(option)
    return current


def _coerce_bool(value: Any) -> bool:
    """``Coerce.toBoolean`` (util/Coerce.java:39-63)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return int(value) != 0
    return value is not None and str(value) in ("true", "yes", "on", "t", "y", "Y")


def resolve_services(
    recipes: Sequence[Recipe],
    configurations: Mapping[str, Mapping[str, Any]],
    *,
    interpolator: Interpolator,
    interpolate_configuration: bool,
) -> dict[str, ResolvedService]:
    """Interpolate every component's configuration and lifecycle as KCR:153-197 does: in list
    order, configuration first (system parameters only, and only when
    ``interpolate_configuration``), then the lifecycle (with configuration values)."""
    services = {
        r.name: ResolvedService(
            recipe=r,
            configuration=copy.deepcopy(dict(configurations.get(r.name, {}))),
            lifecycle=copy.deepcopy(dict(r.lifecycle)),
        )
        for r in recipes
    }
    for recipe in recipes:
        service = services[recipe.name]
        if interpolate_configuration:
            # KCR:168-177 — interpolateSystemParametersOnly: {configuration:...} never expands
            # inside configuration (KCR:464-468)
            service.configuration = interpolator.interpolate(
                service.configuration,
                component=recipe.name,
                version=recipe.version,
                dependencies=recipe.dependencies,
                services=services,
                with_configuration=False,
            )
        service.lifecycle = interpolator.interpolate(
            service.lifecycle,
            component=recipe.name,
            version=recipe.version,
            dependencies=recipe.dependencies,
            services=services,
            with_configuration=True,
        )
    return services
