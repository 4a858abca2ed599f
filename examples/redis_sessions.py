"""Two processes on one session kept in Redis (no server of ours): this one creates
the session and writes, the process it starts attaches and follows the changes.

Run a Redis (any 6.2 or later), then this file:

    redis-server --port 6379 &
    export DSPEX_REDIS_URL=redis://127.0.0.1:6379/0
    python examples/redis_sessions.py
"""

import subprocess
import sys
import threading

from dspex_actors import RedisState


def follower(session_id):
    """The second process: attach, print each change until the writer is done."""
    done = threading.Event()

    def changed(event):
        print(f"follower: {event.name} = {event.value} (version {event.version})", flush=True)
        if event.name == "max_tokens" and event.value == 1024:
            done.set()

    with RedisState.init(session_id=session_id, create=False) as state:
        with state.subscribe(None, changed):
            print("ready", flush=True)
            if not done.wait(timeout=30):
                sys.exit("follower: the last change never came")
        print("follower: temperature is", state.get_variable("temperature"), flush=True)


def writer():
    """The first process: create the session (it expires an hour after its last use),
    start the follower, and change two variables, one in a batch."""
    with RedisState.init(ttl=3600) as state:
        state.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
        state.register_variable("max_tokens", "integer", 256, constraints={"min": 1})
        child = subprocess.Popen(
            [sys.executable, __file__, "follower", state.session_id],
            stdout=subprocess.PIPE,
            text=True,
        )
        for line in child.stdout:
            if line.strip() == "ready":
                break
            print(line, end="")
        state.set_variable("temperature", 0.3)
        state.update_variables({"temperature": 0.5, "max_tokens": 1024})  # all or nothing
        for line in child.stdout:
            print(line, end="")
        print("writer: follower exited with", child.wait())


if __name__ == "__main__":
    if sys.argv[1:2] == ["follower"]:
        follower(sys.argv[2])
    else:
        writer()
