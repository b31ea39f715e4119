'use strict';
// What the seed decides from each communication log: it loads the log with the seed's Communication model
// and tests `communication._doc.success`, as its job does. Prints [{id, delivered}] for every log in the
// collection, so that msgstatus's reading of `success` can be compared with Mongoose's own cast.
// Usage: node cast.js <server port> <database>

const mongoose = require('mongoose');
const { models } = require('./models');

const [port, database] = process.argv.slice(2);

async function main() {
  const uri = `mongodb://127.0.0.1:${port}/${database}?directConnection=true`;
  const connection = await mongoose.createConnection(uri).asPromise();
  try {
    const { Communication } = models(connection);
    const logs = await Communication.find({});
    // The seed: `if (communication._doc.success) { delivered: true } else { delivered: false }`
    console.log(JSON.stringify(logs.map((log) => ({ id: String(log._id), delivered: Boolean(log._doc.success) }))));
  } finally {
    await connection.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
