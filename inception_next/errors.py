"""The base of every error a user can act on (a setting, a file, a dataset, a run that diverged): its message is one
line naming the thing and what was expected, and the commands print it as `error: <message>` and exit 1."""


class UserError(Exception):
    pass


def own_message(error):
    """An error's message; one raised in a loader worker comes back wrapped in the worker's traceback, whose last line
    holds it, after the error's name."""
    text = str(error).strip()
    if "Original Traceback" not in text:
        return text
    return text.splitlines()[-1].split(": ", 1)[-1]
