"""The command drivers: one module per `domainft` command, each a short setup -> run -> finish.

They turn a validated config into runs and outputs; the work itself is below them (planning, tasks,
distributed for everything on Ray, data, core, engine, export). Heavy layers are imported inside the
functions, so that `domainft validate` and `plan` stay light.
"""
