"""Azurite's single and empty removals keep LokiJS's binary indices exact without rebuilding them
(local/run/azurite_lokijs.cjs)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from local.run.services import AZURITE_PRELOAD, REPO_ROOT, Azurite, _node

# A seeded random run of the operations Azurite does on a collection indexed like its queue messages (inserts,
# updates of indexed fields, removals of one document through `remove([doc])` and `findAndRemove`, removals
# of a few at once, removals that find nothing as Azurite's sweep of expired messages does, range queries),
# on two collections: one with the preload's removal, one with LokiJS's own.
# After every operation both indices are checked by LokiJS itself and against a scan of the data, and the two
# collections must hold the same documents and answer the same queries.
SCRIPT = r"""
const { original } = require(process.argv[1]);  // the preload: LokiJS's own removals, and the change made
const Loki = require("lokijs");
const proto = Loki.Collection.prototype;
const patched = { removeBatch: proto.removeBatch, removeBatchByPositions: proto.removeBatchByPositions };
let seed = Number(process.argv[2]);
const rand = (n) => {  // mulberry32
  seed = (seed + 0x6D2B79F5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) % n;
};
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


def _run(seed: int, steps: int) -> dict:
    done = subprocess.run([_node(), "-e", SCRIPT, str(AZURITE_PRELOAD), str(seed), str(steps)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("seed", [1, 7, 2026])
def test_single_and_empty_removals_keep_the_indices_exact_and_do_not_rebuild_them(seed):
    found = _run(seed, 1500)
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


def test_azurite_starts_with_the_preload_and_without_telemetry(azurite: Azurite):
    argv = Path(f"/proc/{azurite.process.pid}/cmdline").read_bytes().split(b"\0")
    assert str(AZURITE_PRELOAD).encode() in argv and b"--disableTelemetry" in argv
