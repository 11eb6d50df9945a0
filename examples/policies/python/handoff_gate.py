"""Handoff policy: the structured HANDOFF must fill every field in
`require` (by default `produced` and `uncertainty`), and each `stash:NAME`
it says it produced must exist as a persistent stash."""

import json

import wit_world
from wit_world.imports import log, stash_read
from wit_world.imports.types import Violation


def filled(value) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return value.strip() != ""
    if isinstance(value, (list, dict)):
        return len(value) > 0
    return True


class WitWorld(wit_world.WitWorld):
    def check(self, config: str, handoff) -> list:
        try:
            cfg = json.loads(config or "{}")
        except ValueError as e:
            return [Violation("config", f"bad config: {e}")]
        try:
            structured = json.loads(handoff.structured) if handoff.structured is not None else None
        except ValueError:
            structured = None
        if not isinstance(structured, dict):
            return [Violation("handoff", "no structured HANDOFF; put one at metadata.handoff")]
        require = cfg.get("require")
        if not isinstance(require, list):
            require = ["produced", "uncertainty"]
        found = [
            Violation(f, f"{f} is missing or empty; fill it in before handing off")
            for f in require
            if isinstance(f, str) and not filled(structured.get(f))
        ]
        produced = structured.get("produced")
        for i, item in enumerate(produced if isinstance(produced, list) else []):
            if isinstance(item, str) and item.startswith("stash:"):
                name = item[len("stash:"):]
                if stash_read.get(name, True) is None:
                    found.append(Violation(f"produced[{i}]", f"no persistent stash {name}; write it before handing off"))
        log.log(log.Level.INFO, f"{handoff.agent} hands off {handoff.subject}: {len(found)} problem(s)")
        return found
