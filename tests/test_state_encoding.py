"""State documents are written by `encode_state` (C-encoded below the top two levels, P5 of
issue 11): the same JSON data the indented form held, deterministic, read back by the plain
`json.loads` older versions read state with."""
from __future__ import annotations

import json
import random

from provision.headroom.policy import (READY, HostLoad, Memory, Observation, Sample, Settings, decide, remember)
from provision.spec.model import Reserve
from provision.state import LocalStateStore, encode_state


def big_state(n: int, seed: int = 1) -> dict:
    rnd = random.Random(seed)
    hosts = tuple(HostLoad(f"w-{i}", "workers", "worker", READY, containers=rnd.randint(0, 8), cpu=rnd.random(),
                           memory=rnd.random()) for i in range(n))
    s = Settings(pool="workers", min_count=1, max_count=2 * n, policies=("containers", "utilization"),
                 reserve=Reserve(percent=10.0), scale_down_cooldown=0.0)
    memory = Memory(history=(Sample(999_940.0, 4.0 * n, 0.5 * n, 0.5 * n),),
                    low_since={f"w-{i}": 990_000.0 for i in range(0, n, 3)})
    decision = decide(s, Observation(at=1_000_000.0, hosts=hosts), memory)
    return {"version": 3, "cluster": "big", "serial": 7, "pools": {"workers": {"count": n, "flavor": "m5.large"}},
            "hosts": {f"w-{i}": {"address": f"10.0.{i // 250}.{i % 250}", "pool": "workers", "etcd": False,
                                 "labels": {"zone": "a", "é": "ü"}} for i in range(n)},
            "phases": {}, "headroom": remember({}, decision), "empty": {}, "list": [1, 2.5, None, True]}


def test_encoded_state_is_the_same_json_data_as_the_indented_form():
    doc = big_state(3000)
    text = encode_state(doc)
    assert json.loads(text) == json.loads(json.dumps(doc, indent=2, sort_keys=True))
    assert text.endswith("}\n") and text.isascii()


def test_encoding_is_deterministic_whatever_the_insertion_order():
    doc = big_state(500)
    shuffled = dict(reversed(list(doc.items())))
    shuffled["hosts"] = dict(reversed(list(doc["hosts"].items())))
    assert encode_state(shuffled) == encode_state(doc)


def test_one_top_level_section_per_line():
    doc = big_state(50)
    lines = encode_state(doc).splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and len(lines) == len(doc) + 2
    assert [line.split('"')[1] for line in lines[1:-1]] == sorted(doc)
    assert all(line.startswith('  "') for line in lines[1:-1])


def test_store_writes_it_and_old_readers_read_the_same_document(tmp_path):
    store = LocalStateStore("big", tmp_path / "state")
    doc = big_state(2000)
    doc["serial"] = 0
    store.write(doc)
    raw = store.state_file.read_bytes()
    assert raw == encode_state({**json.loads(raw)}).encode()  # what is on disk is the encoder's output
    read = json.loads(raw)  # how older versions read the state file
    assert read["hosts"] == doc["hosts"] and read["headroom"] == json.loads(json.dumps(doc["headroom"]))
    assert store.read() == read
