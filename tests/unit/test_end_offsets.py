"""End offsets asked while a partition's leader moves (a topic just created under load) are
asked again, not raised: `streamflow topics list` and the status failed on it."""

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamflow.topics import end_offsets


class FlakyConsumer:
    """Answers each partition after ``failures`` refusals with ``code``."""

    def __init__(self, failures: int, code: int) -> None:
        self.failures, self.code, self.asked = failures, code, []

    def get_watermark_offsets(self, partition, timeout):
        self.asked.append(partition.partition)
        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(self.code))
        return 0, 10 + partition.partition


@pytest.mark.parametrize("code", [KafkaError.NOT_LEADER_FOR_PARTITION,
                                  KafkaError.LEADER_NOT_AVAILABLE])
def test_a_moving_leader_is_asked_again(code):
    probe = FlakyConsumer(failures=2, code=code)
    assert end_offsets(probe, "t", [1, 0]) == [10, 11]
    assert probe.asked == [0, 0, 0, 1]


def test_other_errors_and_a_leader_that_never_settles_are_raised():
    with pytest.raises(KafkaException):
        end_offsets(FlakyConsumer(1, KafkaError.UNKNOWN_TOPIC_OR_PART), "t", [0])
    with pytest.raises(KafkaException):
        end_offsets(FlakyConsumer(10**6, KafkaError.NOT_LEADER_FOR_PARTITION), "t", [0],
                    timeout_s=0.3)
