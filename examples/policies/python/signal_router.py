"""Escalation policy: a HALT, or an ALERT in one of the `halt_on`
categories (by default SECURITY), halts the scope; every signal is sent
to the lead, with the category's entry from the `runbook` stash if set."""

import json

import wit_world
from wit_world.imports import log, stash_read
from wit_world.imports.types import Action_HaltScope, Action_Notify, Notification, SignalLevel


class WitWorld(wit_world.WitWorld):
    def escalate(self, config: str, signal) -> list:
        try:
            cfg = json.loads(config or "{}")
        except ValueError:
            cfg = {}
        halt_on = cfg.get("halt_on")
        if not isinstance(halt_on, list):
            halt_on = ["SECURITY"]
        level = "HALT" if signal.level == SignalLevel.HALT else "ALERT"
        halt = level == "HALT" or signal.category in halt_on
        advice = None
        runbook = cfg.get("runbook")
        if isinstance(runbook, str):
            doc = stash_read.get(runbook, True)
            if doc is not None:
                try:
                    advice = json.loads(bytes(doc.body)).get(signal.category)
                except (ValueError, AttributeError):
                    advice = None
        log.log(log.Level.WARN, f"{level} {signal.category} from {signal.reporter}: halt={'true' if halt else 'false'}")
        message = signal.issue
        if isinstance(advice, str):
            message += "\nRunbook: " + advice
        notify = Action_Notify(Notification("lead", f"{level} {signal.category} from {signal.reporter}", message))
        return [Action_HaltScope(), notify] if halt else [notify]
