"""The changes local/run/azurite_lokijs.cjs makes to Azurite's storage keep its answers exact: LokiJS's binary
indices stay right without being rebuilt, table queries pinned to a partition answer as before, and expired
messages still disappear."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient

from local.run.services import AZURITE_PRELOAD, REPO_ROOT, Azurite, _node

# rand(n): 0..n-1, the same sequence for the same seed (the script's second argument).
SEEDED_RANDOM = r"""
let seed = Number(process.argv[2]);
const rand = (n) => {  // mulberry32
  seed = (seed + 0x6D2B79F5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) % n;
};
"""

# A seeded random run of the operations Azurite does on a collection indexed like its queue messages (inserts,
# updates of indexed fields, removals of one document through `remove([doc])` and `findAndRemove`, removals
# of a few at once, removals that find nothing as Azurite's sweep of expired messages does, range queries),
# on two collections: one with the preload's removal, one with LokiJS's own.
# After every operation both indices are checked by LokiJS itself and against a scan of the data, and the two
# collections must hold the same documents and answer the same queries.
SCRIPT = SEEDED_RANDOM + r"""
const { original } = require(process.argv[1]);  // the preload: LokiJS's own removals, and the change made
const Loki = require("lokijs");
const proto = Loki.Collection.prototype;
const patched = { removeBatch: proto.removeBatch, removeBatchByPositions: proto.removeBatchByPositions };
const db = new Loki("t", { persistenceMethod: "memory" });
const make = (name, removals) => Object.assign(
  db.addCollection(name, { indices: ["queueName", "messageId", "visibleTime"] }), removals);
const colls = [make("patched", patched), make("original", original)];
const rebuilds = new Map(colls.map((c) => [c, 0]));
const ensureAll = Loki.Collection.prototype.ensureAllIndexes;
for (const c of colls) {
  c.ensureAllIndexes = function (force) { rebuilds.set(c, rebuilds.get(c) + 1); return ensureAll.call(this, force); };
}
const strip = (d) => ({ queueName: d.queueName, messageId: d.messageId, visibleTime: d.visibleTime });
const key = (docs) => JSON.stringify(docs.map(strip).sort((x, y) => x.messageId < y.messageId ? -1 : 1));
const problems = [];
const onSingles = new Map(colls.map((c) => [c, 0])), onEmpties = new Map(colls.map((c) => [c, 0]));
let next = 0, singles = 0, empties = 0;
for (let step = 0; step < Number(process.argv[3]); step++) {
  const ids = colls[1].find().map((d) => d.messageId);
  const op = ids.length < 4 ? 0 : rand(11);
  const pick = () => ids[rand(ids.length)];
  const id = pick(), time = rand(50), some = [...new Set([id, pick(), pick()])];
  if (op === 7 || op === 8) singles += 1;
  if (op === 10) empties += 1;
  for (const coll of colls) {
    const before = rebuilds.get(coll);
    if (op < 6) {
      coll.insert({ queueName: "q" + (next % 3), messageId: "m" + next, visibleTime: time });
    } else if (op === 6) {
      const doc = coll.findOne({ messageId: id });
      doc.visibleTime = time;
      coll.update(doc);
    } else if (op === 7) {
      coll.remove(coll.find({ messageId: id }));  // as Azurite deletes a message: a found array of one
    } else if (op === 8) {
      coll.findAndRemove({ messageId: id });  // as Azurite deletes an extent
    } else if (op === 9) {
      coll.remove(coll.find({ messageId: { $in: some } }));
    } else if (step % 2) {
      coll.remove(coll.find({ visibleTime: { $lt: 0 } }));  // as Azurite clears expired messages: none found
    } else {
      coll.findAndRemove({ messageId: "none" });
    }
    if (op === 7 || op === 8) onSingles.set(coll, onSingles.get(coll) + rebuilds.get(coll) - before);
    if (op === 10) onEmpties.set(coll, onEmpties.get(coll) + rebuilds.get(coll) - before);
  }
  if (op < 6) next += 1;
  const answers = colls.map((c) => key(c.find({ visibleTime: { $lte: time }, queueName: "q1" })));
  const scans = colls.map((c) => key(c.data.filter((d) => d.visibleTime <= time && d.queueName === "q1")));
  colls.forEach((c, i) => {
    const broken = c.checkAllIndexes();
    if (broken.length) problems.push(`${c.name} step ${step}: indices ${broken} inconsistent`);
    if (answers[i] !== scans[i]) problems.push(`${c.name} step ${step}: indexed query differs from a scan`);
  });
  if (key(colls[0].data) !== key(colls[1].data)) problems.push(`step ${step}: the collections differ`);
  if (answers[0] !== answers[1]) problems.push(`step ${step}: the collections answer differently`);
}
console.log(JSON.stringify({ problems: problems.slice(0, 5), singles, empties, size: colls[0].count(),
  rebuilds_on_singles: colls.map((c) => onSingles.get(c)), rebuilds_on_empties: colls.map((c) => onEmpties.get(c)),
  rebuilds: colls.map((c) => rebuilds.get(c)) }));
"""


def _run(script: str, *args: object) -> Any:
    """The script's JSON answer, run by Node with the preload's path and `args` as its arguments."""
    done = subprocess.run([_node(), "-e", script, str(AZURITE_PRELOAD), *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("seed", [1, 7, 2026])
def test_single_and_empty_removals_keep_the_indices_exact_and_do_not_rebuild_them(seed):
    found = _run(SCRIPT, seed, 1500)
    assert found["problems"] == []
    # the run removed one at a time, and nothing, from a sizeable queue
    assert found["singles"] > 200 and found["empties"] > 100 and found["size"] > 50
    patched, original = found["rebuilds_on_singles"]
    assert original == found["singles"]  # LokiJS's own path rebuilds on every single removal...
    assert patched == 0  # ...the preload's never does
    patched, original = found["rebuilds_on_empties"]
    assert original == found["empties"]  # and on every removal of nothing...
    assert patched == 0  # ...which the preload's skips
    assert found["rebuilds"][0] > 0  # while batches of two or more still take LokiJS's path


# Azurite's own queue store, in memory: how often the sweep of expired messages really runs.
SWEEP_SCRIPT = r"""
const { original } = require(process.argv[1]);
const path = require("path");
const azurite = path.dirname(require.resolve("azurite/package.json"));
const Store = require(path.join(azurite, "dist/src/queue/persistence/LokiQueueMetadataStore.js")).default;
const sweep = original.clearExpiredMessages;
let sweeps = 0;
original.clearExpiredMessages = function (...args) { sweeps += 1; return sweep.apply(this, args); };
(async () => {
  const store = new Store("sweep", true);
  await store.init();
  await store.createQueue({ accountName: "a", name: "q", metadata: {} });
  const now = Date.now(), seen = [];
  const insert = (id, ttlMs) => store.insertMessage({ accountName: "a", queueName: "q", messageId: id, popReceipt: "p",
    timeNextVisible: new Date(now), persistency: { id: "e", offset: 0, count: 1 }, insertionTime: new Date(now),
    expirationTime: new Date(Date.now() + ttlMs), dequeueCount: 0 });
  const peek = async () => (await store.peekMessages("a", "q", 32)).map((m) => m.messageId).sort().join(",");
  for (const id of ["m1", "m2", "m3"]) await insert(id, 3600e3);
  for (let i = 0; i < 5; i++) seen.push([await peek(), sweeps]);  // one sweep sets the bound, then none
  await store.deleteMessage("a", "q", "m1", "p");
  seen.push([await peek(), sweeps]);
  await insert("m4", 1000);  // brings the bound forward
  const expiry = Date.now() + 1000;
  seen.push([await peek(), sweeps]);
  while (Date.now() <= expiry) await new Promise((resolve) => setTimeout(resolve, 50));
  for (let i = 0; i < 3; i++) seen.push([await peek(), sweeps]);  // m4 swept once, then the hour-long bound again
  console.log(JSON.stringify(seen));
})();
"""


def test_the_sweep_of_expired_messages_runs_only_once_one_can_have_expired():
    assert _run(SWEEP_SCRIPT) == [
        ["m1,m2,m3", 1], ["m1,m2,m3", 1], ["m1,m2,m3", 1], ["m1,m2,m3", 1], ["m1,m2,m3", 1],
        ["m2,m3", 1], ["m2,m3,m4", 1], ["m2,m3", 2], ["m2,m3", 2], ["m2,m3", 2]]


def test_expired_messages_disappear_although_the_sweep_is_skipped_until_one_can_have_expired(azurite: Azurite):
    """The sweep is skipped while the earliest expiry of the queue's messages lies ahead; a message inserted
    later with a nearer expiry must bring that time forward, or it would outlive its time to live."""
    queue = QueueClient.from_connection_string(azurite.connection_string, "sweepbound")
    queue.create_queue()
    queue.send_message("long", time_to_live=3600)
    assert [m.content for m in queue.peek_messages(max_messages=32)] == ["long"]  # the sweep sets its bound
    queue.send_message("short", time_to_live=1)
    expires = next(m.expires_on for m in queue.peek_messages(max_messages=32) if m.content == "short")
    deadline = time.monotonic() + 15
    while "short" in (seen := [m.content for m in queue.peek_messages(max_messages=32)]):
        assert time.monotonic() < deadline, "the message outlived its time to live"
        time.sleep(0.2)
    assert seen == ["long"] and datetime.now(UTC) >= expires
    for receive in (queue.peek_messages, queue.receive_messages):  # and nothing else was swept
        assert [m.content for m in receive(max_messages=32)] == ["long"]


def test_azurite_starts_with_the_preload_and_without_telemetry(azurite: Azurite):
    argv = Path(f"/proc/{azurite.process.pid}/cmdline").read_bytes().split(b"\0")
    assert str(AZURITE_PRELOAD).encode() in argv and b"--disableTelemetry" in argv


# Table queries pinned to one partition are narrowed through the PartitionKey index before Azurite's predicate
# runs. A collection indexed as Azurite indexes a table, holding keys LokiJS's index treats as equal although
# they differ as strings ("1", "01", "1.0", " 1": its comparisons are numeric for numeric-looking strings) and
# keys that differ only in case or trailing space. Between queries, random inserts, merges and deletes keep
# the index moving. Every query's answer must equal a scan with Azurite's own predicate and where(), and the
# count of entities the predicate was asked about shows whether the query was narrowed.
TABLE_SCRIPT = SEEDED_RANDOM + r"""
const { original } = require(process.argv[1]);
const path = require("path");
const Loki = require("lokijs");
const azurite = path.dirname(require.resolve("azurite/package.json"));
const generator = require(path.join(azurite, "dist/src/table/persistence/LokiTableStoreQueryGenerator.js")).default;
const keys = ["1", "01", "1.0", " 1", "1e0", "Infinity", "0", "", " ", "a", "A", "a ", "b", "tenant-7", "é", "10",
  "9"];
const coll = new Loki("t", { persistenceMethod: "memory" })
  .addCollection("table", { indices: ["PartitionKey", "RowKey"] });
const entity = (pk, rk, n) => ({ PartitionKey: pk, RowKey: rk, properties: { PartitionKey: pk, RowKey: rk, n } });
let next = 0;
for (; next < 600; next++) coll.insert(entity(keys[rand(keys.length)], "r" + next, rand(10)));
const quote = (k) => `'${k.replace(/'/g, "''")}'`;
const queries = [];
for (const k of keys) {
  queries.push([`PartitionKey eq ${quote(k)}`, k]);
  queries.push([`${quote(k)} eq PartitionKey and n ge 5`, k]);
  queries.push([`(RowKey ge 'r3') and ((n lt 7) and (PartitionKey eq ${quote(k)}))`, k]);
  queries.push([`PartitionKey eq ${quote(k)} or n eq 3`, null]);
  queries.push([`not (PartitionKey eq ${quote(k)})`, null]);
}
queries.push(["PartitionKey eq 1", null], ["n eq 4", null], ["PartitionKey ge 'a' and PartitionKey le 'a'", null]);
const problems = [];
let narrowed = 0;
const sortKey = (e) => e.PartitionKey + "\u0000" + e.RowKey;
const ids = (docs) => JSON.stringify(docs.map(sortKey).sort());
for (let round = 0; round < 30; round++) {
  for (let i = 0; i < 40; i++) {  // move the index: inserts, merges that change nothing indexed, deletes
    const op = rand(3), docs = coll.find();
    if (op === 0 || docs.length < 50) coll.insert(entity(keys[rand(keys.length)], "r" + next++, rand(10)));
    else if (op === 1) { const d = docs[rand(docs.length)]; d.properties.n = rand(10); coll.update(d); }
    else coll.remove(docs[rand(docs.length)]);
  }
  for (const [query, pinned] of queries) {
    let asked = 0;
    const predicate = generator.generateQueryEntityWhereFunction(query);
    const counted = Object.assign((e) => { asked += 1; return predicate(e); }, predicate);
    const got = ids(coll.chain().where(counted).data());
    const reference = original.generateQueryEntityWhereFunction.call(generator, query);
    const want = ids(original.where.call(coll.chain(), reference).data());
    if (got !== want) problems.push(`round ${round}: ${query} answers differently`);
    if (ids(coll.data.filter((e) => reference(e))) !== want) problems.push(`round ${round}: ${query}: scan differs`);
    if ((predicate.partitionKey === undefined ? null : predicate.partitionKey) !== pinned) {
      problems.push(`${query}: pinned to ${JSON.stringify(predicate.partitionKey)}`);
    }
    // at most the entities whose key the index cannot tell from the pinned one; without a pin, all of them
    const limit = pinned === null ? coll.count()
      : coll.data.filter((e) => e.PartitionKey === pinned || Number(e.PartitionKey) === Number(pinned)).length;
    if (pinned !== null) narrowed += 1;
    if (pinned !== null ? asked > limit : asked !== limit) {
      problems.push(`round ${round}: ${query} asked about ${asked} of ${coll.count()} entities`);
    }
  }
}
console.log(JSON.stringify({ problems: problems.slice(0, 5), narrowed, size: coll.count() }));
"""


@pytest.mark.parametrize("seed", [3, 2026])
def test_a_query_pinned_to_one_partition_reads_only_that_partition_and_answers_as_azurite_does(seed):
    found = _run(TABLE_SCRIPT, seed)
    assert found["problems"] == []
    assert found["narrowed"] == 30 * 3 * 17 and found["size"] > 300


def test_azurite_answers_partition_queries_over_keys_its_index_treats_as_equal(azurite: Azurite):
    """The same through Azurite itself: the preload is the code Azurite runs, and its answers are exact."""
    keys = ["1", "01", "1.0", " 1", "", "a", "A", "a "]
    table = TableServiceClient.from_connection_string(azurite.connection_string).create_table("pinnedpartitions")
    for i, key in enumerate(keys * 3):
        table.upsert_entity({"PartitionKey": key, "RowKey": f"r{i:02}", "n": i % 4})
    for key in keys:
        rows = {e["RowKey"] for e in table.query_entities("PartitionKey eq @pk", parameters={"pk": key})}
        assert rows == {f"r{i:02}" for i, k in enumerate(keys * 3) if k == key}, key
        rows = {e["RowKey"] for e in table.query_entities("n ge 2 and PartitionKey eq @pk", parameters={"pk": key})}
        assert rows == {f"r{i:02}" for i, k in enumerate(keys * 3) if k == key and i % 4 >= 2}, key
