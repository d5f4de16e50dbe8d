//! Deterministic S3 key naming (being written).
