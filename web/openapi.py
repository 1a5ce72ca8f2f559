"""The JSON API's OpenAPI 3.1 document, built from the operations ``web.api`` declares
(each route is declared once, with its parameters, body and answers, and this document
is made from those declarations), and the schemas below, which also check the
requests: ``web.api`` validates every body and query parameter against them (a
subset of JSON Schema: :func:`check`), so the document and the checks cannot drift.

Served at ``/api/openapi.json``; checked by ``tests/test_api_schemathesis.py``.
"""

import copy
import math
import re

MAX_ID = 2**63 - 1
MAX_NUMBERS = 1000
ERROR_CODES = {
    400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 415: "unsupported_media_type", 429: "rate_limited", 500: "internal",
    503: "unavailable",
}
ERROR_TEXT = {
    400: "The request is invalid (the message names the field); nothing was changed.",
    401: "No valid bearer token (missing, unknown, malformed or revoked).",
    403: "The token's role may not do this.",
    404: "No such object in the token's account (an id of another account answers the same).",
    405: "The path does not take this method (the Allow header lists those it takes).",
    409: "Refused in the object's current state (the message gives the reason); nothing was changed.",
    413: "The request's body is too large.",
    415: "The body's content type is not one this operation takes.",
    429: "Too many requests for this token: wait the Retry-After seconds.",
}

NS = {"type": ["string", "null"]}
NI = {"type": ["integer", "null"]}
TIME = {"type": "string", "description": "UTC, ISO 8601 (YYYY-MM-DDTHH:MM:SS.mmmZ)"}
NTIME = {"type": ["string", "null"], "description": "UTC, ISO 8601, or null"}
ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
REF = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731


def obj(props, required=None, additional=False, **kw):
    """An object schema; every property required unless ``required`` says which."""
    out = {"type": "object", "properties": props, "required": list(props) if required is None else list(required)}
    if additional is not True:
        out["additionalProperties"] = additional
    out.update(kw)
    return out


def page(item):
    return obj({"items": {"type": "array", "items": REF(item)},
                "next_cursor": {"type": ["string", "null"],
                                "description": "Give it as `cursor` for the next page; null on the last page."}})


NUMBERS = {"type": "array", "minItems": 1, "maxItems": MAX_NUMBERS,
           "items": {"type": "string", "minLength": 1, "maxLength": 64},
           "description": "Phone numbers (any common form; E.164 best) or, for DNC lists, wildcards like +1212*."}
REGION = {"type": "string", "pattern": "^[A-Za-z]{2}$", "default": "US",
          "description": "Region of numbers written without a country code (ISO 3166 alpha-2)."}
DECIMAL = {"type": ["string", "number"], "maxLength": 32, "description": "A decimal, best as a string (\"0.03\")."}
DIAL_MODES = ["preview", "progressive", "predictive", "power"]
OUTCOMES = ["answered-human", "machine", "busy", "no-answer", "failed", "abandoned", "dnc-requested"]
LEAD_STATUSES = ["new", "retry", "callback", "reserved", "dialing", "done", "dnc", "blocked"]
CAMPAIGN_STATES = ["draft", "running", "paused", "finished"]

SCHEMAS = {
    "Error": obj({"error": obj({
        "code": {"type": "string", "enum": sorted(set(ERROR_CODES.values()))},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "The field, parameter or header at fault, when one is."},
    }, required=["code", "message"])}),
    "Me": obj({"account": {"type": "string"}, "account_id": ID,
               "token": obj({"id": ID, "name": {"type": "string"}, "role": {"type": "string"}}),
               "permissions": {"type": "array", "items": {"type": "string"}}}),
    "CampaignSummary": obj({"id": ID, "name": {"type": "string"}, "state": {"type": "string", "enum": CAMPAIGN_STATES},
                            "dial_mode": {"type": "string"}, "region": {"type": "string"}, "caller_id": NS,
                            "leads": {"type": "integer", "minimum": 0}}),
    "CampaignList": obj({"items": {"type": "array", "items": REF("CampaignSummary")}}),
    "Campaign": obj({
        "id": ID, "name": {"type": "string"}, "region": {"type": "string"}, "caller_id": NS,
        "hours": {"type": ["object", "null"], "additionalProperties": {"type": "array", "items": {"type": "string"}},
                  "description": "Days (mon-fri, sat...) to windows (HH:MM-HH:MM); [] means no calls that day."},
        "state": {"type": "string", "enum": CAMPAIGN_STATES}, "dial_mode": {"type": "string", "enum": DIAL_MODES},
        "power_ratio": NS, "abandon_target": {"type": "string"}, "greeting_set": {"type": "boolean"},
        "retry_rules": {"type": "object", "additionalProperties": obj(
            {"delay_minutes": {"type": "integer"}, "max_attempts": {"type": "integer"}})},
        "trunk": NS, "created_at": TIME, "updated_at": NTIME,
        "leads": {"type": "object", "additionalProperties": {"type": "integer"},
                  "description": "Leads by status (on a single campaign's answers)."},
    }, required=["id", "name", "region", "caller_id", "hours", "state", "dial_mode", "power_ratio", "abandon_target",
                 "greeting_set", "retry_rules", "trunk", "created_at", "updated_at"]),
    "CampaignNew": obj({
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "region": REGION,
        "caller_id": {"type": ["string", "null"], "maxLength": 64, "description": "One of the account's numbers."},
        "hours": {"type": ["string", "null"], "maxLength": 500,
                  "description": "Narrow the legal window: 'mon-fri=09:00-17:00;sat=10:00-14:00;sun='."},
        "dial_mode": {"type": "string", "enum": DIAL_MODES, "default": "predictive"},
        "power_ratio": {**DECIMAL, "type": ["string", "number", "null"], "description": "Lines per free agent (power)."},
        "abandon_target": {**DECIMAL, "description": "At most 0.03 (3 %); default 0.03."},
        "retry": {"type": ["string", "null"], "maxLength": 500,
                  "description": "Recycling per outcome: 'busy=20m/5,no-answer=2h/4'."},
    }, required=["name"]),
    "CampaignPatch": obj({
        "caller_id": {"type": ["string", "null"], "maxLength": 64, "description": "A new caller ID; '' clears it."},
        "hours": {"type": ["string", "null"], "maxLength": 500, "description": "New hours; '' clears them."},
        "dial_mode": {"type": "string", "enum": DIAL_MODES},
        "power_ratio": {**DECIMAL, "type": ["string", "number", "null"]},
        "abandon_target": DECIMAL,
        "retry": {"type": ["string", "null"], "maxLength": 500},
    }, required=[]),
    "StateChange": obj({"reason": {"type": "string", "maxLength": 2000}}, required=[]),
    "StateResult": obj({"campaign": {"type": "string"}, "state": {"type": "string", "enum": CAMPAIGN_STATES},
                        "was": {"type": "string", "enum": CAMPAIGN_STATES}}),
    "UploadJob": obj({
        "token": {"type": "string"}, "file": {"type": "string"},
        "state": {"type": "string", "enum": ["queued", "importing", "done", "failed"]},
        "rows": {"type": "integer", "minimum": 0}, "fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "import_id": NI, "error": NS, "status_url": {"type": "string"}, "import_url": NS,
    }),
    "Import": obj({
        "import_id": ID, "campaign": {"type": "string"}, "file": {"type": "string"},
        "status": {"type": "string", "enum": ["running", "done", "failed", "cancelled", "interrupted"]},
        "reason": NS, "resumable": {"type": "boolean"}, "rows_done": {"type": "integer"},
        "imported": {"type": "integer"}, "rejected": {"type": "integer"}, "duplicates": {"type": "integer"},
        "started_at": TIME, "finished_at": NTIME,
    }, required=["import_id", "file", "status", "reason", "resumable", "rows_done", "imported", "rejected",
                 "duplicates", "started_at", "finished_at"], additional=True),
    "ImportList": obj({"items": {"type": "array", "items": REF("Import")}}),
    "ImportError": obj({"row": {"type": ["integer", "null"]}, "column": NS, "value": NS, "reason": {"type": "string"},
                        "kind": NS}),
    "ImportErrorPage": page("ImportError"),
    "Lead": obj({
        "id": ID, "campaign_id": ID, "campaign": {"type": "string"}, "import_id": NI, "row": NI,
        "phone": {"type": "string"}, "phone_raw": NS, "name": NS, "business": NS, "state": NS, "postal_code": NS,
        "zone": NS, "region": NS, "zones": {"type": "array", "items": {"type": "string"}}, "number_type": NS,
        "custom": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "The list's other columns, as given (text)."},
        "status": {"type": "string"}, "disposition": NS, "attempts": {"type": "integer"},
        "next_attempt_at": NTIME, "callback_at": NTIME, "callback_agent": NS, "last_attempt_at": NTIME,
        "created_at": TIME, "updated_at": NTIME,
        "events": {"type": "array", "items": obj({"at": TIME, "event": {"type": "string"},
                                                   "detail": {"type": ["object", "array", "string", "number",
                                                                       "boolean", "null"]}})},
    }, required=["id", "campaign_id", "campaign", "phone", "status", "attempts", "custom"]),
    "LeadPage": page("Lead"),
    "Outcome": obj({"outcome": {"type": "string", "enum": OUTCOMES},
                    "call_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 200,
                                "description": "The CDR of a call the dialer placed: it then counts as an attempt."}},
                   required=["outcome"]),
    "OutcomeResult": obj({"lead": ID, "status": {"type": "string"}, "disposition": NS, "attempts": {"type": "integer"},
                          "next_attempt_at": NS, "call_attempt": {"type": "boolean"}}),
    "CallbackNew": obj({
        "when": {"type": "string", "minLength": 1, "maxLength": 64,
                 "description": "A local date and time of the lead ('2026-03-09 10:00'), or an instant with its offset."},
        "zone": {"type": ["string", "null"], "maxLength": 64, "description": "IANA zone of `when` (default: the lead's)."},
        "agent": {"type": ["string", "null"], "maxLength": 80, "description": "Owning agent (default: campaign-wide)."},
    }, required=["when"]),
    "CallbackResult": obj({"lead": ID, "status": {"type": "string"}, "disposition": NS, "attempts": {"type": "integer"},
                           "next_attempt_at": NS, "callback_at": {"type": "string"},
                           "callback_local": {"type": "string"}}),
    "Callback": obj({"lead": ID, "campaign_id": ID, "campaign": {"type": "string"}, "phone": {"type": "string"},
                     "name": NS, "callback_at": TIME, "agent": NS}),
    "CallbackPage": page("Callback"),
    "DncAdd": obj({"numbers": NUMBERS, "region": REGION, "reason": {"type": "string", "maxLength": 2000},
                   "wide": {"type": "boolean", "default": False,
                            "description": "Confirm wildcards wider than an area code."}}, required=["numbers"]),
    "DncRemove": obj({"numbers": NUMBERS, "region": REGION,
                      "reason": {"type": "string", "minLength": 1, "maxLength": 2000,
                                 "description": "Why (required: kept in the audit log)."}},
                     required=["numbers", "reason"]),
    "DncCheck": obj({"numbers": NUMBERS, "region": REGION, "campaign_id": ID}, required=["numbers"]),
    "DncAdded": obj({"scope": {"type": "string"}, "added": {"type": "integer"}, "already": {"type": "integer"},
                     "entries": {"type": "array", "items": {"type": "string"}},
                     "wildcards": {"type": "array", "items": obj({"entry": {"type": "string"},
                                                                  "may_block": {"type": "integer"}})}}),
    "DncRemoved": obj({"scope": {"type": "string"}, "removed": {"type": "integer"},
                       "not_listed": {"type": "integer"}}),
    "Reason": obj({"rule": {"type": "string"}, "category": {"type": "string"}, "detail": {"type": "string"}}),
    "DncStatus": obj({"input": {"type": "string"}, "number": NS, "listed": {"type": "boolean"},
                      "reasons": {"type": "array", "items": REF("Reason")}, "error": NS}),
    "DncStatusList": obj({"items": {"type": "array", "items": REF("DncStatus")}}),
    "DncEntry": obj({"entry": {"type": "string"}, "added_at": TIME, "added_by": {"type": "string"},
                     "reason": {"type": "string"}}),
    "DncList": obj({"scope": {"type": "string"}, "total": {"type": "integer"},
                    "items": {"type": "array", "items": REF("DncEntry")}, "next_cursor": NS}),
    "Check": obj({"numbers": NUMBERS, "at": {"type": "string", "maxLength": 64,
                                             "description": "The instant to judge (ISO 8601; naive = UTC). "
                                                            "Default: now."},
                  "region": REGION, "campaign_id": ID}, required=["numbers"]),
    "Verdict": obj({
        "input": {"type": "string"}, "number": NS, "allowed": {"type": "boolean"},
        "reasons": {"type": "array", "items": REF("Reason"), "description": "Every rule that blocks the call."},
        "flags": {"type": "array", "items": REF("Reason")}, "groups": {"type": "array", "items": {"type": "string"}},
        "zones": {"type": "array", "items": {"type": "string"}},
        "window": {"type": "array", "items": obj({"zone": {"type": "string"}, "local": {"type": "string"},
                                                   "windows": {"type": "array", "items": {"type": "string"}},
                                                   "rules": {"type": "array", "items": {"type": "string"}}})},
        "ruleset": {"type": ["string", "null"], "description": "The rule-set version that decided, e.g. US@3."},
        "at": {"type": "string"},
    }),
    "VerdictList": obj({"items": {"type": "array", "items": REF("Verdict")}}),
    "Cdr": obj({
        "call_id": {"type": "string"}, "campaign_id": NI, "campaign": NS, "lead_id": NI, "agent_id": NI,
        "trunk": NS, "caller_id": NS, "destination": {"type": "string"}, "started_at": TIME, "answered_at": NTIME,
        "bridged_at": NTIME, "ended_at": NTIME, "duration_ms": NI, "ring_ms": NI, "billable_ms": NI, "billsec": NI,
        "connect_delay_ms": NI, "disposition": NS, "abandoned": {"type": "boolean"}, "opted_out": {"type": "boolean"},
        "agent_disposition": NS, "lead_outcome": NS, "sip_code": NI, "sip_reason": NS, "hangup_cause": NS,
        "hangup_by": NS, "recording": {"type": "boolean"}, "ruleset": NS,
    }, required=["call_id", "destination", "started_at", "disposition"], additional=True),
    "CdrPage": page("Cdr"),
}


# ------------------------------------------------------------------------------ checking

_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
_TYPE_WORDS = {"string": "a string", "integer": "a whole number", "number": "a number", "boolean": "true or false",
               "array": "a list", "object": "an object", "null": "null"}


def _label(where):
    return where or "the body"


def check(schema, value, where=""):
    """Check ``value`` against ``schema`` (the subset of JSON Schema the schemas above
    use: $ref, type, enum, string lengths and pattern, number bounds, arrays, objects
    with properties, required and additionalProperties). None when it fits, else
    (field, message) for the first thing wrong, the message naming the field."""
    if "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        kind = next((t for t in types if _TYPES[t](value)), None)
        if kind is None:
            if "number" in types and isinstance(value, float):
                return where, f"{_label(where)}: must be a finite number"
            return where, f"{_label(where)}: must be {' or '.join(_TYPE_WORDS[t] for t in types)}"
    else:
        kind = next((t for t, f in _TYPES.items() if f(value)), None)
    if "enum" in schema and value not in schema["enum"]:
        return where, f"{_label(where)}: must be one of {', '.join(map(str, schema['enum']))}"
    if kind == "string":
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where, f"{_label(where)}: not valid Unicode text (a lone surrogate)"
        if len(value) < schema.get("minLength", 0):
            return where, f"{_label(where)}: must not be empty" if schema["minLength"] == 1 else \
                f"{_label(where)}: at least {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return where, f"{_label(where)}: at most {schema['maxLength']} characters"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return where, f"{_label(where)}: must match {schema['pattern']}"
    elif kind in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            return where, f"{_label(where)}: at least {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return where, f"{_label(where)}: at most {schema['maximum']}"
    elif kind == "array":
        if len(value) < schema.get("minItems", 0):
            return where, f"{_label(where)}: at least {schema['minItems']} item(s)"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return where, f"{_label(where)}: at most {schema['maxItems']} items"
        if "items" in schema:
            for i, item in enumerate(value):
                err = check(schema["items"], item, f"{where}[{i}]")
                if err:
                    return err
    elif kind == "object":
        props = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                return _join(where, name), f"{_join(where, name)}: required"
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            field = _join(where, name)
            if name in props:
                err = check(props[name], item, field)
            elif extra is False:
                return field, f"{field[:100]}: unknown field (the fields are: {', '.join(props)})"
            elif isinstance(extra, dict):
                err = check(extra, item, field)
            else:
                err = None
            if err:
                return err
    return None


def _join(where, name):
    return f"{where}.{name}" if where else str(name)


# ------------------------------------------------------------------------------ the document

def _error_response(status):
    out = {"description": ERROR_TEXT.get(status, ERROR_CODES.get(status, "error")),
           "content": {"application/json": {"schema": REF("Error")}}}
    if status == 429:
        out["headers"] = {"Retry-After": {"required": True, "description": "Seconds to wait.",
                                          "schema": {"type": "integer", "minimum": 1}}}
    if status == 401:
        out["headers"] = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
    return out


def document(operations, path_params):
    """The OpenAPI 3.1 document of ``operations`` (``web.api.endpoint`` declarations)."""
    paths = {}
    for op in operations:
        params = []
        for name in op["path_params"]:
            schema, text = path_params[name]
            params.append({"name": name, "in": "path", "required": True, "description": text,
                           "schema": copy.deepcopy(schema)})
        for q in op["params"]:
            params.append({"name": q.name, "in": "query", "required": q.required, "description": q.description,
                           "schema": copy.deepcopy(q.schema)})
        status, schema_name, media = op["ok"]
        ok = {"description": op["summary"]}
        if op["links"]:
            ok["links"] = {name: {"operationId": target, "parameters": dict(params_)}
                           for name, (target, params_) in op["links"].items()}
        if status == 201:
            ok["headers"] = {"Location": {"required": True, "description": "The new object's path.",
                                          "schema": {"type": "string"}}}
        if schema_name is not None:
            ok["content"] = {media or "application/json": {"schema": REF(schema_name)}}
        elif media:
            ok["content"] = {media: {"schema": {"type": "string"}}}
        codes = {401, 403, 429} | set(op["errors"])
        if params or op["body"] is not None:
            codes.add(400)
        body_props = SCHEMAS.get(op["body"], {}).get("properties", {}) if op["body"] != "binary" else {}
        if op["path_params"] or any(q.name.endswith("_id") for q in op["params"]) \
                or any(n.endswith("_id") for n in body_props):
            codes.add(404)  # an id of something of the account: another account's, or none, answers 404
        if op["body"] is not None:
            codes |= {413, 415} if op["body"] != "binary" else {413}
        responses = {str(status): ok}
        responses.update({str(c): _error_response(c) for c in sorted(codes)})
        item = {"operationId": op["operation_id"], "summary": op["summary"], "tags": [op["tag"]],
                "description": op["description"] + (f"\n\nPermission: `{op['permission']}`." if op["permission"]
                                                    else ""),
                "responses": responses}
        if params:
            item["parameters"] = params
        if op["body"] == "binary":
            item["requestBody"] = {
                "required": True, "description": "The file itself: CSV (text/csv) or XLSX (application/octet-stream, "
                                                 "or any type: the reader goes by the content and the name).",
                "content": {t: {"schema": {"type": "string", "format": "binary"}}
                            for t in ("text/csv", "application/octet-stream")}}
        elif op["body"] is not None:
            item["requestBody"] = {"required": op["body_required"],
                                   "content": {"application/json": {"schema": REF(op["body"])}}}
        paths.setdefault(op["path"], {})[op["method"].lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dialer JSON API", "version": "1",
            "description": (
                "The JSON API of one account of the dialer, for integrations such as a CRM. Every request carries "
                "an API token of the account (`Authorization: Bearer dk_...`; owners make them on the tokens page "
                "or with `dialer account token create`), scoped to one role. The browser's session cookie is not "
                "accepted here (so no CSRF token is needed). Errors are JSON: `{\"error\": {\"code\", \"message\""
                "[, \"field\"]}}`, one stable code per kind. Lists are paged with `limit` (at most 1000) and the "
                "opaque `cursor` of the previous page's `next_cursor`. Times are UTC, ISO 8601."),
            "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "dk_<id>_<secret>"}},
            "schemas": copy.deepcopy(SCHEMAS),
        },
    }
