"""The JSON API (``/api/v1/...``) for integrations such as a CRM, and its OpenAPI 3.1
document (``/api/openapi.json``).

* **Auth**: ``Authorization: Bearer dk_...``, an API token of one account, scoped to one
  role (``campaigns.tokens``; the permissions are the browser's, ``web.roles``). The
  session cookie never logs a request in (it only picks the 401's message): a request
  with the cookie and no token is refused, so a page of another site cannot make a browser call the API with
  its user's session: no CSRF by construction, and no CSRF token is asked for.
* **Each handler is one library call**, the function the matching CLI command calls,
  run off the reactor (``web.db.Stores``), within the token's account: an id of
  another account answers 404 and changes nothing.
* **Errors** are always JSON, ``{"error": {"code", "message"[, "field"]}}``, with a
  stable code per kind (``web.openapi.ERROR_CODES``) and its HTTP status; never a
  traceback, never HTML, also for unknown paths (404) and methods (405, with Allow).
* **Declared once**: each route is declared with :func:`endpoint` (method, path,
  permission, parameters, body, answers); the declarations route the request, check
  its parameters and body against the schemas of ``web.openapi`` (unknown fields,
  wrong types: 400 naming the field, before anything runs) and make the document.
"""

import base64
import binascii
import functools
import json
import os
import re

from twisted.internet import defer
from twisted.web.http import parse_qs
from twisted.logger import Logger
from werkzeug.routing import PathConverter

from core.errors import DialerError, InputError, NotFound, StateError, StoreError

from . import openapi, roles
from .base import COOKIE, MAX_UPLOAD, app

log = Logger(namespace="web.api")

API = "/api/v1"
MAX_JSON = 1024 * 1024  # a JSON body larger than this is refused (413)
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
OPERATIONS = []  # every declared operation, in declaration order: routes and the document
PATH_PARAMS = {
    "cid": ({"type": "integer", "minimum": 1, "maximum": openapi.MAX_ID}, "A campaign of the token's account."),
    "lid": ({"type": "integer", "minimum": 1, "maximum": openapi.MAX_ID}, "A lead of the token's account."),
    "iid": ({"type": "integer", "minimum": 1, "maximum": openapi.MAX_ID}, "A list import of the token's account."),
    "token": ({"type": "string", "minLength": 1, "maxLength": 64}, "The upload job's token (from the upload)."),
}


class _Rest(PathConverter):
    """Whatever follows /api/, newlines (%0A) included: every /api path no operation
    takes reaches the JSON fallback, never werkzeug's HTML 404 page."""
    regex = r"[\s\S]+"
    part_isolating = False  # spans "/" (werkzeug would guess True: the pattern has no "/")


app.url_map.converters["api_rest"] = _Rest


class ApiError(Exception):
    """An answer other than success: HTTP status, message, the field at fault."""

    def __init__(self, status, message, field=None, headers=None):
        super().__init__(message)
        self.status, self.field, self.headers = status, field, headers or {}


# ------------------------------------------------------------------------------ parameters

class Q:
    """A query parameter: its name, JSON schema, description, whether required."""

    def __init__(self, name, schema, description, required=False):
        self.name, self.schema, self.description, self.required = name, schema, description, required


LIMIT = Q("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
          f"Items per page (1 to {MAX_LIMIT}, default {DEFAULT_LIMIT}).")
CURSOR = Q("cursor", {"type": "string", "minLength": 1, "maxLength": 400},
           "The `next_cursor` of the previous page (opaque).")
CAMPAIGN = Q("campaign_id", {"type": "integer", "minimum": 1, "maximum": openapi.MAX_ID},
             "Only this campaign's (a campaign of the token's account).")
FROM = Q("from", {"type": "string", "minLength": 1, "maxLength": 64},
         "From this instant, included (ISO 8601; naive = UTC).")
TO = Q("to", {"type": "string", "minLength": 1, "maxLength": 64}, "Until this instant, excluded (ISO 8601).")

_INT = re.compile(r"-?[0-9]{1,19}", re.ASCII)


def _query_value(q, text):
    kind = q.schema.get("type")
    if kind == "integer":
        if not _INT.fullmatch(text):
            raise ApiError(400, f"query parameter {q.name!r}: a whole number is expected", q.name)
        return int(text)
    if kind == "boolean":
        if text not in ("true", "false"):
            raise ApiError(400, f"query parameter {q.name!r}: true or false is expected", q.name)
        return text == "true"
    return text


def _query(request, params):
    """The declared query parameters, checked; an undeclared one is refused (400), as an
    unknown field of a body is: a typo is not silently ignored."""
    names = {q.name for q in params}
    # the URL's own query (request.args also holds a form body's fields, which are no parameters)
    args = parse_qs(request.uri.partition(b"?")[2], keep_blank_values=True)  # bytes in, bytes out
    for key in args:
        name = key.decode("utf-8", "replace")
        if name not in names:
            known = f" (this operation takes: {', '.join(sorted(names))})" if names else " (this operation takes none)"
            raise ApiError(400, f"unknown query parameter {name[:60]!r}{known}", name[:60])
    out = {}
    for q in params:
        vals = args.get(q.name.encode())
        if not vals:
            if q.required:
                raise ApiError(400, f"query parameter {q.name!r} is required", q.name)
            out[q.name] = q.schema.get("default")
            continue
        try:
            text = vals[0].decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, f"query parameter {q.name!r} is not UTF-8 text", q.name) from None
        value = _query_value(q, text)
        err = openapi.check(q.schema, value, q.name)
        if err:
            raise ApiError(400, f"query parameter {err[1]}", q.name)
        out[q.name] = value
    return out


def _json_body(request, schema_name, required):
    ctype = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
    raw = request.content.read(MAX_JSON + 1) if request.content is not None else b""
    if len(raw) > MAX_JSON:
        raise ApiError(413, f"the JSON body is larger than {MAX_JSON // 1024} KiB")
    if not raw.strip():
        if required:
            raise ApiError(400, "a JSON body is required", "body")
        return {}
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise ApiError(415, f"the body must be JSON (Content-Type: application/json), not {ctype[:60]}",
                       "content-type")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ApiError(400, f"the body is not valid JSON ({str(e)[:120]})", "body") from None
    err = openapi.check(openapi.SCHEMAS[schema_name], value, "")
    if err:
        raise ApiError(400, err[1], err[0] or "body")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def encode_cursor(value):
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text, shape):
    """A cursor this API gave: ``shape`` is a tuple of types (int, str)."""
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        value = None
    if not (isinstance(value, list) and len(value) == len(shape)
            and all(isinstance(v, t) and not isinstance(v, bool) for v, t in zip(value, shape))):
        raise ApiError(400, "cursor: not a cursor this API gave (use next_cursor of the previous page)", "cursor")
    return value[0] if len(shape) == 1 else tuple(value)


def _instant(q, name):
    from core.timeutil import parse_instant
    text = q.get(name)
    if text is None:
        return None
    try:
        return parse_instant(text, name, bounded=True)
    except InputError as e:
        raise ApiError(400, str(e), name) from None


# ------------------------------------------------------------------------------ declaring

def endpoint(method, path, permission, summary, ok, params=(), body=None, body_required=True, errors=(),
             tag=None, description=None, links=None):
    """Declare and route one operation. ``path`` is OpenAPI-style (``/campaigns/{cid}``)
    under ``/api/v1``; ``ok`` is (status, schema name or None, media type); ``errors``
    the statuses besides those every operation may answer (401, 403, 429, and 400 /
    404 when it has parameters / path ids); ``links``: OpenAPI links of the success
    answer, {name: (operationId, {parameter: runtime expression})}. The handler is ``async fn(self, request,
    tok, q, body, **path)``; it returns a JSON-able value (or bytes, for another media
    type it set itself)."""
    full = API + path
    names = re.findall(r"\{(\w+)\}", path)
    for n in names:
        assert n in PATH_PARAMS, n

    def deco(fn):
        op = {"method": method, "path": full, "permission": permission, "summary": summary, "ok": ok,
              "params": list(params), "body": body, "body_required": body_required, "errors": tuple(errors),
              "tag": tag or path.strip("/").split("/")[0], "description": description or (fn.__doc__ or "").strip(),
              "operation_id": fn.__name__, "path_params": names, "links": links or {}}
        OPERATIONS.append(op)

        @functools.wraps(fn)
        def wrapper(self, request, **kw):
            return defer.ensureDeferred(self._api_call(op, fn, request, kw))
        # no bounds in the converter: werkzeug answers its own 404 page when one fails; _api_call checks them
        route = re.sub(r"\{(\w+)\}", lambda m: (f"<int:{m.group(1)}>"
                                                 if PATH_PARAMS[m.group(1)][0]["type"] == "integer"
                                                 else f"<{m.group(1)}>"), full)
        app.route(route, methods=[method], endpoint=f"api.{fn.__name__}")(wrapper)
        return wrapper
    return deco


def campaign_links(expr):
    """The OpenAPI links from an answer holding a campaign's id (``expr``) to what takes one."""
    return {n: (op, {"cid": expr}) for n, op in (
        ("get", "api_campaign"), ("edit", "api_campaign_update"), ("start", "api_campaign_start"),
        ("pause", "api_campaign_pause"), ("finish", "api_campaign_finish"), ("upload", "api_list_upload"),
        ("imports", "api_campaign_imports"), ("dnc", "api_campaign_dnc_list"), ("dnc_add", "api_campaign_dnc_add"))}


def document():
    """The OpenAPI 3.1 document of every declared operation."""
    return openapi.document(OPERATIONS, PATH_PARAMS)


def actor(tok):
    """What the audit log records for a change made through the API."""
    return f"api:{tok['account_name']}/{tok['name']}#{tok['id']}"


class RateLimit:
    """A token bucket per API token: ``rate`` requests a second, bursts of ``burst``.
    Memory only (a restart forgets it); on the reactor (a few dict operations)."""

    def __init__(self, rate=50.0, burst=200, keep=10000):
        self.rate, self.burst, self.keep = float(rate), float(burst), keep
        self.buckets = {}

    @classmethod
    def from_env(cls, environ=None):
        """``DIALER_API_RATE=RATE/BURST`` (e.g. 50/200, the default) sets the limit of
        every token; a value that is not two positive numbers is ignored (logged)."""
        text = (os.environ if environ is None else environ).get("DIALER_API_RATE", "").strip()
        if text:
            try:
                rate, burst = (float(x) for x in text.split("/"))
                if rate > 0 and burst >= 1:
                    return cls(rate, burst)
            except ValueError:
                pass
            log.warn("DIALER_API_RATE={text!r} is not RATE/BURST (two positive numbers): the default is used",
                     text=text)
        return cls()

    def take(self, key, t):
        """0 when the request may go, else the seconds to wait."""
        level, last = self.buckets.get(key, (self.burst, t))
        level = min(self.burst, level + (t - last) * self.rate)
        if level < 1:
            self.buckets[key] = (level, t)
            return (1 - level) / self.rate
        if len(self.buckets) >= self.keep and key not in self.buckets:
            self.buckets.clear()
        self.buckets[key] = (level - 1, t)
        return 0.0


# ------------------------------------------------------------------------------ the API

def _campaign(c):
    out = {k: c.get(k) for k in ("id", "name", "region", "caller_id", "hours", "state", "dial_mode", "power_ratio",
                                 "abandon_target", "retry_rules", "trunk", "created_at", "updated_at")}
    out["greeting_set"] = bool(c.get("greeting"))
    if isinstance(c.get("leads"), dict):
        out["leads"] = c["leads"]
    return out


def _decimal_text(v):
    return None if v is None else str(v)


def _cdr(r):
    out = {k: r.get(k) for k in ("call_id", "campaign_id", "campaign", "lead_id", "agent_id", "trunk", "caller_id",
                                 "destination", "started_at", "answered_at", "bridged_at", "ended_at", "duration_ms",
                                 "ring_ms", "billable_ms", "billsec", "connect_delay_ms", "disposition", "abandoned",
                                 "opted_out", "agent_disposition", "lead_outcome", "sip_code", "sip_reason",
                                 "hangup_cause", "hangup_by", "ruleset")}
    out["recording"] = bool(r.get("recording_path"))
    return out


class Api:
    """The JSON API's routes (a mixin of :class:`web.app.WebApp`)."""

    api_limiter = None

    # -------------------------------------------------------------------- plumbing
    def _api_answer(self, request, status, obj, headers=None):
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        for k, v in (headers or {}).items():
            request.setHeader(k.encode(), str(v).encode())
        return json.dumps(obj, default=str, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _api_error(self, request, status, message, field=None, headers=None):
        err = {"code": openapi.ERROR_CODES.get(status, "invalid_input"), "message": message}
        if field:
            err["field"] = field
        return self._api_answer(request, status, {"error": err}, headers)

    async def _api_token(self, request):
        from campaigns.tokens import authenticate
        header = request.getHeader("authorization")
        if header is None:
            if request.getCookie(COOKIE):
                raise ApiError(401, "the API does not take the browser's session cookie: send an API token "
                                    "(Authorization: Bearer dk_...)", "authorization")
            raise ApiError(401, "an API token is required (Authorization: Bearer dk_...)", "authorization")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "the Authorization header must be: Bearer dk_...", "authorization")
        tok = await self.stores.read(authenticate, token.strip())
        if tok is None:
            raise ApiError(401, "the API token is unknown, malformed or revoked", "authorization")
        return tok

    async def _api_call(self, op, fn, request, kw):
        from campaigns.tokens import needs_touch, touch
        try:
            try:
                tok = await self._api_token(request)
            except ApiError as e:
                e.headers["WWW-Authenticate"] = 'Bearer realm="dialer"'
                raise
            if self.api_limiter is None:
                self.api_limiter = RateLimit.from_env()
            wait = self.api_limiter.take(tok["id"], self.reactor.seconds())
            if wait > 0:
                raise ApiError(429, f"too many requests for this token: retry in {wait:.1f} s",
                               headers={"Retry-After": max(1, int(wait + 0.999))})
            perm = op["permission"]
            if perm is not None and not roles.may(tok["role"], perm):
                raise ApiError(403, f"a token of role {tok['role']} may not do this ({perm})")
            now = self.now()
            if needs_touch(tok, now):
                await self.stores.write(touch, tok["id"], now)
            for name in op["path_params"]:
                err = openapi.check(PATH_PARAMS[name][0], kw[name], name)
                if err:
                    raise NotFound(f"no such {name}: {str(kw[name])[:64]!r}")
            q = _query(request, op["params"])
            body = None
            if op["body"] is not None and op["body"] != "binary":
                body = _json_body(request, op["body"], op["body_required"])
            out = await fn(self, request, tok, q, body, **kw)
            if isinstance(out, bytes):
                return out
            status, obj = out if isinstance(out, tuple) else (op["ok"][0], out)
            return self._api_answer(request, status, obj)
        except ApiError as e:
            return self._api_error(request, e.status, str(e), e.field, e.headers)
        except NotFound as e:
            return self._api_error(request, 404, str(e) or "not found")
        except StateError as e:
            return self._api_error(request, 409, str(e))
        except StoreError as e:
            return self._api_error(request, 503, str(e), headers={"Retry-After": 5})
        except DialerError as e:
            return self._api_error(request, 400, str(e))
        except Exception:
            log.failure("API {method} {path}: internal error", method=op["method"], path=op["path"])
            return self._api_error(request, 500, "internal error (logged on the server)")

    # -------------------------------------------------------------------- unknown paths, the document
    @app.route("/api/openapi.json", methods=["GET"], endpoint="api.openapi")
    def api_openapi(self, request):
        """The OpenAPI 3.1 document (public: it holds no account data)."""
        if getattr(self, "_api_doc", None) is None:
            self._api_doc = json.dumps(document(), ensure_ascii=False, indent=1).encode("utf-8")
        request.setHeader(b"content-type", b"application/json")
        return self._api_doc

    @app.route("/api/<api_rest:rest>", methods=list(HTTP_METHODS) + ["OPTIONS", "TRACE", "CONNECT"],
               endpoint="api.fallback")
    def api_fallback(self, request, rest):
        """Every /api path no operation takes: 404, or 405 with Allow (the path exists)."""
        path = "/api/" + rest
        allowed = _allowed(self.app.url_map, path)
        if not allowed:
            return self._api_error(request, 404, f"no such API path: {path[:200]}")
        allow = ", ".join(allowed)
        if request.method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"allow", allow.encode())
            return b""
        return self._api_error(request, 405, f"{request.method.decode('ascii', 'replace')[:10]} is not a method of "
                                             f"this path (it takes {allow})", headers={"Allow": allow})

    # -------------------------------------------------------------------- who am I
    @endpoint("GET", "/me", None, "The token's account, name, role and what it may do", ok=(200, "Me", None))
    async def api_me(self, request, tok, q, body):
        """Who this token is: its account, its name and role, and the permissions of that role."""
        return {"account": tok["account_name"], "account_id": tok["account_id"],
                "token": {"id": tok["id"], "name": tok["name"], "role": tok["role"]},
                "permissions": sorted(p for p in roles.PERMISSIONS if roles.may(tok["role"], p))}

    # -------------------------------------------------------------------- campaigns
    @endpoint("GET", "/campaigns", "campaigns.view", "The account's campaigns", ok=(200, "CampaignList", None),
              links=campaign_links("$response.body#/items/0/id"))
    async def api_campaigns(self, request, tok, q, body):
        """The account's campaigns, by name (`campaigns.store.list_campaigns`, as `dialer campaign list`)."""
        from campaigns.store import list_campaigns
        rows = await self.stores.read(list_campaigns, tok["account_id"])
        return {"items": [{k: r[k] for k in ("id", "name", "state", "dial_mode", "region", "caller_id", "leads")}
                          for r in rows]}

    @endpoint("POST", "/campaigns", "campaigns.edit", "Create a campaign (a draft)", ok=(201, "Campaign", None),
              body="CampaignNew", links=campaign_links("$response.body#/id"))
    async def api_campaign_create(self, request, tok, q, body):
        """A draft campaign (`campaigns.store.create_campaign`, as `dialer campaign create`); its name is unique in
        the account. The safe-harbor greeting of a predictive or power campaign is set from the browser or the
        CLI."""
        from campaigns.store import create_campaign
        out = await self.stores.write(
            create_campaign, body["name"], tok["account_id"], self.now(), actor(tok), region=body.get("region", "US"),
            caller_id=body.get("caller_id") or None, hours=body.get("hours") or None,
            dial_mode=body.get("dial_mode", "predictive"), power_ratio=_decimal_text(body.get("power_ratio")),
            abandon_target=_decimal_text(body.get("abandon_target", "0.03")), retry=body.get("retry") or None)
        request.setHeader(b"location", f"{API}/campaigns/{out['id']}".encode())
        return 201, _campaign(out)

    @endpoint("GET", "/campaigns/{cid}", "campaigns.view", "One campaign, with its leads by status",
              ok=(200, "Campaign", None))
    async def api_campaign(self, request, tok, q, body, cid):
        """One campaign of the account and its leads by status (`campaigns.store.show_campaign`)."""
        from campaigns.store import show_campaign
        return _campaign(await self.stores.read(show_campaign, cid, tok["account_id"]))

    @endpoint("PATCH", "/campaigns/{cid}", "campaigns.edit", "Change a draft or paused campaign's settings",
              ok=(200, "Campaign", None), body="CampaignPatch", errors=(409,))
    async def api_campaign_update(self, request, tok, q, body, cid):
        """Only the fields given change (`campaigns.store.update_campaign`, as `dialer campaign edit`); caller_id
        or hours null or "" clear them. A running or finished campaign answers 409."""
        from campaigns.store import update_campaign

        def cleared(k):
            return None if k not in body else (body[k] if body[k] is not None else "")
        out = await self.stores.write(
            update_campaign, cid, self.now(), actor(tok), account=tok["account_id"], caller_id=cleared("caller_id"),
            hours=cleared("hours"), dial_mode=body.get("dial_mode"), power_ratio=_decimal_text(body.get("power_ratio")),
            abandon_target=_decimal_text(body.get("abandon_target")), retry=body.get("retry"))
        return _campaign(out)

    async def _state(self, tok, cid, action, body):
        from billing.standing import change_state
        try:
            out = await self.stores.write(change_state, cid, action, self.now(), actor(tok), body.get("reason", ""),
                                          account=tok["account_id"])
            self.publish_state(tok["account_id"], cid, out, actor(tok))  # web.app: to the live channel
            return out
        except NotFound:
            raise
        except InputError as e:  # the refusal: its state, caller ID, greeting, the account's standing
            raise ApiError(409, str(e)) from None

    @endpoint("POST", "/campaigns/{cid}/start", "campaigns.edit", "Start (or resume) a campaign",
              ok=(200, "StateResult", None), body="StateChange", body_required=False, errors=(409,))
    async def api_campaign_start(self, request, tok, q, body, cid):
        """`billing.standing.change_state` (as `dialer campaign start`). Refused (409, with every reason) while the
        caller ID or greeting is not in order or the account may not dial."""
        return await self._state(tok, cid, "start", body)

    @endpoint("POST", "/campaigns/{cid}/pause", "campaigns.edit", "Pause a running campaign",
              ok=(200, "StateResult", None), body="StateChange", body_required=False, errors=(409,))
    async def api_campaign_pause(self, request, tok, q, body, cid):
        """As `dialer campaign pause`; 409 unless it is running."""
        return await self._state(tok, cid, "pause", body)

    @endpoint("POST", "/campaigns/{cid}/finish", "campaigns.edit", "Finish a campaign for good",
              ok=(200, "StateResult", None), body="StateChange", body_required=False, errors=(409,))
    async def api_campaign_finish(self, request, tok, q, body, cid):
        """As `dialer campaign finish`; 409 when finished already or while an import holds rows of a list."""
        return await self._state(tok, cid, "finish", body)

    # -------------------------------------------------------------------- lists
    @endpoint("POST", "/campaigns/{cid}/lists", "campaigns.edit", "Upload a list (CSV or XLSX) into a campaign",
              ok=(202, "UploadJob", None), body="binary", errors=(409, 413),
              links={"progress": ("api_list_job", {"cid": "$request.path.cid", "token": "$response.body#/token"})},
              params=(Q("name", {"type": "string", "maxLength": 200, "default": "list.csv"},
                        "The file's name (its extension tells CSV from XLSX when the content does not)."),
                      Q("map", {"type": "string", "maxLength": 500},
                        "Columns for fields, e.g. phone=Mobile,name=Customer."),
                      Q("dedupe", {"type": "string", "enum": ["list", "campaign", "account", "none"],
                                   "default": "campaign"}, "Which duplicates are dropped."),
                      Q("region", {"type": "string", "pattern": "^[A-Za-z]{2}$", "default": "US"},
                        "Region of numbers without a country code.")))
    async def api_list_upload(self, request, tok, q, body, cid):
        """The file is the request's body. It is saved, then imported on the import thread
        (`campaigns.leads.import_list`, as `dialer list import`, in chunks of 5 000 rows); the answer (202) has
        the job's token: poll `status_url` for its progress and, when it ends, its `import_id`."""
        from campaigns.store import get_campaign
        await self.stores.read(get_campaign, cid, tok["account_id"])  # 404 before anything is saved
        content = request.content
        content.seek(0, 2)
        size = content.tell()
        content.seek(0)
        if size <= 0:
            raise ApiError(400, "the body is empty: send the CSV or XLSX file as the request's body", "body")
        if size > MAX_UPLOAD:
            raise ApiError(413, f"the file is larger than {MAX_UPLOAD // 2**20} MiB")
        job = await self.uploads.start(content, q["name"] or "list.csv", tok["account_id"], cid, self.now(),
                                       actor(tok), mapping=(q.get("map") or "").strip(), dedupe=q["dedupe"],
                                       region=q["region"].upper())
        return 202, self._job(job, cid)

    def _job(self, job, cid):
        out = job.as_dict()
        out["status_url"] = f"{API}/campaigns/{cid}/lists/{job.token}"
        out["import_url"] = f"{API}/imports/{job.import_id}" if job.import_id is not None else None
        return out

    @endpoint("GET", "/campaigns/{cid}/lists/{token}", "campaigns.edit", "An upload's progress",
              ok=(200, "UploadJob", None))
    async def api_list_job(self, request, tok, q, body, cid, token):
        """State (queued, importing, done, failed), rows read, the fraction of the file, the import's id. Jobs are
        known to the server process that runs them (after a restart: the import's own record, `/imports/{iid}`)."""
        job = self.uploads.get(token, tok["account_id"], cid)
        if job is None:
            raise NotFound(f"no upload {token[:64]!r} of campaign {cid}")
        return self._job(job, cid)

    @endpoint("GET", "/campaigns/{cid}/imports", "campaigns.view", "A campaign's list imports, newest first",
              ok=(200, "ImportList", None),
              links={n: (op, {"iid": "$response.body#/items/0/import_id"}) for n, op in (
                  ("get", "api_import"), ("errors", "api_import_errors"), ("errors_csv", "api_import_errors_csv"))})
    async def api_campaign_imports(self, request, tok, q, body, cid):
        """`campaigns.leads.campaign_imports`."""
        from campaigns.leads import campaign_imports
        return {"items": await self.stores.read(campaign_imports, cid, tok["account_id"])}

    @endpoint("GET", "/imports/{iid}", "campaigns.view", "One import: status, counts, reason",
              ok=(200, "Import", None), tag="lists")
    async def api_import(self, request, tok, q, body, iid):
        """`campaigns.leads.import_status` (as `dialer list show`)."""
        from campaigns.leads import import_status
        return await self.stores.read(import_status, iid, tok["account_id"])

    @endpoint("GET", "/imports/{iid}/errors", "campaigns.screening", "An import's rejected rows (paged)",
              ok=(200, "ImportErrorPage", None), params=(LIMIT, CURSOR), tag="lists")
    async def api_import_errors(self, request, tok, q, body, iid):
        """The per-row report (`campaigns.leads.import_errors`, as `dialer list errors --json`), by row."""
        from campaigns.leads import import_errors
        after = decode_cursor(q["cursor"], (int, int)) if q.get("cursor") else None
        rows = await self.stores.read(import_errors, iid, tok["account_id"], after=after, limit=q["limit"] + 1)
        more = len(rows) > q["limit"]
        rows = rows[:q["limit"]]
        nxt = encode_cursor([rows[-1]["row"] or 0, rows[-1].pop("id")]) if more else None
        for r in rows:
            r.pop("id", None)
        return {"items": rows, "next_cursor": nxt}

    @endpoint("GET", "/imports/{iid}/errors.csv", "campaigns.screening", "An import's rejected rows as CSV",
              ok=(200, None, "text/csv"), tag="lists")
    async def api_import_errors_csv(self, request, tok, q, body, iid):
        """The whole per-row report as CSV (`dialer list errors --csv`), cells neutralised against formula
        injection."""
        from campaigns.leads import errors_csv, import_errors
        rows = await self.stores.read(import_errors, iid, tok["account_id"])
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(b"content-disposition", f'attachment; filename="import-{iid}-errors.csv"'.encode())
        return errors_csv(rows).encode("utf-8")

    # -------------------------------------------------------------------- leads, dispositions, callbacks
    @endpoint("GET", "/leads", "leads.view", "The account's leads (paged, by id)", ok=(200, "LeadPage", None),
              links={n: (op, {"lid": "$response.body#/items/0/id"}) for n, op in (
                  ("get", "api_lead"), ("outcome", "api_lead_outcome"), ("callback", "api_lead_callback"))},
              params=(CAMPAIGN, Q("status", {"type": "string", "enum": openapi.LEAD_STATUSES}, "Only this status."),
                      LIMIT, CURSOR))
    async def api_leads(self, request, tok, q, body):
        """`campaigns.leads.list_leads` (as `dialer lead list`); rows of an import still running are not listed."""
        from campaigns.leads import list_leads
        after = decode_cursor(q["cursor"], (int,)) if q.get("cursor") else None
        out = await self.stores.read(list_leads, tok["account_id"], campaign=q.get("campaign_id"),
                                     status=q.get("status"), after=after, limit=q["limit"])
        return {"items": out["items"],
                "next_cursor": encode_cursor([out["next_after"]]) if out["next_after"] is not None else None}

    @endpoint("GET", "/leads/{lid}", "leads.view", "One lead and its history", ok=(200, "Lead", None))
    async def api_lead(self, request, tok, q, body, lid):
        """`campaigns.leads.show_lead`: the lead, its list's other columns (`custom`) and its events."""
        from campaigns.leads import show_lead
        return await self.stores.read(show_lead, lid, tok["account_id"])

    @endpoint("POST", "/leads/{lid}/outcome", "leads.outcome", "Record a lead's outcome (a disposition)",
              ok=(200, "OutcomeResult", None), body="Outcome")
    async def api_lead_outcome(self, request, tok, q, body, lid):
        """`campaigns.leads.manual_outcome` (as `dialer lead outcome`): the lead is recycled or finished by the
        campaign's retry rules; dnc-requested puts the number on the account's DNC list. With `call_id` (the CDR
        of a placed call) the call counts as an attempt, once."""
        from campaigns.leads import manual_outcome
        return await self.stores.write(manual_outcome, lid, body["outcome"], self.now(), actor(tok),
                                       call_id=body.get("call_id"), account=tok["account_id"])

    @endpoint("POST", "/leads/{lid}/callback", "leads.outcome", "Schedule a callback",
              ok=(200, "CallbackResult", None), body="CallbackNew")
    async def api_lead_callback(self, request, tok, q, body, lid):
        """`campaigns.leads.schedule_callback` (as `dialer lead callback`): at a local time of the lead (its zone,
        or `zone`); a time that does not exist or happens twice that day is refused. Not a call."""
        from campaigns.leads import schedule_callback
        return await self.stores.write(schedule_callback, lid, body["when"], self.now(), actor(tok),
                                       agent=body.get("agent") or None, zone=body.get("zone") or None,
                                       account=tok["account_id"])

    @endpoint("GET", "/callbacks", "leads.view", "Scheduled callbacks (paged, by time)",
              ok=(200, "CallbackPage", None), params=(CAMPAIGN, FROM, TO, LIMIT, CURSOR), tag="leads")
    async def api_callbacks(self, request, tok, q, body):
        """`campaigns.leads.list_callbacks` (as `dialer lead callbacks`): leads waiting for their callback."""
        from campaigns.leads import list_callbacks
        after = decode_cursor(q["cursor"], (str, int)) if q.get("cursor") else None
        out = await self.stores.read(list_callbacks, tok["account_id"], campaign=q.get("campaign_id"),
                                     since=_instant(q, "from"), until=_instant(q, "to"), after=after,
                                     limit=q["limit"])
        return {"items": out["items"],
                "next_cursor": encode_cursor(list(out["next_after"])) if out["next_after"] is not None else None}

    # -------------------------------------------------------------------- DNC
    async def _dnc_add(self, tok, body, cid=None):
        from rules.service import add_dnc
        return await self.stores.write(add_dnc, body["numbers"], self.now(), actor(tok),
                                       source="campaign" if cid else "company", campaign=cid,
                                       region=body.get("region", "US").upper(), reason=body.get("reason", ""),
                                       account=tok["account_id"], wide=bool(body.get("wide", False)))

    async def _dnc_remove(self, tok, body, cid=None):
        from rules.service import remove_dnc
        return await self.stores.write(remove_dnc, body["numbers"], self.now(), actor(tok),
                                       source="campaign" if cid else "company", campaign=cid,
                                       region=body.get("region", "US").upper(), reason=body["reason"],
                                       account=tok["account_id"])

    async def _dnc_list(self, tok, q, cid=None):
        from rules.service import dnc_list
        before = decode_cursor(q["cursor"], (int,)) if q.get("cursor") else None
        out = await self.stores.read(dnc_list, tok["account_id"], campaign=cid, limit=q["limit"], before=before)
        return {"scope": out["scope"], "total": out["total"], "items": out["entries"],
                "next_cursor": encode_cursor([out["next_before"]]) if out["next_before"] is not None else None}

    @endpoint("GET", "/dnc", "compliance", "The account's DNC list (paged, newest first)",
              ok=(200, "DncList", None), params=(LIMIT, CURSOR))
    async def api_dnc_list(self, request, tok, q, body):
        """`rules.service.dnc_list` (the compliance screen's list): each entry, when and by whom it was added, why."""
        return await self._dnc_list(tok, q)

    @endpoint("GET", "/campaigns/{cid}/dnc", "compliance", "A campaign's DNC list (paged, newest first)",
              ok=(200, "DncList", None), params=(LIMIT, CURSOR), tag="dnc")
    async def api_campaign_dnc_list(self, request, tok, q, body, cid):
        """`rules.service.dnc_list` of the campaign's own list."""
        return await self._dnc_list(tok, q, cid)

    @endpoint("POST", "/dnc", "compliance", "Add numbers or wildcards to the account's DNC list",
              ok=(200, "DncAdded", None), body="DncAdd")
    async def api_dnc_add(self, request, tok, q, body):
        """`rules.service.add_dnc` (as `dialer dnc add`): effective at once, audited; all or nothing (one bad
        number refuses the whole request). Wildcards wider than an area code need `wide`."""
        return await self._dnc_add(tok, body)

    @endpoint("POST", "/dnc/remove", "compliance", "Remove numbers or wildcards from the account's DNC list",
              ok=(200, "DncRemoved", None), body="DncRemove")
    async def api_dnc_remove(self, request, tok, q, body):
        """`rules.service.remove_dnc` (as `dialer dnc remove`): the reason is required and audited."""
        return await self._dnc_remove(tok, body)

    @endpoint("POST", "/dnc/check", "numbers.check", "Which DNC lists hold these numbers",
              ok=(200, "DncStatusList", None), body="DncCheck")
    async def api_dnc_check(self, request, tok, q, body):
        """`rules.service.check_dnc` (as `dialer dnc check`): the account's list, the campaign's when
        `campaign_id` is given, and the national registries."""
        from rules.service import check_dnc
        return {"items": await self.stores.read(check_dnc, body["numbers"], self.now(),
                                                region=body.get("region", "US").upper(),
                                                campaign=body.get("campaign_id"), account=tok["account_id"])}

    @endpoint("POST", "/campaigns/{cid}/dnc", "compliance", "Add numbers or wildcards to a campaign's DNC list",
              ok=(200, "DncAdded", None), body="DncAdd", tag="dnc")
    async def api_campaign_dnc_add(self, request, tok, q, body, cid):
        """`rules.service.add_dnc` with the campaign's list (as `dialer dnc add --campaign`)."""
        return await self._dnc_add(tok, body, cid)

    @endpoint("POST", "/campaigns/{cid}/dnc/remove", "compliance", "Remove numbers from a campaign's DNC list",
              ok=(200, "DncRemoved", None), body="DncRemove", tag="dnc")
    async def api_campaign_dnc_remove(self, request, tok, q, body, cid):
        """`rules.service.remove_dnc` with the campaign's list; the reason is required."""
        return await self._dnc_remove(tok, body, cid)

    # -------------------------------------------------------------------- rule checks
    @endpoint("POST", "/checks", "numbers.check", "May these numbers be called at this instant?",
              ok=(200, "VerdictList", None), body="Check")
    async def api_checks(self, request, tok, q, body):
        """`rules.service.check_numbers` (as `dialer check`): one verdict per number with every rule that blocks
        it, the calling window in each of its zones, and the rule-set version that decided, as the account (or
        the campaign: its hours, DNC list, waivers and caller ID) sees it at `at` (default now)."""
        from core.timeutil import parse_instant
        from rules.service import check_numbers
        at = None
        if body.get("at") is not None:
            try:
                at = parse_instant(body["at"], "at", bounded=True)
            except InputError as e:
                raise ApiError(400, str(e), "at") from None
        verdicts = await self.stores.read(check_numbers, body["numbers"], self.now(), at=at,
                                          region=body.get("region", "US").upper(), campaign=body.get("campaign_id"),
                                          account=tok["account_id"])
        return {"items": [v.as_dict() for v in verdicts]}

    # -------------------------------------------------------------------- CDRs
    @endpoint("GET", "/cdrs", "cdrs.view", "Call records by start time (paged)", ok=(200, "CdrPage", None),
              params=(FROM, TO, CAMPAIGN, LIMIT, CURSOR))
    async def api_cdrs(self, request, tok, q, body):
        """`dialer.cdr.list_cdrs` (the records `dialer records export` archives): the account's calls that started
        in [from, to), oldest first, paged on (started_at, call_id), a stable key: a record written later with
        an earlier start is not skipped by pages already read only if it sorts after them."""
        from dialer.cdr import list_cdrs
        after = decode_cursor(q["cursor"], (str, str)) if q.get("cursor") else None
        rows = await self.stores.read(list_cdrs, campaign=q.get("campaign_id"), account=tok["account_id"],
                                      since=_instant(q, "from"), until=_instant(q, "to"), limit=q["limit"] + 1,
                                      after=after)
        more = len(rows) > q["limit"]
        rows = rows[:q["limit"]]
        return {"items": [_cdr(r) for r in rows],
                "next_cursor": encode_cursor([rows[-1]["started_at"], rows[-1]["call_id"]]) if more else None}


def _allowed(url_map, path):
    """The methods some operation (not the fallback) takes at ``path``."""
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect
    adapter = url_map.bind("localhost")
    out = []
    for m in HTTP_METHODS:
        try:
            endpoint_name, _ = adapter.match(path, method=m)
        except (HTTPException, RequestRedirect):
            continue
        if endpoint_name != "api.fallback":
            out.append(m)
    return out
