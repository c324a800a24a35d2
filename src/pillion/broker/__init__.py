"""The embedded MQTT broker (3.1.1 and 5.0): packets and codec so far, sessions later."""
