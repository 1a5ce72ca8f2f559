"""``dialer ARGS`` on a clock ``OFFSET`` seconds ahead of the wall clock, a test aid:

    python tests/shifted_cli.py OFFSET run --sip-port 5070 ...

The command gets Twisted's reactor with its clock shifted (``dialer.clock.ShiftedReactor``)
through the one door the CLI has for it, ``main(args, obj={"reactor": r})``: a
Python caller, never an option or an environment variable, so an installed ``dialer
run`` always runs on the wall clock. The SIP tests that run the dialer as a process
use it when no test area code is inside calling hours at the wall clock's instant
(test_engine_sip.when_to_test)."""

import sys

from twisted.internet import reactor

from cli import main
from dialer.clock import ShiftedReactor

if __name__ == "__main__":
    main(sys.argv[2:], prog_name="dialer", obj={"reactor": ShiftedReactor(reactor, float(sys.argv[1]))})
