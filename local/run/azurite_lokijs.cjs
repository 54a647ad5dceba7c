// Loaded into Azurite's Node process before Azurite itself (`node --require`, local/run/services.py).
//
// Azurite keeps queue messages, blob/queue extents and table entities in LokiJS collections with binary
// indices. LokiJS 1.5.12 rebuilds every binary index of a collection from scratch (a sort of the whole
// collection, per index) whenever documents are removed through its batch path, even a batch of one, and
// Azurite removes through that path: each queue message delete, each expired message and each extent its
// garbage collector frees. With a queue of 2,000 messages that is four sorts of 2,000 documents per delete,
// and the extent collector freeing 2,000 extents in one go blocks Azurite's only thread for about 3 s, so
// every table and queue request waits (README, "Known differences between the local platform and Azure",
// Storage, gives the figures).
// Azure's queue service costs nothing on our machine and does not slow down with the queue's length, so
// this is a difference of the local stand-in that distorts what the tests and benchmarks measure.
//
// Azurite also removes an empty batch before every dequeue, delete and visibility update of a message: it
// clears the queue's expired messages with `coll.remove(found)`, and found is nearly always empty. LokiJS
// still rebuilds every index for an empty batch, so each message operation cost four sorts of the queue.
//
// The change: a removal of nothing does nothing, and a removal of exactly one document goes through LokiJS's
// own single-document `remove`, which maintains each binary index in place (one binary search and one pass
// over the index) instead of rebuilding it. Everything else (batches of two or more, inserts, updates,
// queries) is LokiJS unchanged.
// tests/test_azurite_lokijs.py checks that the indices stay exact, and the answers the same as LokiJS's own,
// under random inserts, updates and removals, and that a single removal no longer rebuilds them.

"use strict";

const path = require("path");

const azurite = path.dirname(require.resolve("azurite/package.json", { paths: [__dirname] }));
const Loki = require(require.resolve("lokijs", { paths: [azurite] }));
const Collection = Loki.Collection;
const original = {
  removeBatch: Collection.prototype.removeBatch,
  removeBatchByPositions: Collection.prototype.removeBatchByPositions,
};

Collection.prototype.removeBatch = function removeBatch(batch) {
  if (batch.length === 0) {
    return;  // LokiJS would first map every document's id to its position, then remove nothing (below)
  }
  original.removeBatch.call(this, batch);
};

Collection.prototype.removeBatchByPositions = function removeBatchByPositions(positions) {
  if (positions.length === 0) {
    return;  // LokiJS would open and commit a transaction around nothing, then rebuild every index
  }
  if (positions.length === 1 && this.data[positions[0]] !== undefined) {
    this.remove(this.data[positions[0]]);
    return;
  }
  original.removeBatchByPositions.call(this, positions);
};

module.exports = { original };
