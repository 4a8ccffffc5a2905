"""The live feed counts every message but decodes only the newest of each topic."""

from streamflow import topics
from streamflow.live.feed import NEWEST, Feed


class Msg:
    decoded = 0

    def __init__(self, topic: str, n: int) -> None:
        self._topic, self.n = topic, n

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        Msg.decoded += 1
        return b'{"n": %d}' % self.n

    def headers(self):
        return []

    def timestamp(self):
        return (1, 1_700_000_000_000)


def test_a_burst_is_counted_whole_and_only_its_newest_messages_are_read():
    feed = Feed()
    Msg.decoded = 0
    feed.add_batch([Msg(topics.USER_EVENTS, i) for i in range(500)]
                   + [Msg(topics.NOTIFICATIONS, i) for i in range(7)])
    frame = feed.frame()
    assert frame["topics"][topics.USER_EVENTS]["total"] == 500
    assert frame["topics"][topics.NOTIFICATIONS]["total"] == 7
    assert Msg.decoded == NEWEST + 7  # not 507
    assert frame["events"][-1]["payload"] == '{"n": 499}'  # the newest, in order
    assert frame["events"][0]["payload"] == '{"n": 485}'
