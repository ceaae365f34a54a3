"""The message bus: publish by key, consume in a consumer group, commit, pause/resume.

Two implementations behind one interface: Kafka (aiokafka) for production and an in-process bus so `rmad run`
works on a laptop. One contract test suite (tests/bus) holds both to the same promises.
"""

from service.bus.base import (
    Bus,
    BusError,
    CommitFailedError,
    Consumer,
    Producer,
    Record,
    TopicPartition,
    TopicSpec,
)
from service.bus.factory import make_bus

__all__ = [
    "Bus",
    "BusError",
    "CommitFailedError",
    "Consumer",
    "Producer",
    "Record",
    "TopicPartition",
    "TopicSpec",
    "make_bus",
]
