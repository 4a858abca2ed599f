"""Two processes share one session through a SessionStore server with a token: this
one creates the session and writes; the reader it starts attaches with a cached,
subscribed handle and prints what it sees.

Run a server, tell both processes where it is, then run this file:

    dspex-actors serve --listen 127.0.0.1:50051 --token s3cret &
    export DSPEX_BRIDGE_ADDRESS=127.0.0.1:50051 DSPEX_BRIDGE_TOKEN=s3cret
    python examples/shared_session.py

The address and the token come from those environment variables (never a command
line, where other users could read the token).
"""

import subprocess
import sys
import threading

from dspex_actors import BridgedState

VALUES = [0.2, 0.4, 0.6, 0.8, 1.0]


def reader(session_id):
    """The second process: attach (the session must exist), read from the cache,
    and print each change until the last value arrives."""
    done = threading.Event()

    def changed(event):
        print(f"reader: temperature = {event.value} (version {event.version})", flush=True)
        if event.value == VALUES[-1]:
            done.set()

    with BridgedState.init(session_id=session_id, create=False, cache=True) as state:
        with state.subscribe("temperature", changed):
            print(f"reader: attached, cached={state.cached}", flush=True)
            print("ready", flush=True)
            if not done.wait(timeout=30):
                sys.exit("reader: the last value never came")
        # The copy follows a stream of its own; sync_cache() waits until it holds
        # every write the server had made, then reads need no round trip.
        state.sync_cache()
        print("reader: cached read", state.get_variable("temperature"), flush=True)


def writer():
    """The first process: create the session, start the reader, write."""
    with BridgedState.init() as state:  # creates a session, owned by this handle
        state.register_variable("temperature", "float", 0.0, constraints={"min": 0, "max": 2})
        child = subprocess.Popen(
            [sys.executable, __file__, "reader", state.session_id],
            stdout=subprocess.PIPE,
            text=True,
        )
        for line in child.stdout:
            if line.strip() == "ready":
                break
            print(line, end="")
        for value in VALUES:
            state.set_variable("temperature", value)
        for line in child.stdout:
            print(line, end="")
        print("writer: reader exited with", child.wait())


if __name__ == "__main__":
    if sys.argv[1:2] == ["reader"]:
        reader(sys.argv[2])
    else:
        writer()
