"""The base of every error a user can act on (a setting, a file, a dataset, a run that diverged): its message is one
line naming the thing and what was expected, and the commands print it as `error: <message>` and exit 1."""


class UserError(Exception):
    pass
