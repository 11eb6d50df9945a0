"""Agent: triages questions. For every `question` entry on the streams it
follows, it appends a `triage` entry (the label is configurable) saying
whether the question is `urgent`, because it names one of the `urgent`
words (by default "outage" and "security"), or `normal`, and which words
matched, and adds the question to a persistent `open-questions` stash (the
name is configurable). An `answer` entry whose `data.question` is a
question's seq takes it off the stash. The question is `data.text`, or
`data.message` as the contracts pattern writes it; one without either is
logged and left alone.

With `contract` in its config (the contract stash of the discussion stream
it follows), a question that names a `subtask_id` is routed: the entry says
`route_to`, the agent assigned to that subtask, or the contract's creator
when the subtask is unassigned or not in the contract.

The entry, the stash and the agent's progress commit together, so the stash
never counts a question twice, even when a call is retried."""

import json

import wit_world
from wit_world.imports import log, stash_read, stash_write, stream_write

# Questions the stash keeps at most; the oldest go first.
MAX_OPEN = 100


def route(contract: str, subtask: str):
    """Who answers questions about `subtask`: its assigned agent, else the
    contract's creator (its owner). None when the contract cannot be read."""
    doc = stash_read.get(contract, True)
    if doc is None:
        return None
    try:
        body = json.loads(bytes(doc.body))
    except ValueError:
        body = None
    subtasks = body.get("subtasks") if isinstance(body, dict) else None
    for t in subtasks if isinstance(subtasks, list) else []:
        if isinstance(t, dict) and t.get("id") == subtask and isinstance(t.get("assigned_agent"), str):
            return t["assigned_agent"]
    return doc.owner


def update(stash: str, change) -> None:
    """Reads the stash's open questions, changes them, and writes them back."""
    doc = stash_read.get(stash, True)
    open_questions = []
    if doc is not None:
        try:
            found = json.loads(bytes(doc.body))
        except ValueError:
            found = None
        if isinstance(found, dict) and isinstance(found.get("open"), list):
            open_questions = found["open"]
    open_questions = change(open_questions)
    body = json.dumps({"open": open_questions}).encode()
    stash_write.put(stash, True, body, "application/json")


class WitWorld(wit_world.WitWorld):
    def on_entry(self, config: str, stream_id: str, entry) -> None:
        try:
            cfg = json.loads(config or "{}")
        except ValueError:
            cfg = {}
        stash = cfg.get("stash") if isinstance(cfg.get("stash"), str) else "open-questions"
        try:
            data = json.loads(entry.data)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {}
        if entry.label == "answer":
            seq = data.get("question")
            if isinstance(seq, int):
                update(stash, lambda qs: [q for q in qs
                                          if not (q.get("question") == seq and q.get("stream_id") == stream_id)])
            return None
        if entry.label != "question":
            return None
        urgent = cfg.get("urgent")
        if not isinstance(urgent, list):
            urgent = ["outage", "security"]
        label = cfg.get("label") if isinstance(cfg.get("label"), str) else "triage"
        text = data.get("text")
        if not isinstance(text, str):
            text = data.get("message")
        if not isinstance(text, str):
            log.log(log.Level.WARN, f"question #{entry.seq} from {entry.agent} has no text")
            return None
        lowered = text.lower()
        matched = [w for w in urgent if isinstance(w, str) and w.lower() in lowered]
        priority = "urgent" if matched else "normal"
        log.log(log.Level.INFO, f"question #{entry.seq} from {entry.agent} is {priority}")
        triage = {"question": entry.seq, "asker": entry.agent, "priority": priority, "matched": matched}
        question = {"question": entry.seq, "stream_id": stream_id, "asker": entry.agent,
                    "priority": priority, "text": text}
        contract, subtask = cfg.get("contract"), data.get("subtask_id")
        if isinstance(contract, str) and isinstance(subtask, str):
            to = route(contract, subtask)
            log.log(log.Level.INFO, f"question #{entry.seq} about {subtask} goes to {to}")
            for record in (triage, question):
                record["subtask_id"] = subtask
                record["route_to"] = to
        stream_write.append(stream_id, label, json.dumps(triage))
        update(stash, lambda qs: (qs + [question])[-MAX_OPEN:])
        return None
