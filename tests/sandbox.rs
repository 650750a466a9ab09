//! Sandbox tests (placeholder).
