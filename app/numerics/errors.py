"""The one exception the numerics raise for an input they cannot give a finite answer for."""


class InvalidProblem(ValueError):
    """An input with no finite answer; `location` names the offending field and position."""

    def __init__(self, location: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.location = location
        self.message = message
