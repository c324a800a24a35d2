"""The HTTP/2 layer's one exception, shared by both twins of ``h2`` so one ``except`` catches either."""


class H2Error(Exception):
    """The peer broke the protocol; a GOAWAY with ``code`` is queued."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
