"""A supervised app: a session starts local, is watched, and moves to the bridge
when a program first needs it — the same Context and subscription throughout.

Run: python examples/supervised_app.py
"""

from dspex_actors import Supervisor, ValidationError


with Supervisor.start() as supervisor:  # stops the sessions and the bridge on exit
    ctx = supervisor.start_context()
    ctx.register_variable("temperature", "float", 0.7, constraints={"min": 0.0, "max": 2.0})
    ctx.register_variable(
        "style", "choice", "concise", constraints={"choices": ["concise", "detailed"]}
    )
    print("backend:", ctx.backend_info()["type"])

    events = []  # the subscriber runs in a thread of its own: it only collects here
    with ctx.subscribe("temp*", events.append):  # left once its events were delivered
        ctx.set_variable("temperature", 0.9)
        ctx.register_program("qa", {"type": "dspy"})  # needs the bridge: migrates now
        print("backend:", ctx.backend_info()["type"])
        ctx.set_variable("temperature", 1.2)  # the same subscription sees it
        try:
            ctx.set_variable("temperature", 3.5)
        except ValidationError as exc:
            print("refused:", exc)

    for event in events:
        print(f"event: {event.kind} {event.name} = {event.value} (version {event.version})")
    print("temperature:", ctx.get_variable("temperature"))
    print("style:", ctx.get_variable("style"))
