"""Pure domain logic: plain data in, results with reasons out. No I/O, no clock."""
