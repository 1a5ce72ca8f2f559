"""Minute billing (issue 13): rating, rate decks, the ledger, balances, invoices, standing.

Its layer sits between ``campaigns`` and ``dialer`` (``.importlinter``): it reads
the dialer's ``cdrs`` table through the store, never the ``dialer`` package.

* ``money``: Decimal at the edges, integer micro-units ($0.000001) in storage.
* ``rating``: what one call costs; the rounding rule (stated there, once).
* ``plans``: an account's service price, increment scheme, time zone and floor.
* ``decks``: telecom rate decks from CSV, all-or-nothing, and the prefix index.
* ``calls``: CDRs (stored, or a what-if CSV) checked and rated in batches.
* ``ledger``: charges, payments, credits, interest, reversals; the balance; bill
  runs and rerates.
* ``service``: what-if rating of a CDR file (nothing stored).
* ``live``: a call rated into the ledger when its CDR is written, and what the
  dialer's balance guard (``dialer.credit``) reads.
* ``reports``: the high-cost destination report of a billing cycle.

* ``invoices``: the period's invoice (fees and users prorated by day, service,
  telecom per destination, interest), draft then issued once; prepayments; exports.
* ``standing``: the account's standing (pending, active, notice, suspended, closed),
  who may dial, closing, number port-out and release.

The records export is ``dialer.export`` (it reads the dialer's formats).

See docs/billing.md.
"""
