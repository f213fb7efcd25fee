"""The review console: a web page where a reviewer works the audit's cases.

app.py      create_console_app: pages, pictures, JSON routes and the security headers
actions.py  the POST routes: block, unblock, dismiss, reopen, note, review, revoke a key
accounts_page.py  find an account; its keys, limits, block state, usage and cases
auth.py     sessions from the cookie, roles, CSRF-checked url-encoded forms
cases.py    the queue, one case's evidence, and the actions as single transactions
store.py    reviewers (hashed tokens), sessions, the append-only audit trail
figures.py  a case's pictures: features against benign percentiles, activity by hour and day
views.py    pages from templates/, and the pictures kept a while
"""
