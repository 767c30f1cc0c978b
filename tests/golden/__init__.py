"""Golden files: input custom resources and the children the builders make of them (`python -m tests.golden.regen`)."""
