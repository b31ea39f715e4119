'use strict';
// Drives a MongoDB-compatible server with Mongoose 8 and the seed's models, through a relay that
// records every command: each step must work, and each reply must have MongoDB's fields and types.
// Usage: node conformance.js <server port> <database>; prints a JSON report, exits 1 on any failure.

const assert = require('node:assert/strict');
const mongoose = require('mongoose');
const { Long } = require('mongodb');
const { record } = require('./wire');
const { summary } = require('./shapes');
const { models } = require('./models');

const [port, database] = [Number(process.argv[2]), process.argv[3] || 'conformance'];

const steps = {
  async 'index build at start-up'({ SupportMessage, Communication }) {
    await Promise.all([SupportMessage.init(), Communication.init()]);
    const names = (await SupportMessage.listIndexes()).map((index) => index.name).sort();
    assert.deepEqual(names, ['_id_', 'sender_type_1', 'sender_type_1_source_1_delivered_1']);
  },
  async 'a second start-up against existing collections'({ uri }) {
    const again = await mongoose.createConnection(uri).asPromise();
    try {
      const second = models(again);
      await Promise.all([second.SupportMessage.init(), second.Communication.init()]);
      assert.deepEqual(await second.SupportMessage.diffIndexes(), { toDrop: [], toCreate: [] });
    } finally {
      await again.close();
    }
  },
  async 'index diff on a collection that does not exist'({ connection }) {
    const Missing = connection.model('Missing', new mongoose.Schema({ a: { type: String, index: true } }),
      'no_such_collection', { overwriteModels: true });
    assert.deepEqual(await Missing.diffIndexes(), { toDrop: [], toCreate: [{ a: 1 }] });
  },
  async 'create and findById'({ SupportMessage, Communication, state }) {
    const message = await SupportMessage.create({
      sender_type: 'conversation', sender_id: new mongoose.Types.ObjectId(), source: 'sms',
      content: 'Test message', to: '+1234567890',
    });
    const log = await Communication.create({
      conv_message_id: message._id, account_id: new mongoose.Types.ObjectId(), success: true,
      provider: 'twilio', response: { sid: 'SM1' },
    });
    const found = await SupportMessage.findById(message._id);
    assert.equal(found.content, 'Test message');
    assert.equal(found.delivered, undefined);
    assert.equal(String((await Communication.findOne({ conv_message_id: message._id }))._id), String(log._id));
    state.message = message;
  },
  async 'a find larger than one batch'({ SupportMessage }) {
    const docs = Array.from({ length: 250 }, (_, i) => ({
      sender_type: 'conversation', sender_id: new mongoose.Types.ObjectId(), source: i % 2 ? 'sms' : 'email',
      content: `bulk ${i}`,
    }));
    await SupportMessage.insertMany(docs);
    const found = await SupportMessage.find({ content: /^bulk / }).batchSize(100).lean();
    assert.equal(found.length, 250);
    assert.equal(new Set(found.map((d) => String(d._id))).size, 250);
  },
  async 'a cursor closed early'({ SupportMessage }) {
    const cursor = SupportMessage.find({ content: /^bulk / }).batchSize(10).cursor();
    let seen = 0;
    for await (const doc of cursor) { // eslint-disable-line no-unused-vars
      if (++seen === 15) break; // killCursors for the rest
    }
    assert.equal(seen, 15);
  },
  async 'countDocuments and the seed aggregate'({ SupportMessage }) {
    const untracked = { sender_type: 'conversation', source: { $in: ['sms', 'email'] }, delivered: { $exists: false } };
    assert.equal(await SupportMessage.countDocuments(untracked), 251);
    assert.equal(await SupportMessage.countDocuments({ status_queue_in_progress: true }), 0);
    const newest = await SupportMessage.aggregate([
      { $match: { ...untracked, status_queue_in_progress: { $ne: true } } }, { $sort: { created: -1 } },
    ]);
    assert.equal(newest.length, 251);
  },
  async 'withTransaction that commits'({ connection, SupportMessage, state }) {
    const session = await connection.startSession();
    try {
      await session.withTransaction(async () => {
        const message = await SupportMessage.findById(state.message._id).session(session);
        message.delivered = true;
        message.metadata = { communication_id: new mongoose.Types.ObjectId() };
        await message.save({ session });
      });
    } finally {
      await session.endSession();
    }
    assert.equal((await SupportMessage.findById(state.message._id)).delivered, true);
  },
  async 'withTransaction that aborts'({ connection, SupportMessage, state }) {
    const session = await connection.startSession();
    try {
      await assert.rejects(session.withTransaction(async () => {
        await SupportMessage.updateOne({ _id: state.message._id }, { delivered: false }, { session });
        assert.equal((await SupportMessage.findById(state.message._id).session(session)).delivered, false);
        throw new Error('changed my mind');
      }), /changed my mind/);
    } finally {
      await session.endSession();
    }
    assert.equal((await SupportMessage.findById(state.message._id)).delivered, true);
  },
  async 'a write conflict is retried by withTransaction'({ connection, SupportMessage, state }) {
    const session = await connection.startSession();
    let runs = 0;
    try {
      await session.withTransaction(async () => {
        runs += 1;
        await SupportMessage.updateOne({ _id: state.message._id }, { content: `in transaction ${runs}` }, { session });
        if (runs === 1) await SupportMessage.updateOne({ _id: state.message._id }, { content: 'outside' });
      });
    } finally {
      await session.endSession();
    }
    assert.equal(runs, 2);
    assert.equal((await SupportMessage.findById(state.message._id)).content, 'in transaction 2');
  },
  async 'Model.watch sees an insert'({ Communication }) {
    const stream = Communication.watch([], { fullDocument: 'updateLookup', maxAwaitTimeMS: 100 });
    try {
      // Open the stream (its aggregate) before the insert: a stream starts from the moment it opens.
      await stream.$driverChangeStreamPromise;
      assert.equal(await stream.driverChangeStream.tryNext(), null);
      const log = await Communication.create({ conv_message_id: new mongoose.Types.ObjectId(), success: false });
      const change = await stream.next();
      assert.equal(change.operationType, 'insert');
      assert.equal(String(change.documentKey._id), String(log._id));
      assert.equal(change.fullDocument.success, false);
    } finally {
      await stream.close();
    }
  },
  async 'a resume token the server never issued'({ Communication }) {
    const stream = Communication.watch([], { resumeAfter: { _data: '00'.repeat(16) } });
    try {
      await assert.rejects(stream.next(), (error) => error.code === 286 && error.codeName === 'ChangeStreamHistoryLost');
    } finally {
      await stream.close();
    }
  },
  async 'a getMore on a cursor the server does not have'({ connection }) {
    await assert.rejects(
      connection.db.command({ getMore: Long.fromNumber(424242), collection: 'support_messages' }),
      (error) => error.code === 43 && error.codeName === 'CursorNotFound',
    );
  },
};

async function main() {
  const relay = await record(port);
  const uri = `mongodb://127.0.0.1:${relay.port}/${database}?directConnection=true`;
  const report = { steps: [], exchanges: [], failures: [] };
  relay.phase('start-up');
  const connection = await mongoose.createConnection(uri, { autoIndex: true }).asPromise();
  const context = { uri, connection, state: {}, ...models(connection) };
  try {
    for (const [name, step] of Object.entries(steps)) {
      relay.phase(name);
      try {
        await step(context);
        report.steps.push({ name, ok: true });
      } catch (error) {
        report.steps.push({ name, ok: false });
        report.failures.push(`step "${name}": ${error.stack || error}`);
      }
    }
  } finally {
    relay.phase('shut-down');
    await connection.close();
    await relay.close();
  }
  for (const exchange of relay.exchanges.map(summary)) {
    report.exchanges.push(exchange);
    report.failures.push(...exchange.problems.map((problem) => `${exchange.phase}: ${problem}`));
  }
  console.log(JSON.stringify(report, null, 1));
  process.exitCode = report.failures.length ? 1 : 0;
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 2;
});
