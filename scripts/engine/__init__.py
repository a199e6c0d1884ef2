"""The matrix engine: .config -> planned runs -> executor -> reports (docs/architecture.md)."""
