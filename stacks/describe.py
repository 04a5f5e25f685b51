"""Print what would be deployed for a plant, without the CDK or an AWS account.

python -m stacks.describe [--plant NAME] [--plants-dir plants] [--releases-dir releases] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from stacks.config import (
    PLANTS_DIR,
    RELEASES_DIR,
    PlantConfig,
    PlantConfigError,
    Release,
    line_stack,
    load_plant_release,
    load_plants,
)
from stacks.deployment_spec import deployment_spec
from stacks.policies import (
    claim_policy_document,
    core_device_policy_document,
    device_policy_document,
)

LINES_SHOWN = 5


def describe(plant: PlantConfig, release: Release) -> dict[str, Any]:
    """What the plant's stack would deploy, as plain data."""
    deployments: dict[str, Any] = {}
    line_stacks: dict[str, int] = {}
    for line in plant.lines:
        key = f"Lines{line_stack(line.name)}"
        line_stacks[key] = line_stacks.get(key, 0) + 1
    for ring in plant.ring_names:  # the Plant stack's standing deployments: no abort criteria
        deployments[ring] = (
            deployment_spec(plant, ring, release, abort=False)
            if release.ring(ring) is not None
            else None
        )
    return {
        "plant": plant.name,
        "account": plant.account,
        "region": plant.region,
        "expected_devices": plant.expected_devices,
        "lines": {line.name: [s.name for s in line.stations] for line in plant.lines},
        "thing_groups": {
            "plant": plant.plant_group_name,
            "lines": [plant.line_group_name(line.name) for line in plant.lines],
            "rings": [plant.ring_group_name(r) for r in plant.ring_names],
            # nested stack → how many line groups it holds
            "line_stacks": dict(sorted(line_stacks.items())),
        },
        "rings": [
            {"name": r.name, "percent": r.percent, "bake_minutes": r.bake_minutes}
            for r in plant.rings
        ],
        "deployments": deployments,
        "rollout_abort": [
            {
                "failureType": c.failure_type,
                "thresholdPercentage": c.threshold_percentage,
                "minNumberOfExecutedThings": c.min_executed,
            }
            for c in plant.deployment.abort
        ],
        "provisioning_template": plant.provisioning_template_name,
        "role_alias": plant.role_alias_name,
        "policies": {
            plant.core_policy_name: core_device_policy_document(plant),
            plant.claim_policy_name: claim_policy_document(plant),
            # each device's own policy, as provisioning creates it (shown for serial <serial>)
            "<device policy>": device_policy_document(plant, plant.thing_name("<serial>")),
        },
    }


def _topic_scopes(document: dict[str, Any]) -> list[str]:
    out = []
    for statement in document["Statement"]:
        actions = ",".join(a.split(":", 1)[1] for a in statement["Action"])
        for resource in statement["Resource"]:
            scope = resource.split(":", 5)[-1] if resource.startswith("arn:") else resource
            out.append(f"{actions:<28} {scope}")
    return out


def render(info: dict[str, Any], out: TextIO) -> None:
    """Print a human-readable summary of :func:`describe`'s result."""
    w = out.write
    w(f"Plant {info['plant']}  (account {info['account']}, {info['region']}, ")
    w(f"{info['expected_devices']} devices expected)\n")
    lines = info["lines"]
    stations = sum(len(v) for v in lines.values())
    w(f"  lines: {len(lines)}, stations: {stations}\n")
    w("\nThing groups (organisation only, no deployment)\n")
    w(f"  {info['thing_groups']['plant']}  (parent of the ring groups)\n")
    groups = info["thing_groups"]["lines"]
    parts = ", ".join(f"{k} {n}" for k, n in info["thing_groups"]["line_stacks"].items())
    w(f"  line groups, top-level, in nested stacks ({parts}):\n")
    for name in groups[:LINES_SHOWN]:
        w(f"    {name}\n")
    if len(groups) > LINES_SHOWN:
        w(f"    ... and {len(groups) - LINES_SHOWN} more line groups\n")
    w("\nRings (rollout order; each has exactly one deployment)\n")
    for ring, group in zip(info["rings"], info["thing_groups"]["rings"], strict=True):
        w(f"  {ring['name']:<10} {ring['percent']:>6g} %  bake {ring['bake_minutes']:>4} min  ")
        w(f"group {group}\n")
    w("\nDeployments\n")
    for ring, spec in info["deployments"].items():
        if spec is None:
            w(f"  {ring}: no release -> no deployment\n")
            continue
        w(f"  {spec['deploymentName']} -> {spec['targetArn']}\n")
        for name, comp in spec["components"].items():
            extra = " (+configuration merge)" if "configurationUpdate" in comp else ""
            w(f"      {name} {comp['componentVersion']}{extra}\n")
        pol = spec["deploymentPolicies"]
        job = spec["iotJobConfiguration"]
        rate = job["jobExecutionsRolloutConfig"]
        exp = rate["exponentialRate"]
        w(
            f"      failure handling {pol['failureHandlingPolicy']}, component update "
            f"{pol['componentUpdatePolicy']['action']} "
            f"({pol['componentUpdatePolicy']['timeoutInSeconds']} s)\n"
        )
        w(
            f"      rollout {exp['baseRatePerMinute']}/min x{exp['incrementFactor']:g} after "
            f"{exp['rateIncreaseCriteria']['numberOfSucceededThings']} succeeded, max "
            f"{rate['maximumPerMinute']}/min; in-progress timeout "
            f"{job['timeoutConfig']['inProgressTimeoutInMinutes']} min\n"
        )
    w("  No abort criteria on these standing deployments (they serve devices that join later);\n")
    w("  the rollout's deployments abort:\n")
    for c in info["rollout_abort"]:
        w(
            f"      when {c['failureType']} >= {c['thresholdPercentage']:g} % "
            f"(after {c['minNumberOfExecutedThings']} executed)\n"
        )
    w(f"\nProvisioning template {info['provisioning_template']}, role alias {info['role_alias']}\n")
    w("\nIoT policies (action, resource scope)\n")
    for name, document in info["policies"].items():
        w(f"  {name}\n")
        for line in _topic_scopes(document):
            w(f"    {line}\n")


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m stacks.describe",
        description="Print what LineGuard would deploy for a plant (no AWS account, no CDK).",
    )
    parser.add_argument("--plant", action="append", help="plant name (repeatable; default: all)")
    parser.add_argument("--plants-dir", type=Path, default=PLANTS_DIR)
    parser.add_argument("--releases-dir", type=Path, default=RELEASES_DIR)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--environment",
        action="store_true",
        help="print only aws://<account>/<region> of each plant (what cdk bootstrap takes)",
    )
    args = parser.parse_args(argv)
    try:
        plants = load_plants(args.plants_dir, args.plant)
        infos = [describe(p, load_plant_release(p, args.releases_dir)) for p in plants]
    except PlantConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.environment:
        for env in dict.fromkeys(f"aws://{p.account}/{p.region}" for p in plants):
            out.write(env + "\n")
        return 0
    if args.json:
        json.dump(infos if len(infos) > 1 else infos[0], out, indent=2)
        out.write("\n")
        return 0
    for i, info in enumerate(infos):
        if i:
            out.write("\n" + "-" * 78 + "\n\n")
        render(info, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
