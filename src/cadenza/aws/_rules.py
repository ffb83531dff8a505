"""Rules as a deployment carries them: the JSON objects of the ``--rules`` file that
``cadenza aws template`` reads, which the template hands its functions in ``CADENZA_RULES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cadenza.ports.run_store import DEFAULT_TENANT, Rule


def rule_to_json(rule: Rule) -> dict[str, Any]:
    """The JSON object of ``rule``, which :func:`rule_from_json` reads back."""
    return {
        "name": rule.name,
        "pattern": rule.pattern,
        "target": rule.target,
        "params": rule.params,
        "enabled": rule.enabled,
        "tenant": rule.tenant,
    }


def rule_from_json(data: Mapping[str, Any]) -> Rule:
    """The rule ``data`` describes; KeyError or TypeError when it is not one."""
    return Rule(
        data["name"],
        data["pattern"],
        data["target"],
        data.get("params", {}),
        data.get("enabled", True),
        tenant=data.get("tenant", DEFAULT_TENANT),
    )
