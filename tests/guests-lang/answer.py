"""The answer agent in Python, for the `agent` benchmark: answers each
entry with an `answer` entry, `{"answer": TEXT in capitals, "question":
SEQ}`, on the stream its config's `answer_to` names (else the same one),
and reads its own append back, as the Rust `answer-agent` guest does."""

import json

import wit_world
from wit_world.imports import stream_read, stream_write


class WitWorld(wit_world.WitWorld):
    def on_entry(self, config: str, stream_id: str, entry) -> None:
        cfg = json.loads(config or "{}")
        data = json.loads(entry.data)
        text = data.get("text", "") if isinstance(data, dict) else ""
        to = cfg.get("answer_to", stream_id)
        answer = json.dumps({"answer": text.upper(), "question": entry.seq}, separators=(",", ":"))
        seq = stream_write.append(to, "answer", answer)
        latest = stream_read.latest(to, "answer")
        if latest is None or latest.seq != seq:
            raise ValueError(f"appended #{seq}, but the latest answer reads {latest and latest.seq}")
        return None
