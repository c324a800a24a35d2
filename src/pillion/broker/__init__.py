"""The embedded MQTT broker (3.1.1 and 5.0).

``packets`` (packet shapes), ``codec`` and ``topics`` (facades over the compiled twins),
``session`` (one connection, sans-IO), ``broker`` (the core: client states, routing,
retained messages, wills), ``protocol`` (the asyncio adapter) and ``server``
(``serve(host, port)``, used by ``pillion broker``). State is in memory only so far.
"""
