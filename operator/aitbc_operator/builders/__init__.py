"""Pure functions: validated model -> manifest dicts. No I/O, no clock, no randomness."""
