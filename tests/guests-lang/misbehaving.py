"""A claim policy that misbehaves as its config says, to show that the
offline tester runs Python guests as the server does: `print` writes to
stdout and approves; `raise` raises an uncaught exception."""

import json
import sys

import wit_world
from wit_world.imports.types import Verdict_Approve


class WitWorld(wit_world.WitWorld):
    def decide(self, config: str, claim) -> object:
        how = json.loads(config or "{}").get("do", "")
        if how == "print":
            print("thinking out loud about", claim.claimant)
            print("and to stderr too", file=sys.stderr)
            return Verdict_Approve()
        if how == "raise":
            raise ValueError("misbehaving on purpose")
        return Verdict_Approve()
