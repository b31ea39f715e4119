'use strict';
// A TCP relay between a driver and a server that records every command and its reply,
// decoded with their exact BSON types (int32, int64, double...), to check them against MongoDB's.

const net = require('node:net');
const { BSON } = require('mongodb');

const OP_REPLY = 1;
const OP_QUERY = 2004;
const OP_MSG = 2013;
const TYPED = { promoteValues: false, promoteLongs: false, promoteBuffers: false, bsonRegExp: true };

function cstring(buf, at) {
  const end = buf.indexOf(0, at);
  return [buf.toString('utf8', at, end), end + 1];
}

function doc(buf, at) {
  const size = buf.readInt32LE(at);
  return [BSON.deserialize(buf.subarray(at, at + size), TYPED), at + size];
}

/** The command document of one wire message, with OP_MSG document sequences folded in. */
function decode(frame) {
  const opCode = frame.readInt32LE(12);
  const requestId = frame.readInt32LE(4);
  const responseTo = frame.readInt32LE(8);
  if (opCode === OP_MSG) {
    const flags = frame.readUInt32LE(16);
    const end = frame.length - (flags & 1 ? 4 : 0);
    let at = 20;
    let body = null;
    while (at < end) {
      const kind = frame[at++];
      if (kind === 0) {
        [body, at] = doc(frame, at);
      } else {
        const size = frame.readInt32LE(at);
        const stop = at + size;
        let name;
        [name, at] = cstring(frame, at + 4);
        const docs = [];
        while (at < stop) {
          let d;
          [d, at] = doc(frame, at);
          docs.push(d);
        }
        body = body || {};
        body[name] = docs;
      }
    }
    return { opCode, requestId, responseTo, body, moreToCome: Boolean(flags & 2) };
  }
  if (opCode === OP_QUERY) {
    let [collection, at] = cstring(frame, 20);
    const [body] = doc(frame, at + 8);
    return { opCode, requestId, responseTo, body, db: collection.replace(/\.\$cmd$/, '') };
  }
  if (opCode === OP_REPLY) {
    const [body] = doc(frame, 36);
    return { opCode, requestId, responseTo, body };
  }
  return { opCode, requestId, responseTo, body: null };
}

/** Split a byte stream into wire messages. */
function framer(onFrame) {
  let pending = Buffer.alloc(0);
  return (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 4 && pending.length >= pending.readInt32LE(0)) {
      const size = pending.readInt32LE(0);
      onFrame(pending.subarray(0, size));
      pending = pending.subarray(size);
    }
  };
}

/** Start a recording relay to `targetPort`; resolves to { port, exchanges, phase(name), close() }. */
function record(targetPort) {
  const exchanges = [];
  const state = { phase: '' };
  const waiting = new Map();
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    const requests = framer((frame) => {
      const message = decode(frame);
      const name = message.body ? Object.keys(message.body)[0] : `opCode ${message.opCode}`;
      // moreToCome: the client asks for no reply (an unacknowledged write, for one)
      const exchange = { phase: state.phase, command: name, request: message.body, reply: null,
        expectsReply: !message.moreToCome };
      exchanges.push(exchange);
      waiting.set(message.requestId, exchange);
    });
    const replies = framer((frame) => {
      const message = decode(frame);
      const exchange = waiting.get(message.responseTo);
      if (exchange) {
        exchange.reply = message.body;
        waiting.delete(message.responseTo);
      }
    });
    client.on('data', (chunk) => { requests(chunk); upstream.write(chunk); });
    upstream.on('data', (chunk) => { replies(chunk); if (client.writable) client.write(chunk); });
    // A driver may close its socket without waiting for a reply it asked for (endSessions at close):
    // only half-close upstream, so that reply is still recorded and checked.
    client.on('close', () => upstream.end());
    client.on('error', () => upstream.end());
    upstream.on('close', () => client.destroy());
    upstream.on('error', () => client.destroy());
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({
      port: server.address().port,
      exchanges,
      /** Label the exchanges from now on (for instance 'start-up'). */
      phase: (name) => { state.phase = name; },
      /** Close, once every request that asks for a reply has one (or a second has passed). */
      close: async () => {
        const deadline = Date.now() + 1000;
        while (exchanges.some((e) => e.expectsReply && e.reply === null) && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        for (const s of sockets) s.destroy();
        await new Promise((done) => server.close(done));
      },
    }));
  });
}

/** The BSON type name of a value decoded with `TYPED`. */
function typeOf(value) {
  if (value === null) return 'null';
  if (value === undefined) return 'missing';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'string') return 'string';
  if (typeof value === 'boolean') return 'bool';
  if (value instanceof Date) return 'date';
  if (value._bsontype) {
    return { Int32: 'int', Long: 'long', Double: 'double', ObjectId: 'objectId', Timestamp: 'timestamp',
      Binary: 'binData', Decimal128: 'decimal' }[value._bsontype] || value._bsontype;
  }
  if (typeof value === 'number') return Number.isInteger(value) ? 'int' : 'double';
  return 'object';
}

/** The value at a dotted path of a decoded document. */
function at(document, path) {
  return path.split('.').reduce((value, key) => (value == null ? undefined : value[key]), document);
}

module.exports = { record, typeOf, at };
