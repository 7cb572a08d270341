"""Delivery: one worker per destination reads the log through its own cursor, filters, batches,
sends, retries and dead-letters; replays read a range again through a cursor of their own."""
