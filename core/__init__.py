"""The kernel every layer builds on: errors, time, the store and its migrations, the
audit chain, and who owns what (accounts and their campaigns)."""
