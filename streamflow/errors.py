"""One root exception; each subclass names what failed so the CLI can print it in one line."""


class StreamFlowError(Exception):
    """Root of every error StreamFlow raises on purpose."""


class SettingsError(StreamFlowError):
    """An environment variable holds a value StreamFlow cannot use."""


class JavaNotFound(StreamFlowError):
    """No Java 17+ runtime for the embedded Kafka broker."""


class MavenNotFound(StreamFlowError):
    """No Maven to fetch the Kafka jars with."""


class KafkaJarsMissing(StreamFlowError):
    """The Kafka jars have not been fetched into STREAMFLOW_HOME yet."""


class PortInUse(StreamFlowError):
    """A port the embedded stack needs is held by another process."""


class BrokerStartFailed(StreamFlowError):
    """The embedded Kafka broker exited or did not answer in time."""


class KafkaUnavailable(StreamFlowError):
    """The Kafka cluster did not answer a metadata request."""


class PostgresStartFailed(StreamFlowError):
    """The embedded PostgreSQL server could not be started."""


class DatabaseUnavailable(StreamFlowError):
    """PostgreSQL did not accept a connection."""


class DatabaseRefused(DatabaseUnavailable):
    """PostgreSQL answered and refused the connection (password, role, database)."""


class TopicMismatch(StreamFlowError):
    """A topic exists with a layout other than the one StreamFlow needs."""


class PiiKeyMissing(StreamFlowError):
    """No STREAMFLOW_PII_KEY, and no key generated for the local stack."""


class DeadLetterPublishFailed(StreamFlowError):
    """Dead letters could not be written to the dead-letter topic."""


class MessageRefused(StreamFlowError):
    """Kafka refused a message itself (too large for the topic, unreadable): sending it again
    cannot succeed, unlike an outage."""


class ProducerDeliveryFailed(StreamFlowError):
    """Kafka reported events it could not deliver after all retries."""


class TopicMissing(StreamFlowError):
    """A topic the worker needs does not exist (or has no leaders)."""


class ConsumerFailed(StreamFlowError):
    """The Kafka consumer hit a fatal error (librdkafka will not recover it)."""


class LogStartUnknown(StreamFlowError):
    """The broker did not say where a partition's log starts: whether offsets the sink
    jumped over were lost cannot be told."""


class LandingFenced(StreamFlowError):
    """A sink's landing wrote offsets of partitions another sink has claimed since (this one
    was paused past its session timeout): rolled back, nothing of it stored."""

    def __init__(self, partitions: list[tuple[str, int]]) -> None:
        super().__init__("partitions claimed by another sink since this one was assigned "
                         "them: " + ", ".join(f"{t}[{p}]" for t, p in partitions))
        self.partitions = partitions


class WorkersFailed(StreamFlowError):
    """The supervised workers of the local stack did not start."""


class DeadLetterNotFound(StreamFlowError):
    """No dead letter has the requested id."""


class ReplayRefused(StreamFlowError):
    """The selected dead letters were replayed before and --force was not given."""


class ReplayTopicRefused(StreamFlowError):
    """A replay was asked to send to a topic STREAMFLOW_REPLAY_TOPICS does not allow."""


class LiveTokenRequired(StreamFlowError):
    """The live view was asked to listen beyond loopback without STREAMFLOW_LIVE_TOKEN."""


class ReprocessRangeInvalid(StreamFlowError, ValueError):
    """A reprocess was asked for no range, an empty one, or a time and a sequence range."""


class DbtSettingUnsupported(StreamFlowError):
    """DATABASE_URL holds a connection setting dbt cannot be given."""


class DbtNotInstalled(StreamFlowError):
    """No dbt (or no `streamflow-dbt` wrapper) beside this Python."""


class DbtParseFailed(StreamFlowError):
    """`dbt parse` could not write the dbt project's manifest."""


class DbtManifestMissing(StreamFlowError):
    """The dbt manifest was not prepared before the Dagster definitions were loaded."""


class NotAWindow(StreamFlowError):
    """An `analytics` message the live view cannot show as a window (the text says why)."""


class ArchiveTableUnknown(StreamFlowError):
    """The archive was asked for a table it does not hold (not one StreamFlow archives)."""


class ArchiveEmpty(StreamFlowError):
    """The archive holds no period of what was asked for."""


class ArchiveQueryFailed(StreamFlowError):
    """DuckDB could not run a query over the archive (bad SQL, a table not archived yet)."""
