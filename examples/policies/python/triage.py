"""Agent: triages questions. For every `question` entry on the streams it
follows, it appends a `triage` entry (the label is configurable) saying
whether the question is `urgent`, because it names one of the `urgent`
words (by default "outage" and "security"), or `normal`, and which words
matched. A question without `data.text` is logged and left alone."""

import json

import wit_world
from wit_world.imports import log, stream_write


class WitWorld(wit_world.WitWorld):
    def on_entry(self, config: str, stream_id: str, entry) -> None:
        try:
            cfg = json.loads(config or "{}")
        except ValueError:
            cfg = {}
        if entry.label != "question":
            return None
        urgent = cfg.get("urgent")
        if not isinstance(urgent, list):
            urgent = ["outage", "security"]
        label = cfg.get("label") if isinstance(cfg.get("label"), str) else "triage"
        try:
            data = json.loads(entry.data)
        except ValueError:
            data = None
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str):
            log.log(log.Level.WARN, f"question #{entry.seq} from {entry.agent} has no data.text")
            return None
        lowered = text.lower()
        matched = [w for w in urgent if isinstance(w, str) and w.lower() in lowered]
        priority = "urgent" if matched else "normal"
        log.log(log.Level.INFO, f"question #{entry.seq} from {entry.agent} is {priority}")
        triage = {"question": entry.seq, "asker": entry.agent, "priority": priority, "matched": matched}
        stream_write.append(stream_id, label, json.dumps(triage))
        return None
