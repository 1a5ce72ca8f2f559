"""List uploads from the browser: the file lands beside the database, then the import
(``campaigns.leads.import_list``, the function behind ``dialer list import``) runs on
the web's import thread; its progress is published to the account's ``imports`` topic
of the live channel (``web.live``) as it goes, and the page polls it when its socket is
down.

A job is known to this process only (memory), by a random token, and only to the
account that started it: another account's token answers as unknown."""

import dataclasses
import re
import secrets
import shutil
import tempfile
import threading

from twisted.logger import Logger

from campaigns.leads import import_list
from core.errors import DialerError

log = Logger(namespace="web.uploads")

MAX_NAME = 120
KEEP_JOBS = 200
# rows per committed chunk: progress is reported per chunk, and each chunk is one write
# transaction, kept short beside a running dialer (the CLI's default is 50 000)
CHUNK = 5000  # finished jobs remembered (their result stays readable from the store)


def safe_name(name):
    """A file name for the copy: the base name, printable, short; its extension kept
    (the reader goes by content and extension)."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = re.sub(r"[^\w.() -]", "_", base).strip(" .") or "list.csv"
    return base[-MAX_NAME:]


@dataclasses.dataclass
class Job:
    token: str
    account_id: int
    campaign_id: int
    file: str
    state: str = "queued"  # queued, importing, done, failed
    rows: int = 0
    fraction: float = 0.0
    import_id: int = None
    result: dict = None
    error: str = None

    def as_dict(self):
        return {"token": self.token, "file": self.file, "state": self.state, "rows": self.rows,
                "fraction": round(self.fraction, 4), "import_id": self.import_id, "error": self.error}

    def message(self):
        """What the live channel's ``imports`` topic carries: the job, its campaign and,
        once there is one, its import's page."""
        out = {**self.as_dict(), "type": "import.progress", "campaign": self.campaign_id}
        if self.import_id is not None:
            out["import_url"] = f"/campaigns/{self.campaign_id}/imports/{self.import_id}"
        return out


class Uploads:
    def __init__(self, stores, hub=None):
        self.stores, self.hub = stores, hub
        self.jobs = {}
        self._lock = threading.Lock()

    def get(self, token, account_id, campaign_id):
        job = self.jobs.get(token)
        if job is None or job.account_id != account_id or job.campaign_id != campaign_id:
            return None
        return job

    async def start(self, body, name, account_id, campaign_id, now, actor, mapping=None, dedupe="campaign",
                    region="US"):
        """Save the uploaded body (a file object), then start its import; returns the Job
        as soon as the file is saved."""
        job = Job(secrets.token_urlsafe(16), account_id, campaign_id, safe_name(name))
        folder = await self.stores.read(_save, body, job.file)
        with self._lock:
            self.jobs[job.token] = job
            done = [t for t, j in self.jobs.items() if j.state in ("done", "failed")]
            for t in done[:max(0, len(done) - KEEP_JOBS)]:
                del self.jobs[t]
        self._publish(job)
        d = self.stores.long(_run, job, folder, now, actor, mapping, dedupe, region, self._publish_from_thread)
        d.addErrback(lambda f: log.failure("list import {token} stopped", f, token=job.token))
        d.addBoth(lambda _: self._publish(job))
        return job

    def _publish(self, job):
        """On the reactor: the job's state to its account's ``imports`` topic."""
        if self.hub is not None:
            self.hub.publish(job.account_id, "imports", job.message())

    def _publish_from_thread(self, job):
        if self.hub is not None:
            self.hub.reactor.callFromThread(self._publish, job)


def _save(store, body, name):
    """On a reader thread: copy the request's body to a folder beside the database."""
    base = store.files_dir / "uploads"
    base.mkdir(exist_ok=True)
    folder = tempfile.mkdtemp(dir=base)
    body.seek(0)
    with open(f"{folder}/{name}", "wb") as out:
        shutil.copyfileobj(body, out, 1 << 20)
    return folder


def _run(store, job, folder, now, actor, mapping, dedupe, region, published=None):
    """On the import thread: the import, its progress in the job (and ``published(job)``
    at each step: the live channel's message)."""
    def progress(rows, fraction):
        job.rows, job.fraction = rows, fraction
        if published is not None:
            published(job)

    job.state = "importing"
    if published is not None:
        published(job)
    try:
        out = import_list(store, f"{folder}/{job.file}", job.campaign_id, now, actor, mapping=mapping or None,
                          region=region, dedupe=dedupe, progress=progress, account=job.account_id, chunk=CHUNK)
    except DialerError as e:
        job.error, job.state = str(e), "failed"
        m = re.search(r"\bimport (\d+)\b", str(e))
        job.import_id = int(m.group(1)) if m else None
    except Exception as e:  # a bug, not the user's file: say so, keep the server going
        job.error, job.state = f"the import stopped on an internal error ({type(e).__name__})", "failed"
        raise
    else:
        job.result, job.import_id, job.rows, job.fraction = out, out["import_id"], out["rows"], 1.0
        job.state = "done"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
