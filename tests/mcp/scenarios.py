"""Agents that use Cairn over MCP only, through the official Python SDK.

Run by tests/mcp.rs against a real server:

    python scenarios.py MODE SCENARIO URL KEYS

MODE is the SDK's `auto` (2026-07-28, `server/discover`) or `legacy` (the
`initialize` handshake). KEYS is a JSON object of agent name to API key.
Every step asserts; the first failure exits non-zero with what was wrong.
The SDK validates each result's structured content against the tool's
output schema, so a schema that does not match its answers fails here too.
"""

import asyncio
import json
import secrets
import sys

import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

TOOLS = [
    "stash_get", "stash_put", "stash_patch_items", "stash_list",
    "stream_create", "stream_append", "stream_read", "stream_latest", "wait_for_entries",
    "discover", "schema_search",
    "team_create", "team_add_member", "team_get",
    "task_list", "task_get", "task_create", "task_update",
    "send_message", "read_messages", "wait_for_messages",
    "raise_signal", "acknowledge_signal",
]

HANDOFF = {
    "produced": ["notes/parser.md"],
    "decisions": ["LL(1): the grammar has no left recursion"],
    "reasoning_chain": "The grammar is small and predictive parsing keeps errors local.",
    "uncertainty": ["[LOW] error recovery is untested on deeply nested input"],
    "integration": ["the lexer's token stream"],
    "open_questions": [],
}


class Agent:
    """One agent's MCP client; `call` returns the structured result."""

    def __init__(self, url, key, mode):
        self.url, self.key, self.mode = url, key, mode

    async def __aenter__(self):
        self.http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {self.key}"}, timeout=90)
        self.client = Client(streamable_http_client(self.url, http_client=self.http), mode=self.mode)
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc):
        await self.client.__aexit__(*exc)
        await self.http.aclose()

    async def call(self, tool, **args):
        r = await self.client.call_tool(tool, args)
        assert not r.is_error, f"{tool}({args}) failed: {r.structured_content}"
        return r.structured_content

    async def refused(self, tool, want, **args):
        """The error of a call that must fail with HTTP status `want`."""
        r = await self.client.call_tool(tool, args)
        assert r.is_error, f"{tool}({args}) should have failed with {want}: {r.structured_content}"
        err = r.structured_content
        assert err["status"] == want, f"{tool}: want {want}, got {err}"
        # A refusal a policy decided also names its decision.
        keys = set(err["error"])
        assert {"code", "message", "details"} <= keys <= {"code", "message", "details", "decision_id"}, err
        # The text content carries the same, for clients that show only text.
        assert json.loads(r.content[0].text) == err
        return err["error"]


async def tools(url, keys, mode):
    async with Agent(url, keys["lead"], mode) as a:
        listed = (await a.client.list_tools()).tools
        assert [t.name for t in listed] == TOOLS, [t.name for t in listed]
        for t in listed:
            assert t.description and len(t.description) > 40, t.name
            assert t.input_schema["type"] == "object" and t.input_schema["additionalProperties"] is False, t.name
            assert t.output_schema and t.output_schema["type"] == "object", t.name
        update = next(t for t in listed if t.name == "task_update")
        assert "metadata.handoff" in update.description and "open_questions" in update.description
        assert {"team", "id", "owner", "status", "metadata"} <= set(update.input_schema["properties"])
        assert update.input_schema["required"] == ["team", "id"]
        wait = next(t for t in listed if t.name == "wait_for_entries")
        assert wait.input_schema["properties"]["timeout_s"]["maximum"] == 60
        bad = await a.client.call_tool("task_get", {"team": "t", "id": 1, "ownr": "x"})
        assert bad.is_error and bad.structured_content["error"]["code"] == "invalid_arguments", bad


async def team(url, keys, mode):
    team = f"squad-{mode}-{secrets.token_hex(3)}"
    async with Agent(url, keys["lead"], mode) as lead, Agent(url, keys["coder"], mode) as coder, \
            Agent(url, keys["tester"], mode) as tester:
        created = await lead.call("team_create", name=team)
        assert created["lead"] == "lead", created
        for mate in ("coder", "tester"):
            await lead.call("team_add_member", team=team, agent_name=mate)

        teach = await lead.call("task_create", team=team, subject="Teachback on the parser", owner="coder")
        build = await lead.call("task_create", team=team, subject="Build the parser",
                                active_form="Building the parser", blocked_by=[teach["id"]])
        check = await lead.call("task_create", team=team, subject="Test the parser", blocked_by=[build["id"]])
        got = await coder.call("task_get", team=team, id=build["id"])
        assert got["blocked_by"] == [teach["id"]] and got["status"] == "pending", got
        assert (await coder.call("task_get", team=team, id=teach["id"]))["blocks"] == [build["id"]]

        # A claim on a blocked task is refused by the claim policy.
        err = await coder.refused("task_update", 409, team=team, id=build["id"], owner="coder")
        assert err["code"] == "claim_denied" and err["decision_id"].startswith("dec_"), err

        # The teachback: the lead waits on its inbox, the coder sends.
        await coder.call("task_update", team=team, id=teach["id"], status="in_progress")
        waiting = asyncio.create_task(lead.call("wait_for_messages", team=team, after=0, timeout_s=30))
        await asyncio.sleep(0.3)
        sent = await coder.call("send_message", team=team, to="lead", summary="Teachback: LL(1) parser",
                                message="[coder→lead] Teachback: I will build an LL(1) parser for the grammar.")
        inbox = await asyncio.wait_for(waiting, 30)
        assert [m["id"] for m in inbox["messages"]] == [sent["id"]], inbox
        assert inbox["messages"][0]["from"] == "coder" and inbox["next_after"] == sent["id"], inbox
        empty = await lead.call("wait_for_messages", team=team, after=inbox["next_after"], timeout_s=0)
        assert empty["messages"] == [], empty
        again = await lead.call("read_messages", team=team, after=0)
        assert again["messages"][0]["summary"] == "Teachback: LL(1) parser", again

        # Completion needs a whole HANDOFF: the violations are shown.
        err = await coder.refused("task_update", 422, team=team, id=teach["id"], status="completed",
                                  metadata={"handoff": {"produced": ["notes/parser.md"]}})
        assert err["code"] == "handoff_rejected", err
        paths = {d.get("path") for d in err["details"]}
        assert {"/metadata/handoff/decisions", "/metadata/handoff/uncertainty"} <= paths, err
        done = await coder.call("task_update", team=team, id=teach["id"], status="completed",
                                metadata={"handoff": HANDOFF})
        assert done["status"] == "completed" and done["metadata"]["handoff"]["produced"] == HANDOFF["produced"]
        claimed = await coder.call("task_update", team=team, id=build["id"], owner="coder")
        assert claimed["owner"] == "coder", claimed

        # A HALT locks claims and completions until the lead acknowledges.
        raised = await tester.call("raise_signal", team=team, level="HALT", category="SECURITY",
                                   issue="API keys are logged in plain text", evidence="logs/app.log:12",
                                   impact="credential leak", recommended_action="rotate keys",
                                   task_id=check["id"])
        signal = raised["signal_id"]
        assert (await lead.call("team_get", team=team))["halted"] is True
        err = await coder.refused("task_update", 423, team=team, id=build["id"], status="completed",
                                  metadata={"handoff": HANDOFF})
        assert err["code"] == "halted" and "lead acknowledges" in err["message"], err
        err = await tester.refused("acknowledge_signal", 403, signal_id=signal, note="not mine to lift")
        assert err["code"] == "forbidden", err
        ack = await lead.call("acknowledge_signal", signal_id=signal, note="keys rotated")
        assert ack["acknowledged"] is True and ack["acknowledged_by"] == "lead", ack
        done = await coder.call("task_update", team=team, id=build["id"], status="completed",
                                metadata={"handoff": HANDOFF})
        assert done["status"] == "completed", done

        listed = await lead.call("task_list", team=team)
        status = {t["id"]: t["status"] for t in listed["tasks"]}
        assert status[teach["id"]] == "completed" and status[build["id"]] == "completed", listed
        assert status[check["id"]] == "pending", listed

        # The team's stream carries the signal; wait_for_entries follows it.
        stream = (await lead.call("team_get", team=team))["stream_id"]
        entries = await tester.call("wait_for_entries", stream_id=stream, after=0, label="algedonic", timeout_s=5)
        assert entries["entries"][0]["data"]["signal"]["signal_id"] == signal, entries


CONTRACT = {
    "objective": "Redesign the landing page to improve agent onboarding conversion",
    "success_criteria": ["New landing page deployed to production"],
    "subtasks": [
        {"id": "research", "description": "Analyze the onboarding funnel", "status": "open",
         "success_criteria": ["Funnel data for last 30 days"], "budget_usdc": 10.0},
        {"id": "design", "description": "Create wireframes", "status": "open",
         "success_criteria": ["Mobile and desktop wireframes"], "budget_usdc": 15.0},
    ],
    "budget_usdc": 25.0,
    "deadline": "2099-05-01T00:00:00Z",
}


async def contract(url, keys, mode):
    name = f"redesign-{mode}-{secrets.token_hex(3)}"
    async with Agent(url, keys["lead"], mode) as me, Agent(url, keys["coder"], mode) as bot:
        schemas = await me.call("schema_search", q="agent-contract")
        assert [s["name"] for s in schemas["schemas"]] == ["agent-contract"], schemas
        # The contract as text, as the pattern sends it; validated on write.
        created = await me.call("stash_put", name=name, persistent=True, discoverable=True,
                                schema="agent-contract", content=json.dumps(CONTRACT, indent=2))
        assert created["version"] == 1 and created["schema_id"] == schemas["schemas"][0]["schema_id"], created
        bad = dict(CONTRACT, subtasks="none")
        err = await me.refused("stash_put", 422, name=name, persistent=True, content=json.dumps(bad))
        assert err["details"], err
        execution = await me.call("stream_create", name=f"{name}-execution", ttl=604800, discoverable=True,
                                  linked_stash=name)
        discussion = await me.call("stream_create", name=f"{name}-discussion", ttl=604800, discoverable=True)

        found = await bot.call("discover", schema="agent-contract", q="redesign")
        assert name in [r["name"] for r in found["results"]], found
        linked = await bot.call("discover", linked_to=name)
        assert {r["stream_id"] for r in linked["results"]} == {execution["stream_id"], discussion["stream_id"]}
        doc = await bot.call("stash_get", name=name, persistent=True)
        assert json.loads(doc["text"]) == CONTRACT and doc["version"] == 1, doc

        # Claim by entry: the claim policy assigns the subtask at once.
        claim = await bot.call("stream_append", stream_id=discussion["stream_id"], label="claim",
                               data={"type": "claim", "subtask_id": "research", "agent_name": "coder",
                                     "message": "I can handle the funnel analysis."})
        assert claim["decision"]["verdict"] == "approve", claim
        state = await bot.call("stash_get", name=name, persistent=True)
        research = next(s for s in json.loads(state["text"])["subtasks"] if s["id"] == "research")
        assert research["status"] == "claimed" and research["assigned_agent"] == "coder", state

        # Participants report and deliver on the execution stream.
        await bot.call("stream_append", stream_id=execution["stream_id"], label="progress",
                       data={"subtask_id": "research", "status": "in_progress", "progress": "30 days analysed"})
        await bot.call("stream_append", stream_id=execution["stream_id"], label="deliverable",
                       data={"subtask_id": "research", "status": "completed",
                             "deliverable": "stash research-findings-final"})
        patched = await me.call("stash_patch_items", name=name, persistent=True,
                                update_items=[{"path": "subtasks", "match": {"id": "research"},
                                               "set": {"status": "completed"}}],
                                if_match=state["version"])
        assert patched["items_matched"] == 1, patched
        err = await me.refused("stash_patch_items", 412, name=name, persistent=True, if_match=state["version"],
                               update_items=[{"path": "subtasks", "match": {"id": "design"}, "set": {"status": "x"}}])
        assert err["code"] == "precondition_failed", err

        # Reading the state.
        latest = await me.call("stream_latest", stream_id=execution["stream_id"], label="deliverable")
        assert latest["data"]["deliverable"] == "stash research-findings-final", latest
        log = await me.call("stream_read", stream_id=execution["stream_id"])
        assert [e["label"] for e in log["entries"]] == ["progress", "deliverable"], log
        final = await me.call("stash_get", name=name, persistent=True)
        subtasks = {s["id"]: s["status"] for s in json.loads(final["text"])["subtasks"]}
        assert subtasks == {"research": "completed", "design": "open"}, final
        mine = await me.call("stash_list", persistent=True)
        assert name in [s["name"] for s in mine["stashes"]], mine


async def main():
    mode, scenario, url, keys = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    await {"tools": tools, "team": team, "contract": contract}[scenario](url, keys, mode)
    print(f"{scenario} ({mode}): ok")


if __name__ == "__main__":
    asyncio.run(main())
