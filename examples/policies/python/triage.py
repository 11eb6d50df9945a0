"""Agent: triages questions. For every `question` entry on the streams it
follows, it appends a `triage` entry (the label is configurable) saying
whether the question is `urgent`, because it names one of the `urgent`
words (by default "outage" and "security"), or `normal`, and which words
matched, and adds the question to a persistent `open-questions` stash (the
name is configurable). An `answer` entry whose `data.question` is a
question's seq takes it off the stash. A question without `data.text` is
logged and left alone.

The entry, the stash and the agent's progress commit together, so the stash
never counts a question twice, even when a call is retried."""

import json

import wit_world
from wit_world.imports import log, stash_read, stash_write, stream_write

# Questions the stash keeps at most; the oldest go first.
MAX_OPEN = 100


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
            log.log(log.Level.WARN, f"question #{entry.seq} from {entry.agent} has no data.text")
            return None
        lowered = text.lower()
        matched = [w for w in urgent if isinstance(w, str) and w.lower() in lowered]
        priority = "urgent" if matched else "normal"
        log.log(log.Level.INFO, f"question #{entry.seq} from {entry.agent} is {priority}")
        triage = {"question": entry.seq, "asker": entry.agent, "priority": priority, "matched": matched}
        stream_write.append(stream_id, label, json.dumps(triage))
        question = {"question": entry.seq, "stream_id": stream_id, "asker": entry.agent,
                    "priority": priority, "text": text}
        update(stash, lambda qs: (qs + [question])[-MAX_OPEN:])
        return None
