//! Business rules engine (being written).
