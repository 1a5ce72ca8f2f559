"""Pacing maths: the policies (pure: observations and ``now`` in, dials out), the
simulator that drives the live dialer loop on a virtual clock, and the MDP bound."""
