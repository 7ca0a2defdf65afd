//! Running work inside a network namespace.
