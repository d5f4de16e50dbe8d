//! Client body parsing and per-event validation (being written).
