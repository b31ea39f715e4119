'use strict';
// What MongoDB (6.0-8.0) answers to the commands the driver sends here, field by field, by BSON type:
// each reply recorded by wire.js is checked against it.

const { typeOf, at } = require('./wire');

const CURSOR = (batch) => ({ 'cursor.id': 'long', 'cursor.ns': 'string', [`cursor.${batch}`]: 'array' });

const SUCCESS = {
  hello: {
    isWritablePrimary: 'bool', maxBsonObjectSize: 'int', maxMessageSizeBytes: 'int', maxWriteBatchSize: 'int',
    localTime: 'date', logicalSessionTimeoutMinutes: 'int', connectionId: 'int', minWireVersion: 'int',
    maxWireVersion: 'int', readOnly: 'bool',
  },
  insert: { n: 'int' },
  update: { n: 'int', nModified: 'int' },
  delete: { n: 'int' },
  find: CURSOR('firstBatch'),
  aggregate: CURSOR('firstBatch'),
  listIndexes: CURSOR('firstBatch'),
  listCollections: CURSOR('firstBatch'),
  getMore: CURSOR('nextBatch'),
  killCursors: { cursorsKilled: 'array', cursorsNotFound: 'array', cursorsAlive: 'array', cursorsUnknown: 'array' },
  createIndexes: { numIndexesBefore: 'int', numIndexesAfter: 'int' },
  create: {},
  endSessions: {},
  commitTransaction: {},
  abortTransaction: {},
};
SUCCESS.isMaster = SUCCESS.ismaster = { ...SUCCESS.hello, ismaster: 'bool' };
delete SUCCESS.isMaster.isWritablePrimary;

const ERROR = { errmsg: 'string', code: 'int', codeName: 'string' };

const CODE_NAMES = {
  26: 'NamespaceNotFound', 43: 'CursorNotFound', 48: 'NamespaceExists', 112: 'WriteConflict',
  286: 'ChangeStreamHistoryLost', 11000: 'DuplicateKey',
};

/** Each difference between a recorded exchange's reply and MongoDB's, as "command: field ...". */
function problems(exchange) {
  const { command, reply } = exchange;
  if (reply === null) return exchange.expectsReply ? [`${command}: no reply`] : [];
  const found = [];
  const expect = (path, type) => {
    const actual = typeOf(at(reply, path));
    if (actual !== type) found.push(`${command}: field ${path} is ${actual}, MongoDB sends ${type}`);
  };
  expect('ok', 'double');
  const ok = Number(reply.ok) === 1;
  const fields = ok ? SUCCESS[command] : ERROR;
  if (fields === undefined) return [...found, `${command}: not in the table of checked replies`];
  for (const [path, type] of Object.entries(fields)) expect(path, type);
  if (!ok && CODE_NAMES[Number(reply.code)] !== undefined && reply.codeName !== CODE_NAMES[Number(reply.code)]) {
    found.push(`${command}: code ${reply.code} has codeName ${reply.codeName}, MongoDB sends ${CODE_NAMES[reply.code]}`);
  }
  if (!ok && Number(reply.code) === 112 && !(reply.errorLabels || []).includes('TransientTransactionError')) {
    found.push(`${command}: WriteConflict without the TransientTransactionError label`);
  }
  if (command === 'killCursors' && ok) {
    for (const key of ['cursorsKilled', 'cursorsNotFound']) {
      for (const id of reply[key] || []) {
        if (typeOf(id) !== 'long') found.push(`${command}: an id in ${key} is ${typeOf(id)}, MongoDB sends long`);
      }
    }
  }
  if (command === 'listIndexes' && ok) {
    for (const index of reply.cursor.firstBatch) {
      for (const [path, type] of Object.entries({ v: 'int', key: 'object', name: 'string' })) {
        if (typeOf(index[path]) !== type) {
          found.push(`${command}: index ${index.name} field ${path} is ${typeOf(index[path])}, MongoDB sends ${type}`);
        }
      }
    }
  }
  return found;
}

/** One recorded exchange as the reports print it: when, which command, its outcome and its problems. */
function summary(exchange) {
  const { reply } = exchange;
  return {
    phase: exchange.phase, command: exchange.command, ok: reply ? Number(reply.ok) === 1 : null,
    replied: reply !== null, code: reply && reply.code !== undefined ? Number(reply.code) : undefined,
    problems: problems(exchange),
  };
}

module.exports = { problems, summary, CODE_NAMES };
