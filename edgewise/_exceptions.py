"""The root of every error edgewise raises.

EdgewiseError
 ├─ ScoringError (edgewise.runtime.scoring)   protocol-visible inference errors, with a status
 └─ WorkspaceError (edgewise.cloud)           workspace service errors, with an HTTP status and a code
"""


class EdgewiseError(Exception):
    """Base class: catch this to handle any failure edgewise reports."""
