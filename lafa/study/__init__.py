"""Studies: sets of `lafa fit` runs that differ in one factor, run/resumed/planned, and their report."""
