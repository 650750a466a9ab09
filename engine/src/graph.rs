//! Drawing a compiled workflow (placeholder).
