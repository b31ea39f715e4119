"""msgstatus: delivery status of support SMS and email messages, by events instead of polling."""
