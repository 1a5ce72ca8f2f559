"""The worker protocol: JSON lines, commands on the worker's stdin, events on its events fd.

pjsua prints to stdout, so stdout is never part of the protocol; events go to a
separate file descriptor (``--events-fd``, 3 by default). Every line is one JSON
object. This module holds no pjsua2 code, so the parent can import it anywhere.

Commands (``{"cmd": NAME, ...}``), keys are the parent's own strings:

  dial        {key, uri, caller_id?, headers?: {name: value}, timeout_s?, account?}
              queued until the socket budget admits it; ``timeout_s``: ring timeout,
              the worker CANCELs an unanswered call that many seconds after its first
              180/183 (after the INVITE while none came).
              ``caller_id`` is sent as P-Asserted-Identity (From is the account's).
  hangup      {key, code?}       a queued dial is dropped (ended, code 0).
  bridge      {a, b}             join two calls of this worker, both directions.
  unbridge    {a, b}
  play        {key, wav, loop?}  8/16 kHz mono 16-bit WAV into the call.
  stop_play   {key}
  dtmf        {key, digits}      send RFC 2833 digits on the call.
  record      {key, path}        the call's received audio (and legs bridged to it).
  stop_record {key}
  tie         {key, uri, agent, bridge?}  a loopback call to another worker, carrying
              ``agent`` (that worker's key of an agent leg) in the X-Dialer-Agent
              header; that worker answers and bridges it to the agent leg. With
              ``bridge``, this worker bridges the answered tie leg to that local call.
  register    {account, registrar, user, password, domain?, realm?, expires?, register?, replace?}
              a trunk account: REGISTERs (the round trip, digest challenge included, is
              measured: ``registered.ms``); ``register: false`` only authenticates its
              INVITEs (reported registered, code 200, at once); ``replace: true`` shuts an
              account of that name down first (a retry, measured again).
  unregister  {account}
  stats       {}
  shutdown    {}

Events (``{"ev": NAME, "t": monotonic s, "ts": UTC epoch ms, ...}``):

  ready       {port, pid}
  queued      {key, position}    a dial waits for the socket budget
  admitted    {key, waited_ms}   a dial is being started (sent just before makeCall)
  ringing     {key, code}        once per provisional code (180, 183)
  answered    {key, code}        outbound and tie legs (incoming legs: see incoming)
  media       {key, dir}         audio active: sendrecv / sendonly / recvonly / inactive
  dtmf        {key, digit}
  bridged     {a, b}             both directions connected
  unbridged   {a, b}
  play_done   {key, wav}         a non-looping player reached the end of its file
  recording_done {key, path, duration_s}
  incoming    {key, from, to_user, headers, tie: agent key or null, source: "ip:port"}  answered at once
  confirmed   {key}              an incoming call's ACK arrived (the call is up both ways)
  refused     {key, to_user, reason}  an agent phone's call answered 503: the worker has its
              ``--max-agents`` phones already (each may need a tie call: the budget)
  ended       {key, code, reason, answered, started_ms, answered_ms, ended_ms,
               cause: "remote" | "hangup" | "ring timeout" | "no answer to BYE" |
                      "shutdown" | "dial failed" | "cancelled" | "worker died"}
  registered  {account, code, reason, ms, expires}   code 0: the account could not be created
  stats       {active, queued, recent_ended, accounts, calls: {key: {state, answered,
               rtp_rx, rtp_tx, rx_loss}}}
  error       {key?, message}
  bye         {why}              the worker is about to exit; why: "shutdown" (the command),
                                 "stdin closed", "parent gone", "SIGTERM" or "SIGINT"

A worker ends with its parent: ``--parent-pid`` (the pool passes its own pid) arms a
parent-death signal and a check of ``getppid()``; end of file on stdin without a
``shutdown`` command, the parent's death or a SIGTERM make it hang up every call, wait at
most ``--exit-grace`` seconds (2) for the answers and exit (see ``dialer.sip.worker``).
"""

import json

TIE_HEADER = "X-Dialer-Agent"

# The worker's one I/O queue (SIP and media share it: ``medConfig.hasIoqueue = False``)
# holds 64 sockets: the SIP transport takes one, each call two (RTP + RTCP), and a
# closed socket's slot is freed about 0.5 s later. See docs/pjsua2.md.
SOCKET_SLOTS = 64
SIP_SOCKETS = 1
SOCKET_LINGER_S = 0.6
MAX_CALLS = 32  # pjsua's cap in this build; the socket budget stops at 31 first


def may_start(active, recently_ended):
    """True while one more call fits the socket budget and pjsua's call cap."""
    return 2 * (active + recently_ended) + 2 + SIP_SOCKETS <= SOCKET_SLOTS and active < MAX_CALLS


def encode(obj):
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def agent_uri(user, pin, ip, port):
    """The URI an agent's phone calls to log in to a worker."""
    return f"sip:agent-{user}-{pin}@{ip}:{port}"


def tie_uri(ip, port):
    return f"sip:tie@{ip}:{port}"


def disposition(ended):
    """The campaign's word for how a dialed call ended, from an ``ended`` event.

    answered (any 2xx that was answered), busy (486, 600), no-answer (480, 408, 487:
    nobody picked up, or our ring timeout CANCELled it), invalid (404, 484, 410, 604),
    failed (anything else: 503, 5xx, a dial that never went out, a worker that died).
    """
    if ended.get("answered"):
        return "answered"
    code = int(ended.get("code") or 0)
    if code in (486, 600):
        return "busy"
    if code in (480, 408, 487) or ended.get("cause") == "ring timeout":
        return "no-answer"
    if code in (404, 484, 410, 604):
        return "invalid"
    return "failed"
