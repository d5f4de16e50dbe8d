//! Request and event limits (being written).
