//! `/healthz`, `/readyz`, `/metrics` and the plugin log socket.
