"""The JSON API against its own OpenAPI 3.1 document: the document is valid (the
OpenAPI 3.1 meta-schema, every schema a valid JSON Schema, every route documented and
every documented operation routed), then schemathesis's property-based run (its
examples, coverage and fuzzing phases, then its stateful phase along the document's
links; every check it has) against a live ``dialer web`` on a loopback port, with an
owner's token so every operation is reachable.

Bounded: a few examples per operation and phase (``ST_MAX_EXAMPLES``, default 8) from
a fixed seed (``ST_SEED``), so the whole file takes about a minute or two on the 2-core
machine; a larger count or another seed explores further.

One expectation is widened, on purpose: ``positive_data_acceptance`` also accepts 400,
because a value can fit the schema and still be refused by the library with a message
(a string that is no phone number, a campaign name already taken, a local time that
does not exist): the schema cannot say everything the library checks. Everything
else is schemathesis's default."""

import json
import os

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extras (pip install -e '.[test]')")
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.specs.openapi.definitions import OPENAPI_31  # noqa: E402

import jsonschema_rs  # noqa: E402 (schemathesis's own JSON Schema validator)

from campaigns.leads import import_list  # noqa: E402
from campaigns.tokens import create_token  # noqa: E402
from core.store import Store  # noqa: E402
from web.api import OPERATIONS, document  # noqa: E402

from web_harness import NOW, Client, Server, seed  # noqa: E402

MAX_EXAMPLES = int(os.environ.get("ST_MAX_EXAMPLES", "8"))
SEED = int(os.environ.get("ST_SEED", "20261124"))  # another seed explores other requests


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    d = tmp_path_factory.mktemp("st")
    db = d / "dialer.db"
    ids = seed(db)
    s = Store(db)
    try:
        token = create_token(s, "acme", "schemathesis", "owner", NOW, "test")["token"]
        f = d / "l.csv"
        f.write_text("phone,name\n2125550101,Ann\n2125550102,Bo\nbad,Cy\n", encoding="utf-8")
        import_list(s, str(f), ids["spring"], NOW, "test", account="acme")
    finally:
        s.close()
    old = os.environ.get("DIALER_API_RATE")
    os.environ["DIALER_API_RATE"] = "100000/100000"  # the run is many requests a second from one token
    try:
        server = Server(db)
    finally:
        if old is None:
            os.environ.pop("DIALER_API_RATE")
        else:
            os.environ["DIALER_API_RATE"] = old
    server.token = token
    yield server
    server.stop()


# The document is built in Python (web.api.document), so the schema is loaded from it at
# collection; the live server's URL and token are given to each call. (schemathesis's
# lazy ``from_fixture`` loader does not run under pytest 9.)
schema = schemathesis.openapi.from_dict(json.loads(json.dumps(document())), config=SchemathesisConfig.from_dict({
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES},
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429"]}},
    "request-timeout": 30,
}))


def test_the_document_is_valid_openapi_3_1(live):
    doc = Client(live).get("/api/openapi.json").json()
    assert doc == json.loads(json.dumps(document()))  # served as built
    assert doc["openapi"] == "3.1.0"
    errors = [e.message for e in jsonschema_rs.Draft202012Validator(OPENAPI_31).iter_errors(doc)]
    assert errors == []
    for name, sch in doc["components"]["schemas"].items():
        jsonschema_rs.meta.validate(sch)  # each a valid JSON Schema (2020-12)
    # every declared operation is in the document, with its errors and the bearer scheme
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops == {(o["method"], o["path"]) for o in OPERATIONS}
    assert doc["security"] == [{"bearerAuth": []}]
    for p, item in doc["paths"].items():
        for m, op in item.items():
            assert {"401", "403", "429"} <= set(op["responses"]), (m, p)
            for code, resp in op["responses"].items():
                if code[0] in "45":
                    assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


@schema.parametrize()
def test_the_api_conforms_to_its_document(case, live):
    case.call_and_validate(base_url=live.url, headers={"Authorization": f"Bearer {live.token}"})


def test_sequences_of_calls_follow_the_documents_links(live, tmp_path):
    """schemathesis's stateful phase: chains of calls along the document's links (a
    campaign created, then read, edited, started, given a list and DNC entries; a listed
    lead's outcome and callback; an import's error rows...), every check on every
    answer. Run by schemathesis's own engine (its CLI, installed with it): hypothesis's
    rule-based machine, driven from a test function, refuses a run whose choices depend
    on the server's answers ("inconsistent data generation"), which a stateful run's do."""
    import shutil
    import subprocess
    import sys
    exe = shutil.which("schemathesis", path=os.path.dirname(sys.executable)) or shutil.which("schemathesis")
    assert exe, "schemathesis's command is installed with the package"
    config = tmp_path / "schemathesis.toml"
    config.write_text('[checks.positive_data_acceptance]\n'
                      'expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]\n')
    r = subprocess.run([exe, "--config-file", str(config), "--no-color", "run", f"{live.url}/api/openapi.json",
                        "--phases", "stateful", "--checks", "all", "--max-examples", str(MAX_EXAMPLES * 3),
                        "--seed", str(SEED), "-H", f"Authorization: Bearer {live.token}"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its cache folder there
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "Stateful" in r.stdout and "No issues found" in r.stdout, r.stdout[-3000:]
