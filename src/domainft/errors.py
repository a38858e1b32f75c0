"""Errors a user can act on: bad input found after config validation (a bad record, a missing column)."""


class UserError(Exception):
    """One clear message naming the file, line or key; the CLI prints it and exits with 2."""


class BadRecordError(UserError):
    """A record that cannot be used, with where it came from."""

    def __init__(self, source: str, where: str, reason: str, detail: str = ""):
        self.source, self.where, self.reason, self.detail = source, where, reason, detail
        extra = f": {detail}" if detail else ""
        super().__init__(f"{source}, {where}: {reason}{extra} (set data.on_bad_record: skip to write such rows "
                         f"to rejects.jsonl instead)")
