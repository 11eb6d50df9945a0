import json
import wit_world
from wit_world.imports import log, stash_read
from wit_world.imports.types import Verdict_Approve, Verdict_Deny, Verdict_Escalate, ClaimTarget_Subtask


class WitWorld(wit_world.WitWorld):
    def decide(self, config: str, claim) -> object:
        cfg = json.loads(config or "{}")
        ceiling = cfg.get("max_budget_usdc", float("inf"))
        target = claim.target
        if not isinstance(target, ClaimTarget_Subtask):
            return Verdict_Approve()
        doc = stash_read.get(target.value.contract, True)
        if doc is None:
            return Verdict_Deny(f"no contract {target.value.contract}")
        contract = json.loads(bytes(doc.body))
        budget = next((s.get("budget_usdc", 0) for s in contract.get("subtasks", []) if s.get("id") == target.value.subtask_id), 0)
        log.log(log.Level.INFO, f"{claim.claimant} wants {target.value.subtask_id} ({budget} USDC)")
        if budget > ceiling:
            return Verdict_Escalate(f"{budget} USDC is over {ceiling}; the creator decides")
        return Verdict_Approve()
