'use strict';
// The seed's shared/models/support-message.js and communication.js, with the fields the seed names.

const mongoose = require('mongoose');

const supportMessageSchema = new mongoose.Schema({
  sender_type: { type: String, index: true },
  sender_id: mongoose.Schema.Types.ObjectId,
  source: { type: String, enum: ['sms', 'email', 'chat'] },
  content: String,
  to: String,
  delivered: Boolean,
  status_queue_in_progress: Boolean,
  metadata: mongoose.Schema.Types.Mixed,
  created: { type: Date, default: Date.now },
});
supportMessageSchema.index({ sender_type: 1, source: 1, delivered: 1 });

const communicationSchema = new mongoose.Schema({
  conv_message_id: { type: mongoose.Schema.Types.ObjectId, index: true },
  account_id: mongoose.Schema.Types.ObjectId,
  success: Boolean,
  provider: String,
  response: mongoose.Schema.Types.Mixed,
}, { timestamps: true });

/** The two models on `connection`, named as the seed names their collections. */
function models(connection) {
  return {
    SupportMessage: connection.model('SupportMessage', supportMessageSchema, 'support_messages'),
    Communication: connection.model('Communication', communicationSchema, 'communications'),
  };
}

module.exports = { models };
