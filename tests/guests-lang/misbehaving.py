"""A claim policy that misbehaves as its config says, to show that the
offline tester runs Python guests as the server does: `print` writes to
stdout and approves; `raise` raises an uncaught exception; `count` denies
with how many decisions this instance has made, to show whether an
instance (or its memory) carried over from an earlier decision."""

import json
import sys

import wit_world
from wit_world.imports.types import Verdict_Approve, Verdict_Deny

CALLS = 0


class WitWorld(wit_world.WitWorld):
    def decide(self, config: str, claim) -> object:
        global CALLS
        CALLS += 1
        how = json.loads(config or "{}").get("do", "")
        if how == "print":
            print("thinking out loud about", claim.claimant)
            print("and to stderr too", file=sys.stderr)
            return Verdict_Approve()
        if how == "raise":
            raise ValueError("misbehaving on purpose")
        if how == "count":
            return Verdict_Deny(f"call {CALLS}")
        return Verdict_Approve()
