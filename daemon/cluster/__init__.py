"""Several daemons on one PostgreSQL store (SPEC section 16): who this daemon is, how often it
beats, and the loop that takes over the calls of dead daemons. The engine knows nothing of it: it
is handed calls through :meth:`daemon.engine.calls.CallEngine.adopt` and lets go of them through
:meth:`~daemon.engine.calls.CallEngine.release`."""
