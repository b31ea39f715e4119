'use strict';
// The seed's "Create Test Message" snippet with Mongoose and the seed's models: the message, then its
// communication log (as the Twilio callback writes it), then findById until it is decided or the
// snippet's 6 seconds pass. Prints a JSON report, with what the socket service received and every
// command Mongoose sent (through wire.js's recording relay), each reply checked against MongoDB's.
// Usage: node snippet.js <server port> <database> <socket service url>

const mongoose = require('mongoose');
const { models } = require('./models');
const { record } = require('./wire');
const { summary } = require('./shapes');

const [port, database, socketUrl] = process.argv.slice(2);
const SNIPPET_WAIT_MS = 6000;

async function main() {
  const relay = await record(Number(port));
  relay.phase('start-up');
  const uri = `mongodb://127.0.0.1:${relay.port}/${database}?directConnection=true`;
  const connection = await mongoose.createConnection(uri).asPromise();
  const report = {};
  const { SupportMessage, Communication } = models(connection);
  try {
    await Promise.all([SupportMessage.init(), Communication.init()]);
    relay.phase('snippet');
    const testConversationId = new mongoose.Types.ObjectId();
    const testAccountId = new mongoose.Types.ObjectId();
    const started = Date.now();
    // Send test SMS message
    const message = await SupportMessage.create({
      sender_type: 'conversation',
      sender_id: testConversationId,
      source: 'sms',
      content: 'Test message',
      to: '+1234567890',
      // delivered field not set - will be picked up by job
    });
    // Create communication log (simulates Twilio callback)
    const log = await Communication.create({
      conv_message_id: message._id,
      account_id: testAccountId,
      success: true,
      provider: 'twilio',
      response: { sid: 'SM0123456789', status: 'delivered' },
    });
    let updated = null;
    while (Date.now() - started < SNIPPET_WAIT_MS) {
      updated = await SupportMessage.findById(message._id);
      if (updated.delivered !== undefined) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const decidedAfterMs = updated.delivered === undefined ? null : Date.now() - started;
    let received = { emits: [], refused: [] };
    for (let i = 0; i < 50; i++) { // the emit precedes the commit that findById saw
      received = await (await fetch(`${socketUrl}/emits`)).json();
      if (received.emits.some((e) => e.data._id === String(message._id))) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    Object.assign(report, {
      message_id: String(message._id),
      communication_id: String(log._id),
      conversation_id: String(testConversationId),
      account_id: String(testAccountId),
      delivered: updated.delivered,
      stored_communication_id: updated.metadata && String(updated.metadata.communication_id),
      decided_after_ms: decidedAfterMs,
      emits: received.emits.filter((e) => e.data._id === String(message._id)),
      refused: received.refused,
    });
  } finally {
    relay.phase('shut-down');
    await connection.close();
    await relay.close();
  }
  report.exchanges = relay.exchanges.map(summary);
  console.log(JSON.stringify(report));
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 2;
});
