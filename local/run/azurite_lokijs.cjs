// Loaded into Azurite's Node process before Azurite itself (`node --require`, local/run/services.py).
//
// Azurite keeps queue messages, blob/queue extents and table entities in LokiJS collections, and some of its
// operations cost time that grows with everything stored. Azure's storage neither slows down with the amount
// stored nor runs on our cores; in the benchmarks Azurite shares two cores with the app, so these costs of
// the local stand-in distort what is measured (README, "Known differences between the local platform and
// Azure", Storage, gives the figures). This module removes four of them and keeps every answer the same.
//
// 1. Removing one document. LokiJS 1.5.12 rebuilds every binary index of a collection from scratch (a sort of
//    the whole collection, per index) whenever documents are removed through its batch path, even a batch of
//    one, and Azurite removes through that path: each message delete, each expired message and each extent
//    its garbage collector frees. With 2,000 messages queued that was four sorts of 2,000 documents per
//    delete, and the extent collector freeing 2,000 extents at once blocked Azurite's only thread for about
//    3 s. Now a removal of exactly one document goes through LokiJS's own single-document `remove`, which
//    maintains each index in place (one binary search and one pass over the index).
// 2. Removing nothing. Before every peek, dequeue, delete and visibility update of a message, Azurite sweeps
//    the queue's expired messages with `coll.remove(found)`, and found is nearly always empty; LokiJS still
//    rebuilt every index. Now a removal of nothing does nothing.
// 3. The sweep itself is a pass over all the queue's messages. A message's expiry is set when it is inserted
//    and never changes, so the module keeps, per queue, a time before which none of its messages expires
//    (the earliest expiry the last sweep left, lowered by every insert since), and skips the sweep until
//    then: it would find nothing.
// 4. Table queries. Azurite evaluates an entity query's filter as a JavaScript predicate over every entity of
//    the table, so each tenant's lookup of its own partition of 4,000 stored alerts evaluated the filter
//    4,000 times, where Azure's Table service reads only that partition (a range query or partition scan,
//    learn.microsoft.com "Design for querying"). Now, when the filter's top-level `and` chain holds
//    `PartitionKey eq <string>`, the entities are first narrowed to that key through the PartitionKey index
//    Azurite keeps, and the predicate then decides each one unchanged: narrowing can only skip entities it
//    would reject. The sort, paging and limit that follow are Azurite's own.
//
// Everything else (removals of two or more, inserts, updates, other queries) is LokiJS and Azurite unchanged.
// tests/test_azurite_lokijs.py runs each change against the code it replaces: the indices stay exact and the
// answers the same under random operations, the rebuilds and sweeps are gone, and through Azurite itself
// partition queries answer exactly and expired messages still disappear.

"use strict";

const path = require("path");

const azurite = path.dirname(require.resolve("azurite/package.json", { paths: [__dirname] }));
const Loki = require(require.resolve("lokijs", { paths: [azurite] }));
const Collection = Loki.Collection;
const original = {  // what each change replaces (the tests run both)
  removeBatch: Collection.prototype.removeBatch,
  removeBatchByPositions: Collection.prototype.removeBatchByPositions,
};

// 1 and 2: removals of one document and of none.
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

// 3: the sweep of expired messages.
const QueueStore = require(path.join(azurite, "dist/src/queue/persistence/LokiQueueMetadataStore.js")).default;
original.clearExpiredMessages = QueueStore.prototype.clearExpiredMessages;
original.insertMessage = QueueStore.prototype.insertMessage;
const nothingExpiresBefore = new WeakMap();  // store -> Map(account + "\n" + queue -> epoch ms)
const bounds = (store) => {
  if (!nothingExpiresBefore.has(store)) nothingExpiresBefore.set(store, new Map());
  return nothingExpiresBefore.get(store);
};

QueueStore.prototype.insertMessage = function insertMessage(message, context) {
  const done = original.insertMessage.call(this, message, context);
  const queues = bounds(this), queue = `${message.accountName}\n${message.queueName}`, known = queues.get(queue);
  if (known !== undefined) {
    queues.set(queue, Math.min(known, new Date(message.expirationTime).getTime()));
  }
  return done;
};

// Azurite calls it without awaiting it, so, like the original, all of it runs before its caller goes on.
QueueStore.prototype.clearExpiredMessages = async function clearExpiredMessages(account, queue, context) {
  const key = `${account}\n${queue}`, known = bounds(this).get(key);
  if (known !== undefined && Date.now() < known) {
    this.checkQueueExist(account, queue, context);
    return undefined;
  }
  const swept = original.clearExpiredMessages.call(this, account, queue, context);  // done when it returns
  let earliest = Infinity;
  for (const doc of this.db.getCollection(this.MESSAGES_COLLECTION).find({ accountName: account, queueName: queue })) {
    earliest = Math.min(earliest, new Date(doc.expirationTime).getTime());
  }
  bounds(this).set(key, earliest);
  return swept;
};

// 4: table queries pinned to one partition.
const table = (file) => require(path.join(azurite, "dist/src/table/persistence", file)).default;
const generator = table("LokiTableStoreQueryGenerator.js");
const parseQuery = table("QueryInterpreter/QueryParser.js");
const [AndNode, EqualsNode, IdentifierNode, ConstantNode] = ["AndNode", "EqualsNode", "IdentifierNode", "ConstantNode"]
  .map((node) => table(`QueryInterpreter/QueryNodes/${node}.js`));
original.generateQueryEntityWhereFunction = generator.generateQueryEntityWhereFunction;
original.where = Loki.Resultset.prototype.where;

// The string every entity the query can return has as its PartitionKey, if the query's tree says so: an
// `eq` between the identifier PartitionKey and a string constant (compared with ===, EqualsNode.js), reached
// from the root through `and` nodes only.
function pinnedPartitionKey(node) {
  if (node instanceof AndNode) {
    const left = pinnedPartitionKey(node.left);
    return left !== undefined ? left : pinnedPartitionKey(node.right);
  }
  if (node instanceof EqualsNode) {
    const [id, constant] = node.left instanceof IdentifierNode ? [node.left, node.right] : [node.right, node.left];
    if (id instanceof IdentifierNode && id.identifier === "PartitionKey"
        && constant instanceof ConstantNode && typeof constant.value === "string") {
      return constant.value;
    }
  }
  return undefined;
}

generator.generateQueryEntityWhereFunction = function generateQueryEntityWhereFunction(query) {
  const predicate = original.generateQueryEntityWhereFunction.call(this, query);  // throws on a bad query
  if (query) {
    const partitionKey = pinnedPartitionKey(parseQuery(query));
    if (partitionKey !== undefined) {
      predicate.partitionKey = partitionKey;
    }
  }
  return predicate;
};

Loki.Resultset.prototype.where = function where(fun) {
  if (typeof fun === "function" && fun.partitionKey !== undefined && !this.filterInitialized
      && this.collection.binaryIndices.PartitionKey) {
    this.find({ PartitionKey: fun.partitionKey });  // the index's range for the key, a superset of its matches
  }
  return original.where.call(this, fun);
};

module.exports = { original };
