"""Development tooling of wtbi-monitor: never imported by the runtime package.

`localenv` starts the real local servers (a Kafka-protocol broker, an InfluxDB-protocol
database, an S3 API) that the demo, the integration tests, the benchmarks and the fault
scripts run against. It lives outside `wtbi_monitor` so that the daemon ships without a
server harness; an import-linter contract (pyproject.toml) keeps it that way.
"""
