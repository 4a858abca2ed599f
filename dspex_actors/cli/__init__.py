"""The client commands of ``dspex-actors``: a session read, written and watched from a shell.

``get``, ``set``, ``list``, ``watch``, ``export``, ``import``, ``info`` and ``ping``
run against a SessionStore (``--address``, or ``$DSPEX_BRIDGE_ADDRESS``) or a Redis
(``--redis``, or ``$DSPEX_REDIS_URL``), through the same public handles a program
uses (``BridgedState``, ``RedisState``), so a command raises and means what a
method does. The layers, one module each:

* ``parser.py``: the commands' arguments, added beside ``serve`` and ``demo``;
* ``target.py``: where a command goes, and the handle it opens there;
* ``values.py``: a value typed on the command line, read as the variable needs it;
* ``render.py``: what a command prints, for people and (``--json``) for programs;
* ``commands.py``, ``watching.py``, ``transfer.py``, ``ping.py``: the commands;
* ``exits.py``: the one table from an error to the exit status a script tests.

Nothing here is imported by the library: the package loads it only for the
command line.
"""
