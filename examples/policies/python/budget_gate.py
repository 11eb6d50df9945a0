"""Claim policy: deny an agent that already holds `max_open_claims`
subtasks of the contract; escalate a subtask whose `budget_usdc` is over
`max_budget_usdc`. Team tasks are approved here: the bundled
claim-approval keeps deciding beside this policy (blocked tasks, tasks
another member holds) unless its settings say `replaces_bundled`."""

import json

import wit_world
from wit_world.imports import log, stash_read
from wit_world.imports.types import ClaimTarget_Subtask, Verdict_Approve, Verdict_Deny, Verdict_Escalate


class WitWorld(wit_world.WitWorld):
    def decide(self, config: str, claim) -> object:
        try:
            cfg = json.loads(config or "{}")
        except ValueError as e:
            return Verdict_Deny(f"bad config: {e}")
        if not isinstance(claim.target, ClaimTarget_Subtask):
            return Verdict_Approve()
        target = claim.target.value
        doc = stash_read.get(target.contract, True)
        if doc is None:
            return Verdict_Deny(f"no contract {target.contract}")
        try:
            contract = json.loads(bytes(doc.body))
        except ValueError:
            contract = {}
        subtasks = contract.get("subtasks") or []
        subtask = next((s for s in subtasks if s.get("id") == target.subtask_id), None)
        if subtask is None:
            return Verdict_Deny(f"no subtask {target.subtask_id} in {target.contract}")
        budget = subtask.get("budget_usdc", 0)
        held = sum(1 for s in subtasks if s.get("status") == "claimed" and s.get("assigned_agent") == claim.claimant)
        log.log(log.Level.INFO, f"{claim.claimant} wants {target.subtask_id} ({budget} USDC) and holds {held}")
        limit = cfg.get("max_open_claims")
        if limit is not None and held >= limit:
            return Verdict_Deny(f"{claim.claimant} already holds {held} subtasks; the limit is {limit}")
        ceiling = cfg.get("max_budget_usdc")
        if ceiling is not None and budget > ceiling:
            return Verdict_Escalate(f"{budget} USDC is over {ceiling}; the creator decides")
        return Verdict_Approve()
