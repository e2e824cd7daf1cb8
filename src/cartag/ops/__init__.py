"""Operations: Prometheus metrics, JSON logs with request ids, the monitoring report and page."""
