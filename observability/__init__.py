"""What operators see: Prometheus metrics (/metrics), the log format (text or one JSON object
per line, a line per GraphQL operation) and OpenTelemetry traces. Leaf package: the layers
import it, it imports none of them."""
