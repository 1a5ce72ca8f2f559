"""Who owns what: accounts, their own numbers, and finding a campaign within one.

Accounts are the boundary: every tenant row belongs to one, and every look-up of a
tenant's data is scoped by one. :func:`resolve_account` is the one place an account
is found from what a user typed (a name, an id, or nothing while the installation
has exactly one account); :func:`campaign_row` finds a campaign by id, or by name
within an account. Every layer (rules, campaigns, the dialer) looks them up here."""

from .errors import InputError, NotFound


def resolve_account(store, account=None):
    """The account row meant by ``account``: a name, an id (int), an account row, or
    None, which is the installation's only account. Raises NotFound for an unknown
    account and InputError when None is ambiguous (no account, or several)."""
    if isinstance(account, dict):
        account = account["id"]
    if isinstance(account, int) and not isinstance(account, bool):
        row = store.query_one("SELECT * FROM accounts WHERE id = ?", (account,))
        if row is None:
            raise NotFound(f"no account with id {account}")
        return row
    if account is not None and str(account).strip():
        return get_account(store, str(account).strip())
    rows = store.query("SELECT * FROM accounts ORDER BY name LIMIT 6")
    if len(rows) == 1:
        return rows[0]
    if not rows:
        raise InputError("no account yet: create one with: dialer account create NAME")
    names = ", ".join(r["name"] for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    raise InputError(f"this installation has several accounts ({names}): say which with --account NAME")


def get_account(store, name):
    """An account by name (or id, an int); NotFound otherwise."""
    if isinstance(name, int) and not isinstance(name, bool):
        return resolve_account(store, name)
    row = store.query_one("SELECT * FROM accounts WHERE name = ?", (name,))
    if row is None:
        raise NotFound(f"no account named {name!r} (create it with: dialer account create NAME)")
    return row


def account_numbers(store, account_id):
    return frozenset(r["number"] for r in store.query(
        "SELECT number FROM account_numbers WHERE account_id = ?", (account_id,)))


def campaign_row(store, name_or_id, account=None):
    """A campaign row, as stored. ``name_or_id``: its id (an int:
    what the live dialer passes), a campaign row, or its name: within ``account``
    (name or id) when given, else across the installation, which works while the name
    is unique (InputError naming the accounts otherwise)."""
    key = name_or_id
    if isinstance(key, dict):
        key = key["id"]
    acc = resolve_account(store, account) if account is not None else None
    if isinstance(key, int) and not isinstance(key, bool):
        row = store.query_one("SELECT * FROM campaigns WHERE id = ?", (key,))
        if row is None or (acc is not None and row["account_id"] != acc["id"]):
            raise NotFound(f"no campaign with id {key}" + (f" in account {acc['name']!r}" if acc else ""))
        return row
    name = str(key if key is not None else "").strip()
    if not name:
        raise InputError("campaign name is empty")
    if acc is not None:
        row = store.query_one("SELECT * FROM campaigns WHERE account_id = ? AND name = ?", (acc["id"], name))
        if row is None:
            raise NotFound(f"no campaign named {name!r} in account {acc['name']!r}")
        return row
    rows = store.query("SELECT c.*, a.name AS account_name FROM campaigns c JOIN accounts a ON a.id = c.account_id "
                       "WHERE c.name = ? ORDER BY a.name", (name,))
    if not rows:
        raise NotFound(f"no campaign named {name!r}")
    if len(rows) > 1:
        raise InputError(f"campaign {name!r} exists in several accounts "
                         f"({', '.join(r['account_name'] for r in rows)}): say which with --account NAME")
    row = rows[0]
    row.pop("account_name")
    return row
