"""Worker processes (SPEC 16): `voicecall daemon run --workers N` on one machine.

A parent process (:mod:`daemon.workers.parent`) claims the RPC socket and the webhook port once
and runs N worker daemons on a shared PostgreSQL store; each worker is a whole daemon of the
cluster (its own id, its own private port for forwarded webhooks and media), so the cluster rules
make the N of them behave as one daemon.
"""
