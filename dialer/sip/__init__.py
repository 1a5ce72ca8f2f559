"""The SIP edge of the dialer.

pjsua2 lives only in worker processes (``python -m dialer.sip.worker``): its event
loop holds the GIL while it waits, its callbacks must run on one thread, and a few of
its limits abort the whole process. The Twisted parent talks to the workers in JSON
lines (``dialer.sip.protocol`` documents every command and event) through
``dialer.sip.pool.WorkerPool``, which treats a worker's death as a normal event.
"""
