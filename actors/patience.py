"""How long an actor waits on a silent learner, and what it says while it waits. No sockets here.

A learner can fall silent in two ways that look alike from an actor:
- it is gone: its process ended, nothing listens on its address any more, and a new TCP connection
  there is refused (``common/transport.py`` ``learner_listening``);
- it is paused (SIGSTOP, a debugger, a swapping machine) or the network between the two is cut:
  its kernel still accepts connections, or a connection attempt times out, and nothing arrives.

A gone learner is given ``actor_timeout_s``. A silent one whose address still listens is given
``learner_pause_s`` (an hour by default), so that a pause or a partition does not end a run's actors
for good: when the learner is heard again, the actor goes on where it stopped. One actor per machine
(``speaks``) says so once a minute while it waits.
"""

from __future__ import annotations

from dataclasses import dataclass

REPORT_EVERY_S = 60.0


@dataclass
class Patience:
    """The waiting rule of one actor: ``timeout_s`` (actor_timeout_s) for a learner that no longer
    listens, ``pause_s`` (learner_pause_s, at least ``timeout_s``) for one that still does."""

    timeout_s: float
    pause_s: float
    speaks: bool = False
    report_every_s: float = REPORT_EVERY_S
    _next_report: float | None = None  # silence (s) at which the next waiting line is due; None: none said

    def give_up(self, silent_s: float, linked: bool) -> str | None:
        """Why to stop after ``silent_s`` seconds with no message from the learner, ``linked``: whether
        its address still listens; None to go on waiting."""
        if silent_s <= self.timeout_s:
            return None
        if not linked:
            return (
                f"no message from the learner for {silent_s:.0f} s and nothing listens at its address "
                "(actor_timeout_s); giving up"
            )
        if silent_s > max(self.pause_s, self.timeout_s):
            return (
                f"no message from the learner for {silent_s:.0f} s, its address still listening "
                "(learner_pause_s); giving up"
            )
        return None

    def report(self, silent_s: float, linked: bool) -> str | None:
        """The line to print now, if any: the first once the silence passes ``timeout_s`` on an open
        address (``linked``: it still listens), then one every ``report_every_s``; and one when the learner is heard
        again (``silent_s`` back under ``timeout_s``) after a line was said."""
        if silent_s <= self.timeout_s:
            if self._next_report is None:
                return None
            self._next_report = None
            return "the learner is heard again; going on"
        if not self.speaks or not linked:
            return None
        if self._next_report is None:
            self._next_report = self.timeout_s
        if silent_s < self._next_report:
            return None
        self._next_report = silent_s + self.report_every_s
        return (
            f"the learner has been silent for {silent_s / 60:.1f} min, its address still listening (paused, "
            f"or the network cut?); this machine's actors wait up to {self.pause_s / 60:.0f} min (learner_pause_s)"
        )
